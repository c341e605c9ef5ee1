//! Processes on this host: spawning them detached, recognising them again later (pid + start time, so a recycled
//! pid is never signalled) and stopping them. Used by the agent (restart in place) and by `local`.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::procfs;

#[derive(Debug, Error)]
pub enum Error {
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A process this host started (by `local`, or by an agent restarting its process), identified by pid + start time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recorded {
    /// Component name: `kafka`, `jobmanager`, `tm-1`, ...
    pub name: String,
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22): with the pid, identifies the process.
    pub start_ticks: u64,
    /// Where its log goes.
    pub log: PathBuf,
    /// Where its stdout/stderr go.
    pub out: PathBuf,
}

impl Recorded {
    /// True when the recorded process still runs (same pid and start time, not a zombie).
    pub fn alive(&self) -> bool {
        procfs::stat(self.pid as u32)
            .is_some_and(|s| s.start_ticks == self.start_ticks && !s.gone())
    }

    /// True when the process is stopped (SIGSTOP).
    pub fn stopped(&self) -> bool {
        procfs::stat(self.pid as u32)
            .is_some_and(|s| s.start_ticks == self.start_ticks && s.state == 'T')
    }

    /// Sends `sig` to the process group the recorded process leads (see [`spawn`]), if that process is still the
    /// one we started: helpers it may have started go with it.
    pub fn signal(&self, sig: Signal) -> bool {
        self.alive() && kill(Pid::from_raw(-self.pid), sig).is_ok()
    }
}

/// What `spawn` needs to start one component.
pub struct Spec<'a> {
    pub name: &'a str,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub cwd: &'a Path,
    pub log: PathBuf,
    pub out: PathBuf,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// A cgroup (v2) directory the process joins before it execs, so that every socket it opens belongs to it
    /// (the drill cuts a TaskManager's network by matching its cgroup; an agent restarts a process in its own).
    pub cgroup: Option<PathBuf>,
    /// Start it exactly as another process was started (restart in place), instead of with this process's
    /// environment and one output file.
    pub exact: Option<Exact>,
}

/// How a restart in place reproduces the original process beyond its program, arguments and working directory.
#[derive(Debug, Clone, Default)]
pub struct Exact {
    /// Its `argv[0]`, as it was (`java`, not the resolved executable).
    pub arg0: Option<String>,
    /// Only `Spec::env`, nothing inherited from this process.
    pub env_clear: bool,
    /// Where stderr goes when not with stdout (`Spec::out`).
    pub stderr: Option<PathBuf>,
}

/// Starts a component in its own process group (a Ctrl-C in the terminal reaches only `streamshield`, which then
/// stops what it started), stdout and stderr appended to `spec.out`. A thread reaps it when it exits, so a
/// long-lived caller (demo, tests, drills) leaves no zombies.
pub fn spawn(spec: Spec<'_>) -> Result<Recorded, Error> {
    let open = |p: &Path| -> Result<File, Error> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|source| Error::Log {
                path: p.to_path_buf(),
                source,
            })
    };
    let out = open(&spec.out)?;
    let exact = spec.exact.clone().unwrap_or_default();
    let err = match &exact.stderr {
        Some(p) if *p != spec.out => open(p)?,
        _ => out.try_clone().map_err(|source| Error::Log {
            path: spec.out.clone(),
            source,
        })?,
    };
    let mut command = match &spec.cgroup {
        None => Command::new(spec.program),
        Some(cg) => {
            // `sh` moves itself into the cgroup, then becomes the program (same pid, same start time).
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
                .arg(cg)
                .arg(spec.program);
            c
        }
    };
    if exact.env_clear {
        command.env_clear();
    }
    if let (Some(arg0), None) = (&exact.arg0, &spec.cgroup) {
        command.arg0(arg0);
    }
    let mut child = command
        .args(&spec.args)
        .current_dir(spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Spawn {
            name: spec.name.to_string(),
            program: spec.program.display().to_string(),
            source,
        })?;
    let pid = child.id() as i32;
    // The stat file exists as soon as spawn returns; retry briefly in case of a slow /proc.
    let mut start_ticks = 0;
    for _ in 0..50 {
        if let Some(s) = procfs::stat(pid as u32) {
            start_ticks = s.start_ticks;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::Builder::new()
        .name(format!("reap-{}", spec.name))
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(|source| Error::Spawn {
            name: spec.name.to_string(),
            program: "reaper thread".into(),
            source,
        })?;
    Ok(Recorded {
        name: spec.name.to_string(),
        pid,
        start_ticks,
        log: spec.log,
        out: spec.out,
    })
}

/// How a process ended when asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stopped {
    /// It was already gone.
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It ignored SIGTERM for the grace period (or was SIGSTOPped) and was killed.
    Killed,
}

/// Stops every process in `procs` at once: SIGTERM (and SIGCONT, in case a drill stopped it), then SIGKILL for
/// what is still there after `grace`. Returns once all are gone.
pub async fn stop_all(procs: &[Recorded], grace: Duration) -> Vec<(String, Stopped)> {
    let mut result: Vec<(String, Stopped)> = Vec::new();
    let mut waiting = Vec::new();
    for p in procs {
        if p.signal(Signal::SIGTERM) {
            let _ = p.signal(Signal::SIGCONT);
            waiting.push(p);
        } else {
            result.push((p.name.clone(), Stopped::NotRunning));
        }
    }
    let start = tokio::time::Instant::now();
    while !waiting.is_empty() && start.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waiting.retain(|p| {
            if p.alive() {
                true
            } else {
                result.push((p.name.clone(), Stopped::Terminated));
                false
            }
        });
    }
    for p in &waiting {
        let _ = p.signal(Signal::SIGKILL);
        result.push((p.name.clone(), Stopped::Killed));
    }
    // SIGKILL is not instant: wait (bounded) until the kernel has taken them down.
    let start = tokio::time::Instant::now();
    while waiting.iter().any(|p| p.alive()) && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_recognised_and_a_recycled_pid_is_not() {
        let me = std::process::id() as i32;
        let start = procfs::stat(me as u32).unwrap().start_ticks;
        let rec = Recorded {
            name: "me".into(),
            pid: me,
            start_ticks: start,
            log: PathBuf::new(),
            out: PathBuf::new(),
        };
        assert!(rec.alive());
        let other = Recorded {
            start_ticks: start + 1,
            ..rec
        };
        assert!(!other.alive(), "same pid, other start time: not ours");
    }

    #[tokio::test]
    async fn spawn_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let rec = spawn(Spec {
            name: "sleeper",
            program: Path::new("sleep"),
            args: vec!["30".into()],
            cwd: dir.path(),
            log: dir.path().join("sleeper.log"),
            out: dir.path().join("sleeper.out"),
            env: vec![],
            cgroup: None,
            exact: None,
        })
        .unwrap();
        assert!(rec.alive());
        let r = stop_all(std::slice::from_ref(&rec), Duration::from_secs(5)).await;
        assert_eq!(r, vec![("sleeper".to_string(), Stopped::Terminated)]);
        assert!(!rec.alive());
        let again = stop_all(std::slice::from_ref(&rec), Duration::from_secs(5)).await;
        assert_eq!(again, vec![("sleeper".to_string(), Stopped::NotRunning)]);
    }

    #[tokio::test]
    async fn a_process_ignoring_sigterm_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let rec = spawn(Spec {
            name: "stubborn",
            program: Path::new("bash"),
            args: vec![
                "-c".into(),
                "trap '' TERM; sleep 30 & wait; sleep 30".into(),
            ],
            cwd: dir.path(),
            log: dir.path().join("s.log"),
            out: dir.path().join("s.out"),
            env: vec![],
            cgroup: None,
            exact: None,
        })
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = stop_all(std::slice::from_ref(&rec), Duration::from_millis(500)).await;
        assert_eq!(r, vec![("stubborn".to_string(), Stopped::Killed)]);
        assert!(!rec.alive());
    }
}
