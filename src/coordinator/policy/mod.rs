//! The failover policy: from what agents report about their processes to the actions the coordinator orders.
//! A pure state machine over wall-clock milliseconds (the agents' own `since` times), so every rule is tested without
//! a cluster (tests below and tests/coordinator.rs under paused tokio time).
//!
//! - **crash** (`dead`): Flink's own fast path (heartbeat RPCs to a dead process fail; with
//!   `heartbeat.rpc-failure-threshold: 1` and a short interval it notices in well under a second) frees its slots and
//!   the job moves to spare slots. The policy then orders a `restart` of the TaskManager in place (same resource id)
//!   to refill the pool — once the jobs run again and have completed a checkpoint since, not at once: on a small
//!   machine a JVM starting during the recovery took the CPU the recovery needed (measured: the restart ordered at
//!   once made tm-kill recovery slower than without it). At once, though, when the spare slots elsewhere cannot take
//!   the dead TaskManager's subtasks: then the job cannot run again without it. At the latest after
//!   `refill-max-wait`. A TaskManager that died after a planned stop (its plugin held a SIGTERM) is not restarted:
//!   someone asked it to stop. One whose agent cannot restart it (`restart: never`, or its start was not recorded)
//!   is left to the spare slots, and the decision says so.
//! - **hang** (`paused`: stopped; `hung`: no heartbeat and no CPU progress) for longer than the hang tolerance →
//!   `fence` (SIGKILL through the agent), which turns it into a crash.
//! - **busy GC** (`busy-gc`: no heartbeat, CPU advancing) is tolerated up to the longer GC tolerance, then fenced.
//! - **partition**: a TaskManager whose agent is lost *and* which Flink has not heard from either (two independent
//!   signals) is isolated through the JobManager's agent, so Flink's next heartbeat RPC fails fast.
//! - An incident is acted on once: one fence and one restart at most, until the process is `alive` again. A
//!   coordinator that restarts rebuilds its incidents from the agents' statuses (with their original `since`), so an
//!   overdue hang is fenced at once and a restart already done is not repeated (the agent reports `unknown` while
//!   the restarted process starts, which opens nothing).
//!
//! Which policy applies to a TaskManager comes from the jobs that run on it (per-job `streamshield.*` keys, see
//! [`keys`]): it is acted on when any of them has failover on; otherwise every decision is recorded as
//! observe-only, with what would have been done and when. Each decision names the policy it used.

pub mod keys;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use keys::{PolicyConfig, Resolved, Source};

use crate::protocol::{Action, Liveness};

/// Why a decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    TmDead,
    TmHung,
    TmPaused,
    TmBusyGc,
    TmPartitioned,
    TmStopping,
    JmDead,
    AgentLost,
    /// Kubernetes: a TaskManager pod is being deleted (by a person, a controller or an eviction) or is gone.
    PodDeleted,
    /// Kubernetes: the kubelet evicted a TaskManager pod (node pressure).
    PodEvicted,
    /// Kubernetes: a TaskManager container was OOM-killed.
    PodOomKilled,
    /// Kubernetes: the node of a TaskManager pod is not Ready.
    NodeNotReady,
    /// Kubernetes: the node of a TaskManager pod is cordoned or tainted for termination (drain, spot notice).
    NodeDraining,
}

impl Trigger {
    pub const ALL: [Trigger; 13] = [
        Trigger::TmDead,
        Trigger::TmHung,
        Trigger::TmPaused,
        Trigger::TmBusyGc,
        Trigger::TmPartitioned,
        Trigger::TmStopping,
        Trigger::JmDead,
        Trigger::AgentLost,
        Trigger::PodDeleted,
        Trigger::PodEvicted,
        Trigger::PodOomKilled,
        Trigger::NodeNotReady,
        Trigger::NodeDraining,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::TmDead => "tm-dead",
            Trigger::TmHung => "tm-hung",
            Trigger::TmPaused => "tm-paused",
            Trigger::TmBusyGc => "tm-busy-gc",
            Trigger::TmPartitioned => "tm-partitioned",
            Trigger::TmStopping => "tm-stopping",
            Trigger::JmDead => "jm-dead",
            Trigger::AgentLost => "agent-lost",
            Trigger::PodDeleted => "pod-deleted",
            Trigger::PodEvicted => "pod-evicted",
            Trigger::PodOomKilled => "pod-oom-killed",
            Trigger::NodeNotReady => "node-not-ready",
            Trigger::NodeDraining => "node-draining",
        }
    }

    /// The trigger of a silent TaskManager's fence.
    fn of_silence(l: Liveness) -> Trigger {
        match l {
            Liveness::Paused => Trigger::TmPaused,
            Liveness::BusyGc => Trigger::TmBusyGc,
            _ => Trigger::TmHung,
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a decision was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Ordered from an agent.
    Acted,
    /// Recorded, not taken (the policy is observe-only), or nothing to order.
    ObserveOnly,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Acted, Mode::ObserveOnly];

    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Acted => "acted",
            Mode::ObserveOnly => "observe-only",
        }
    }
}

/// What Flink's REST API shows, as far as the policy cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlinkState {
    /// Every job RUNNING with every vertex RUNNING (false when Flink is unreachable).
    pub all_running: bool,
    /// The latest time (Flink's clock) a job entered RUNNING.
    pub last_running_ms: i64,
    /// The oldest of the jobs' latest completed checkpoints (ms; `i64::MAX` when no job checkpoints): a checkpoint
    /// completed after `last_running_ms` means the restarted job has settled.
    pub checkpointed_ms: i64,
    /// Free slots on TaskManagers whose agents say they are alive (or that have no agent).
    pub spare_slots: i64,
}

/// A job's policy, as a decision names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPolicyRef {
    pub job_id: String,
    pub job_name: String,
    pub failover: bool,
    /// Where its `failover` came from.
    pub source: Source,
}

/// The policy that applies to one TaskManager: merged from the jobs that run on it, or the cluster's when none does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TmPolicy {
    /// Act on it (some job on it has failover on, or, with no job, the cluster's policy says so).
    pub failover: bool,
    pub hang_tolerance_ms: u64,
    pub gc_tolerance_ms: u64,
    pub refill_max_wait_ms: u64,
    /// In words: which policy decided and why.
    pub basis: String,
    /// The policies of the jobs on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobPolicyRef>,
}

impl TmPolicy {
    /// A TaskManager with no job on it follows the cluster's policy.
    pub fn of_cluster(cluster: &Resolved) -> TmPolicy {
        let c = &cluster.config;
        TmPolicy {
            failover: c.failover,
            hang_tolerance_ms: c.hang_tolerance.as_millis() as u64,
            gc_tolerance_ms: c.gc_tolerance.as_millis() as u64,
            refill_max_wait_ms: c.refill_max_wait.as_millis() as u64,
            basis: format!(
                "no job runs on it: the cluster's policy, {}",
                cluster.describe()
            ),
            jobs: Vec::new(),
        }
    }

    /// The policy of a TaskManager running subtasks of `jobs` (each with its resolved policy): failover when any of
    /// them has it; the tolerances are the shortest among the jobs that act (among all when none does, for the
    /// observe-only record).
    pub fn of_jobs(jobs: &[(String, String, &Resolved)], cluster: &Resolved) -> TmPolicy {
        if jobs.is_empty() {
            return Self::of_cluster(cluster);
        }
        let acting: Vec<&(String, String, &Resolved)> =
            jobs.iter().filter(|j| j.2.config.failover).collect();
        let pool: Vec<&(String, String, &Resolved)> = if acting.is_empty() {
            jobs.iter().collect()
        } else {
            acting.clone()
        };
        let min = |f: fn(&PolicyConfig) -> Duration| {
            pool.iter()
                .map(|j| f(&j.2.config))
                .min()
                .unwrap_or_default()
                .as_millis() as u64
        };
        let refs: Vec<JobPolicyRef> = jobs
            .iter()
            .map(|(id, name, r)| JobPolicyRef {
                job_id: id.clone(),
                job_name: name.clone(),
                failover: r.config.failover,
                source: r.failover_source(),
            })
            .collect();
        let names = |on: bool| {
            refs.iter()
                .filter(|j| j.failover == on)
                .map(|j| {
                    format!(
                        "{} ({}, {})",
                        j.job_name,
                        short(&j.job_id),
                        Source::text(j.source)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let basis = if acting.is_empty() {
            format!(
                "observe-only: no job on it has failover on: {}",
                names(false)
            )
        } else if acting.len() == jobs.len() {
            format!("failover on for every job on it: {}", names(true))
        } else {
            format!(
                "failover on for {}; observe-only for {} (acted on for the jobs that want it)",
                names(true),
                names(false)
            )
        };
        TmPolicy {
            failover: !acting.is_empty(),
            hang_tolerance_ms: min(|c| c.hang_tolerance),
            gc_tolerance_ms: min(|c| c.gc_tolerance),
            refill_max_wait_ms: min(|c| c.refill_max_wait),
            basis,
            jobs: refs,
        }
    }

    fn mode(&self) -> Mode {
        if self.failover {
            Mode::Acted
        } else {
            Mode::ObserveOnly
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// What the policy knows of one TaskManager beyond its liveness.
#[derive(Debug, Clone, PartialEq)]
pub struct TmContext {
    pub policy: TmPolicy,
    /// Slots in use on it, as Flink last showed them.
    pub used_slots: i64,
    /// Its agent can start it again in place.
    pub restartable: bool,
    /// Its plugin held a SIGTERM (a planned stop): its exit is no crash.
    pub stopping: bool,
}

/// Everything a tick of the policy looks at.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub flink: FlinkState,
    pub tms: BTreeMap<String, TmContext>,
    /// For a TaskManager not in `tms`.
    pub default: Option<TmContext>,
}

impl Context {
    /// What the policy knows of TaskManager `rid` (the default for one it does not know).
    pub fn tm(&self, rid: &str) -> TmContext {
        self.tms
            .get(rid)
            .cloned()
            .or_else(|| self.default.clone())
            .unwrap_or_else(|| TmContext {
                policy: TmPolicy::of_cluster(&keys::resolve(&[], &PolicyConfig::default())),
                used_slots: 0,
                restartable: true,
                stopping: false,
            })
    }
}

/// What the policy decided: an order for an agent (`action`), or, without one, only a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    pub trigger: Trigger,
    pub mode: Mode,
    pub resource_id: String,
    pub action: Option<Action>,
    /// The process meant (fence only).
    pub pid: Option<u32>,
    pub reason: String,
    /// The process whose agent carries the order, when not `resource_id` (isolate: the JobManager).
    pub target: Option<String>,
    /// isolate: the `host:port` to reject.
    pub address: Option<String>,
    /// isolate: more ports of that host to reject.
    pub ports: Vec<u16>,
    /// When the incident began (the first non-alive report's `since`): recovery is timed from here.
    pub opened_ms: i64,
    pub policy: TmPolicy,
}

impl Act {
    /// An order (or, observe-only, a record) for the agent of `rid` itself.
    fn to_agent(
        trigger: Trigger,
        inc: &Incident,
        rid: &str,
        action: Option<Action>,
        reason: String,
    ) -> Act {
        Act {
            trigger,
            mode: if action.is_some() {
                inc.policy.mode()
            } else {
                Mode::ObserveOnly
            },
            resource_id: rid.to_string(),
            pid: (action == Some(Action::Fence)).then_some(inc.pid).flatten(),
            action,
            reason,
            target: None,
            address: None,
            ports: Vec::new(),
            opened_ms: inc.opened_ms,
            policy: inc.policy.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Incident {
    liveness: Liveness,
    since_ms: i64,
    opened_ms: i64,
    pid: Option<u32>,
    fenced: bool,
    restarted: bool,
    /// Acted on only for TaskManagers.
    taskmanager: bool,
    /// The policy when it opened (the jobs that ran on it then; Flink moves them away during the recovery).
    policy: TmPolicy,
    /// Slots it had in use when it opened.
    used_slots: i64,
}

#[derive(Debug, Default)]
pub struct Engine {
    incidents: BTreeMap<String, Incident>,
}

/// A TaskManager Flink still lists, for the partition rule.
#[derive(Debug, Clone)]
pub struct TmSilence {
    pub resource_id: String,
    /// Ms since its agent was last heard of, when the agent is not connected (None: connected, or never known).
    pub agent_silent_ms: Option<i64>,
    /// Ms since Flink's last heartbeat from it.
    pub flink_silent_ms: i64,
    pub dead: bool,
    pub rpc_address: Option<String>,
    pub ports: Vec<u16>,
    pub agent_last_seen_ms: i64,
}

/// A TaskManager is taken as partitioned when both its agent and Flink have not heard from it for this long.
pub const PARTITION_SILENCE_MS: i64 = 1_500;

impl Engine {
    pub fn new() -> Self {
        Engine::default()
    }

    /// Open incidents by resource id (for the API and tests).
    pub fn open(&self) -> Vec<(String, Liveness)> {
        self.incidents
            .iter()
            .map(|(k, v)| (k.clone(), v.liveness))
            .collect()
    }

    /// A liveness report for `rid` (an event or a periodic status): `liveness` since `since_ms`, of process `pid`.
    /// Returns what to do now.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        rid: &str,
        taskmanager: bool,
        liveness: Liveness,
        since_ms: i64,
        pid: Option<u32>,
        now_ms: i64,
        ctx: &Context,
    ) -> Vec<Act> {
        match liveness {
            Liveness::Alive => {
                self.incidents.remove(rid);
                return Vec::new();
            }
            // unknown: not enough to act on (a process starting, or an agent that has not met its plugin yet).
            Liveness::Unknown => return Vec::new(),
            _ => {}
        }
        let inc = self.incidents.entry(rid.to_string()).or_insert_with(|| {
            let tm = ctx.tm(rid);
            Incident {
                liveness,
                since_ms,
                opened_ms: since_ms,
                pid,
                fenced: false,
                restarted: false,
                taskmanager,
                policy: tm.policy,
                used_slots: tm.used_slots,
            }
        });
        if inc.liveness != liveness {
            // paused -> busy-gc -> hung ... keep the incident (its actions), restart the clock of the new state.
            inc.liveness = liveness;
            inc.since_ms = since_ms;
        } else if since_ms < inc.since_ms {
            // The same state, known to have begun earlier (a status line after an event that carried only its own
            // time): the tolerance counts from the earlier start.
            inc.since_ms = since_ms;
        }
        if pid.is_some() {
            inc.pid = pid;
        }
        self.tick(now_ms, ctx)
    }

    /// Re-evaluates the tolerances.
    pub fn tick(&mut self, now_ms: i64, ctx: &Context) -> Vec<Act> {
        let mut acts = Vec::new();
        let flink = ctx.flink;
        for (rid, inc) in self.incidents.iter_mut() {
            if !inc.taskmanager {
                continue;
            }
            let waited = Duration::from_millis((now_ms - inc.since_ms).max(0) as u64);
            let tm = ctx.tm(rid);
            match inc.liveness {
                Liveness::Dead if !inc.restarted => {
                    if tm.stopping {
                        inc.restarted = true;
                        continue;
                    }
                    let fenced = if inc.fenced { " (fenced)" } else { "" };
                    if !tm.restartable {
                        inc.restarted = true;
                        let reason = format!(
                            "{rid} is dead{fenced}; its agent cannot start it again in place (restart: never, or its start was not recorded): Flink reschedules its subtasks on spare slots ({} free)",
                            flink.spare_slots
                        );
                        acts.push(Act::to_agent(Trigger::TmDead, inc, rid, None, reason));
                        continue;
                    }
                    let no_room = inc.used_slots > 0 && flink.spare_slots < inc.used_slots;
                    // The jobs run again since the death (or ran throughout: the TaskManager had no tasks, and
                    // Flink has had a few seconds to notice), or the refill cannot wait any longer.
                    let settled =
                        flink.all_running && flink.checkpointed_ms >= flink.last_running_ms;
                    let recovered = settled && flink.last_running_ms >= inc.since_ms;
                    let untouched = settled && waited >= Duration::from_secs(5);
                    let max_wait = Duration::from_millis(inc.policy.refill_max_wait_ms);
                    if !(no_room || recovered || untouched || waited >= max_wait) {
                        continue;
                    }
                    inc.restarted = true;
                    let why = if no_room {
                        format!(
                            "its {} busy slot(s) do not fit into the {} free elsewhere, so its jobs cannot run without it",
                            inc.used_slots, flink.spare_slots
                        )
                    } else if recovered || untouched {
                        "its jobs run elsewhere again".to_string()
                    } else {
                        format!(
                            "its jobs have not recovered within {} ms",
                            max_wait.as_millis()
                        )
                    };
                    let reason = format!(
                        "{rid} is dead{fenced} and {why}: start it again in place (same resource id) to refill the pool"
                    );
                    acts.push(Act::to_agent(
                        Trigger::TmDead,
                        inc,
                        rid,
                        Some(Action::Restart),
                        reason,
                    ));
                }
                l @ (Liveness::Paused | Liveness::Hung)
                    if !inc.fenced
                        && waited >= Duration::from_millis(inc.policy.hang_tolerance_ms) =>
                {
                    inc.fenced = true;
                    let reason = format!(
                        "{rid} has been {l} for {} ms (hang tolerance {} ms): SIGKILL, then restart",
                        waited.as_millis(),
                        inc.policy.hang_tolerance_ms
                    );
                    acts.push(Act::to_agent(
                        Trigger::of_silence(l),
                        inc,
                        rid,
                        Some(Action::Fence),
                        reason,
                    ));
                }
                Liveness::BusyGc
                    if !inc.fenced
                        && waited >= Duration::from_millis(inc.policy.gc_tolerance_ms) =>
                {
                    inc.fenced = true;
                    let reason = format!(
                        "{rid} has been busy without heartbeats for {} ms (GC tolerance {} ms): SIGKILL, then restart",
                        waited.as_millis(),
                        inc.policy.gc_tolerance_ms
                    );
                    acts.push(Act::to_agent(
                        Trigger::TmBusyGc,
                        inc,
                        rid,
                        Some(Action::Fence),
                        reason,
                    ));
                }
                _ => {}
            }
        }
        acts
    }
}

/// TaskManagers cut off: their agent is lost AND Flink has not heard from them either (two independent signals; a
/// lost agent alone, or a late heartbeat alone, is no partition). The JobManager's agent is told to reject their RPC
/// endpoint, so that Flink's next heartbeat RPC fails as "unreachable" and the GC-safe heartbeat time-out does not
/// have to run out. Once per TaskManager until its agent is back (`isolated`).
pub fn partitions(
    silences: &[TmSilence],
    jm_agent_connected: bool,
    isolated: &BTreeSet<String>,
    ctx: &Context,
) -> Vec<Act> {
    if !jm_agent_connected {
        return Vec::new();
    }
    let mut acts = Vec::new();
    for tm in silences {
        let Some(agent_silent) = tm.agent_silent_ms else {
            continue;
        };
        let (Some(addr), false) = (tm.rpc_address.clone(), tm.dead) else {
            continue;
        };
        if agent_silent < PARTITION_SILENCE_MS
            || tm.flink_silent_ms < PARTITION_SILENCE_MS
            || isolated.contains(&tm.resource_id)
        {
            continue;
        }
        let policy = ctx.tm(&tm.resource_id).policy;
        acts.push(Act {
            trigger: Trigger::TmPartitioned,
            mode: policy.mode(),
            resource_id: tm.resource_id.clone(),
            action: Some(Action::Isolate),
            pid: None,
            reason: format!(
                "{} and its agent are silent ({agent_silent} ms since the agent, {} ms since Flink's last heartbeat): the JobManager's agent rejects {addr} so Flink fails it over now",
                tm.resource_id, tm.flink_silent_ms
            ),
            target: Some("jobmanager".into()),
            address: Some(addr),
            ports: tm.ports.clone(),
            opened_ms: tm.agent_last_seen_ms,
            policy,
        });
    }
    acts
}

#[cfg(test)]
mod tests;
