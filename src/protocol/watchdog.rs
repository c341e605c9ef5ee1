//! The watchdogs' vocabulary on the wire (issue 17): what kind of system a target is, its state, and the
//! `watchdog` event an agent sends the coordinator on every transition. Kebab-case names, as in docs/protocol.md.

use serde::{Deserialize, Serialize};

/// The kind of system a watchdog probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Kafka,
    Redis,
    Http,
    Zookeeper,
    #[serde(other)]
    Unknown,
}

impl TargetKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::Kafka => "kafka",
            TargetKind::Redis => "redis",
            TargetKind::Http => "http",
            TargetKind::Zookeeper => "zookeeper",
            TargetKind::Unknown => "unknown",
        }
    }
}

/// A target's state as its watchdog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetState {
    /// Not probed yet.
    Unknown,
    /// Every probe of the last ones answered in time, every member up.
    Healthy,
    /// It answers, but not fully: a member (broker, server) down or hung, partitions without a leader, answers
    /// slower than the budget, or the first failed probe of a run that may end in `down`.
    Degraded,
    /// No usable answer for `watchdog-down-after` probes in a row.
    Down,
}

impl TargetState {
    pub const ALL: [TargetState; 4] = [
        TargetState::Unknown,
        TargetState::Healthy,
        TargetState::Degraded,
        TargetState::Down,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            TargetState::Unknown => "unknown",
            TargetState::Healthy => "healthy",
            TargetState::Degraded => "degraded",
            TargetState::Down => "down",
        }
    }
}

impl std::fmt::Display for TargetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of a target (a Kafka broker, a ZooKeeper server) as the last probe found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port`, with the broker id for Kafka (`1@127.0.0.1:9092`).
    pub name: String,
    pub up: bool,
    /// What the probe saw: `answered in 3 ms`, `hung: connected, no answer within 1s`, `connection refused`.
    pub evidence: String,
}

/// The detail of a `watchdog` event: a target changed state. The event's `resource_id` is empty (a target
/// belongs to the agent, not to one process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchdogChange {
    /// The target's name (configured, or its URL without credentials).
    pub target: String,
    pub kind: TargetKind,
    pub from: TargetState,
    pub to: TargetState,
    /// Why, in words: the last probe's result.
    pub evidence: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// When the new state began (wall ms).
    pub since_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_the_documented_ones() {
        for s in TargetState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for k in [
            TargetKind::Kafka,
            TargetKind::Redis,
            TargetKind::Http,
            TargetKind::Zookeeper,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(
            serde_json::from_value::<TargetKind>("cassandra".into()).unwrap(),
            TargetKind::Unknown
        );
    }
}
