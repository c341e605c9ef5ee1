//! The typed vocabulary both daemons speak: liveness states, command actions and outcomes, event kinds and the
//! planned-stop outcomes. On the wire each is its kebab-case name (`busy-gc`, `stop-ready`), exactly as in
//! docs/protocol.md; in the code it is an enum, so no part matches strings.

use serde::{Deserialize, Serialize};

/// What an agent knows of a watched process (docs/architecture.md, "Liveness").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Liveness {
    /// No plugin has connected yet (or the process was just restarted).
    Unknown,
    /// A heartbeat arrived within the suspect time.
    Alive,
    /// No heartbeat, and the kernel reports the process stopped (SIGSTOP, a frozen cgroup).
    Paused,
    /// No heartbeat and no CPU progress (deadlock, stuck I/O, a frozen VM).
    Hung,
    /// No heartbeat, CPU advancing: a stop-the-world collection, a JIT storm.
    BusyGc,
    /// The plugin's socket was closed by the process's end, or the process is gone, a zombie or exiting.
    Dead,
}

impl Liveness {
    pub const ALL: [Liveness; 6] = [
        Liveness::Unknown,
        Liveness::Alive,
        Liveness::Paused,
        Liveness::Hung,
        Liveness::BusyGc,
        Liveness::Dead,
    ];

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Liveness::Unknown => "unknown",
            Liveness::Alive => "alive",
            Liveness::Paused => "paused",
            Liveness::Hung => "hung",
            Liveness::BusyGc => "busy-gc",
            Liveness::Dead => "dead",
        }
    }

    /// Silent without being dead: paused, hung or busy-gc (timed from the last heartbeat).
    pub fn is_silent(&self) -> bool {
        matches!(self, Liveness::Paused | Liveness::Hung | Liveness::BusyGc)
    }

    /// Something is wrong with the process: silent or dead.
    pub fn is_trouble(&self) -> bool {
        self.is_silent() || *self == Liveness::Dead
    }
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order from the coordinator to an agent (AGENT_COMMAND `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// SIGKILL the watched process (only the pid meant, with its recorded start time).
    Fence,
    /// Start the watched process again the way it was started (only if it no longer runs).
    Restart,
    /// Reject, with TCP resets, every connection to an address (sent to the JobManager's agent).
    Isolate,
    /// Lift an isolation.
    Unisolate,
    /// Release a planned stop the plugin holds.
    StopReady,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Fence => "fence",
            Action::Restart => "restart",
            Action::Isolate => "isolate",
            Action::Unisolate => "unisolate",
            Action::StopReady => "stop-ready",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a command (the agent's answer, an AGENT_EVENT of kind `command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandOutcome {
    Done,
    Refused,
    Failed,
}

impl CommandOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandOutcome::Done => "done",
            CommandOutcome::Refused => "refused",
            CommandOutcome::Failed => "failed",
        }
    }
}

/// What a plugin holding a planned stop is told (STOP_READY `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopOutcome {
    /// Every running job completed a checkpoint.
    Checkpointed,
    /// A checkpoint did not complete (or not in time).
    Failed,
    /// Nothing was done: observe-only, no coordinator, no running job.
    Skipped,
}

impl StopOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            StopOutcome::Checkpointed => "checkpointed",
            StopOutcome::Failed => "failed",
            StopOutcome::Skipped => "skipped",
        }
    }
}

/// The kinds of AGENT_EVENT. A kind this build does not know decodes as [`EventKind::Unknown`]: recorded, never
/// acted on (compatibility rule 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A liveness transition ([`LivenessChange`]).
    Liveness,
    /// Flink reported a failure (the JobManager plugin's FAILURE).
    Failure,
    /// A trace span from Flink.
    Span,
    /// A plugin completed its handshake: a process is watched ([`Attached`]).
    PluginConnected,
    /// A plugin connection ended.
    PluginDisconnected,
    /// A plugin refused at the handshake (not a JVM, a pid that is not the connecting process, a duplicate id).
    PluginRefused,
    /// A TaskManager's plugin holds a stop ([`PlannedStop`]).
    PlannedStop,
    /// The answer to a command ([`CommandResult`]).
    Command,
    /// A TaskManager cut off from the coordinator and the JobManager was fenced by its own agent.
    SelfFenced,
    /// A process dead for long and not restarted is no longer watched.
    ProcessForgotten,
    /// A watchdog's target changed state ([`super::watchdog::WatchdogChange`]).
    Watchdog,
    #[serde(other)]
    Unknown,
}

impl EventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Liveness => "liveness",
            EventKind::Failure => "failure",
            EventKind::Span => "span",
            EventKind::PluginConnected => "plugin-connected",
            EventKind::PluginDisconnected => "plugin-disconnected",
            EventKind::PluginRefused => "plugin-refused",
            EventKind::PlannedStop => "planned-stop",
            EventKind::Command => "command",
            EventKind::SelfFenced => "self-fenced",
            EventKind::ProcessForgotten => "process-forgotten",
            EventKind::Watchdog => "watchdog",
            EventKind::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The detail of a `liveness` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivenessChange {
    pub from: Liveness,
    pub to: Liveness,
    #[serde(default)]
    pub pid: Option<u32>,
    /// When the new state began (wall ms): for a silence, the last heartbeat. Older agents omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The detail of a `plugin-connected` event: a process the agent now watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attached {
    pub pid: u32,
    pub role: super::Role,
    #[serde(default)]
    pub flink_version: String,
    /// The agent can start it again the way it was started (its command line was recorded).
    #[serde(default)]
    pub restartable: bool,
}

/// The detail of a `planned-stop` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStop {
    pub pid: u32,
    pub signal: String,
    pub max_wait_ms: u64,
    #[serde(default)]
    pub plugin_ts_ms: i64,
}

/// The detail of a `command` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: u64,
    pub epoch: u64,
    pub action: Action,
    pub outcome: CommandOutcome,
    pub detail: String,
    pub took_ms: i64,
    pub ordered_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_the_documented_ones() {
        for l in Liveness::ALL {
            assert_eq!(serde_json::to_value(l).unwrap(), l.as_str());
            assert_eq!(
                serde_json::from_value::<Liveness>(l.as_str().into()).unwrap(),
                l
            );
        }
        for a in [
            Action::Fence,
            Action::Restart,
            Action::Isolate,
            Action::Unisolate,
            Action::StopReady,
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        assert_eq!(
            serde_json::to_value(StopOutcome::Checkpointed).unwrap(),
            "checkpointed"
        );
        assert_eq!(
            serde_json::to_value(EventKind::SelfFenced).unwrap(),
            "self-fenced"
        );
        assert!(serde_json::from_value::<Liveness>("sleepy".into()).is_err());
    }

    #[test]
    fn an_event_kind_from_a_newer_agent_is_unknown_not_an_error() {
        let k: EventKind = serde_json::from_value("watchdog-state".into()).unwrap();
        assert_eq!(k, EventKind::Unknown);
    }
}
