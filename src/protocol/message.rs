//! The message kinds (docs/protocol.md) and their JSON payloads.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::frame::Frame;
use super::vocab::{Action, EventKind, Liveness, StopOutcome};

/// Frame kinds. Numbers are part of the protocol: never reuse one.
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const REJECT: u8 = 3;
    pub const HEARTBEAT: u8 = 10;
    pub const METRICS: u8 = 11;
    pub const SPAN: u8 = 12;
    pub const FAILURE: u8 = 13;
    pub const STOPPING: u8 = 14;
    pub const STOP_READY: u8 = 15;
    pub const AGENT_STATUS: u8 = 20;
    pub const AGENT_EVENT: u8 = 21;
    pub const AGENT_COMMAND: u8 = 22;
}

/// Who is connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A TaskManager's plugin.
    Tm,
    /// A JobManager's plugin.
    Jm,
    /// An agent, towards the coordinator.
    Agent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub role: Role,
    pub resource_id: String,
    pub pid: u32,
    #[serde(default)]
    pub flink_version: String,
    /// Required on TCP and towards the coordinator; never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
    pub server: String,
    pub heartbeat_interval_ms: u64,
    /// A coordinator's epoch (its fencing token): an agent that has seen a newer one refuses this coordinator (a
    /// deposed leader) before any order. Absent from plugins' sockets and from coordinators before 2026-12-07.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u64,
    pub ts_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsBatch {
    pub ts_ms: i64,
    /// Messages the plugin dropped (queue full) since it started.
    #[serde(default)]
    pub dropped: u64,
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub scope: String,
    pub name: String,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Flink 2.x spans may have child spans (per task, per subtask), sent inside their parent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Span>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub ts_ms: i64,
    #[serde(default)]
    pub job_id: String,
    #[serde(default)]
    pub job_name: String,
    /// TASK, GLOBAL or TASK_MANAGER (Flink's FailureEnricher.Context.FailureType).
    pub failure_type: String,
    pub exception: String,
    #[serde(default)]
    pub message: String,
}

/// The process was asked to stop (plugin → agent): its plugin holds the stop until the agent answers with
/// STOP_READY or `max_wait_ms` passed, so that the coordinator can complete a checkpoint first (a planned stop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stopping {
    /// What asked it to stop (`SIGTERM`).
    pub signal: String,
    pub ts_ms: i64,
    /// How long the plugin holds the stop at most.
    pub max_wait_ms: u64,
}

/// The answer to STOPPING (agent → plugin): the process may stop now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopReady {
    pub outcome: StopOutcome,
    #[serde(default)]
    pub detail: String,
}

/// An agent's view of its process, sent to the coordinator every status interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub resource_id: String,
    /// `tm` or `jm`: what the agent watches.
    pub watches: Role,
    pub pid: Option<u32>,
    pub liveness: Liveness,
    /// When the current liveness began (unix ms).
    pub since_ms: i64,
    /// When the plugin's last heartbeat arrived (unix ms).
    pub last_heartbeat_ms: Option<i64>,
    pub plugin_connected: bool,
    /// Where the agent serves /metrics.
    #[serde(default)]
    pub metrics_url: String,
    /// Agent clock when sent (unix ms).
    pub ts_ms: i64,
    /// Local TCP ports of the watched process (listening and connected): what the JobManager's agent rejects if this
    /// process is cut off (peers reach it through them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// The agent can start the process again the way it was started (restart in place); false when its agent only
    /// fences (configuration) or could not record how it was started.
    #[serde(default)]
    pub restartable: bool,
}

/// Something that happened at an agent, forwarded to the coordinator. `resource_id` names the process it is about
/// (for an agent watching several processes); `detail`'s shape depends on `kind` (the typed details are in
/// [`super::vocab`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentEvent {
    pub ts_ms: i64,
    pub resource_id: String,
    pub kind: EventKind,
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl AgentEvent {
    /// An event with a typed detail.
    pub fn new(ts_ms: i64, resource_id: &str, kind: EventKind, detail: impl Serialize) -> Self {
        AgentEvent {
            ts_ms,
            resource_id: resource_id.to_string(),
            kind,
            detail: serde_json::to_value(detail).unwrap_or_default(),
        }
    }

    /// The detail as its typed form; None when it does not have that shape.
    pub fn detail_as<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.detail.clone()).ok()
    }
}

/// An action the coordinator orders an agent to take (coordinator → agent). The agent refuses a command whose
/// fencing token (`epoch`) is lower than the highest it has seen, so a coordinator that was replaced can no longer act.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCommand {
    /// The coordinator's decision id (the agent's answer names it).
    pub id: u64,
    /// Fencing token: the coordinator's epoch (incremented at every coordinator start).
    pub epoch: u64,
    pub action: Action,
    /// The process the order is about (the agent that watches it carries it out).
    pub resource_id: String,
    /// The process the coordinator means: a fence never hits another one (e.g. an already restarted TaskManager).
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub reason: String,
    pub ts_ms: i64,
    /// `isolate`/`unisolate`: the `host:port` whose traffic the agent rejects (a partitioned TaskManager's RPC
    /// endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `isolate`: more ports of that host to reject (the TaskManager's other sockets: the JobManager's connections to
    /// it may run over a connection the TaskManager opened). On a non-loopback host the whole host is rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// `stop-ready`: what the plugin holding a planned stop is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<StopOutcome>,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Reject(Reject),
    Heartbeat(Heartbeat),
    Metrics(MetricsBatch),
    Span(Span),
    Failure(Failure),
    Stopping(Stopping),
    StopReady(StopReady),
    AgentStatus(AgentStatus),
    AgentEvent(AgentEvent),
    AgentCommand(AgentCommand),
}

#[derive(Debug, Error)]
pub enum MessageError {
    #[error("payload of kind {kind} is not valid: {source}")]
    Payload {
        kind: u8,
        #[source]
        source: serde_json::Error,
    },
}

impl Message {
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Welcome(_) => kind::WELCOME,
            Message::Reject(_) => kind::REJECT,
            Message::Heartbeat(_) => kind::HEARTBEAT,
            Message::Metrics(_) => kind::METRICS,
            Message::Span(_) => kind::SPAN,
            Message::Failure(_) => kind::FAILURE,
            Message::Stopping(_) => kind::STOPPING,
            Message::StopReady(_) => kind::STOP_READY,
            Message::AgentStatus(_) => kind::AGENT_STATUS,
            Message::AgentEvent(_) => kind::AGENT_EVENT,
            Message::AgentCommand(_) => kind::AGENT_COMMAND,
        }
    }

    pub fn to_frame(&self) -> Frame {
        let payload = match self {
            Message::Hello(m) => serde_json::to_vec(m),
            Message::Welcome(m) => serde_json::to_vec(m),
            Message::Reject(m) => serde_json::to_vec(m),
            Message::Heartbeat(m) => serde_json::to_vec(m),
            Message::Metrics(m) => serde_json::to_vec(m),
            Message::Span(m) => serde_json::to_vec(m),
            Message::Failure(m) => serde_json::to_vec(m),
            Message::Stopping(m) => serde_json::to_vec(m),
            Message::StopReady(m) => serde_json::to_vec(m),
            Message::AgentStatus(m) => serde_json::to_vec(m),
            Message::AgentEvent(m) => serde_json::to_vec(m),
            Message::AgentCommand(m) => serde_json::to_vec(m),
        }
        .expect("protocol messages always serialize");
        Frame {
            kind: self.kind(),
            payload: Bytes::from(payload),
        }
    }

    /// Decodes a frame; `Ok(None)` for a kind this build does not know (to be ignored, per the rules).
    pub fn from_frame(frame: &Frame) -> Result<Option<Message>, MessageError> {
        fn parse<T: serde::de::DeserializeOwned>(f: &Frame) -> Result<T, MessageError> {
            serde_json::from_slice(&f.payload).map_err(|source| MessageError::Payload {
                kind: f.kind,
                source,
            })
        }
        Ok(Some(match frame.kind {
            kind::HELLO => Message::Hello(parse(frame)?),
            kind::WELCOME => Message::Welcome(parse(frame)?),
            kind::REJECT => Message::Reject(parse(frame)?),
            kind::HEARTBEAT => Message::Heartbeat(parse(frame)?),
            kind::METRICS => Message::Metrics(parse(frame)?),
            kind::SPAN => Message::Span(parse(frame)?),
            kind::FAILURE => Message::Failure(parse(frame)?),
            kind::STOPPING => Message::Stopping(parse(frame)?),
            kind::STOP_READY => Message::StopReady(parse(frame)?),
            kind::AGENT_STATUS => Message::AgentStatus(parse(frame)?),
            kind::AGENT_EVENT => Message::AgentEvent(parse(frame)?),
            kind::AGENT_COMMAND => Message::AgentCommand(parse(frame)?),
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_and_fields_are_tolerated() {
        let f = Frame {
            kind: 200,
            payload: Bytes::from_static(b"whatever"),
        };
        assert_eq!(Message::from_frame(&f).unwrap(), None);
        let f = Frame {
            kind: kind::HEARTBEAT,
            payload: Bytes::from_static(br#"{"seq":3,"ts_ms":4,"added_later":true}"#),
        };
        assert_eq!(
            Message::from_frame(&f).unwrap(),
            Some(Message::Heartbeat(Heartbeat { seq: 3, ts_ms: 4 }))
        );
    }

    #[test]
    fn bad_payloads_are_errors() {
        let f = Frame {
            kind: kind::HELLO,
            payload: Bytes::from_static(b"\x00\x01not json"),
        };
        assert!(Message::from_frame(&f).is_err());
    }

    #[test]
    fn hello_without_secret_omits_the_field() {
        let m = Message::Hello(Hello {
            protocol: 1,
            role: Role::Tm,
            resource_id: "tm-1".into(),
            pid: 7,
            flink_version: "1.20.5".into(),
            secret: None,
        });
        let f = m.to_frame();
        assert!(!String::from_utf8_lossy(&f.payload).contains("secret"));
        assert_eq!(Message::from_frame(&f).unwrap(), Some(m));
    }
}
