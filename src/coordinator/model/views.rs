//! What the coordinator's model holds and its API shows: agents and the processes they watch, Flink's jobs and
//! TaskManagers, events and decisions. Every view is `Serialize` for the API and `Deserialize` for the typed client
//! ([`crate::coordinator::client`]).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::super::policy::{Mode, Resolved, TmPolicy, Trigger};
use crate::flink;
use crate::protocol::message::AgentStatus;
use crate::protocol::Action;

/// An agent's link to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    /// The agent's id (its HELLO: a host name, or what its configuration says).
    pub id: String,
    pub connected: bool,
    pub peer: String,
    pub connected_since_ms: i64,
    /// When the last status or event arrived (coordinator clock, unix ms).
    pub last_seen_ms: i64,
    /// The processes it reports (resource ids).
    pub processes: Vec<String>,
    /// Its watchdogs' targets by name: the last transition each reported (state, evidence, members).
    #[serde(default)]
    pub watchdogs: BTreeMap<String, crate::protocol::watchdog::WatchdogChange>,
    /// The current connection's id.
    #[serde(skip)]
    pub connection: u64,
}

/// A Flink process as its agent reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessView {
    pub resource_id: String,
    /// The agent that watches it.
    pub agent: String,
    /// Its agent is connected.
    pub connected: bool,
    pub peer: String,
    pub connected_since_ms: i64,
    /// When its agent last said anything about it (coordinator clock, unix ms).
    pub last_seen_ms: i64,
    pub status: Option<AgentStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The TaskManagers (resource ids) that run its subtasks, as of the last poll.
    #[serde(default)]
    pub taskmanagers: Vec<String>,
    /// Its `streamshield.*` keys, from its own configuration.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Its policy (job, then cluster, then coordinator).
    #[serde(default)]
    pub policy: Option<Resolved>,
}

impl JobView {
    /// RUNNING, with every vertex (hence every subtask) RUNNING.
    pub fn fully_running(&self) -> bool {
        self.state == "RUNNING" && self.vertices > 0 && self.vertices_running == self.vertices
    }

    /// Whether StreamShield acts for this job.
    pub fn failover(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.config.failover)
    }
}

/// A job's checkpoint statistics from Flink.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
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

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
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
    /// The cluster's `streamshield.*` keys (from `/jobmanager/config`).
    #[serde(default)]
    pub cluster_settings: BTreeMap<String, String>,
    /// The cluster's policy (cluster, then coordinator).
    #[serde(default)]
    pub cluster_policy: Option<Resolved>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evidence {
    pub ts_ms: i64,
    pub signal: String,
    pub detail: serde_json::Value,
}

/// What the coordinator decided (or, observe-only, would have done) about an incident.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub id: u64,
    pub ts_ms: i64,
    pub trigger: Trigger,
    pub resource_id: String,
    pub evidence: Vec<Evidence>,
    /// The action, in words.
    pub action: String,
    pub mode: Mode,
    /// The policy it followed (which jobs' settings, from where).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<TmPolicy>,
    /// The fencing token the order carried (the coordinator's epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
    /// The order sent, or (observe-only) the one that would have been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The agent's answer (outcome, detail, took_ms), or the outcome of the coordinator's own action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
    /// Ms from the incident's start until Flink ran every vertex of a job again (Flink's RUNNING timestamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<i64>,
    /// When the incident began (agent's time of the first non-alive report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_ms: Option<i64>,
}

impl Decision {
    /// The order's action, if it was one of the agents' actions.
    pub fn order(&self) -> Option<Action> {
        self.command
            .as_deref()
            .and_then(|c| serde_json::from_value(serde_json::Value::String(c.to_string())).ok())
    }
}

/// Upper bounds (seconds) of the recovery histogram.
pub const RECOVERY_BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0];

/// Recovery times the coordinator observed itself (incident → job RUNNING again), as the Prometheus histogram it
/// exports.
#[derive(Debug, Clone)]
pub struct RecoveryHistogram(pub crate::metrics::Histogram);

impl Default for RecoveryHistogram {
    fn default() -> Self {
        RecoveryHistogram(crate::metrics::Histogram::new(
            "streamshield_failover_recovery_seconds",
            "From the incident of an acted decision until Flink ran every vertex of a job again (Flink's RUNNING timestamp).",
            &RECOVERY_BUCKETS,
        ))
    }
}

impl RecoveryHistogram {
    pub fn observe(&mut self, seconds: f64) {
        self.0.observe(seconds);
    }
}
