//! The coordinator's configuration: `streamshield coordinator --config FILE` (YAML), every key also a flag
//! (`--flink-rest`) and an environment variable (`STREAMSHIELD_COORDINATOR_FLINK_REST`). The policy keys set the
//! coordinator's level of the policy (under the cluster's and each job's `streamshield.*` keys); their defaults are
//! in [`super::policy::keys::KEYS`], the others in [`CoordinatorConfig::resolve`]. docs/configuration.md lists every
//! key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::policy::PolicyConfig;
use crate::conf::{self, at_least, invalid, required, Overlay};

pub const DEFAULT_AGENTS_LISTEN: &str = "127.0.0.1:9250";
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:9251";
pub const DEFAULT_FLINK_REST: &str = "http://127.0.0.1:8081";

/// Every key of the coordinator's configuration, optional here.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CoordinatorConfig {
    /// Where agents connect (host:port) [default: 127.0.0.1:9250].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_AGENTS_LISTEN")]
    pub agents_listen: Option<String>,
    /// Where the HTTP API listens [default: 127.0.0.1:9251].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_API_LISTEN")]
    #[serde(default, with = "conf::from_str")]
    pub api_listen: Option<SocketAddr>,
    /// The token agents must present (a file; created 0600 when missing).
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// The API's bearer token (a file; created 0600 when missing).
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Flink's REST endpoint [default: http://127.0.0.1:8081].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_FLINK_REST")]
    pub flink_rest: Option<String>,
    /// How often Flink's REST API is polled [default: 1s].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_POLL_INTERVAL", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub poll_interval: Option<Duration>,
    /// Where the epoch (the fencing token of every order) is kept; each start takes the next one. Without it every
    /// start is epoch 1, and a replaced coordinator's orders are not refused: set it in production.
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_EPOCH_FILE")]
    pub epoch_file: Option<PathBuf>,
    /// Write the bound addresses and the pid here (JSON) once serving.
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_INFO_FILE")]
    pub info_file: Option<PathBuf>,
    /// Policy: act on failures (false: observe only) [default: false; the cluster's and each job's
    /// streamshield.failover come first].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_FAILOVER")]
    pub failover: Option<bool>,
    /// Policy: a stopped or hung TaskManager is fenced this long after its last heartbeat [default: 1 s].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_HANG_TOLERANCE", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub hang_tolerance: Option<Duration>,
    /// Policy: a TaskManager busy without heartbeats (GC) is fenced after this long [default: 30 s].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_GC_TOLERANCE", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub gc_tolerance: Option<Duration>,
    /// Policy: a dead TaskManager is restarted in place at the latest after this long [default: 30 s].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_REFILL_MAX_WAIT", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub refill_max_wait: Option<Duration>,
    /// Policy: with failover, checkpoint a restarted job as soon as it runs fully again [default: true].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_RECOVERY_CHECKPOINT")]
    pub recovery_checkpoint: Option<bool>,
    /// Policy: with failover, checkpoint running jobs before a held SIGTERM goes on [default: true].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_PLANNED_STOP")]
    pub planned_stop: Option<bool>,
    /// Watch Kubernetes (the cluster's pods, their nodes and events, its FlinkDeployment) through the API server of
    /// $KUBECONFIG or the pod's service account [default: false].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_KUBERNETES")]
    pub kubernetes: Option<bool>,
    /// The Flink cluster's namespace [default: the coordinator pod's own namespace].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_KUBERNETES_NAMESPACE")]
    pub kubernetes_namespace: Option<String>,
    /// The FlinkDeployment's name (Flink's kubernetes.cluster-id, the pods' `app` label); required with kubernetes.
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_KUBERNETES_CLUSTER_ID")]
    pub kubernetes_cluster_id: Option<String>,
    /// Fence a TaskManager whose agent is unreachable by deleting its pod with no grace period [default: true].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_KUBERNETES_FENCE_DELETE")]
    pub kubernetes_fence_delete: Option<bool>,
    /// Taint keys that announce a node's termination (comma-separated; a drain's cordon always counts)
    /// [default: the cluster autoscaler's, Karpenter's, the AWS termination handler's and GKE's notices].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_KUBERNETES_DRAIN_TAINTS")]
    pub kubernetes_drain_taints: Option<String>,
    /// High availability: coordinators elect a leader through a coordination.k8s.io Lease in the kubernetes
    /// namespace, whose transitions are the epoch (needs kubernetes; excludes epoch-file) [default: false].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_HA_LEASE")]
    pub ha_lease: Option<bool>,
    /// The Lease's name [default: streamshield-coordinator-<kubernetes-cluster-id>].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_HA_LEASE_NAME")]
    pub ha_lease_name: Option<String>,
    /// This coordinator's identity in the election [default: $POD_NAME, else the host name].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_HA_IDENTITY")]
    pub ha_identity: Option<String>,
    /// How long a silent leader keeps the Lease (whole seconds, at least 1 s) [default: 3 s].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_HA_LEASE_DURATION", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub ha_lease_duration: Option<Duration>,
    /// How often the leader renews and followers look (at least 100 ms, under a third of the duration)
    /// [default: 500 ms].
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_HA_RETRY_PERIOD", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub ha_retry_period: Option<Duration>,
}

crate::overlay!(CoordinatorConfig {
    agents_listen,
    api_listen,
    agent_token_file,
    api_token_file,
    flink_rest,
    poll_interval,
    epoch_file,
    info_file,
    failover,
    hang_tolerance,
    gc_tolerance,
    refill_max_wait,
    recovery_checkpoint,
    planned_stop,
    kubernetes,
    kubernetes_namespace,
    kubernetes_cluster_id,
    kubernetes_fence_delete,
    kubernetes_drain_taints,
    ha_lease,
    ha_lease_name,
    ha_identity,
    ha_lease_duration,
    ha_retry_period,
});

pub const DEFAULT_HA_LEASE_DURATION: Duration = Duration::from_secs(3);
pub const DEFAULT_HA_RETRY_PERIOD: Duration = Duration::from_millis(500);

/// Taint keys (or key prefixes, ending in `/`) that announce a node's termination: the cluster autoscaler's
/// scale-down, Karpenter's disruption, the AWS node termination handler's notices, GKE's preemption notice.
pub const DEFAULT_DRAIN_TAINTS: &str = "ToBeDeletedByClusterAutoscaler,karpenter.sh/disrupted,aws-node-termination-handler/,cloud.google.com/impending-node-termination";
/// Where a pod's service account says which namespace it runs in.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// What the coordinator watches on Kubernetes.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeSettings {
    pub namespace: String,
    pub cluster_id: String,
    pub fence_by_delete: bool,
    pub drain_taints: Vec<String>,
}

/// The coordinator's settings, resolved and validated.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    pub agents_listen: String,
    pub api_listen: SocketAddr,
    pub agent_token_file: PathBuf,
    pub api_token_file: PathBuf,
    pub flink_rest: String,
    pub poll_interval: Duration,
    pub epoch_file: Option<PathBuf>,
    pub info_file: Option<PathBuf>,
    /// The coordinator's level of the policy.
    pub policy: PolicyConfig,
    /// Watch Kubernetes (none: off).
    pub kubernetes: Option<KubeSettings>,
    /// Elect a leader through a Lease (none: this coordinator leads alone).
    pub ha: Option<super::lease::LeaseSettings>,
}

impl CoordinatorConfig {
    /// Reads `file` (if any), lays the command line over it and resolves the result.
    pub fn load(file: Option<&Path>, cli: CoordinatorConfig) -> conf::Result<CoordinatorSettings> {
        let from_file: CoordinatorConfig = conf::load(file)?;
        from_file.overlay(cli).resolve(file)
    }

    /// Fills in the defaults and validates. `file` is named in errors.
    pub fn resolve(self, file: Option<&Path>) -> conf::Result<CoordinatorSettings> {
        let flink_rest = self.flink_rest.unwrap_or_else(|| DEFAULT_FLINK_REST.into());
        if !flink_rest.starts_with("http://") && !flink_rest.starts_with("https://") {
            return Err(invalid(
                "flink-rest",
                format!("must be an http(s) URL, got {flink_rest:?}"),
                file,
            ));
        }
        let agents_listen = self
            .agents_listen
            .unwrap_or_else(|| DEFAULT_AGENTS_LISTEN.into());
        if agents_listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(invalid(
                "agents-listen",
                format!("must be host:port, got {agents_listen:?}"),
                file,
            ));
        }
        let d = PolicyConfig::default();
        let policy = PolicyConfig {
            failover: self.failover.unwrap_or(d.failover),
            hang_tolerance: at_least(
                self.hang_tolerance.unwrap_or(d.hang_tolerance),
                Duration::from_millis(100),
                "hang-tolerance",
                file,
            )?,
            gc_tolerance: self.gc_tolerance.unwrap_or(d.gc_tolerance),
            refill_max_wait: self.refill_max_wait.unwrap_or(d.refill_max_wait),
            recovery_checkpoint: self.recovery_checkpoint.unwrap_or(d.recovery_checkpoint),
            planned_stop: self.planned_stop.unwrap_or(d.planned_stop),
        };
        if policy.hang_tolerance >= policy.gc_tolerance {
            return Err(invalid(
                "hang-tolerance",
                format!(
                    "must be shorter than gc-tolerance ({:?} >= {:?})",
                    policy.hang_tolerance, policy.gc_tolerance
                ),
                file,
            ));
        }
        let kubernetes = if self.kubernetes.unwrap_or(false) {
            let namespace = match self.kubernetes_namespace {
                Some(n) => n,
                None => std::fs::read_to_string(POD_NAMESPACE_FILE)
                    .map(|n| n.trim().to_string())
                    .map_err(|_| {
                        invalid(
                            "kubernetes-namespace",
                            format!(
                                "is required outside a pod ({POD_NAMESPACE_FILE} is not there)"
                            ),
                            file,
                        )
                    })?,
            };
            let cluster_id = required(
                self.kubernetes_cluster_id,
                "kubernetes-cluster-id",
                "STREAMSHIELD_COORDINATOR_KUBERNETES_CLUSTER_ID",
                file,
            )?;
            for (key, v) in [
                ("kubernetes-namespace", &namespace),
                ("kubernetes-cluster-id", &cluster_id),
            ] {
                let ok = !v.is_empty()
                    && v.len() <= 63
                    && v.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !ok {
                    return Err(invalid(
                        key,
                        format!("must be a Kubernetes name (lower-case letters, digits, '-'; at most 63), got {v:?}"),
                        file,
                    ));
                }
            }
            Some(KubeSettings {
                namespace,
                cluster_id,
                fence_by_delete: self.kubernetes_fence_delete.unwrap_or(true),
                drain_taints: self
                    .kubernetes_drain_taints
                    .as_deref()
                    .unwrap_or(DEFAULT_DRAIN_TAINTS)
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        } else {
            None
        };
        let ha = if self.ha_lease.unwrap_or(false) {
            let Some(k) = &kubernetes else {
                return Err(invalid(
                    "ha-lease",
                    "needs kubernetes: true (the Lease lives in the kubernetes namespace); outside Kubernetes run one coordinator with an epoch-file (docs/install-standalone.md)",
                    file,
                ));
            };
            if self.epoch_file.is_some() {
                return Err(invalid(
                    "ha-lease",
                    "excludes epoch-file: the Lease's transitions are the epoch",
                    file,
                ));
            }
            let duration = self.ha_lease_duration.unwrap_or(DEFAULT_HA_LEASE_DURATION);
            if duration < Duration::from_secs(1) || duration.subsec_nanos() != 0 {
                return Err(invalid(
                    "ha-lease-duration",
                    format!("must be whole seconds, at least 1 s (the Lease stores seconds), got {duration:?}"),
                    file,
                ));
            }
            let retry = at_least(
                self.ha_retry_period.unwrap_or(DEFAULT_HA_RETRY_PERIOD),
                Duration::from_millis(100),
                "ha-retry-period",
                file,
            )?;
            if retry * 3 > duration {
                return Err(invalid(
                    "ha-retry-period",
                    format!("must be under a third of ha-lease-duration ({retry:?} vs {duration:?}), so the leader renews several times before it could lose the Lease"),
                    file,
                ));
            }
            let identity = self
                .ha_identity
                .or_else(|| std::env::var("POD_NAME").ok())
                .or_else(|| std::env::var("HOSTNAME").ok())
                .or_else(crate::host::procfs::host_name)
                .filter(|i| !i.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "ha-identity",
                        "is required (no POD_NAME or host name)",
                        file,
                    )
                })?;
            Some(super::lease::LeaseSettings {
                namespace: k.namespace.clone(),
                name: self
                    .ha_lease_name
                    .unwrap_or_else(|| format!("streamshield-coordinator-{}", k.cluster_id)),
                identity,
                duration,
                retry,
            })
        } else {
            None
        };
        Ok(CoordinatorSettings {
            ha,
            kubernetes,
            agents_listen,
            api_listen: self.api_listen.unwrap_or_else(|| {
                DEFAULT_API_LISTEN
                    .parse()
                    .expect("the default address parses")
            }),
            agent_token_file: required(
                self.agent_token_file,
                "agent-token-file",
                "STREAMSHIELD_COORDINATOR_AGENT_TOKEN_FILE",
                file,
            )?,
            api_token_file: required(
                self.api_token_file,
                "api-token-file",
                "STREAMSHIELD_COORDINATOR_API_TOKEN_FILE",
                file,
            )?,
            flink_rest,
            poll_interval: at_least(
                self.poll_interval.unwrap_or(Duration::from_secs(1)),
                Duration::from_millis(100),
                "poll-interval",
                file,
            )?,
            epoch_file: self.epoch_file,
            info_file: self.info_file,
            policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::policy::keys::KEYS;

    #[test]
    fn every_key_is_in_the_configuration_reference() {
        let doc = include_str!("../../docs/configuration.md");
        // A policy key's row is in the policy table (below), by name only.
        conf::assert_keys_documented::<CoordinatorConfig>(
            doc,
            "coordinator",
            "STREAMSHIELD_COORDINATOR_",
            24,
            |key, env| {
                if KEYS.iter().any(|k| k.name == key) {
                    format!("`{key}`")
                } else {
                    conf::key_row(key, env)
                }
            },
        );
        // The policy table: every key with its default, as written once in KEYS.
        for k in KEYS {
            assert!(
                doc.contains(&format!("| `{}` | `{}` |", k.name, k.default)),
                "docs/configuration.md's policy table lacks {} (default {})",
                k.name,
                k.default
            );
        }
    }

    #[test]
    fn a_minimal_file_and_its_errors() {
        let c: CoordinatorConfig = conf::parse(
            "agent-token-file: /etc/streamshield/agent.token\napi-token-file: /etc/streamshield/api.token\nflink-rest: http://jm:8081\n",
        )
        .unwrap();
        let s = c.resolve(None).unwrap();
        assert_eq!(s.agents_listen, DEFAULT_AGENTS_LISTEN);
        assert!(!s.policy.failover);
        assert_eq!(s.policy, PolicyConfig::default());
        let err = |yaml: &str| {
            conf::parse::<CoordinatorConfig>(yaml)
                .and_then(|c| {
                    c.resolve(Some(Path::new("c.yaml")))
                        .map_err(|e| e.to_string())
                })
                .unwrap_err()
        };
        assert!(err("api-token-file: a\n").contains("agent-token-file is required"));
        assert!(
            err("agent-token-file: a\napi-token-file: b\nflink-rest: jm:8081\n")
                .contains("http(s) URL")
        );
        assert!(
            err("agent-token-file: a\napi-token-file: b\nhang-tolerance: 40s\n")
                .contains("shorter than gc-tolerance")
        );
        assert!(
            err("agent-token-file: a\napi-token-file: b\nfailover: maybe\n").contains("line 3")
        );
        assert!(err("poll: 1s\n").contains("unknown field `poll`"));
        let base = "agent-token-file: a\napi-token-file: b\nkubernetes: true\n";
        assert!(err(&format!("{base}kubernetes-namespace: flink\n"))
            .contains("kubernetes-cluster-id is required"));
        assert!(err(&format!(
            "{base}kubernetes-namespace: Flink_Jobs\nkubernetes-cluster-id: a\n"
        ))
        .contains("must be a Kubernetes name"));
        let c: CoordinatorConfig = conf::parse(&format!(
            "{base}kubernetes-namespace: flink\nkubernetes-cluster-id: orders\nkubernetes-drain-taints: ' a , b/ ,'\n"
        ))
        .unwrap();
        let k = c.resolve(None).unwrap().kubernetes.unwrap();
        assert_eq!(k.drain_taints, ["a", "b/"]);
        assert!(k.fence_by_delete);
        assert_eq!(
            (k.namespace.as_str(), k.cluster_id.as_str()),
            ("flink", "orders")
        );
        let kube = format!("{base}kubernetes-namespace: flink\nkubernetes-cluster-id: orders\n");
        assert!(
            err("agent-token-file: a\napi-token-file: b\nha-lease: true\n")
                .contains("needs kubernetes: true")
        );
        assert!(
            err(&format!("{kube}ha-lease: true\nepoch-file: /e\n")).contains("excludes epoch-file")
        );
        assert!(err(&format!(
            "{kube}ha-lease: true\nha-lease-duration: 1500ms\n"
        ))
        .contains("whole seconds"));
        assert!(
            err(&format!("{kube}ha-lease: true\nha-retry-period: 2s\n")).contains("under a third")
        );
        let c: CoordinatorConfig =
            conf::parse(&format!("{kube}ha-lease: true\nha-identity: coord-a\n")).unwrap();
        let ha = c.resolve(None).unwrap().ha.unwrap();
        assert_eq!(ha.name, "streamshield-coordinator-orders");
        assert_eq!(
            (ha.identity.as_str(), ha.duration, ha.retry),
            (
                "coord-a",
                DEFAULT_HA_LEASE_DURATION,
                DEFAULT_HA_RETRY_PERIOD
            )
        );
        assert_eq!(ha.renew_deadline(), Duration::from_secs(2));
    }
}

/// `streamshield coordinator`: a configuration file and/or its keys as flags.
#[derive(Debug, Clone, Args)]
pub struct CoordinatorArgs {
    /// The configuration file (YAML; docs/configuration.md). Flags and environment variables override its keys.
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub keys: CoordinatorConfig,
}

impl CoordinatorArgs {
    /// Reads the file (if any), lays the flags over it and resolves the settings.
    pub fn settings(self) -> conf::Result<CoordinatorSettings> {
        CoordinatorConfig::load(self.config.as_deref(), self.keys)
    }
}
