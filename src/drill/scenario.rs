//! The drill's scenarios: what each injects, how it is healed, how long a round may take, what a recovered
//! round looks like, and what each needs of the cluster (job arguments, Flink settings). docs/drills.md describes
//! the same for users.

use std::path::Path;
use std::time::Duration;

/// The hang tolerance of the shield profile: its `streamshield.hang-tolerance` if it sets one, else the policy's
/// default (a TaskManager silent and stopped for longer is fenced). `tm-pause-short` pauses for half of it.
pub fn shield_hang_tolerance() -> Duration {
    crate::local::config::profile_keys("shield")
        .into_iter()
        .find(|(k, _)| k == "streamshield.hang-tolerance")
        .and_then(|(_, v)| crate::conf::parse_duration(&v).ok())
        .unwrap_or(crate::coordinator::policy::PolicyConfig::default().hang_tolerance)
}

/// How long `kafka-broker-outage` keeps the broker down.
pub const KAFKA_OUTAGE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    TmKill,
    TmHang,
    TmTerm,
    TmPartition,
    TmPauseShort,
    TmGcPause,
    JmKill,
    KafkaBrokerOutage,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::TmKill,
        Scenario::TmHang,
        Scenario::TmTerm,
        Scenario::TmPartition,
        Scenario::TmPauseShort,
        Scenario::TmGcPause,
        Scenario::JmKill,
        Scenario::KafkaBrokerOutage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::TmKill => "tm-kill",
            Scenario::TmHang => "tm-hang",
            Scenario::TmTerm => "tm-term",
            Scenario::TmPartition => "tm-partition",
            Scenario::TmPauseShort => "tm-pause-short",
            Scenario::TmGcPause => "tm-gc-pause",
            Scenario::JmKill => "jm-kill",
            Scenario::KafkaBrokerOutage => "kafka-broker-outage",
        }
    }

    pub fn parse(s: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .iter()
            .copied()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {s:?}; known: {}",
                    Scenario::ALL.map(|x| x.name()).join(", ")
                )
            })
    }

    /// What the scenario does, in one sentence (also in the report).
    pub fn description(self) -> String {
        match self {
            Scenario::TmKill => {
                "kill -9 of a TaskManager that runs subtasks of the job; it is not restarted".into()
            }
            Scenario::TmHang => "SIGSTOP of a TaskManager that runs subtasks of the job; SIGCONT only after the round".into(),
            Scenario::TmTerm => "SIGTERM (planned stop) of a TaskManager that runs subtasks of the job".into(),
            Scenario::TmPartition => "the network of a TaskManager that runs subtasks of the job is cut (its own cgroup; iptables drops every packet its sockets send or receive) until the end of the round".into(),
            Scenario::TmPauseShort => format!(
                "SIGSTOP of a TaskManager that runs subtasks for {} ms (half the shield profile's hang tolerance), then SIGCONT; not a failure",
                shield_hang_tolerance().as_millis() / 2
            ),
            Scenario::TmGcPause => "a real stop-the-world full GC of at least 10 s in a TaskManager that runs subtasks (serial collector, a large randomly linked live heap, GC.run sent over the JVM's attach socket); not a failure".into(),
            Scenario::JmKill => "kill -9 of the JobManager, then it is started again at once (with whatever high availability the profile configures)".into(),
            Scenario::KafkaBrokerOutage => format!(
                "kill -9 of the (only) Kafka broker, started again on its data after {} s",
                KAFKA_OUTAGE.as_secs()
            ),
        }
    }

    /// A failure scenario must be recovered from; the others (pauses) must be ridden out without failover.
    pub fn is_failure(self) -> bool {
        !matches!(self, Scenario::TmPauseShort | Scenario::TmGcPause)
    }

    /// How long after the injection a round may take to recover before it counts as failed.
    pub fn deadline(self) -> Duration {
        Duration::from_secs(match self {
            Scenario::TmKill | Scenario::TmTerm => 90,
            Scenario::TmHang | Scenario::TmPartition => 150,
            Scenario::TmPauseShort => 60,
            Scenario::TmGcPause => 120,
            Scenario::JmKill => 60,
            Scenario::KafkaBrokerOutage => 150,
        })
    }

    /// Whether the fault targets one TaskManager running subtasks.
    pub fn targets_taskmanager(self) -> bool {
        !matches!(self, Scenario::JmKill | Scenario::KafkaBrokerOutage)
    }

    /// Arguments the scenario adds to the job's: for `tm-gc-pause`, the ballast to build.
    pub(super) fn job_args(self, ballast_mb: u32) -> Vec<String> {
        match self {
            Scenario::TmGcPause => vec!["--gc-ballast-mb".into(), ballast_mb.to_string()],
            _ => vec![],
        }
    }

    /// Flink settings a scenario needs in every arm: for `tm-gc-pause`, TaskManagers large enough for the ballast,
    /// the serial collector (a full collection is one long stop-the-world pause), a small young generation
    /// (building the ballast then costs young pauses of < 100 ms instead of multi-second ones that would fail over
    /// the tuned arm before the fault) and a GC log per TaskManager in the round's run directory `dir`.
    pub(super) fn flink_overrides(self, dir: &Path) -> Vec<(String, String)> {
        match self {
            Scenario::TmGcPause => vec![
                ("taskmanager.memory.process.size".into(), "3g".into()),
                (
                    "env.java.opts.taskmanager".into(),
                    format!(
                        "-XX:+UseSerialGC -Xmn64m -Xlog:gc:file={}/logs/gc-%p.log:timemillis,uptime",
                        dir.display()
                    ),
                ),
            ],
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_pause_is_half_the_shield_profiles_hang_tolerance() {
        assert_eq!(shield_hang_tolerance(), Duration::from_secs(1));
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()), Ok(s));
            assert!(!s.description().is_empty());
        }
        let e = Scenario::parse("tm-explode").unwrap_err();
        assert!(
            e.contains("tm-kill") && e.contains("kafka-broker-outage"),
            "{e}"
        );
        assert!(!Scenario::TmGcPause.is_failure() && Scenario::TmKill.is_failure());
    }
}
