//! The policy's settings and where each comes from. Every key exists at up to four levels, most specific first: on
//! Kubernetes the FlinkDeployment's `streamshield.io/<key>` annotations, a job's
//! own configuration (`streamshield.<key>` as Flink's REST API shows it for that job), the Flink cluster's
//! configuration (`streamshield.<key>` in config.yaml, from `/jobmanager/config`), and the coordinator's own
//! configuration (`<key>`), whose defaults are written once, in [`KEYS`] and [`PolicyConfig::default`]. The same keys
//! become `streamshield.io/<key>` annotations on Kubernetes. docs/configuration.md has the table.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::conf::parse_duration;

/// The prefix of the keys in Flink configurations.
pub const PREFIX: &str = "streamshield.";

/// One policy key: its name (without the prefix), its default as text, and what it does.
pub struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every policy key, with its default: the one place they are written.
pub const KEYS: [Key; 6] = [
    Key {
        name: "failover",
        default: "false",
        doc: "act on failures (fence, restart in place, isolate, recovery and planned-stop checkpoints); false: observe only, every decision is recorded with what would have been done",
    },
    Key {
        name: "hang-tolerance",
        default: "1 s",
        doc: "a TaskManager stopped or hung (no heartbeat and no CPU time) this long after its last heartbeat is fenced",
    },
    Key {
        name: "gc-tolerance",
        default: "30 s",
        doc: "a TaskManager busy without heartbeats (garbage collection) is fenced only after this long; must be longer than hang-tolerance",
    },
    Key {
        name: "refill-max-wait",
        default: "30 s",
        doc: "a dead TaskManager is restarted in place once its jobs run again elsewhere (or at once when no spare slots can take them), at the latest after this long",
    },
    Key {
        name: "recovery-checkpoint",
        default: "true",
        doc: "with failover, checkpoint a restarted job as soon as every subtask runs again (exactly-once output becomes visible then)",
    },
    Key {
        name: "planned-stop",
        default: "true",
        doc: "with failover, checkpoint the running jobs before a TaskManager's held SIGTERM goes on",
    },
];

/// The policy's settings at one level, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub failover: bool,
    #[serde(with = "ms")]
    pub hang_tolerance: Duration,
    #[serde(with = "ms")]
    pub gc_tolerance: Duration,
    #[serde(with = "ms")]
    pub refill_max_wait: Duration,
    pub recovery_checkpoint: bool,
    pub planned_stop: bool,
}

mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

fn default_of(name: &str) -> &'static str {
    KEYS.iter()
        .find(|k| k.name == name)
        .map(|k| k.default)
        .expect("every policy key has a default")
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let b = |n: &str| default_of(n) == "true";
        let d = |n: &str| parse_duration(default_of(n)).expect("the defaults parse");
        PolicyConfig {
            failover: b("failover"),
            hang_tolerance: d("hang-tolerance"),
            gc_tolerance: d("gc-tolerance"),
            refill_max_wait: d("refill-max-wait"),
            recovery_checkpoint: b("recovery-checkpoint"),
            planned_stop: b("planned-stop"),
        }
    }
}

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The FlinkDeployment's `streamshield.io/<key>` annotations (Kubernetes; read live).
    Annotation,
    /// The job's own configuration.
    Job,
    /// The Flink cluster's configuration.
    Cluster,
    /// The coordinator's configuration (or its default).
    Coordinator,
}

impl Source {
    /// In words, for decisions.
    pub fn text(self) -> &'static str {
        match self {
            Source::Annotation => "FlinkDeployment annotation",
            Source::Job => "job configuration",
            Source::Cluster => "cluster configuration",
            Source::Coordinator => "coordinator default",
        }
    }
}

/// A key whose value could not be used (it is ignored; the next level's value applies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProblem {
    pub key: String,
    pub value: String,
    pub problem: String,
    pub level: Source,
}

/// A job's (or the cluster's) policy with the source of each setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    pub config: PolicyConfig,
    /// Source of each key, by name.
    pub sources: BTreeMap<String, Source>,
    /// Keys that were ignored, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<KeyProblem>,
}

impl Resolved {
    /// Where `failover` came from.
    pub fn failover_source(&self) -> Source {
        self.sources
            .get("failover")
            .copied()
            .unwrap_or(Source::Coordinator)
    }

    /// "failover on (job configuration)" and the like, for decisions.
    pub fn describe(&self) -> String {
        let from = self.failover_source().text();
        format!(
            "failover {} ({from} streamshield.failover), hang tolerance {} ms, GC tolerance {} ms",
            if self.config.failover {
                "on"
            } else {
                "off: observe-only"
            },
            self.config.hang_tolerance.as_millis(),
            self.config.gc_tolerance.as_millis()
        )
    }
}

/// Resolves the policy from `levels`, most specific first (each a map of flat Flink keys, e.g. a job's configuration
/// and the cluster's), over `base` (the coordinator's). A value that does not parse, or a combination that does not
/// hold (hang tolerance not shorter than the GC tolerance), is ignored and reported; an unknown `streamshield.*` key
/// is reported (a typo would otherwise silently keep the default).
pub fn resolve(levels: &[(Source, &BTreeMap<String, String>)], base: &PolicyConfig) -> Resolved {
    let mut config = base.clone();
    let mut sources: BTreeMap<String, Source> = KEYS
        .iter()
        .map(|k| (k.name.to_string(), Source::Coordinator))
        .collect();
    let mut problems = Vec::new();
    // Least specific first, so that a more specific level overrides.
    for (level, map) in levels.iter().rev() {
        for (full, value) in map.iter() {
            let Some(name) = full.strip_prefix(PREFIX) else {
                continue;
            };
            let problem = |p: String| KeyProblem {
                key: full.clone(),
                value: value.clone(),
                problem: p,
                level: *level,
            };
            let applied = match name {
                "failover" => parse_bool(value).map(|v| config.failover = v),
                "hang-tolerance" => parse_duration(value).map(|v| config.hang_tolerance = v),
                "gc-tolerance" => parse_duration(value).map(|v| config.gc_tolerance = v),
                "refill-max-wait" => parse_duration(value).map(|v| config.refill_max_wait = v),
                "recovery-checkpoint" => parse_bool(value).map(|v| config.recovery_checkpoint = v),
                "planned-stop" => parse_bool(value).map(|v| config.planned_stop = v),
                // Keys of StreamShield's other parts live under the same prefix but are not policy.
                n if n.starts_with("jobmanager.") => continue,
                _ => {
                    problems.push(problem(format!(
                        "not a StreamShield policy key (known: {})",
                        KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                    )));
                    continue;
                }
            };
            match applied {
                Ok(()) => {
                    sources.insert(name.to_string(), *level);
                }
                Err(e) => problems.push(problem(e)),
            }
        }
    }
    if config.hang_tolerance >= config.gc_tolerance {
        problems.push(KeyProblem {
            key: format!("{PREFIX}hang-tolerance"),
            value: format!("{} ms", config.hang_tolerance.as_millis()),
            problem: format!(
                "must be shorter than the GC tolerance ({} ms); using {} ms and {} ms",
                config.gc_tolerance.as_millis(),
                base.hang_tolerance.as_millis(),
                base.gc_tolerance.as_millis()
            ),
            level: sources["hang-tolerance"],
        });
        config.hang_tolerance = base.hang_tolerance;
        config.gc_tolerance = base.gc_tolerance;
        sources.insert("hang-tolerance".into(), Source::Coordinator);
        sources.insert("gc-tolerance".into(), Source::Coordinator);
    }
    Resolved {
        config,
        sources,
        problems,
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_table() {
        let d = PolicyConfig::default();
        assert!(!d.failover);
        assert_eq!(d.hang_tolerance, Duration::from_secs(1));
        assert_eq!(d.gc_tolerance, Duration::from_secs(30));
        assert!(d.recovery_checkpoint && d.planned_stop);
    }

    #[test]
    fn the_job_wins_over_the_cluster_over_the_coordinator() {
        let base = PolicyConfig::default();
        let cluster = map(&[
            ("streamshield.failover", "true"),
            ("streamshield.hang-tolerance", "2 s"),
        ]);
        let job = map(&[("streamshield.failover", "false"), ("other.key", "x")]);
        let r = resolve(&[(Source::Job, &job), (Source::Cluster, &cluster)], &base);
        assert!(!r.config.failover);
        assert_eq!(r.failover_source(), Source::Job);
        assert_eq!(r.config.hang_tolerance, Duration::from_secs(2));
        assert_eq!(r.sources["hang-tolerance"], Source::Cluster);
        assert_eq!(r.sources["gc-tolerance"], Source::Coordinator);
        assert!(r.problems.is_empty());
        assert!(
            r.describe().contains("observe-only (job configuration"),
            "{}",
            r.describe()
        );
        let r = resolve(
            &[(Source::Job, &map(&[])), (Source::Cluster, &cluster)],
            &base,
        );
        assert!(r.config.failover);
        assert_eq!(r.failover_source(), Source::Cluster);
    }

    #[test]
    fn bad_values_and_unknown_keys_are_ignored_and_said() {
        let base = PolicyConfig::default();
        let job = map(&[
            ("streamshield.failover", "yes"),
            ("streamshield.hang-tolerance", "soon"),
            ("streamshield.failovr", "true"),
        ]);
        let r = resolve(&[(Source::Job, &job)], &base);
        assert_eq!(r.config, base);
        let keys: Vec<&str> = r.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys.len(), 3, "{:?}", r.problems);
        assert!(r
            .problems
            .iter()
            .any(|p| p.problem.contains("not true or false")));
        assert!(r
            .problems
            .iter()
            .any(|p| p.problem.contains("not a StreamShield policy key")));
        let inverted = map(&[("streamshield.hang-tolerance", "40 s")]);
        let r = resolve(&[(Source::Job, &inverted)], &base);
        assert_eq!(r.config.hang_tolerance, base.hang_tolerance);
        assert!(r.problems[0]
            .problem
            .contains("shorter than the GC tolerance"));
    }
}
