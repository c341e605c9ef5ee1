//! Commands from the coordinator: `fence` (SIGKILL the watched process) and `restart` (start it again from the
//! agent's restart spec). Every command carries the coordinator's epoch as a fencing token: a command older than the
//! highest epoch this agent has seen is refused, so a replaced coordinator cannot act any more. Each command is
//! answered with an AGENT_EVENT of kind `command` (outcome `done`, `refused` or `failed`, and why).

use std::path::PathBuf;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{Inner, Shared};
use crate::clock::now_ms;
use crate::local::process;
use crate::protocol::message::AgentCommand;

/// How to start the watched process again: written by whoever started it (`streamshield local`), read by the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RestartSpec {
    /// Component name (`tm-1`).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub out: PathBuf,
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(String),
    Refused(String),
    Failed(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Done(_) => "done",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        }
    }

    fn text(&self) -> &str {
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
            tracing::warn!(id = cmd.id, epoch = cmd.epoch, action = %cmd.action, detail = %t, "Command done")
        }
        other => {
            tracing::warn!(id = cmd.id, epoch = cmd.epoch, action = %cmd.action, outcome = other.label(), detail = %other.text(), "Command not done")
        }
    }
    let detail = serde_json::json!({
        "id": cmd.id,
        "epoch": cmd.epoch,
        "action": cmd.action,
        "outcome": outcome.label(),
        "detail": outcome.text(),
        "took_ms": took,
        "ordered_ms": cmd.ts_ms,
    });
    shared.push_event(&mut inner, "command", detail);
    outcome
}

fn execute(shared: &Shared, inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    if cmd.resource_id != shared.cfg.resource_id {
        return Outcome::Refused(format!(
            "this agent watches {}, not {}",
            shared.cfg.resource_id, cmd.resource_id
        ));
    }
    if cmd.epoch < inner.max_epoch {
        return Outcome::Refused(format!(
            "stale fencing token: epoch {} < {} already seen",
            cmd.epoch, inner.max_epoch
        ));
    }
    inner.max_epoch = cmd.epoch;
    match cmd.action.as_str() {
        "fence" => fence(inner, cmd),
        "restart" => restart(shared, inner),
        other => Outcome::Refused(format!("unknown action {other:?}")),
    }
}

/// The watched process if it still runs (same pid and start time as when the agent learned it).
fn running(inner: &Inner) -> Option<u32> {
    let pid = inner.pid?;
    let (start, state) = process::proc_stat(pid as i32)?;
    if state == 'Z' || state == 'X' {
        return None;
    }
    match inner.pid_start {
        Some(s) if s != start => None,
        _ => Some(pid),
    }
}

fn fence(inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    if let (Some(want), Some(have)) = (cmd.pid, inner.pid) {
        if want != have {
            return Outcome::Refused(format!(
                "the coordinator means pid {want}, but this agent watches pid {have} now"
            ));
        }
    }
    let Some(pid) = running(inner) else {
        return Outcome::Done("nothing to fence: the process is already gone".into());
    };
    // A stopped process dies of SIGKILL too; no SIGCONT needed.
    match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
        Ok(()) => Outcome::Done(format!("SIGKILL sent to pid {pid}")),
        Err(e) => Outcome::Failed(format!("SIGKILL of pid {pid}: {e}")),
    }
}

fn restart(shared: &Shared, inner: &mut Inner) -> Outcome {
    if let Some(pid) = running(inner) {
        return Outcome::Refused(format!("pid {pid} still runs: fence it first"));
    }
    let Some(path) = &shared.cfg.restart_spec else {
        return Outcome::Refused("this agent has no restart spec (--restart-spec)".into());
    };
    let spec: RestartSpec = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("restart spec {}: {e}", path.display())),
    };
    match process::spawn(process::Spec {
        name: &spec.name,
        program: &spec.program,
        args: spec.args.clone(),
        cwd: &spec.cwd,
        log: spec.log.clone(),
        out: spec.out.clone(),
        env: spec.env.clone(),
        cgroup: spec.cgroup.clone(),
    }) {
        Ok(rec) => {
            // Followed from now on: unknown until its plugin connects, and a second `restart` is refused while it
            // runs (no duplicate process, even from a coordinator that restarted in the middle of the incident).
            let before = inner.tracker.state();
            inner.pid = Some(rec.pid as u32);
            inner.pid_start = Some(rec.start_ticks);
            inner.restarts += 1;
            inner.tracker.on_restart(shared.mono_ms());
            let after = inner.tracker.state();
            shared.note_transition(
                inner,
                Some(rec.pid as u32),
                before,
                after,
                Some("restarted by the agent"),
            );
            Outcome::Done(format!("started {} again as pid {}", spec.name, rec.pid))
        }
        Err(e) => Outcome::Failed(format!("starting {}: {e}", spec.name)),
    }
}
