//! Watching a round's recovery: the [`Watcher`] polls Flink's REST API (and the coordinator's event log, in the
//! shield arm) for signs of the fault and for the job running again, and [`failovers`] reads the orders the
//! coordinator gave since the injection.

use serde::Deserialize;

use crate::coordinator::client::Client;
use crate::coordinator::model::Decision;
use crate::coordinator::policy::Mode;
use crate::protocol::vocab::LivenessChange;
use crate::protocol::{EventKind, Liveness};
use std::time::Duration;

use super::measure::{Observation, Signal};
use crate::flink;
use crate::host::clock::now_ms;
use crate::local::RunState;

/// Decisions the coordinator acted on (not observe-only) since the injection.
pub(super) async fn failovers(state: &RunState, since_ms: i64) -> (u64, Vec<String>) {
    let Some(client) = coordinator_client(state) else {
        return (0, Vec::new());
    };
    let Ok(decisions) = client.decisions().await else {
        return (0, Vec::new());
    };
    let acted: Vec<&Decision> = decisions
        .iter()
        .filter(|d| d.ts_ms >= since_ms && d.mode == Mode::Acted)
        .collect();
    // When each order went out, so a round's report shows the coordinator's part of the timeline.
    let notes = acted
        .iter()
        .map(|d| {
            format!(
                "coordinator: {} {} at +{} ms ({})",
                d.command.as_deref().unwrap_or(&d.action),
                d.resource_id,
                d.ts_ms - since_ms,
                d.trigger,
            )
        })
        .collect();
    (acted.len() as u64, notes)
}

/// The typed client of the run's coordinator, if it has one.
fn coordinator_client(state: &RunState) -> Option<Client> {
    let c = state.coordinator.as_ref()?;
    Client::with_token_file(&c.api, &c.api_token_file).ok()
}

/// Polls Flink's REST API (and the coordinator's event log, in the shield arm) for signs of the fault and for
/// the job running again.
pub(super) struct Watcher<'a> {
    client: &'a flink::Client,
    job: &'a str,
    target: Option<String>,
    coordinator: Option<Client>,
    fully_running: bool,
    job_state: String,
    seen_signals: std::collections::BTreeSet<String>,
    last_exceptions_ms: i64,
    last_events_ms: i64,
    last_event_id: u64,
    tm_gone_seen: bool,
    rest_down_seen: bool,
}

impl<'a> Watcher<'a> {
    pub(super) fn new(
        client: &'a flink::Client,
        job: &'a str,
        state: &RunState,
        target: Option<String>,
    ) -> Self {
        let coordinator = coordinator_client(state);
        Watcher {
            client,
            job,
            target,
            coordinator,
            fully_running: true,
            job_state: "RUNNING".into(),
            seen_signals: Default::default(),
            last_exceptions_ms: 0,
            last_events_ms: 0,
            last_event_id: 0,
            tm_gone_seen: false,
            rest_down_seen: false,
        }
    }

    /// Whether every subtask of the job ran at the last poll.
    pub(super) fn fully_running(&self) -> bool {
        self.fully_running
    }

    /// The job's state at the last poll, as the round's progress lines show it.
    pub(super) fn job_state(&self) -> &str {
        &self.job_state
    }

    fn add(&mut self, obs: &mut Observation, ts_ms: i64, source: &str, what: String) {
        if ts_ms < obs.inject_ms {
            return;
        }
        if self.seen_signals.insert(format!("{source}:{what}")) {
            obs.signals.push(Signal {
                ts_ms,
                source: source.into(),
                what,
            });
        }
    }

    pub(super) async fn poll(&mut self, obs: &mut Observation) {
        let now = now_ms();
        match self.client.job(self.job).await {
            Ok(j) => {
                self.fully_running = j.fully_running();
                self.job_state = if self.fully_running || j.state != "RUNNING" {
                    j.state.clone()
                } else {
                    "RUNNING (not every subtask)".into()
                };
                for (st, ts) in &j.timestamps {
                    if *ts > 0
                        && matches!(
                            st.as_str(),
                            "FAILING" | "RESTARTING" | "CANCELLING" | "SUSPENDED" | "FAILED"
                        )
                    {
                        self.add(obs, *ts, "flink", format!("job {st}"));
                    }
                }
            }
            Err(e) => {
                self.fully_running = false;
                self.job_state = format!("unknown ({})", short(&e.to_string()));
                if !self.rest_down_seen && !matches!(e, flink::Error::Status { status: 404, .. }) {
                    self.rest_down_seen = true;
                    self.add(obs, now, "flink", "REST API not answering".into());
                }
            }
        }
        if now - self.last_exceptions_ms >= 500 {
            self.last_exceptions_ms = now;
            if let Ok(list) = self.client.exceptions(self.job).await {
                for e in list {
                    let what = format!(
                        "exception {}{}",
                        e.exception_name.rsplit('.').next().unwrap_or(""),
                        e.task_manager_id
                            .as_deref()
                            .map(|t| format!(" on {t}"))
                            .unwrap_or_default()
                    );
                    self.add(obs, e.timestamp, "flink", what);
                }
            }
            if let Some(t) = self.target.clone() {
                if !self.tm_gone_seen {
                    if let Ok(tms) = self.client.taskmanagers().await {
                        if !tms.iter().any(|x| x.id == t) {
                            self.tm_gone_seen = true;
                            self.add(obs, now, "flink", format!("{t} no longer registered"));
                        }
                    }
                }
            }
        }
        if now - self.last_events_ms >= 200 {
            self.last_events_ms = now;
            self.poll_agent_events(obs).await;
        }
    }

    async fn poll_agent_events(&mut self, obs: &mut Observation) {
        let Some(client) = self.coordinator.clone() else {
            return;
        };
        let events = tokio::time::timeout(
            Duration::from_millis(800),
            client.events(self.last_event_id, 500),
        )
        .await;
        let Ok(Ok(events)) = events else {
            return;
        };
        for e in events {
            self.last_event_id = self.last_event_id.max(e.id);
            let rid = e.resource_id.as_deref().unwrap_or("");
            let ts = if e.source_ts_ms > 0 {
                e.source_ts_ms
            } else {
                e.ts_ms
            };
            let relevant = match &self.target {
                Some(t) => rid == t || rid == "jobmanager",
                None => true,
            };
            if !relevant || e.source != "agent" {
                continue;
            }
            match EventKind::deserialize(serde_json::Value::String(e.kind.clone()))
                .unwrap_or(EventKind::Unknown)
            {
                EventKind::Liveness => {
                    if let Ok(c) = serde_json::from_value::<LivenessChange>(e.detail.clone()) {
                        if c.to != Liveness::Alive {
                            self.add(obs, ts, "agent", format!("{rid} {}", c.to));
                        }
                    }
                }
                EventKind::Failure => {
                    self.add(obs, ts, "agent", format!("{rid} reported a failure"))
                }
                _ => {}
            }
        }
    }

    /// The final look: whether (and when, by Flink's own timestamps) every subtask runs again.
    pub(super) async fn finish(&mut self, obs: &mut Observation) {
        self.poll(obs).await;
        match self.client.job(self.job).await {
            Ok(j) if j.fully_running() => match self.client.subtask_running_times(self.job).await {
                Ok(times) => {
                    let latest = times.iter().copied().max().unwrap_or(0);
                    obs.redeployed = latest > obs.inject_ms;
                    obs.running_at_ms = obs.redeployed.then_some(latest);
                }
                Err(_) => obs.not_running_at_end = true,
            },
            _ => obs.not_running_at_end = true,
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(60).collect()
}
