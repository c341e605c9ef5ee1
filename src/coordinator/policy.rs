//! The failover policy: from what agents report about their processes to the actions the coordinator orders.
//! A pure state machine over wall-clock milliseconds (the agents' own `since` times), so every rule is tested without
//! a cluster (tests below and tests/coordinator.rs under paused tokio time).
//!
//! - **crash** (`dead`): Flink's own fast path (heartbeat RPCs to a dead process fail; with
//!   `heartbeat.rpc-failure-threshold: 1` and a 500 ms interval it notices in ~0.5 s) frees its slots and the job
//!   moves to the standby's. The policy then orders a `restart` of the TaskManager in place (same resource id) to
//!   refill the pool — once the jobs run again and have completed a checkpoint since, not at once: on a small
//!   machine a JVM starting during the recovery took the CPU the recovery needed (measured: the restart ordered at
//!   once made tm-kill recovery slower than without it, and ordered as soon as every subtask ran it still delayed
//!   the catch-up by ~2 s in the cold-standby at-least-once drill). At the latest after `refill_max_wait`.
//! - **hang** (`paused`: stopped; `hung`: no heartbeat and no CPU progress) for longer than the hang tolerance →
//!   `fence` (SIGKILL through the agent), which turns it into a crash.
//! - **busy GC** (`busy-gc`: no heartbeat, CPU advancing) is tolerated up to the longer GC tolerance, then fenced.
//! - An incident is acted on once: one fence and one restart at most, until the process is `alive` again. A
//!   coordinator that restarts rebuilds its incidents from the agents' statuses (with their original `since`), so an
//!   overdue hang is fenced at once and a restart already done is not repeated (the agent reports `unknown` while
//!   the restarted process starts, which opens nothing).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Policy settings (docs/configuration.md).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Act (true) or only log what would be done (false).
    pub failover: bool,
    /// A stopped or hung TaskManager is fenced after this long.
    pub hang_tolerance: Duration,
    /// A TaskManager busy without heartbeats (garbage collection) is fenced only after this long.
    pub gc_tolerance: Duration,
    /// A dead TaskManager is restarted once Flink runs every job again, or after this long at the latest.
    pub refill_max_wait: Duration,
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
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            failover: false,
            hang_tolerance: Duration::from_secs(2),
            gc_tolerance: Duration::from_secs(30),
            refill_max_wait: Duration::from_secs(30),
        }
    }
}

/// What the coordinator orders an agent to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Act {
    /// `tm-dead`, `tm-hung`, `tm-paused`, `tm-busy-gc`.
    pub trigger: String,
    pub resource_id: String,
    /// `fence` or `restart`.
    pub action: String,
    /// The process meant (fence only).
    pub pid: Option<u32>,
    pub reason: String,
    /// The agent that carries the order, when not the one of `resource_id` (isolate: the JobManager's).
    pub target: Option<String>,
    /// isolate: the `host:port` to reject.
    pub address: Option<String>,
    /// isolate: more ports of that host to reject.
    pub ports: Vec<u16>,
    /// When the incident began (the first non-alive report's `since`): recovery is timed from here.
    pub opened_ms: i64,
}

impl Act {
    /// An order for the agent of `resource_id` itself (fence, restart).
    fn to_agent(trigger: String, inc: &Incident, rid: &str, action: &str, reason: String) -> Act {
        Act {
            trigger,
            resource_id: rid.to_string(),
            action: action.into(),
            pid: (action == "fence").then_some(inc.pid).flatten(),
            reason,
            target: None,
            address: None,
            ports: Vec::new(),
            opened_ms: inc.opened_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Incident {
    liveness: String,
    since_ms: i64,
    opened_ms: i64,
    pid: Option<u32>,
    fenced: bool,
    restarted: bool,
    /// Acted on only for TaskManagers.
    taskmanager: bool,
}

#[derive(Debug, Default)]
pub struct Engine {
    pub cfg: PolicyConfig,
    incidents: BTreeMap<String, Incident>,
}

impl Engine {
    pub fn new(cfg: PolicyConfig) -> Self {
        Engine {
            cfg,
            incidents: BTreeMap::new(),
        }
    }

    /// Open incidents by resource id (for the API and tests).
    pub fn open(&self) -> Vec<(String, String)> {
        self.incidents
            .iter()
            .map(|(k, v)| (k.clone(), v.liveness.clone()))
            .collect()
    }

    /// A liveness report for `rid` (an event or a periodic status): `liveness` since `since_ms`, of process `pid`.
    /// Returns what to do now.
    #[allow(clippy::too_many_arguments)]
    pub fn liveness(
        &mut self,
        rid: &str,
        taskmanager: bool,
        liveness: &str,
        since_ms: i64,
        pid: Option<u32>,
        now_ms: i64,
        flink: FlinkState,
    ) -> Vec<Act> {
        match liveness {
            "alive" => {
                self.incidents.remove(rid);
                return Vec::new();
            }
            "dead" | "paused" | "hung" | "busy-gc" => {}
            // unknown: not enough to act on (a process starting, or an agent that has not met its plugin yet).
            _ => return Vec::new(),
        }
        let inc = self
            .incidents
            .entry(rid.to_string())
            .or_insert_with(|| Incident {
                liveness: liveness.to_string(),
                since_ms,
                opened_ms: since_ms,
                pid,
                fenced: false,
                restarted: false,
                taskmanager,
            });
        if inc.liveness != liveness {
            // paused -> busy-gc -> hung ... keep the incident (its actions), restart the clock of the new state.
            inc.liveness = liveness.to_string();
            inc.since_ms = since_ms;
        } else if since_ms < inc.since_ms {
            // The same state, known to have begun earlier (a status line after an event that carried only its own
            // time): the tolerance counts from the earlier start.
            inc.since_ms = since_ms;
        }
        if pid.is_some() {
            inc.pid = pid;
        }
        self.tick(now_ms, flink)
    }

    /// Re-evaluates the tolerances.
    pub fn tick(&mut self, now_ms: i64, flink: FlinkState) -> Vec<Act> {
        let mut acts = Vec::new();
        for (rid, inc) in self.incidents.iter_mut() {
            if !inc.taskmanager {
                continue;
            }
            let waited = Duration::from_millis((now_ms - inc.since_ms).max(0) as u64);
            match inc.liveness.as_str() {
                "dead" if !inc.restarted => {
                    // The jobs run again since the death (or ran throughout: the TaskManager had no tasks, and
                    // Flink has had a few seconds to notice), or the refill cannot wait any longer.
                    let settled =
                        flink.all_running && flink.checkpointed_ms >= flink.last_running_ms;
                    let recovered = settled && flink.last_running_ms >= inc.since_ms;
                    let untouched = settled && waited >= Duration::from_secs(5);
                    if !(recovered || untouched || waited >= self.cfg.refill_max_wait) {
                        continue;
                    }
                    inc.restarted = true;
                    let reason = format!(
                        "{rid} is dead{}: start it again in place (same resource id) to refill the pool",
                        if inc.fenced { " (fenced)" } else { "" }
                    );
                    acts.push(Act::to_agent("tm-dead".into(), inc, rid, "restart", reason));
                }
                "paused" | "hung" if !inc.fenced && waited >= self.cfg.hang_tolerance => {
                    inc.fenced = true;
                    let reason = format!(
                        "{rid} has been {} for {} ms (hang tolerance {} ms): SIGKILL, then restart",
                        inc.liveness,
                        waited.as_millis(),
                        self.cfg.hang_tolerance.as_millis()
                    );
                    let trigger = format!("tm-{}", inc.liveness);
                    acts.push(Act::to_agent(trigger, inc, rid, "fence", reason));
                }
                "busy-gc" if !inc.fenced && waited >= self.cfg.gc_tolerance => {
                    inc.fenced = true;
                    let reason = format!(
                        "{rid} has been busy without heartbeats for {} ms (GC tolerance {} ms): SIGKILL, then restart",
                        waited.as_millis(),
                        self.cfg.gc_tolerance.as_millis()
                    );
                    acts.push(Act::to_agent(
                        "tm-busy-gc".into(),
                        inc,
                        rid,
                        "fence",
                        reason,
                    ));
                }
                _ => {}
            }
        }
        acts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flink with every job running since `since` (ms).
    fn running(since: i64) -> FlinkState {
        FlinkState {
            all_running: true,
            last_running_ms: since,
            checkpointed_ms: since,
        }
    }

    const RESTARTING: FlinkState = FlinkState {
        all_running: false,
        last_running_ms: 0,
        checkpointed_ms: 0,
    };

    #[test]
    fn the_refill_waits_for_a_checkpoint_after_the_recovery() {
        let mut e = engine();
        e.liveness("tm-1", true, "dead", 1_000, Some(7), 1_010, RESTARTING);
        // Every subtask runs again at 2,400, but its latest checkpoint is from before the crash: still catching up.
        let catching_up = FlinkState {
            checkpointed_ms: 900,
            ..running(2_400)
        };
        assert!(e.tick(2_500, catching_up).is_empty());
        assert!(e.tick(9_000, catching_up).is_empty());
        // A checkpoint completes at 3,100: refill.
        let settled = FlinkState {
            checkpointed_ms: 3_100,
            ..running(2_400)
        };
        assert_eq!(e.tick(9_100, settled).len(), 1);
        // Never settling: the latest wait (30 s) still refills.
        let mut e = engine();
        e.liveness("tm-1", true, "dead", 1_000, Some(7), 1_010, RESTARTING);
        assert!(e.tick(30_999, catching_up).is_empty());
        assert_eq!(e.tick(31_000, catching_up).len(), 1);
    }

    fn engine() -> Engine {
        Engine::new(PolicyConfig {
            failover: true,
            ..PolicyConfig::default()
        })
    }

    #[test]
    fn a_crash_is_restarted_once_after_the_job_runs_again() {
        let mut e = engine();
        // Dead at 1,000; Flink has not recovered the job yet: no restart during the recovery.
        assert!(e
            .liveness("tm-1", true, "dead", 1_000, Some(7), 1_010, running(0))
            .is_empty());
        assert!(e.tick(1_500, RESTARTING).is_empty());
        // The job runs again (entered RUNNING at 2,400): now the pool is refilled, once.
        let a = e.tick(2_500, running(2_400));
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].action.as_str(), a[0].trigger.as_str()),
            ("restart", "tm-dead")
        );
        assert!(e
            .liveness("tm-1", true, "dead", 1_000, Some(7), 2_600, running(2_400))
            .is_empty());
        assert!(e.tick(60_000, running(2_400)).is_empty());
        // The restarted process starts (unknown), then is alive: the incident closes.
        assert!(e
            .liveness(
                "tm-1",
                true,
                "unknown",
                2_700,
                Some(8),
                2_700,
                running(2_400)
            )
            .is_empty());
        assert!(e
            .liveness("tm-1", true, "alive", 5_000, Some(8), 5_000, running(2_400))
            .is_empty());
        assert!(e.open().is_empty());
        // A second crash later is a new incident.
        e.liveness("tm-1", true, "dead", 9_000, Some(8), 9_000, RESTARTING);
        assert_eq!(e.tick(9_900, running(9_800)).len(), 1);
    }

    #[test]
    fn a_dead_standby_is_restarted_after_a_few_seconds_and_a_stuck_recovery_at_the_latest_wait() {
        let mut e = engine();
        // A TaskManager without tasks dies: the job never restarts; after 5 s of all running, refill.
        e.liveness("tm-3", true, "dead", 1_000, Some(3), 1_000, running(0));
        assert!(e.tick(5_999, running(0)).is_empty());
        assert_eq!(e.tick(6_000, running(0)).len(), 1);
        // A recovery that does not finish: restart after refill_max_wait (30 s) anyway.
        e.liveness("tm-1", true, "dead", 10_000, Some(1), 10_000, RESTARTING);
        assert!(e.tick(39_999, RESTARTING).is_empty());
        assert_eq!(e.tick(40_000, RESTARTING).len(), 1);
    }

    #[test]
    fn a_hang_is_fenced_after_the_tolerance_then_restarted() {
        let mut e = engine();
        assert!(e
            .liveness("tm-2", true, "paused", 1_000, Some(9), 1_300, running(0))
            .is_empty());
        assert!(e.tick(2_999, running(0)).is_empty(), "1,999 ms < 2 s");
        let a = e.tick(3_000, running(0));
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].action.as_str(), a[0].pid), ("fence", Some(9)));
        assert!(e.tick(3_100, running(0)).is_empty(), "fenced once");
        assert!(e
            .liveness("tm-2", true, "dead", 3_050, Some(9), 3_060, RESTARTING)
            .is_empty());
        let b = e.tick(5_000, running(4_900));
        assert_eq!(b[0].action, "restart");
        assert!(b[0].reason.contains("(fenced)"));
    }

    #[test]
    fn gc_is_tolerated_longer_than_a_hang_and_a_short_pause_never_acts() {
        let mut e = engine();
        let f = running(0);
        e.liveness("tm-1", true, "busy-gc", 0, Some(5), 10, f);
        assert!(e.tick(15_000, f).is_empty(), "a 15 s GC is ridden out");
        assert!(e
            .liveness("tm-1", true, "alive", 15_100, Some(5), 15_100, f)
            .is_empty());
        assert!(e.tick(40_000, f).is_empty());
        // A GC that never ends is fenced at the GC tolerance.
        e.liveness("tm-1", true, "busy-gc", 50_000, Some(5), 50_000, f);
        assert!(e.tick(79_999, f).is_empty());
        assert_eq!(e.tick(80_000, f)[0].action, "fence");
        // A 1 s SIGSTOP: paused, then alive before the tolerance.
        e.liveness("tm-3", true, "paused", 100_000, Some(6), 100_000, f);
        assert!(e.tick(101_000, f).is_empty());
        e.liveness("tm-3", true, "alive", 101_000, Some(6), 101_000, f);
        assert!(e.tick(200_000, f).is_empty());
    }

    #[test]
    fn the_jobmanager_is_not_acted_on_and_unknown_opens_nothing() {
        let mut e = engine();
        assert!(e
            .liveness("jobmanager", false, "dead", 0, Some(1), 0, running(0))
            .is_empty());
        assert!(e
            .liveness("tm-1", true, "unknown", 0, None, 0, running(0))
            .is_empty());
        assert!(e.tick(100_000, running(0)).is_empty());
        assert_eq!(e.open(), vec![("jobmanager".into(), "dead".into())]);
    }

    #[test]
    fn an_agent_that_flaps_gets_one_action_per_real_incident() {
        let mut e = engine();
        let f = running(0);
        // paused for 500 ms, alive, paused again for 500 ms...: never past the tolerance, never fenced.
        for k in 0..20 {
            let t = k * 1_000;
            assert!(e
                .liveness("tm-1", true, "paused", t, Some(4), t, f)
                .is_empty());
            assert!(e.tick(t + 500, f).is_empty());
            assert!(e
                .liveness("tm-1", true, "alive", t + 500, Some(4), t + 500, f)
                .is_empty());
        }
        // The same paused status repeated (every 200 ms) keeps its first `since`: fenced once at 2 s.
        let mut acts = 0;
        for t in (30_000..36_000).step_by(200) {
            acts += e
                .liveness("tm-1", true, "paused", 30_000, Some(4), t, f)
                .len();
        }
        assert_eq!(acts, 1);
    }

    #[test]
    fn a_coordinator_restart_rebuilds_incidents_from_status_without_repeating_actions() {
        // The old coordinator fenced tm-2 and ordered its restart; the new one starts empty and hears statuses.
        let mut e = engine();
        // Agent of tm-2: restarted process starting -> unknown: nothing (no second restart).
        assert!(e
            .liveness(
                "tm-2",
                true,
                "unknown",
                10_000,
                Some(12),
                10_100,
                running(0)
            )
            .is_empty());
        // Agent of tm-1: paused since long before the new coordinator started: fenced at once, not missed.
        let a = e.liveness("tm-1", true, "paused", 2_000, Some(11), 10_100, running(0));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].action, "fence");
    }
}
