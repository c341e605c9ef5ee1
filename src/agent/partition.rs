//! A TaskManager cut off from everything is fenced by its own agent: once the agent has lost the coordinator for
//! the partition tolerance and cannot open a TCP connection to the TaskManager's JobManager either, it SIGKILLs the
//! TaskManager (once per partition). The cluster fails it over anyway; fencing it here keeps a TaskManager that
//! comes back from the partition from producing output of its own. A JobManager is never fenced by its agent.
//! The same loop lapses expired isolations.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::command::running;
use super::isolate;
use super::state::Shared;
use crate::protocol::{EventKind, Role};

/// How often the partition is checked.
const TICK: Duration = Duration::from_millis(250);

pub async fn watch(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                isolate::lift_all(&shared);
                return Ok(());
            }
            _ = tick.tick() => {}
        }
        let now = shared.mono_ms();
        // TaskManagers not fenced yet in this partition, with their JobManager.
        let candidates: Vec<(String, String)> = {
            let mut inner = shared.lock();
            isolate::expire(&mut inner, now);
            let Some(since) = inner.uplink_down_since else {
                continue;
            };
            if now.saturating_sub(since) < shared.cfg.partition_tolerance.as_millis() as u64 {
                continue;
            }
            inner
                .processes
                .values()
                .filter(|w| w.role == Role::Tm && !w.self_fenced)
                .filter_map(|w| Some((w.resource_id.clone(), w.jobmanager.clone()?)))
                .collect()
        };
        for (rid, jm) in candidates {
            let reachable = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(&jm),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if reachable {
                continue;
            }
            let mut inner = shared.lock();
            let silent = inner.uplink_down_since.map(|s| now.saturating_sub(s));
            let Some(w) = inner.processes.get_mut(&rid) else {
                continue;
            };
            if w.self_fenced || silent.is_none() {
                continue;
            }
            w.self_fenced = true;
            let outcome = match running(w) {
                Some(pid) => match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
                    Ok(()) => format!("SIGKILL sent to pid {pid}"),
                    Err(e) => format!("SIGKILL of pid {pid} failed: {e}"),
                },
                None => "nothing to fence: the process is already gone".into(),
            };
            tracing::warn!(resource_id = %rid, %outcome, jobmanager = %jm, "Cut off from the coordinator and the JobManager: fencing the TaskManager");
            let detail = serde_json::json!({
                "outcome": outcome,
                "coordinator_silent_ms": silent,
                "jobmanager": jm,
            });
            shared.push_event(&mut inner, &rid, EventKind::SelfFenced, detail);
        }
    }
}
