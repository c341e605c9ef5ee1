//! Injecting a round's fault and undoing it: finding the target TaskManager, getting a `tm-gc-pause` target ready
//! (its ballast built, its attach listener up), injecting per scenario (signals, the collection, the network cut),
//! the heals a scenario plans for a moment after the injection (SIGCONT, starting the JobManager or Kafka again),
//! and [`Injected`], the record of what must be undone whatever happens to the round.

use std::time::Duration;

use nix::sys::signal::Signal as Sig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::measure::Observation;
use super::round::RoundError;
use super::{jvm, scenario, Scenario};
use crate::flink;
use crate::host::clock::now_ms;
use crate::host::process::Recorded;
use crate::local::{self, dist::say, RunState};

/// What a round injected and must undo.
#[derive(Default)]
pub(super) struct Injected {
    /// A process left stopped (SIGSTOP): continued on heal.
    pub(super) stopped: Option<Recorded>,
    /// iptables rules that cut a TaskManager off: removed on heal.
    pub(super) cut: Vec<Vec<String>>,
    /// An injected pause that ended with its process (fenced): how long it had lasted.
    pub(super) pause_at_least_ms: Option<u64>,
    /// A round that failed after the coordinator acted: its orders (count and notes), so the report counts them.
    pub(super) failovers: Option<(u64, Vec<String>)>,
}

impl Injected {
    pub(super) fn heal(&mut self) {
        local::isolate::heal(&std::mem::take(&mut self.cut));
        if let Some(p) = self.stopped.take() {
            if p.alive() {
                p.signal(Sig::SIGCONT);
            }
        }
    }
}

/// A heal a scenario plans for a moment after the injection; the watch loop does it when the time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heal {
    /// `tm-pause-short`: continue the stopped TaskManager (the pause ends).
    Continue,
    /// `jm-kill`: start the JobManager again.
    RestartJobManager,
    /// `kafka-broker-outage`: start the broker again on its data.
    RestartKafka,
}

/// The `GC.run` call of `tm-gc-pause`, running while the collection lasts: its answer and when it came (ms since
/// the epoch).
pub(super) type GcCall = JoinHandle<(Result<String, jvm::Error>, i64)>;

/// A fault as injected: when, and what the rest of the round still has to do about it.
pub(super) struct Fault {
    /// When the fault was injected (ms since the epoch; the verifier's marker).
    pub(super) at_ms: i64,
    /// A heal still to do, and when (ms since the epoch).
    pub(super) heal_at: Option<(i64, Heal)>,
    /// `tm-gc-pause`: the call that runs the collection.
    pub(super) gc_call: Option<GcCall>,
}

/// The TaskManager to hit: the first one (by name) that runs subtasks of the job; and every one that does.
pub(super) async fn pick_target(
    client: &flink::Client,
    job: &str,
    state: &RunState,
) -> Result<(Recorded, Vec<String>), RoundError> {
    let hosts = client
        .subtask_hosts(job)
        .await
        .map_err(RoundError::FindTarget)?;
    let mut names: Vec<String> = hosts.to_vec();
    names.sort();
    for n in &names {
        if let Some(t) = state.taskmanagers.iter().find(|t| &t.resource_id == n) {
            if t.process.alive() {
                return Ok((t.process.clone(), names));
            }
        }
    }
    Err(RoundError::NoRunningTarget {
        job: job.to_string(),
        hosts,
    })
}

/// Gets the target of `tm-gc-pause` ready: its ballast built, a clean latency baseline after that, and the JVM's
/// attach listener up (so that `GC.run` starts the collection at once).
pub(super) async fn prepare_gc_pause(
    t: &Recorded,
    cancel: &CancellationToken,
) -> Result<(), RoundError> {
    wait_ballast(t, cancel).await?;
    // A clean latency baseline after the ballast was built.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let pid = t.pid;
    tokio::task::spawn_blocking(move || jvm::ensure_listener(pid, Duration::from_secs(10)))
        .await
        .map_err(RoundError::AttachTask)?
        .map_err(RoundError::Attach)
}

/// Waits until the target TaskManager's log says its GC ballast is built.
async fn wait_ballast(t: &Recorded, cancel: &CancellationToken) -> Result<(), RoundError> {
    let start = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(&t.log).unwrap_or_default();
        if log.contains("streamshield gc ballast ready") {
            return Ok(());
        }
        if !t.alive() {
            return Err(RoundError::BallastExited {
                name: t.name.clone(),
            });
        }
        if start.elapsed() > Duration::from_secs(240) || cancel.is_cancelled() {
            return Err(RoundError::BallastTimeout {
                name: t.name.clone(),
                log: t.log.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Injects the scenario's fault at `at_ms` (on `target`, for the scenarios that hit a TaskManager), recording in
/// `injected` what must be undone.
pub(super) fn inject(
    scenario: Scenario,
    state: &RunState,
    target: Option<&Recorded>,
    injected: &mut Injected,
    at_ms: i64,
) -> Result<Fault, RoundError> {
    let mut fault = Fault {
        at_ms,
        heal_at: None,
        gc_call: None,
    };
    match scenario {
        Scenario::TmKill => {
            signal(target, Sig::SIGKILL)?;
        }
        Scenario::TmTerm => {
            signal(target, Sig::SIGTERM)?;
        }
        Scenario::TmHang => {
            signal(target, Sig::SIGSTOP)?;
            injected.stopped = target.cloned();
        }
        Scenario::TmPauseShort => {
            signal(target, Sig::SIGSTOP)?;
            injected.stopped = target.cloned();
            fault.heal_at = Some((
                at_ms + scenario::shield_hang_tolerance().as_millis() as i64 / 2,
                Heal::Continue,
            ));
        }
        Scenario::JmKill => {
            let jm = state.jobmanager.clone().ok_or(RoundError::NoJobManager)?;
            jm.signal(Sig::SIGKILL);
            // Restart it at once, but after one look at REST (the restart blocks until the new JobManager answers).
            fault.heal_at = Some((at_ms + 300, Heal::RestartJobManager));
        }
        Scenario::KafkaBrokerOutage => {
            let k = state.kafka.clone().ok_or(RoundError::NoKafka)?;
            k.signal(Sig::SIGKILL);
            fault.heal_at = Some((
                at_ms + scenario::KAFKA_OUTAGE.as_millis() as i64,
                Heal::RestartKafka,
            ));
        }
        Scenario::TmGcPause => {
            let pid = target.ok_or(RoundError::NoTarget)?.pid;
            fault.gc_call = Some(tokio::task::spawn_blocking(move || {
                let r = jvm::jcmd_retrying(pid, "GC.run", 3);
                (r, now_ms())
            }));
        }
        Scenario::TmPartition => {
            let t = target.ok_or(RoundError::NoTarget)?;
            let group = state.isolation.clone().ok_or(RoundError::NotIsolated)?;
            injected.cut = local::isolate::cut(&group, &t.name).map_err(RoundError::Cut)?;
        }
    }
    Ok(fault)
}

impl Heal {
    /// Does the heal, `inject_ms` after the fault: continuing a paused TaskManager ends the pause (its length is
    /// the round's `fault_ms`); a component that was killed is started again once it is gone.
    pub(super) async fn apply(
        self,
        state: &mut RunState,
        injected: &mut Injected,
        obs: &mut Observation,
        inject_ms: i64,
    ) -> Result<(), RoundError> {
        match self {
            Heal::Continue => {
                injected.heal();
                obs.fault_ms = Some((now_ms() - inject_ms) as u64);
            }
            Heal::RestartJobManager => {
                wait_dead(state.jobmanager.as_ref()).await;
                local::restart_jobmanager(state)
                    .await
                    .map_err(|e| RoundError::RestartJobManager(Box::new(e)))?;
                say(format!(
                    "  JobManager restarted (+{} ms)",
                    now_ms() - inject_ms
                ));
            }
            Heal::RestartKafka => {
                wait_dead(state.kafka.as_ref()).await;
                local::restart_kafka(state)
                    .await
                    .map_err(|e| RoundError::RestartKafka(Box::new(e)))?;
                say(format!("  Kafka restarted (+{} ms)", now_ms() - inject_ms));
            }
        }
        Ok(())
    }
}

fn signal(target: Option<&Recorded>, sig: Sig) -> Result<(), RoundError> {
    let t = target.ok_or(RoundError::NoTarget)?;
    if t.signal(sig) {
        Ok(())
    } else {
        Err(RoundError::Gone {
            name: t.name.clone(),
            pid: t.pid,
        })
    }
}

async fn wait_dead(p: Option<&Recorded>) {
    let Some(p) = p else { return };
    for _ in 0..100 {
        if !p.alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
