//! Restart in place without whoever started the process: while a watched process runs, the agent records from
//! /proc how it was started (executable, `argv`, environment, working directory, where its stdout and stderr go, its
//! cgroup), and on the coordinator's `restart` order starts it again the same way. A TaskManager restarted with the
//! same `taskmanager.resource-id` makes the JobManager drop its old incarnation at once; the id is added to the
//! command line when the original did not set it (a generated id). Flink's start scripts keep the process's pid in a
//! pid file (`flink-daemon.sh`, `env.pid.dir`, default /tmp) that `taskmanager.sh stop` and `stop-cluster.sh`
//! read: the restarted process's pid replaces the old one there, so those scripts still stop it.
//!
//! The recipe lives in the agent's memory only (the environment may hold secrets); an agent that restarts learns it
//! again when the plugin reconnects.

use std::path::{Path, PathBuf};

use crate::flink::conf::{self, FlinkConf};
use crate::host::{process, procfs};
use crate::protocol::Role;

/// The main class of a TaskManager.
const TASK_MANAGER_RUNNER: &str = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner";

/// The resource id key Flink reads.
const RESOURCE_ID_KEY: &str = "taskmanager.resource-id";

/// How a process was started, read from /proc.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub exe: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Regular files its stdout and stderr went to (None: a pipe, a terminal, or gone: output then goes to
    /// /dev/null).
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    pub cgroup: Option<PathBuf>,
}

/// Where an output descriptor of `pid` points, if it is a file that can be reopened for appending.
fn output_file(pid: u32, fd: u32) -> Option<PathBuf> {
    let target = procfs::fd_target(pid, fd)?;
    let text = target.to_string_lossy();
    if !target.is_absolute() || text.ends_with(" (deleted)") {
        return None;
    }
    Some(target)
}

impl Recipe {
    /// Records how `pid` was started; the error says what could not be read (typically: the agent runs as
    /// another user than the process, and not as root).
    pub fn record(pid: u32) -> Result<Recipe, String> {
        let hint = |e: String| {
            format!(
                "{e} (the agent must run as the process's user or as root to restart it in place)"
            )
        };
        Ok(Recipe {
            exe: procfs::exe(pid).map_err(hint)?,
            argv: procfs::cmdline(pid).map_err(hint)?,
            env: procfs::environ(pid).map_err(hint)?,
            cwd: procfs::cwd(pid).map_err(hint)?,
            stdout: output_file(pid, 1),
            stderr: output_file(pid, 2),
            cgroup: procfs::cgroup_v2(pid).filter(|c| c.join("cgroup.procs").exists()),
        })
    }

    /// The command line to start it again with: the original, plus `-D taskmanager.resource-id=<id>` for a
    /// TaskManager (Flink's `TaskManagerRunner`) whose command line did not name its id, so that the new process
    /// registers under the same one.
    pub fn argv_for(&self, role: Role, resource_id: &str) -> Vec<String> {
        let mut argv = self.argv.clone();
        let named = conf::dynamic_properties(&argv)
            .iter()
            .any(|(k, _)| k == RESOURCE_ID_KEY);
        let runner = argv.iter().any(|a| a == TASK_MANAGER_RUNNER);
        if role == Role::Tm && runner && !named {
            argv.push("-D".into());
            argv.push(format!("{RESOURCE_ID_KEY}={resource_id}"));
        }
        argv
    }

    /// The process's Flink configuration (its `--configDir` file, as Flink of `version` reads it, with its dynamic
    /// properties), if readable.
    pub fn flink_conf(&self, version: &str) -> Option<FlinkConf> {
        let dir = conf::config_dir(&self.argv)?;
        let dir = if dir.is_absolute() {
            dir
        } else {
            self.cwd.join(dir)
        };
        Some(
            FlinkConf::read_dir(&dir, conf::major(version))
                .ok()?
                .with_dynamic(&self.argv),
        )
    }

    /// The JobManager's RPC `host:port` from the process's Flink configuration.
    pub fn jobmanager(&self, version: &str) -> Option<String> {
        let c = self.flink_conf(version)?;
        let host = c.get("jobmanager.rpc.address")?.trim().to_string();
        let port = c
            .get("jobmanager.rpc.port")
            .unwrap_or("6123")
            .trim()
            .to_string();
        (!host.is_empty()).then(|| format!("{host}:{port}"))
    }

    /// Starts the process again; returns its record. `name` names it in errors.
    pub fn start(
        &self,
        name: &str,
        role: Role,
        resource_id: &str,
    ) -> Result<process::Recorded, String> {
        let argv = self.argv_for(role, resource_id);
        let devnull = PathBuf::from("/dev/null");
        let out = self.stdout.clone().unwrap_or_else(|| devnull.clone());
        let spec = process::Spec {
            name,
            program: &self.exe,
            args: argv[1..].to_vec(),
            cwd: &self.cwd,
            log: out.clone(),
            out: out.clone(),
            env: self.env.clone(),
            cgroup: self.cgroup_to_join(),
            exact: Some(process::Exact {
                arg0: argv.first().cloned(),
                env_clear: true,
                stderr: Some(self.stderr.clone().unwrap_or(devnull)),
            }),
        };
        process::spawn(spec).map_err(|e| e.to_string())
    }

    /// The recorded cgroup, when it is not the agent's own (a new process starts in the agent's anyway) and the
    /// agent may move a process into it.
    fn cgroup_to_join(&self) -> Option<PathBuf> {
        let c = self.cgroup.clone()?;
        if procfs::cgroup_v2(std::process::id()).as_ref() == Some(&c) {
            return None;
        }
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .open(c.join("cgroup.procs"))
            .is_ok();
        if !writable {
            tracing::warn!(cgroup = %c.display(), "Cannot move a restarted process into its cgroup; it starts in the agent's");
            return None;
        }
        Some(c)
    }

    /// The directory Flink's scripts keep pid files in: `FLINK_PID_DIR` of its environment (the scripts do not
    /// export it, but a wrapper may), else `env.pid.dir` of its configuration, else /tmp.
    pub fn pid_dir(&self, version: &str) -> PathBuf {
        if let Some((_, d)) = self.env.iter().find(|(k, _)| k == "FLINK_PID_DIR") {
            return PathBuf::from(d);
        }
        self.flink_conf(version)
            .and_then(|c| c.get("env.pid.dir").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/tmp"))
    }
}

/// Replaces `old` by `new` in every Flink pid file (`flink-*.pid`, one pid per line) of `dir` that lists `old`;
/// returns the files changed. Written to a temporary file and renamed, so a script never reads half a file.
pub fn update_pid_files(dir: &Path, old: u32, new: u32) -> Vec<PathBuf> {
    let mut changed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return changed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !(name.starts_with("flink-") && name.ends_with(".pid")) {
            continue;
        }
        let path = e.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !text.lines().any(|l| l.trim() == old.to_string()) {
            continue;
        }
        let updated: Vec<String> = text
            .lines()
            .map(|l| {
                if l.trim() == old.to_string() {
                    new.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        let tmp = path.with_extension("pid.streamshield-tmp");
        if std::fs::write(&tmp, updated.join("\n") + "\n").is_ok()
            && std::fs::rename(&tmp, &path).is_ok()
        {
            changed.push(path);
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_id_is_added_only_when_the_command_line_lacks_it() {
        let r = |argv: &[&str]| Recipe {
            exe: "/usr/bin/java".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            stdout: None,
            stderr: None,
            cgroup: None,
        };
        let main = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner";
        let generated = r(&["java", main, "--configDir", "/c"]);
        assert_eq!(
            &generated.argv_for(Role::Tm, "127.0.0.1:4001-a1b2c3")[4..],
            ["-D", "taskmanager.resource-id=127.0.0.1:4001-a1b2c3"]
        );
        assert_eq!(
            generated.argv_for(Role::Jm, "jobmanager").len(),
            4,
            "a JobManager has no resource id key"
        );
        let named = r(&["java", main, "-D", "taskmanager.resource-id=tm-1"]);
        assert_eq!(named.argv_for(Role::Tm, "tm-1"), named.argv);
    }

    #[test]
    fn records_a_real_process_and_starts_it_again_the_same_way() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("child.out");
        let rec = process::spawn(process::Spec {
            name: "child",
            program: Path::new("bash"),
            args: vec!["-c".into(), "echo started $MARK; exec sleep 30".into()],
            cwd: d.path(),
            log: out.clone(),
            out: out.clone(),
            env: vec![("MARK".into(), "first".into())],
            cgroup: None,
            exact: None,
        })
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let recipe = Recipe::record(rec.pid as u32).unwrap();
        assert_eq!(recipe.argv[0], "sleep", "exec replaced bash");
        assert_eq!(recipe.cwd, d.path().canonicalize().unwrap());
        assert_eq!(recipe.stdout.as_deref(), Some(out.as_path()));
        assert!(recipe.env.iter().any(|(k, v)| k == "MARK" && v == "first"));
        let pids = d.path().join("flink-root-taskexecutor.pid");
        std::fs::write(&pids, format!("{}\n77\n", rec.pid)).unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let again = recipe.start("child", Role::Jm, "x").unwrap();
        assert!(again.alive());
        let again_recipe = Recipe::record(again.pid as u32).unwrap();
        assert_eq!(again_recipe.argv, recipe.argv);
        let sorted = |mut e: Vec<(String, String)>| {
            e.sort();
            e
        };
        assert_eq!(
            sorted(again_recipe.env),
            sorted(recipe.env.clone()),
            "exactly its environment, nothing of the agent's"
        );
        assert_eq!(again_recipe.cwd, recipe.cwd);
        assert_eq!(
            update_pid_files(d.path(), rec.pid as u32, again.pid as u32),
            vec![pids.clone()]
        );
        assert_eq!(
            std::fs::read_to_string(&pids).unwrap(),
            format!("{}\n77\n", again.pid)
        );
        assert!(update_pid_files(d.path(), 12345, 1).is_empty());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(again.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(Recipe::record(u32::MAX).unwrap_err().contains("/proc/"));
    }
}
