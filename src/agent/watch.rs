//! Re-evaluates every watched process's liveness from /proc every tick; transitions become events and log lines. A
//! process that is seen dying gets its TCP connections reset at once, and a dead one nobody restarted is forgotten
//! after [`DEAD_RETENTION_MS`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::command;
use super::liveness;
use super::state::{cached_inodes, Shared, DEAD_RETENTION_MS};
use crate::protocol::{EventKind, Liveness};

/// How often liveness is re-evaluated from /proc.
pub const TICK: Duration = Duration::from_millis(20);

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let pids: Vec<(String, u32)> = shared
            .lock()
            .processes
            .values()
            .map(|w| (w.resource_id.clone(), w.pid))
            .collect();
        // /proc is read without the lock.
        let samples: Vec<(String, u32, Option<liveness::ProcSample>)> = pids
            .into_iter()
            .map(|(rid, pid)| {
                let s = liveness::sample(pid);
                (rid, pid, s)
            })
            .collect();
        let now = shared.mono_ms();
        let mut died = Vec::new();
        {
            let mut inner = shared.lock();
            for (rid, pid, sample) in samples {
                let Some(w) = inner.processes.get_mut(&rid).filter(|w| w.pid == pid) else {
                    continue;
                };
                if let Some((from, to)) = w.tracker.evaluate(now, sample, true) {
                    let cached = cached_inodes(w, pid);
                    shared.note_transition(&mut inner, &rid, from, to, None);
                    if to == Liveness::Dead {
                        died.push((rid.clone(), pid, cached));
                    }
                }
            }
            let forget: Vec<String> = inner
                .processes
                .values()
                .filter(|w| {
                    w.dead_since
                        .is_some_and(|d| now.saturating_sub(d) >= DEAD_RETENTION_MS)
                })
                .map(|w| w.resource_id.clone())
                .collect();
            for rid in forget {
                inner.processes.remove(&rid);
                tracing::info!(resource_id = %rid, "Forgetting a process that has been dead for {} min", DEAD_RETENTION_MS / 60_000);
                shared.push_event(
                    &mut inner,
                    &rid,
                    EventKind::ProcessForgotten,
                    serde_json::json!({}),
                );
            }
        }
        for (rid, pid, cached) in died {
            reset_dying(&rid, pid, cached).await;
        }
    }
}

/// A killed process is `dead` to the agent within a tick (its first thread exiting, see [`liveness::ProcSample`]),
/// but the kernel closes its sockets only once every thread has exited and its memory is unmapped: for a TaskManager
/// JVM 30-40 ms on an idle machine, ~300 ms on a loaded 2-core one (kept drill logs: kill -9 at +0, the JobManager's
/// and the other TaskManagers' connections closed at +300 ms, Flink's failure at +410 ms). Resetting the dying
/// process's connections at once lets its peers learn now. Nothing to do when its files are already closed.
async fn reset_dying(rid: &str, pid: u32, cached: std::collections::HashSet<u32>) {
    let started = std::time::Instant::now();
    let outcome =
        tokio::task::spawn_blocking(move || command::reset_connections(pid, &cached)).await;
    if let Ok(outcome) = outcome {
        tracing::info!(
            resource_id = %rid,
            pid,
            %outcome,
            took_ms = started.elapsed().as_millis() as u64,
            "Reset the dead process's connections"
        );
    }
}
