//! Stopping a run: every recorded process in order (coordinator, Flink, agents, Kafka and ZooKeeper), then any
//! stray whose command line names the run directory, and `down`, which also removes the state file (and with
//! `purge` the run directory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{io, isolate, Result, RunState};
use crate::host::process::{self, Recorded};

/// Stops every process of a run (TaskManagers and JobManager first, then Kafka) and sweeps up any process whose
/// command line still names the run directory.
pub async fn stop_processes(state: &RunState) -> Vec<(String, process::Stopped)> {
    let grace = Duration::from_secs(20);
    // The coordinator first: a teardown is no incident to act on (no restart of a TaskManager being stopped), and
    // without it the agents release a TaskManager's held SIGTERM at once instead of checkpointing first.
    let coordinator: Vec<Recorded> = state
        .coordinator
        .iter()
        .map(|c| c.process.clone())
        .collect();
    let mut out = process::stop_all(&coordinator, grace).await;
    let flink: Vec<Recorded> = state
        .taskmanagers
        .iter()
        .map(|t| t.process.clone())
        .chain(state.jobmanager.clone())
        .collect();
    out.extend(process::stop_all(&flink, grace).await);
    let streamshield: Vec<Recorded> = state.agents.iter().map(|a| a.process.clone()).collect();
    out.extend(process::stop_all(&streamshield, grace).await);
    let brokers: Vec<Recorded> = state
        .kafka
        .iter()
        .chain(state.zookeeper.iter())
        .cloned()
        .collect();
    out.extend(process::stop_all(&brokers, grace).await);
    let strays = processes_naming(&state.run_dir);
    if !strays.is_empty() {
        let recs: Vec<Recorded> = strays
            .into_iter()
            .map(|(pid, start)| Recorded {
                name: format!("stray pid {pid}"),
                pid,
                start_ticks: start,
                log: PathBuf::new(),
                out: PathBuf::new(),
            })
            .collect();
        out.extend(process::stop_all(&recs, Duration::from_secs(5)).await);
    }
    if let Some(group) = &state.isolation {
        isolate::sweep(group);
    }
    let agent_pids: Vec<i32> = state.agents.iter().map(|a| a.process.pid).collect();
    if !agent_pids.is_empty() {
        isolate::sweep_agent_rules(&agent_pids);
    }
    out
}

/// Processes (pid, start ticks) whose command line contains `dir/`; never this process.
pub fn processes_naming(dir: &Path) -> Vec<(i32, u64)> {
    let needle = format!("{}/", dir.display());
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            if let Some((start, state)) =
                crate::host::procfs::stat(pid as u32).map(|s| (s.start_ticks, s.state))
            {
                if state != 'Z' {
                    out.push((pid, start));
                }
            }
        }
    }
    out
}

/// Stops the run at `dir`. Returns what was stopped; `Ok(None)` when nothing was up.
pub async fn down(dir: &Path, purge: bool) -> Result<Option<Vec<(String, process::Stopped)>>> {
    let Some(state) = RunState::load(dir)? else {
        let strays = processes_naming(dir);
        if purge && dir.exists() && strays.is_empty() {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        return Ok(None);
    };
    let stopped = stop_processes(&state).await;
    let _ = std::fs::remove_file(RunState::path(dir));
    if purge {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    Ok(Some(stopped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{status, Error};

    #[tokio::test]
    async fn down_with_nothing_up_says_so() {
        let d = tempfile::tempdir().unwrap();
        assert!(down(d.path(), false).await.unwrap().is_none());
        assert!(matches!(status(d.path()).await, Err(Error::NotUp(_))));
    }
}
