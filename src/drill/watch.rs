//! Watching a round's recovery: the [`Watcher`] polls Flink's REST API (and the coordinator's event log, in the
//! shield arm) for signs of the fault and for the job running again, and [`failovers`] reads the orders the
//! coordinator gave since the injection.

use std::time::Duration;

use super::measure::{Observation, Signal};
use crate::flink;
use crate::host::clock::now_ms;
use crate::local::RunState;

/// Decisions the coordinator acted on (not observe-only) since the injection.
pub(super) async fn failovers(state: &RunState, since_ms: i64) -> (u64, Vec<String>) {
    let Some(c) = &state.coordinator else {
        return (0, Vec::new());
    };
    let Ok(token) = std::fs::read_to_string(&c.api_token_file) else {
        return (0, Vec::new());
    };
    let url = format!("{}/v1/decisions", c.api.trim_end_matches('/'));
    let http = reqwest::Client::new();
    let Ok(resp) = http
        .get(&url)
        .bearer_auth(token.trim())
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        return (0, Vec::new());
    };
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    let acted: Vec<&serde_json::Value> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["ts_ms"].as_i64().unwrap_or(0) >= since_ms)
                .filter(|d| d["mode"].as_str().unwrap_or("observe-only") != "observe-only")
                .collect()
        })
        .unwrap_or_default();
    // When each order went out, so a round's report shows the coordinator's part of the timeline.
    let notes = acted
        .iter()
        .map(|d| {
            format!(
                "coordinator: {} {} at +{} ms ({})",
                d["command"]
                    .as_str()
                    .or(d["action"].as_str())
                    .unwrap_or("?"),
                d["resource_id"].as_str().unwrap_or("?"),
                d["ts_ms"].as_i64().unwrap_or(0) - since_ms,
                d["trigger"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    (acted.len() as u64, notes)
}

/// Polls Flink's REST API (and the coordinator's event log, in the shield arm) for signs of the fault and for
/// the job running again.
pub(super) struct Watcher<'a> {
    client: &'a flink::Client,
    job: &'a str,
    target: Option<String>,
    coordinator: Option<(String, String)>,
    http: reqwest::Client,
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
        let coordinator = state.coordinator.as_ref().and_then(|c| {
            std::fs::read_to_string(&c.api_token_file).ok().map(|t| {
                (
                    c.api.trim_end_matches('/').to_string(),
                    t.trim().to_string(),
                )
            })
        });
        Watcher {
            client,
            job,
            target,
            coordinator,
            http: reqwest::Client::new(),
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
        let Some((api, token)) = self.coordinator.clone() else {
            return;
        };
        let url = format!("{api}/v1/events?since={}", self.last_event_id);
        let Ok(resp) = self
            .http
            .get(&url)
            .bearer_auth(&token)
            .timeout(Duration::from_millis(800))
            .send()
            .await
        else {
            return;
        };
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        for e in v.as_array().into_iter().flatten() {
            self.last_event_id = self.last_event_id.max(e["id"].as_u64().unwrap_or(0));
            let rid = e["resource_id"].as_str().unwrap_or("");
            let kind = e["kind"].as_str().unwrap_or("");
            let ts = e["source_ts_ms"]
                .as_i64()
                .filter(|t| *t > 0)
                .or(e["ts_ms"].as_i64())
                .unwrap_or(0);
            let relevant = match &self.target {
                Some(t) => rid == t || rid == "jobmanager",
                None => true,
            };
            if !relevant {
                continue;
            }
            if kind == "liveness" {
                let to = e["detail"]["to"].as_str().unwrap_or("");
                if to != "alive" {
                    self.add(obs, ts, "agent", format!("{rid} {to}"));
                }
            } else if kind == "failure" {
                self.add(obs, ts, "agent", format!("{rid} reported a failure"));
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
