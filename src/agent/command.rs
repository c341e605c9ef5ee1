//! Commands from the coordinator: `fence` (SIGKILL a watched process), `restart` (start it again the way it was
//! started, see [`super::recipe`]), `stop-ready` (release a planned stop), and `isolate`/`unisolate` (see
//! [`super::isolate`]). Every command carries the coordinator's epoch as a fencing token: a command older than the
//! highest epoch this agent has seen is refused, so a replaced coordinator cannot act any more. A command names the
//! process it is about by resource id; an agent that does not watch it refuses. Each command is answered with an
//! AGENT_EVENT of kind `command` (outcome `done`, `refused` or `failed`, and why).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::config::RestartMode;
use super::recipe;
use super::state::{cached_inodes, Inner, Shared, Watched};
use crate::host::clock::now_ms;
use crate::host::procfs;
use crate::protocol::message::{AgentCommand, StopReady};
use crate::protocol::vocab::CommandResult;
use crate::protocol::{Action, CommandOutcome, EventKind, Message, Role, StopOutcome};

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(String),
    Refused(String),
    Failed(String),
}

impl Outcome {
    pub fn kind(&self) -> CommandOutcome {
        match self {
            Outcome::Done(_) => CommandOutcome::Done,
            Outcome::Refused(_) => CommandOutcome::Refused,
            Outcome::Failed(_) => CommandOutcome::Failed,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Outcome::Done(t) | Outcome::Refused(t) | Outcome::Failed(t) => t,
        }
    }
}

/// Executes a command and reports the outcome to the coordinator (as an event) and in the log.
pub fn handle(shared: &Shared, cmd: &AgentCommand) -> Outcome {
    let started = now_ms();
    let mut inner = shared.lock();
    let outcome = execute(shared, &mut inner, cmd);
    let took = now_ms() - started;
    match &outcome {
        Outcome::Done(t) => {
            tracing::warn!(id = cmd.id, epoch = cmd.epoch, action = %cmd.action, resource_id = %cmd.resource_id, detail = %t, "Command done")
        }
        other => {
            tracing::warn!(id = cmd.id, epoch = cmd.epoch, action = %cmd.action, resource_id = %cmd.resource_id, outcome = other.kind().as_str(), detail = %other.text(), "Command not done")
        }
    }
    *inner
        .counters
        .commands
        .entry((cmd.action.as_str(), outcome.kind().as_str()))
        .or_default() += 1;
    let result = CommandResult {
        id: cmd.id,
        epoch: cmd.epoch,
        action: cmd.action,
        outcome: outcome.kind(),
        detail: outcome.text().to_string(),
        took_ms: took,
        ordered_ms: cmd.ts_ms,
    };
    shared.push_event(&mut inner, &cmd.resource_id, EventKind::Command, result);
    outcome
}

fn execute(shared: &Shared, inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    if !inner.processes.contains_key(&cmd.resource_id) {
        let watched: Vec<&str> = inner.processes.keys().map(String::as_str).collect();
        return Outcome::Refused(format!(
            "this agent does not watch {} (it watches: {})",
            cmd.resource_id,
            if watched.is_empty() {
                "nothing yet".to_string()
            } else {
                watched.join(", ")
            }
        ));
    }
    if cmd.epoch < inner.max_epoch {
        return Outcome::Refused(format!(
            "stale fencing token: epoch {} < {} already seen",
            cmd.epoch, inner.max_epoch
        ));
    }
    inner.max_epoch = cmd.epoch;
    match cmd.action {
        Action::Fence => fence(inner, cmd),
        Action::Restart => restart(shared, inner, &cmd.resource_id),
        Action::Isolate => super::isolate::isolate(shared, inner, cmd),
        Action::Unisolate => super::isolate::unisolate(inner, cmd),
        Action::StopReady => stop_ready(inner, cmd),
    }
}

/// The watched process if it still runs (same pid and start time as when the agent learned it).
pub(super) fn running(w: &Watched) -> Option<u32> {
    let s = procfs::stat(w.pid)?;
    if s.gone() {
        return None;
    }
    match w.pid_start {
        Some(start) if start != s.start_ticks => None,
        _ => Some(w.pid),
    }
}

fn fence(inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    let w = inner
        .processes
        .get(&cmd.resource_id)
        .expect("checked by execute");
    if let Some(want) = cmd.pid {
        if want != w.pid {
            return Outcome::Refused(format!(
                "the coordinator means pid {want}, but {} is pid {} now",
                cmd.resource_id, w.pid
            ));
        }
    }
    let Some(pid) = running(w) else {
        return Outcome::Done("nothing to fence: the process is already gone".into());
    };
    // A stopped process dies of SIGKILL too; no SIGCONT needed.
    match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
        Ok(()) => {
            let reset = reset_connections(pid, &cached_inodes(w, pid));
            Outcome::Done(format!("SIGKILL sent to pid {pid}; {reset}"))
        }
        Err(e) => Outcome::Failed(format!("SIGKILL of pid {pid}: {e}")),
    }
}

/// Resets every TCP socket a killed process still holds, right after the SIGKILL (a fence) or once the agent has
/// seen it die: its peers get a reset now instead of when the kernel has torn the dying process down (its memory
/// first, its sockets after: 0.3-0.4 s for a TaskManager JVM on a loaded 2-core machine, in kept logs, during which
/// Flink's tasks and JobManager hear nothing). First the sockets of the agent's cache (`cached`: inodes, at most
/// 10 s old; one that has closed since is simply not found), then those among the process's open files that the
/// cache did not have (read through any of its threads that still runs). In kept drill logs of a loaded 2-core
/// machine the cached pass took 10-21 ms and the whole reset 16-27 ms. Sockets are destroyed by inode through sock_diag netlink ([`crate::host::sockdiag`]), so no other
/// process's socket is touched; listening sockets are closed too, so that nobody connects to the dying process
/// meanwhile. Best effort (needs CAP_NET_ADMIN and a kernel with INET_DIAG_DESTROY); says what it did and how long
/// each pass took.
pub(crate) fn reset_connections(pid: u32, cached: &std::collections::HashSet<u32>) -> String {
    let started = std::time::Instant::now();
    let first = crate::host::sockdiag::destroy_tcp(cached);
    let first_ms = started.elapsed().as_millis();
    let held: std::collections::HashSet<u32> =
        crate::host::sockets::process_socket_inodes(pid as i32)
            .iter()
            .filter_map(|i| i.parse().ok())
            .filter(|i| !cached.contains(i))
            .collect();
    let second = crate::host::sockdiag::destroy_tcp(&held);
    let total_ms = started.elapsed().as_millis();
    let mut destroyed = 0;
    let mut problems = Vec::new();
    for pass in [first, second] {
        match pass {
            Ok(d) => {
                destroyed += d.destroyed;
                if let Some(e) = d.first_error {
                    problems.push(format!(
                        "the kernel refused {} of {}: {e}",
                        d.found - d.destroyed,
                        d.found
                    ));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    let mut out = format!(
        "{destroyed} TCP socket(s) reset ({} cached: {first_ms} ms; {} more from its open files: {total_ms} ms in all)",
        cached.len(),
        held.len()
    );
    if !problems.is_empty() {
        out.push_str(&format!(
            "; resetting its connections failed: {}",
            problems.join("; ")
        ));
    }
    out
}

fn restart(shared: &Shared, inner: &mut Inner, rid: &str) -> Outcome {
    let w = inner.processes.get(rid).expect("checked by execute");
    if shared.cfg.restart == RestartMode::Never {
        return Outcome::Refused(
            "this agent does not restart processes (restart: never); it only fences".into(),
        );
    }
    // A process in its exit (a kill -9 shows PF_EXITING within a millisecond, while the kernel takes a few hundred
    // more to tear a JVM down) can never run again: it is not waited for.
    let dying = |pid: u32| procfs::stat(pid).is_some_and(|s| s.exiting());
    if let Some(pid) = running(w).filter(|p| !dying(*p)) {
        return Outcome::Refused(format!("pid {pid} still runs: fence it first"));
    }
    let recipe = match &w.recipe {
        Ok(r) => r.clone(),
        Err(why) => return Outcome::Refused(format!("not restartable: {why}")),
    };
    let (old_pid, role, version) = (w.pid, w.role, w.flink_version.clone());
    match recipe.start(rid, role, rid) {
        Ok(rec) => {
            let pid = rec.pid as u32;
            let updated = recipe::update_pid_files(&recipe.pid_dir(&version), old_pid, pid);
            let now = shared.mono_ms();
            let w = inner
                .processes
                .get_mut(rid)
                .expect("still there: the lock is held");
            // Followed from now on: unknown until its plugin connects, and a second `restart` is refused while it
            // runs (no duplicate process, even from a coordinator that restarted in the middle of the incident).
            let before = w.tracker.state();
            w.pid = pid;
            w.pid_start = Some(rec.start_ticks);
            w.restarts += 1;
            w.stopping = false;
            w.sockets = None;
            w.tracker.on_restart(now);
            let after = w.tracker.state();
            shared.note_transition(inner, rid, before, after, Some("restarted by the agent"));
            let pid_files = if updated.is_empty() {
                String::new()
            } else {
                format!(
                    "; pid file {} updated",
                    updated
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let id_note = if role == Role::Tm {
                format!(" with taskmanager.resource-id={rid}")
            } else {
                String::new()
            };
            Outcome::Done(format!(
                "started {rid} again as pid {pid}{id_note}, as pid {old_pid} was started ({}){pid_files}",
                recipe.exe.display()
            ))
        }
        Err(e) => Outcome::Failed(format!("starting {rid} again: {e}")),
    }
}

/// Releases a planned stop the plugin is holding (the coordinator's checkpoint is done, or could not be).
fn stop_ready(inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    let outcome = cmd.outcome.unwrap_or(StopOutcome::Skipped);
    let ready = StopReady {
        outcome,
        detail: cmd.reason.clone(),
    };
    if Shared::tell_plugin(inner, &cmd.resource_id, Message::StopReady(ready)) {
        Outcome::Done(format!(
            "the plugin may stop its process now ({})",
            outcome.as_str()
        ))
    } else {
        Outcome::Failed(
            "no plugin connected: the process is gone already or stopped on its own time-out"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child process connected to a listener here: resetting its sockets resets this side's end of the
    /// connection, whether the agent had it cached or finds it among the child's open files, and leaves a second,
    /// unrelated connection to the same listener alone.
    #[test]
    fn a_process_s_connections_are_reset_and_nobody_else_s() {
        use std::io::{Read, Write};
        let _ports = crate::host::sockets::EPHEMERAL_PORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bystander = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut bystander_peer, _) = listener.accept().unwrap();
        for cache in [false, true] {
            let mut child = std::process::Command::new("bash")
                .args([
                    "-c",
                    &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec sleep 30"),
                ])
                .spawn()
                .unwrap();
            let (mut theirs, _) = listener.accept().unwrap();
            let sockets = crate::host::sockets::tcp_sockets(child.id() as i32);
            assert_eq!(
                sockets.iter().map(|s| s.remote_port).collect::<Vec<_>>(),
                vec![port],
                "{sockets:?}"
            );
            let inodes: std::collections::HashSet<u32> =
                sockets.iter().map(|s| s.inode.parse().unwrap()).collect();
            let cached = if cache {
                inodes.clone()
            } else {
                Default::default()
            };
            let outcome = reset_connections(child.id(), &cached);
            let want = if cache {
                "1 TCP socket(s) reset (1 cached"
            } else {
                "1 TCP socket(s) reset (0 cached"
            };
            assert!(outcome.starts_with(want), "{outcome}");
            assert!(!outcome.contains("failed"), "{outcome}");
            theirs
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let err = theirs.read(&mut [0u8; 8]).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
            child.kill().unwrap();
            child.wait().unwrap();
            // Gone: a cached inode that no longer exists is not found, and nothing else is touched.
            let outcome = reset_connections(child.id(), &inodes);
            assert!(
                outcome.starts_with("0 TCP socket(s) reset (1 cached"),
                "{outcome}"
            );
        }
        // The bystander's connection still carries data.
        (&bystander).write_all(b"ok").unwrap();
        let mut got = [0u8; 2];
        bystander_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
    }
}
