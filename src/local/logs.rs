//! Logs: where a component of the run logs ([`log_path`]), the last lines of a log ([`tail`]), and the error that
//! quotes them when a process exits while it starts.

use std::path::{Path, PathBuf};

use super::{Error, Result, RunState};
use crate::host::process::Recorded;

/// The last lines of a file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(super) fn exited(p: &Recorded) -> Error {
    let mut t = tail(&p.out, 20);
    if t.trim().is_empty() {
        t = tail(&p.log, 20);
    }
    Error::Exited {
        component: p.name.clone(),
        log: p.log.clone(),
        tail: t,
    }
}

/// The log file of `component` (`kafka`, `jobmanager`, `tm-1`, ...).
pub fn log_path(dir: &Path, component: &str, stdout: bool) -> Result<PathBuf> {
    let state = RunState::load(dir)?.ok_or_else(|| Error::NotUp(dir.to_path_buf()))?;
    let procs = state.processes();
    match procs.iter().find(|p| p.name == component) {
        Some(p) => Ok(if stdout { p.out.clone() } else { p.log.clone() }),
        None => Err(Error::UnknownComponent {
            name: component.to_string(),
            known: procs
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
