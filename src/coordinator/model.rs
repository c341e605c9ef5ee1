//! The coordinator's cluster model: what agents report, what Flink's REST API shows, the event log and the
//! (observe-only) decision log. Pure bookkeeping; the I/O lives in the sibling modules.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::policy::{Act, Engine, FlinkState, PolicyConfig};
use crate::flink;
use crate::host::clock::now_ms;
use crate::protocol::message::{AgentCommand, AgentEvent, AgentStatus};

/// A TaskManager is taken as partitioned when both its agent and Flink have not heard from it for this long.
pub const PARTITION_SILENCE_MS: i64 = 1_500;

/// Upper bounds (seconds) of the recovery histogram.
pub const RECOVERY_BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0];

/// One successful poll of Flink: jobs, TaskManagers, and exception-history entries new since the last poll.
pub type Polled = (
    Vec<JobView>,
    Vec<TaskManagerView>,
    Vec<(String, flink::ExceptionEntry)>,
);

/// Events kept for `/v1/events`.
pub const EVENT_LOG: usize = 2000;
/// Decisions kept for `/v1/decisions`.
pub const DECISION_LOG: usize = 500;

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub resource_id: String,
    pub connected: bool,
    pub peer: String,
    pub connected_since_ms: i64,
    /// When the last status or event arrived (coordinator clock, unix ms).
    pub last_seen_ms: i64,
    pub status: Option<AgentStatus>,
    /// The current connection's id.
    #[serde(skip)]
    pub connection: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub state: String,
    pub vertices_running: usize,
    pub vertices: usize,
    /// Flink's own per-state timestamps (ms).
    pub timestamps: BTreeMap<String, i64>,
    /// Newest exception history entry seen (ms), to report only new ones.
    pub last_exception_ms: i64,
    pub checkpoints: Option<CheckpointView>,
}

impl JobView {
    /// RUNNING, with every vertex (hence every subtask) RUNNING.
    pub fn fully_running(&self) -> bool {
        self.state == "RUNNING" && self.vertices > 0 && self.vertices_running == self.vertices
    }
}

/// A job's checkpoint statistics from Flink.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct CheckpointView {
    pub completed: u64,
    pub failed: u64,
    pub in_progress: u64,
    pub restored: u64,
    pub latest_completed_id: Option<u64>,
    /// When the latest completed checkpoint was acknowledged by all tasks (ms).
    pub latest_completed_ms: Option<i64>,
    pub latest_duration_ms: Option<i64>,
    pub latest_restored_id: Option<u64>,
    pub latest_restore_ms: Option<i64>,
}

impl From<flink::CheckpointStats> for CheckpointView {
    fn from(c: flink::CheckpointStats) -> Self {
        CheckpointView {
            completed: c.counts.completed,
            failed: c.counts.failed,
            in_progress: c.counts.in_progress,
            restored: c.counts.restored,
            latest_completed_id: c.latest.completed.as_ref().map(|l| l.id),
            latest_completed_ms: c.latest.completed.as_ref().map(|l| l.latest_ack_timestamp),
            latest_duration_ms: c.latest.completed.as_ref().map(|l| l.end_to_end_duration),
            latest_restored_id: c.latest.restored.as_ref().map(|r| r.id),
            latest_restore_ms: c.latest.restored.as_ref().map(|r| r.restore_timestamp),
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct FlinkView {
    pub rest: String,
    pub reachable: bool,
    pub last_ok_ms: Option<i64>,
    pub last_error: Option<String>,
    /// The last few poll errors with their time (unix ms), newest last.
    pub recent_errors: VecDeque<(i64, String)>,
    pub polls_ok: u64,
    pub polls_failed: u64,
    pub jobs: Vec<JobView>,
    pub taskmanagers: Vec<TaskManagerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskManagerView {
    pub id: String,
    pub slots: i64,
    pub free_slots: i64,
    /// When the JobManager last heard from it (unix ms; Flink's REST calls this `timeSinceLastHeartbeat`).
    pub last_heartbeat_ms: i64,
    /// `host:port` of its RPC endpoint.
    #[serde(default)]
    pub rpc_address: Option<String>,
}

impl From<&flink::TaskManager> for TaskManagerView {
    fn from(t: &flink::TaskManager) -> Self {
        TaskManagerView {
            id: t.id.clone(),
            slots: t.slots,
            free_slots: t.free_slots,
            last_heartbeat_ms: t.last_heartbeat,
            rpc_address: t.rpc_address(),
        }
    }
}

/// One line of the event log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: u64,
    /// When the coordinator recorded it (unix ms).
    pub ts_ms: i64,
    /// When it happened at its source (unix ms; the agent's or Flink's clock).
    pub source_ts_ms: i64,
    /// `agent`, `flink` or `coordinator`.
    pub source: String,
    pub resource_id: Option<String>,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// A piece of evidence behind a decision.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub ts_ms: i64,
    pub signal: String,
    pub detail: serde_json::Value,
}

/// What the coordinator decided (or, observe-only, would have done) about an incident.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: u64,
    pub ts_ms: i64,
    /// `tm-dead`, `tm-hung`, `tm-paused`, `tm-busy-gc`, `jm-dead`, `agent-lost`, ...
    pub trigger: String,
    pub resource_id: String,
    pub evidence: Vec<Evidence>,
    /// The action, in words.
    pub action: String,
    /// `observe-only`: recorded, not taken; `acted`: ordered from the agent.
    pub mode: String,
    /// The fencing token the order carried (the coordinator's epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
    /// The order sent (`fence`, `restart`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The agent's answer (outcome, detail, took_ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
    /// Ms from the incident's start until Flink ran every vertex of a job again (Flink's RUNNING timestamp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<i64>,
    /// When the incident began (agent's time of the first non-alive report), for acted decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_ms: Option<i64>,
}

/// Recovery times the coordinator observed itself (decision → job RUNNING again).
#[derive(Debug, Default, Clone)]
pub struct RecoveryHistogram {
    pub buckets: [u64; RECOVERY_BUCKETS.len()],
    pub count: u64,
    pub sum_s: f64,
}

impl RecoveryHistogram {
    pub fn observe(&mut self, seconds: f64) {
        for (i, le) in RECOVERY_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum_s += seconds;
    }
}

#[derive(Debug, Default)]
pub struct Model {
    pub agents: BTreeMap<String, AgentView>,
    pub flink: FlinkView,
    pub events: VecDeque<Event>,
    pub decisions: VecDeque<Decision>,
    next_event: u64,
    next_decision: u64,
    next_connection: u64,
    /// Open incidents by resource id: no second decision for the same trigger until the resource is alive again.
    open: BTreeMap<String, String>,
    pub events_by_source: BTreeMap<String, u64>,
    pub decisions_by_kind: BTreeMap<String, u64>,
    pub agent_connections: BTreeMap<&'static str, u64>,
    /// The failover policy and its incidents.
    pub engine: Engine,
    /// This coordinator's epoch: the fencing token of its orders.
    pub epoch: u64,
    /// Orders waiting for their agent's connection, by resource id.
    outbox: BTreeMap<String, Vec<AgentCommand>>,
    /// TaskManagers whose RPC endpoint the JobManager's agent was told to reject, with that address.
    isolated: BTreeMap<String, String>,
    /// Acted (or would-be, observe-only) failover decisions by trigger.
    pub failover_decisions: BTreeMap<(String, String), u64>,
    pub recovery: RecoveryHistogram,
    /// Planned stops waiting for their checkpoints (taken by the stopper task).
    stop_requests: Vec<StopRequest>,
    /// When an agent last reported its process not alive (unix ms): the resume task watches restarts closely for
    /// a while after.
    pub last_trouble_ms: i64,
}

/// A TaskManager asked to stop whose plugin holds the stop: checkpoint these jobs, then release it.
#[derive(Debug, Clone, PartialEq)]
pub struct StopRequest {
    /// The decision that ordered the checkpoints.
    pub decision: u64,
    pub resource_id: String,
    pub jobs: Vec<String>,
    /// Give up on the checkpoints at this time (unix ms), so the release reaches the plugin before it stops anyway.
    pub deadline_ms: i64,
}

/// The release must reach the plugin this long before its own wait runs out.
const STOP_RELEASE_MARGIN_MS: i64 = 500;

impl Model {
    /// A model whose policy acts (or not) as `policy` says, ordering with fencing token `epoch`.
    pub fn with_policy(rest: &str, policy: PolicyConfig, epoch: u64) -> Self {
        let mut m = Model::new(rest);
        m.engine = Engine::new(policy);
        m.epoch = epoch;
        m
    }

    /// Orders waiting for `resource_id`'s agent (taken: the caller sends them).
    pub fn take_commands(&mut self, resource_id: &str) -> Vec<AgentCommand> {
        self.outbox.remove(resource_id).unwrap_or_default()
    }

    /// Re-evaluates the policy's tolerances (called every 20 ms).
    pub fn tick(&mut self) {
        let mut acts = self.engine.tick(now_ms(), self.flink_state());
        acts.extend(self.partitions(now_ms()));
        self.apply(acts);
    }

    /// TaskManagers cut off: their agent is lost AND Flink has not heard from them either (two independent
    /// signals; a lost agent alone, or a late heartbeat alone, is no partition). The JobManager's agent is told to
    /// reject their RPC endpoint, so that Flink's next heartbeat RPC fails as "unreachable" and the GC-safe heartbeat
    /// time-out does not have to run out. Once per TaskManager until its agent is back.
    fn partitions(&mut self, now: i64) -> Vec<Act> {
        let jm_reachable = self.agents.get("jobmanager").is_some_and(|a| a.connected);
        if !jm_reachable {
            return Vec::new();
        }
        let mut acts = Vec::new();
        for tm in &self.flink.taskmanagers {
            let Some(agent) = self.agents.get(&tm.id) else {
                continue;
            };
            let agent_silent = !agent.connected && now - agent.last_seen_ms >= PARTITION_SILENCE_MS;
            let flink_silent =
                tm.last_heartbeat_ms > 0 && now - tm.last_heartbeat_ms >= PARTITION_SILENCE_MS;
            let dead = agent.status.as_ref().is_some_and(|s| s.liveness == "dead");
            if !agent_silent || !flink_silent || dead || self.isolated.contains_key(&tm.id) {
                continue;
            }
            let Some(addr) = tm.rpc_address.clone() else {
                continue;
            };
            let ports = agent
                .status
                .as_ref()
                .map(|s| s.ports.clone())
                .unwrap_or_default();
            self.isolated.insert(tm.id.clone(), addr.clone());
            acts.push(Act {
                trigger: "tm-partitioned".into(),
                resource_id: tm.id.clone(),
                action: "isolate".into(),
                pid: None,
                reason: format!(
                    "{} and its agent are silent ({} ms since the agent, {} ms since Flink's last heartbeat): the JobManager's agent rejects {addr} so Flink fails it over now",
                    tm.id,
                    now - agent.last_seen_ms,
                    now - tm.last_heartbeat_ms
                ),
                target: Some("jobmanager".into()),
                address: Some(addr),
                ports,
                opened_ms: agent.last_seen_ms,
            });
        }
        acts
    }

    /// What the policy needs to know of Flink.
    fn flink_state(&self) -> FlinkState {
        let jobs = &self.flink.jobs;
        FlinkState {
            all_running: self.flink.reachable
                && !jobs.is_empty()
                && jobs.iter().all(JobView::fully_running),
            last_running_ms: jobs
                .iter()
                .filter_map(|j| j.timestamps.get("RUNNING").copied())
                .max()
                .unwrap_or(0),
            checkpointed_ms: jobs
                .iter()
                .filter_map(|j| j.checkpoints.as_ref().and_then(|c| c.latest_completed_ms))
                .min()
                .unwrap_or(i64::MAX),
        }
    }

    /// Records the policy's acts as decisions and, when failover is on, queues the orders.
    fn apply(&mut self, acts: Vec<Act>) {
        // Observe-only: the per-incident decisions of `agent_event` say what would be done.
        if !self.engine.cfg.failover {
            return;
        }
        for act in acts {
            let evidence = vec![
                Evidence {
                    ts_ms: now_ms(),
                    signal: "last agent status".into(),
                    detail: serde_json::to_value(
                        self.agents
                            .get(&act.resource_id)
                            .and_then(|a| a.status.as_ref()),
                    )
                    .unwrap_or_default(),
                },
                Evidence {
                    ts_ms: now_ms(),
                    signal: "flink taskmanager view".into(),
                    detail: serde_json::to_value(
                        self.flink
                            .taskmanagers
                            .iter()
                            .find(|t| t.id == act.resource_id),
                    )
                    .unwrap_or_default(),
                },
            ];
            self.next_decision += 1;
            let id = self.next_decision;
            let d = Decision {
                id,
                ts_ms: now_ms(),
                trigger: act.trigger.clone(),
                resource_id: act.resource_id.clone(),
                evidence,
                action: format!("{}: {}", act.action, act.reason),
                mode: "acted".into(),
                fencing_token: Some(self.epoch),
                command: Some(act.action.clone()),
                outcome: None,
                recovery_ms: None,
                incident_ms: Some(act.opened_ms),
            };
            tracing::warn!(trigger = %act.trigger, resource_id = %act.resource_id, action = %d.action, mode = %d.mode, epoch = self.epoch, "Failover decision");
            *self
                .failover_decisions
                .entry((act.trigger.clone(), d.mode.clone()))
                .or_default() += 1;
            let target = act.target.clone().unwrap_or(act.resource_id.clone());
            self.outbox
                .entry(target.clone())
                .or_default()
                .push(AgentCommand {
                    id,
                    epoch: self.epoch,
                    action: act.action.clone(),
                    resource_id: target,
                    pid: act.pid,
                    reason: act.reason.clone(),
                    ts_ms: d.ts_ms,
                    address: act.address.clone(),
                    ports: act.ports.clone(),
                    outcome: None,
                });
            self.log_decision(d);
        }
    }

    /// Flink ran every vertex of a job again after an acted decision's incident: its recovery time, by Flink's clock.
    fn observe_recoveries(&mut self) {
        let running: Vec<i64> = self
            .flink
            .jobs
            .iter()
            .filter(|j| j.fully_running())
            .filter_map(|j| j.timestamps.get("RUNNING").copied())
            .collect();
        let mut seen = Vec::new();
        for d in self.decisions.iter_mut() {
            if d.mode != "acted" || d.recovery_ms.is_some() {
                continue;
            }
            // Timed from the incident: the restart of a crashed TaskManager is ordered only after the job runs again.
            let from = d.incident_ms.unwrap_or(d.ts_ms);
            if let Some(t) = running.iter().filter(|t| **t >= from).min() {
                d.recovery_ms = Some(t - from);
                seen.push((t - from) as f64 / 1000.0);
            }
        }
        for s in seen {
            self.recovery.observe(s);
        }
    }

    pub fn new(rest: &str) -> Self {
        Model {
            flink: FlinkView {
                rest: rest.to_string(),
                ..FlinkView::default()
            },
            ..Model::default()
        }
    }

    pub fn record(
        &mut self,
        source: &str,
        resource_id: Option<&str>,
        kind: &str,
        source_ts_ms: i64,
        detail: serde_json::Value,
    ) -> u64 {
        self.next_event += 1;
        if self.events.len() >= EVENT_LOG {
            self.events.pop_front();
        }
        *self.events_by_source.entry(source.to_string()).or_default() += 1;
        self.events.push_back(Event {
            id: self.next_event,
            ts_ms: now_ms(),
            source_ts_ms,
            source: source.into(),
            resource_id: resource_id.map(str::to_string),
            kind: kind.into(),
            detail,
        });
        self.next_event
    }

    /// An agent completed its handshake; returns the connection's id (an agent that reconnects replaces its older
    /// connection, whose end is then no longer news).
    pub fn agent_connected(&mut self, resource_id: &str, peer: &str) -> u64 {
        let now = now_ms();
        self.next_connection += 1;
        let conn = self.next_connection;
        let view = self
            .agents
            .entry(resource_id.to_string())
            .or_insert_with(|| AgentView {
                resource_id: resource_id.to_string(),
                connected: false,
                peer: String::new(),
                connected_since_ms: now,
                last_seen_ms: now,
                status: None,
                connection: 0,
            });
        view.connected = true;
        view.connection = conn;
        if let Some(addr) = self.isolated.remove(resource_id) {
            // Back: the JobManager's agent stops rejecting it.
            if self.engine.cfg.failover {
                self.next_decision += 1;
                self.outbox
                    .entry("jobmanager".into())
                    .or_default()
                    .push(AgentCommand {
                        id: self.next_decision,
                        epoch: self.epoch,
                        action: "unisolate".into(),
                        resource_id: "jobmanager".into(),
                        pid: None,
                        reason: format!("{resource_id}'s agent is back"),
                        ts_ms: now,
                        address: Some(addr),
                        ports: vec![],
                        outcome: None,
                    });
            }
        }
        view.peer = peer.to_string();
        view.connected_since_ms = now;
        view.last_seen_ms = now;
        self.record(
            "coordinator",
            Some(resource_id),
            "agent-connected",
            now,
            serde_json::json!({"peer": peer}),
        );
        conn
    }

    /// Connection `conn` of an agent ended.
    pub fn agent_disconnected(&mut self, resource_id: &str, conn: u64, reason: &str) {
        let now = now_ms();
        match self.agents.get_mut(resource_id) {
            Some(v) if v.connection == conn => v.connected = false,
            _ => return,
        }
        self.record(
            "coordinator",
            Some(resource_id),
            "agent-lost",
            now,
            serde_json::json!({"reason": reason}),
        );
        let last = self.agents.get(resource_id).and_then(|a| a.status.clone());
        // An agent whose process is already known dead explains its own silence.
        if last.as_ref().is_some_and(|s| s.liveness == "dead") {
            return;
        }
        let flink_tm = self
            .flink
            .taskmanagers
            .iter()
            .find(|t| t.id == resource_id)
            .cloned();
        self.decide(
            "agent-lost",
            resource_id,
            vec![
                Evidence {
                    ts_ms: now,
                    signal: "agent connection closed".into(),
                    detail: serde_json::json!({"reason": reason}),
                },
                Evidence {
                    ts_ms: now,
                    signal: "last agent status".into(),
                    detail: serde_json::to_value(&last).unwrap_or_default(),
                },
                Evidence {
                    ts_ms: now,
                    signal: "flink taskmanager view".into(),
                    detail: serde_json::to_value(&flink_tm).unwrap_or_default(),
                },
            ],
            format!(
                "would treat {resource_id} as possibly partitioned: watch Flink's heartbeat to it, and if that stops too, \
                 fail it over like a hang"
            ),
        );
    }

    pub fn agent_status(&mut self, status: AgentStatus) {
        let now = now_ms();
        let id = status.resource_id.clone();
        let acts = self.engine.liveness(
            &id,
            status.watches == crate::protocol::Role::Tm,
            &status.liveness,
            status.since_ms,
            status.pid,
            now,
            self.flink_state(),
        );
        if let Some(v) = self.agents.get_mut(&id) {
            v.last_seen_ms = now;
            v.status = Some(status);
        }
        self.apply(acts);
    }

    /// An event from an agent; liveness transitions may open an incident.
    pub fn agent_event(&mut self, ev: AgentEvent) {
        if let Some(v) = self.agents.get_mut(&ev.resource_id) {
            v.last_seen_ms = now_ms();
        }
        self.record(
            "agent",
            Some(&ev.resource_id),
            &ev.kind,
            ev.ts_ms,
            ev.detail.clone(),
        );
        if ev.kind == "command" {
            let id = ev.detail.get("id").and_then(|v| v.as_u64());
            if let Some(d) = self.decisions.iter_mut().find(|d| Some(d.id) == id) {
                d.outcome = Some(ev.detail.clone());
            }
            return;
        }
        if ev.kind == "planned-stop" {
            self.planned_stop(&ev);
            return;
        }
        if ev.kind != "liveness" {
            return;
        }
        let to = ev
            .detail
            .get("to")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let rid = ev.resource_id.clone();
        if matches!(to.as_str(), "dead" | "paused" | "hung" | "busy-gc") {
            self.last_trouble_ms = now_ms();
        }
        // The event is newer than the last periodic status: let the status show it at once.
        if let Some(st) = self.agents.get_mut(&rid).and_then(|a| a.status.as_mut()) {
            st.liveness = to.clone();
        }
        let is_tm = self
            .agents
            .get(&rid)
            .and_then(|a| a.status.as_ref())
            .is_none_or(|s| s.watches == crate::protocol::Role::Tm);
        let pid = ev
            .detail
            .get("pid")
            .and_then(|v| v.as_u64())
            .map(|p| p as u32);
        // Since when the state holds: the agent says (a silence began at the last heartbeat, noticed ~300 ms
        // later); an older agent's event has only its own time.
        let since = ev
            .detail
            .get("since_ms")
            .and_then(|v| v.as_i64())
            .filter(|s| *s <= ev.ts_ms)
            .unwrap_or(ev.ts_ms);
        let flink = self.flink_state();
        let acts = self
            .engine
            .liveness(&rid, is_tm, &to, since, pid, now_ms(), flink);
        self.apply(acts);
        if to == "alive" {
            self.open.remove(&rid);
            return;
        }
        let watches_jm = self
            .agents
            .get(&rid)
            .and_then(|a| a.status.as_ref())
            .is_some_and(|s| s.watches == crate::protocol::Role::Jm);
        if self.engine.cfg.failover && !watches_jm {
            // The policy decides (and acts) for TaskManagers.
            return;
        }
        let evidence = vec![
            Evidence {
                ts_ms: ev.ts_ms,
                signal: format!("agent liveness {to}"),
                detail: ev.detail.clone(),
            },
            Evidence {
                ts_ms: now_ms(),
                signal: "flink taskmanager view".into(),
                detail: serde_json::to_value(self.flink.taskmanagers.iter().find(|t| t.id == rid))
                    .unwrap_or_default(),
            },
        ];
        let (trigger, action) = match (to.as_str(), watches_jm) {
            ("dead", true) => ("jm-dead", "would restart the JobManager (with the profile's HA) and wait for jobs to recover".to_string()),
            ("dead", false) => {
                let standby = self.standby_for(&rid);
                (
                    "tm-dead",
                    match standby {
                        Some(s) => format!(
                            "would make sure free slots exist (standby {s} has them), restart {rid} in place with the same resource id, and let Flink redeploy"
                        ),
                        None => format!("would restart {rid} in place with the same resource id (no standby with free slots)"),
                    },
                )
            }
            ("hung", _) => ("tm-hung", format!("would fence {rid} (SIGKILL through its agent) once it has been hung past the hang tolerance")),
            ("paused", _) => ("tm-paused", format!("would fence {rid} (SIGKILL through its agent) once it has been stopped past the hang tolerance")),
            ("busy-gc", _) => ("tm-busy-gc", format!("would wait: {rid} is using CPU without heartbeats (likely garbage collection); fence only past the GC tolerance")),
            _ => return,
        };
        self.decide(trigger, &rid, evidence, action);
    }

    /// A TaskManager's plugin holds a stop (SIGTERM, eviction): with failover on, every running job checkpoints
    /// first (the stopper task triggers them through Flink's REST API and then releases the stop), so that the
    /// restart replays from just before the stop instead of from up to a checkpoint interval earlier. Observe-only
    /// (or no running job): the stop is released at once.
    fn planned_stop(&mut self, ev: &AgentEvent) {
        let rid = ev.resource_id.clone();
        let max_wait = ev
            .detail
            .get("max_wait_ms")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let jobs: Vec<String> = self
            .flink
            .jobs
            .iter()
            .filter(|j| j.state == "RUNNING")
            .map(|j| j.id.clone())
            .collect();
        let evidence = vec![
            Evidence {
                ts_ms: ev.ts_ms,
                signal: "plugin holds a stop".into(),
                detail: ev.detail.clone(),
            },
            Evidence {
                ts_ms: now_ms(),
                signal: "running jobs".into(),
                detail: serde_json::json!(jobs),
            },
        ];
        let act = self.engine.cfg.failover && !jobs.is_empty();
        self.next_decision += 1;
        let id = self.next_decision;
        let action = if act {
            format!(
                "checkpoint: trigger a checkpoint of {} running job(s), then let {rid} stop",
                jobs.len()
            )
        } else if self.engine.cfg.failover {
            format!("let {rid} stop at once: no job is running")
        } else {
            format!("would checkpoint every running job before letting {rid} stop; lets it stop at once")
        };
        let mode = if self.engine.cfg.failover {
            "acted"
        } else {
            "observe-only"
        };
        tracing::warn!(trigger = "tm-stopping", resource_id = %rid, %action, mode, "Planned stop");
        *self
            .failover_decisions
            .entry(("tm-stopping".into(), mode.into()))
            .or_default() += 1;
        self.log_decision(Decision {
            id,
            ts_ms: now_ms(),
            trigger: "tm-stopping".into(),
            resource_id: rid.clone(),
            evidence,
            action,
            mode: mode.into(),
            fencing_token: self.engine.cfg.failover.then_some(self.epoch),
            command: Some(if act { "checkpoint" } else { "stop-ready" }.into()),
            outcome: None,
            recovery_ms: None,
            incident_ms: Some(ev.ts_ms),
        });
        if act {
            self.stop_requests.push(StopRequest {
                decision: id,
                resource_id: rid,
                jobs,
                deadline_ms: now_ms() + max_wait - STOP_RELEASE_MARGIN_MS,
            });
        } else {
            self.release_stop(&rid, "skipped", "no checkpoint taken".into());
        }
    }

    /// Planned stops whose checkpoints the stopper task is to take.
    pub fn take_stop_requests(&mut self) -> Vec<StopRequest> {
        std::mem::take(&mut self.stop_requests)
    }

    /// The checkpoints of a planned stop are done (or failed, or ran out of time): record the outcome in its
    /// decision and release the stop.
    pub fn stop_checkpointed(
        &mut self,
        req: &StopRequest,
        outcome: &str,
        detail: serde_json::Value,
    ) {
        if let Some(d) = self.decisions.iter_mut().find(|d| d.id == req.decision) {
            d.outcome = Some(serde_json::json!({"outcome": outcome, "detail": detail.clone()}));
        }
        self.record(
            "coordinator",
            Some(&req.resource_id),
            "planned-stop-checkpoint",
            now_ms(),
            serde_json::json!({"decision": req.decision, "outcome": outcome, "detail": detail}),
        );
        self.release_stop(&req.resource_id, outcome, detail.to_string());
    }

    /// Queues the `stop-ready` order that lets a TaskManager's plugin stop its process.
    fn release_stop(&mut self, rid: &str, outcome: &str, reason: String) {
        self.next_decision += 1;
        self.outbox
            .entry(rid.to_string())
            .or_default()
            .push(AgentCommand {
                id: self.next_decision,
                epoch: self.epoch,
                action: "stop-ready".into(),
                resource_id: rid.to_string(),
                pid: None,
                reason,
                ts_ms: now_ms(),
                address: None,
                ports: vec![],
                outcome: Some(outcome.to_string()),
            });
    }

    /// A TaskManager that Flink reports with all slots free and whose agent says alive.
    fn standby_for(&self, failed: &str) -> Option<String> {
        self.flink
            .taskmanagers
            .iter()
            .filter(|t| t.id != failed && t.slots > 0 && t.free_slots == t.slots)
            .find(|t| {
                self.agents
                    .get(&t.id)
                    .and_then(|a| a.status.as_ref())
                    .is_none_or(|s| s.liveness == "alive")
            })
            .map(|t| t.id.clone())
    }

    fn decide(
        &mut self,
        trigger: &str,
        resource_id: &str,
        evidence: Vec<Evidence>,
        action: String,
    ) {
        if self.open.get(resource_id).is_some_and(|t| t == trigger) {
            return;
        }
        self.open
            .insert(resource_id.to_string(), trigger.to_string());
        self.next_decision += 1;
        let d = Decision {
            id: self.next_decision,
            ts_ms: now_ms(),
            trigger: trigger.into(),
            resource_id: resource_id.into(),
            evidence,
            action: action.clone(),
            mode: "observe-only".into(),
            fencing_token: None,
            command: None,
            outcome: None,
            recovery_ms: None,
            incident_ms: None,
        };
        tracing::warn!(trigger, resource_id, %action, "Decision (observe-only)");
        *self
            .decisions_by_kind
            .entry(trigger.to_string())
            .or_default() += 1;
        self.log_decision(d);
    }

    /// Keeps a decision in the bounded log and records it as an event.
    fn log_decision(&mut self, d: Decision) {
        let detail = serde_json::to_value(&d).unwrap_or_default();
        let resource_id = d.resource_id.clone();
        if self.decisions.len() >= DECISION_LOG {
            self.decisions.pop_front();
        }
        self.decisions.push_back(d);
        self.record(
            "coordinator",
            Some(&resource_id),
            "decision",
            now_ms(),
            detail,
        );
    }

    /// The result of one Flink poll.
    pub fn flink_polled(&mut self, result: Result<Polled, String>) {
        let now = now_ms();
        match result {
            Ok((jobs, tms, exceptions)) => {
                if !self.flink.reachable {
                    self.record(
                        "flink",
                        None,
                        "rest-reachable",
                        now,
                        serde_json::json!({"rest": self.flink.rest}),
                    );
                }
                for j in &jobs {
                    let old_restore = self
                        .flink
                        .jobs
                        .iter()
                        .find(|o| o.id == j.id)
                        .and_then(|o| o.checkpoints.as_ref())
                        .and_then(|c| c.latest_restored_id);
                    if let Some(cp) = &j.checkpoints {
                        if cp.latest_restored_id.is_some() && cp.latest_restored_id != old_restore {
                            self.record(
                                "flink",
                                None,
                                "checkpoint-restored",
                                cp.latest_restore_ms.unwrap_or(now),
                                serde_json::json!({"job_id": j.id, "checkpoint_id": cp.latest_restored_id}),
                            );
                        }
                    }
                    let before = self
                        .flink
                        .jobs
                        .iter()
                        .find(|o| o.id == j.id)
                        .map(|o| o.state.clone());
                    if before.as_deref() != Some(j.state.as_str()) {
                        let ts = j.timestamps.get(&j.state).copied().unwrap_or(now);
                        self.record(
                            "flink",
                            None,
                            "job-state",
                            ts,
                            serde_json::json!({"job_id": j.id, "from": before, "to": j.state}),
                        );
                    }
                }
                for t in &tms {
                    if !self.flink.taskmanagers.iter().any(|o| o.id == t.id) {
                        self.record(
                            "flink",
                            Some(&t.id),
                            "taskmanager-registered",
                            now,
                            serde_json::json!({"slots": t.slots}),
                        );
                    }
                }
                for o in &self.flink.taskmanagers.clone() {
                    if !tms.iter().any(|t| t.id == o.id) {
                        self.record(
                            "flink",
                            Some(&o.id),
                            "taskmanager-released",
                            now,
                            serde_json::json!({}),
                        );
                    }
                }
                for (job, e) in exceptions {
                    self.record(
                        "flink",
                        e.task_manager_id.as_deref(),
                        "exception",
                        e.timestamp,
                        serde_json::json!({"job_id": job, "exception": e.exception_name, "summary": flink::summarize_stacktrace(&e.stacktrace)}),
                    );
                }
                self.flink.jobs = jobs;
                self.flink.taskmanagers = tms;
                self.observe_recoveries();
                self.flink.reachable = true;
                self.flink.last_ok_ms = Some(now);
                self.flink.last_error = None;
                self.flink.polls_ok += 1;
            }
            Err(e) => {
                if self.flink.reachable || self.flink.polls_failed == 0 {
                    self.record(
                        "flink",
                        None,
                        "rest-unreachable",
                        now,
                        serde_json::json!({"error": e}),
                    );
                }
                self.flink.reachable = false;
                if self.flink.recent_errors.len() >= 10 {
                    self.flink.recent_errors.pop_front();
                }
                self.flink.recent_errors.push_back((now, e.clone()));
                self.flink.last_error = Some(e);
                self.flink.polls_failed += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::policy::PolicyConfig;
    use crate::protocol::Role;

    fn status(rid: &str, liveness: &str, watches: Role) -> AgentStatus {
        AgentStatus {
            resource_id: rid.into(),
            watches,
            pid: Some(1),
            liveness: liveness.into(),
            since_ms: 0,
            last_heartbeat_ms: None,
            plugin_connected: true,
            metrics_url: String::new(),
            ts_ms: 0,
            ports: vec![],
        }
    }

    fn liveness(rid: &str, to: &str) -> AgentEvent {
        AgentEvent {
            ts_ms: 5,
            resource_id: rid.into(),
            kind: "liveness".into(),
            detail: serde_json::json!({"from": "alive", "to": to}),
        }
    }

    fn tm(id: &str, slots: i64, free: i64) -> TaskManagerView {
        TaskManagerView {
            id: id.into(),
            slots,
            free_slots: free,
            last_heartbeat_ms: 100,
            rpc_address: None,
        }
    }

    #[test]
    fn a_dead_taskmanager_gets_one_decision_naming_the_standby() {
        let mut m = Model::new("http://x");
        for id in ["tm-1", "tm-2", "tm-3"] {
            m.agent_connected(id, "peer");
            m.agent_status(status(id, "alive", Role::Tm));
        }
        m.flink_polled(Ok((
            vec![],
            vec![tm("tm-1", 2, 0), tm("tm-2", 2, 0), tm("tm-3", 2, 2)],
            vec![],
        )));
        m.agent_event(liveness("tm-1", "dead"));
        m.agent_event(liveness("tm-1", "dead"));
        assert_eq!(m.decisions.len(), 1, "one incident, one decision");
        let d = &m.decisions[0];
        assert_eq!(
            (d.trigger.as_str(), d.mode.as_str()),
            ("tm-dead", "observe-only")
        );
        assert!(d.action.contains("standby tm-3"), "{}", d.action);
        assert_eq!(d.evidence.len(), 2);
        assert!(m.events.iter().any(|e| e.kind == "decision"));
        // Back alive, then hung: a new incident.
        m.agent_event(liveness("tm-1", "alive"));
        m.agent_event(liveness("tm-1", "hung"));
        assert_eq!(m.decisions.back().unwrap().trigger, "tm-hung");
        assert_eq!(m.decisions_by_kind["tm-dead"], 1);
    }

    /// The hang tolerance counts from the last heartbeat the agent names (`since_ms`), not from when the silence
    /// was noticed and reported (~300 ms later).
    #[test]
    fn the_hang_tolerance_counts_from_the_last_heartbeat() {
        let policy = PolicyConfig {
            failover: true,
            hang_tolerance: std::time::Duration::from_millis(1_000),
            ..PolicyConfig::default()
        };
        let paused = |since_ago: i64| AgentEvent {
            ts_ms: now_ms(),
            resource_id: "tm-1".into(),
            kind: "liveness".into(),
            detail: serde_json::json!({"from": "alive", "to": "paused", "pid": 7, "since_ms": now_ms() - since_ago}),
        };
        let fences = |m: &mut Model| {
            m.take_commands("tm-1")
                .iter()
                .filter(|c| c.action == "fence")
                .count()
        };
        // Silent since 1,100 ms: past the tolerance already when the event arrives.
        let mut m = Model::with_policy("http://x", policy.clone(), 3);
        m.agent_connected("tm-1", "peer");
        m.agent_event(paused(1_100));
        m.tick();
        assert_eq!(fences(&mut m), 1);
        // Silent since 300 ms: not yet, and one fence once the tolerance has run out.
        let mut m = Model::with_policy("http://x", policy.clone(), 3);
        m.agent_connected("tm-1", "peer");
        m.agent_event(paused(300));
        m.tick();
        assert_eq!(fences(&mut m), 0);
        std::thread::sleep(std::time::Duration::from_millis(750));
        m.tick();
        assert_eq!(fences(&mut m), 1);
        m.tick();
        assert_eq!(fences(&mut m), 0, "one fence per incident");
        // An event without since_ms (an older agent) counts from its own time.
        let mut m = Model::with_policy("http://x", policy, 3);
        m.agent_connected("tm-1", "peer");
        let mut ev = paused(0);
        ev.detail = serde_json::json!({"from": "alive", "to": "paused", "pid": 7});
        ev.ts_ms = now_ms() - 1_100;
        m.agent_event(ev);
        m.tick();
        assert_eq!(fences(&mut m), 1);
    }

    #[test]
    fn a_planned_stop_checkpoints_running_jobs_only_when_acting() {
        let stopping = |rid: &str| AgentEvent {
            ts_ms: now_ms(),
            resource_id: rid.into(),
            kind: "planned-stop".into(),
            detail: serde_json::json!({"pid": 9, "signal": "SIGTERM", "max_wait_ms": 10_000}),
        };
        let running = |m: &mut Model| {
            m.flink.jobs = vec![JobView {
                id: "j1".into(),
                name: "seq".into(),
                state: "RUNNING".into(),
                vertices_running: 1,
                vertices: 1,
                timestamps: Default::default(),
                last_exception_ms: 0,
                checkpoints: None,
            }]
        };
        // Observe-only: nothing is triggered, the stop is released at once.
        let mut m = Model::new("http://x");
        running(&mut m);
        m.agent_event(stopping("tm-1"));
        assert!(m.take_stop_requests().is_empty());
        let cmds = m.take_commands("tm-1");
        assert_eq!(cmds.len(), 1);
        assert_eq!(
            (cmds[0].action.as_str(), cmds[0].outcome.as_deref()),
            ("stop-ready", Some("skipped"))
        );
        assert_eq!(m.decisions.back().unwrap().mode, "observe-only");
        // Acting: a checkpoint request with a deadline before the plugin's own; released once it is done.
        let policy = PolicyConfig {
            failover: true,
            ..PolicyConfig::default()
        };
        let mut m = Model::with_policy("http://x", policy, 3);
        running(&mut m);
        m.agent_event(stopping("tm-1"));
        let reqs = m.take_stop_requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].jobs, vec!["j1".to_string()]);
        assert!(reqs[0].deadline_ms <= now_ms() + 10_000 - STOP_RELEASE_MARGIN_MS);
        assert!(
            m.take_commands("tm-1").is_empty(),
            "held until the checkpoint is done"
        );
        m.stop_checkpointed(
            &reqs[0],
            "checkpointed",
            serde_json::json!({"jobs": {"j1": {"checkpoint": 5}}}),
        );
        let cmds = m.take_commands("tm-1");
        assert_eq!(cmds.len(), 1);
        assert_eq!(
            (
                cmds[0].action.as_str(),
                cmds[0].outcome.as_deref(),
                cmds[0].epoch
            ),
            ("stop-ready", Some("checkpointed"), 3)
        );
        let d = m
            .decisions
            .iter()
            .find(|d| d.trigger == "tm-stopping")
            .unwrap();
        assert_eq!(d.outcome.as_ref().unwrap()["outcome"], "checkpointed");
        // Acting but no job runs: released at once.
        m.flink.jobs.clear();
        m.agent_event(stopping("tm-2"));
        assert!(m.take_stop_requests().is_empty());
        assert_eq!(
            m.take_commands("tm-2")[0].outcome.as_deref(),
            Some("skipped")
        );
    }

    #[test]
    fn jobmanager_death_and_lost_agents() {
        let mut m = Model::new("http://x");
        m.agent_connected("jobmanager", "p");
        m.agent_status(status("jobmanager", "alive", Role::Jm));
        m.agent_event(liveness("jobmanager", "dead"));
        assert_eq!(m.decisions.back().unwrap().trigger, "jm-dead");

        let old = m.agent_connected("tm-2", "p");
        let new = m.agent_connected("tm-2", "p");
        m.agent_status(status("tm-2", "alive", Role::Tm));
        m.agent_disconnected("tm-2", old, "eof");
        assert!(
            m.agents["tm-2"].connected,
            "the end of a replaced connection is not news"
        );
        m.agent_disconnected("tm-2", new, "eof");
        assert_eq!(m.decisions.back().unwrap().trigger, "agent-lost");
        assert!(!m.agents["tm-2"].connected);

        // An agent whose process died first is not a partition.
        let c4 = m.agent_connected("tm-4", "p");
        m.agent_status(status("tm-4", "dead", Role::Tm));
        let n = m.decisions.len();
        m.agent_disconnected("tm-4", c4, "eof");
        assert_eq!(m.decisions.len(), n);
    }

    #[test]
    fn flink_reachability_and_job_state_changes_are_events() {
        let mut m = Model::new("http://x");
        m.flink_polled(Err("connection refused".into()));
        m.flink_polled(Err("connection refused".into()));
        assert_eq!(
            m.events
                .iter()
                .filter(|e| e.kind == "rest-unreachable")
                .count(),
            1
        );
        let job = |state: &str| JobView {
            id: "j".into(),
            name: "n".into(),
            state: state.into(),
            vertices_running: 0,
            vertices: 1,
            timestamps: BTreeMap::new(),
            last_exception_ms: 0,
            checkpoints: None,
        };
        m.flink_polled(Ok((vec![job("RUNNING")], vec![], vec![])));
        m.flink_polled(Ok((vec![job("RESTARTING")], vec![], vec![])));
        let kinds: Vec<&str> = m.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "rest-unreachable",
                "rest-reachable",
                "job-state",
                "job-state"
            ]
        );
        assert!(m.flink.reachable);
        assert_eq!((m.flink.polls_ok, m.flink.polls_failed), (2, 2));
    }

    #[test]
    fn the_event_log_is_bounded() {
        let mut m = Model::new("x");
        for i in 0..(EVENT_LOG + 10) {
            m.record("agent", None, "span", i as i64, serde_json::Value::Null);
        }
        assert_eq!(m.events.len(), EVENT_LOG);
        assert_eq!(m.events.front().unwrap().id, 11);
    }

    #[test]
    fn a_partitioned_taskmanager_is_isolated_once_and_only_when_both_signals_agree() {
        let policy = PolicyConfig {
            failover: true,
            ..PolicyConfig::default()
        };
        let mut m = Model::with_policy("http://x", policy, 7);
        let jm = m.agent_connected("jobmanager", "p");
        m.agent_status(status("jobmanager", "alive", Role::Jm));
        let c1 = m.agent_connected("tm-1", "p");
        m.agent_status(status("tm-1", "alive", Role::Tm));
        let now = now_ms();
        let mut view = tm("tm-1", 2, 0);
        view.last_heartbeat_ms = now;
        view.rpc_address = Some("127.0.0.1:35393".into());
        m.flink.taskmanagers = vec![view];
        // The agent is lost, but Flink still hears the TaskManager: no partition (the agent alone died).
        m.agent_disconnected("tm-1", c1, "no status for 2s");
        m.agents.get_mut("tm-1").unwrap().last_seen_ms = now - 3_000;
        m.tick();
        assert!(m.take_commands("jobmanager").is_empty());
        // Flink's heartbeat is old too: isolate, through the JobManager's agent, with the fencing token.
        m.flink.taskmanagers[0].last_heartbeat_ms = now - 3_000;
        m.tick();
        let cmds = m.take_commands("jobmanager");
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].action, "isolate");
        assert_eq!(cmds[0].epoch, 7);
        assert_eq!(cmds[0].address.as_deref(), Some("127.0.0.1:35393"));
        let d = m.decisions.back().unwrap();
        assert_eq!(
            (d.trigger.as_str(), d.resource_id.as_str()),
            ("tm-partitioned", "tm-1")
        );
        // Once.
        m.tick();
        assert!(m.take_commands("jobmanager").is_empty());
        // The agent is back: the isolation is lifted.
        m.agent_connected("tm-1", "p");
        let cmds = m.take_commands("jobmanager");
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].action, "unisolate");
        // Without the JobManager's agent nothing can be ordered.
        m.agent_disconnected("jobmanager", jm, "eof");
        let c = m.agents.get("tm-1").unwrap().connection;
        m.agent_disconnected("tm-1", c, "eof");
        m.agents.get_mut("tm-1").unwrap().last_seen_ms = now - 3_000;
        m.tick();
        assert!(m.take_commands("jobmanager").is_empty());
    }
}
