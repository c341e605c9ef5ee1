//! Processes that `local` starts: spawning them detached, recognising them again later (pid + start time, so a
//! recycled pid is never signalled), stopping them, and finding who holds a busy port.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use thiserror::Error;

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
    #[error("port {port} on 127.0.0.1 is already in use{}; stop it or pick other ports with --port-offset", holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default())]
    PortBusy { port: u16, holder: Option<String> },
}

/// A process started by `local`, as recorded in the run's state file.
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

/// Start time (clock ticks after boot) and state letter of `pid`, from `/proc/<pid>/stat`.
pub fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // rest starts at field 3, so field 22 is index 19.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

impl Recorded {
    /// True when the recorded process still runs (same pid and start time, not a zombie).
    pub fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((start, state)) if start == self.start_ticks && state != 'Z' && state != 'X')
    }

    /// True when the process is stopped (SIGSTOP).
    pub fn stopped(&self) -> bool {
        matches!(proc_stat(self.pid), Some((start, 'T')) if start == self.start_ticks)
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
    /// (the drill cuts a TaskManager's network by matching its cgroup).
    pub cgroup: Option<PathBuf>,
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
    let err = out.try_clone().map_err(|source| Error::Log {
        path: spec.out.clone(),
        source,
    })?;
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
        if let Some((t, _)) = proc_stat(pid) {
            start_ticks = t;
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

/// Fails with the port and, where /proc tells, the process holding it.
pub fn check_port_free(port: u16) -> Result<(), Error> {
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => {
            drop(l);
            Ok(())
        }
        Err(_) => Err(Error::PortBusy {
            port,
            holder: port_holder(port),
        }),
    }
}

/// `"pid 1234 (java)"` for the process listening on `port`, if /proc shows it.
pub fn port_holder(port: u16) -> Option<String> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if socket_inodes(&entry.path()).any(|inode| inodes.contains(&inode)) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(format!("pid {pid} ({})", comm.trim()));
        }
    }
    Some("another process (its owner is not visible from here)".into())
}

/// One TCP socket of a process, by its ports (remote port 0: a listening socket) and its inode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TcpSocket {
    pub local_port: u16,
    pub remote_port: u16,
    pub inode: String,
}

/// Every TCP socket process `pid` holds, from /proc, also while it is being torn down (see
/// [`process_socket_inodes`]). Empty once its files are closed.
pub fn tcp_sockets(pid: i32) -> Vec<TcpSocket> {
    let inodes = process_socket_inodes(pid);
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut sockets: Vec<TcpSocket> = tcp_tables()
        .iter()
        .flat_map(|t| table_sockets(t, &inodes))
        .collect();
    sockets.sort_unstable();
    sockets.dedup();
    sockets
}

/// The socket inodes among process `pid`'s open files. A killed multi-threaded process's group leader exits
/// first and shows no open files (a zombie) while its other threads still hold them, for a JVM up to a few hundred
/// milliseconds: then they are read through the first thread that still shows them.
pub fn process_socket_inodes(pid: i32) -> std::collections::HashSet<String> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let own: std::collections::HashSet<String> = socket_inodes(&dir).collect();
    if !own.is_empty() {
        return own;
    }
    std::fs::read_dir(dir.join("task"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|t| socket_inodes(&t.path()).collect::<std::collections::HashSet<String>>())
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

/// Socket inodes listening on `port` (any address), from /proc/net/tcp and tcp6.
fn listening_inodes(port: u16) -> Vec<String> {
    tcp_tables()
        .iter()
        .flat_map(|t| parse_listening(t, port))
        .collect()
}

/// The texts of /proc/net/tcp and tcp6 (a table that cannot be read is left out).
fn tcp_tables() -> Vec<String> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .collect()
}

/// The socket inodes among the open files of the process whose /proc directory is `proc_dir`.
fn socket_inodes(proc_dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(proc_dir.join("fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()
                .and_then(|s| s.strip_prefix("socket:["))
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string)
        })
}

/// One row of a /proc/net/tcp table.
struct TcpRow {
    local_port: u16,
    remote_port: u16,
    listening: bool,
    inode: String,
}

fn tcp_rows(table: &str) -> impl Iterator<Item = TcpRow> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address is field 1 ("0100007F:1F90"), rem_address field 2, st field 3 ("0A" = LISTEN), inode
        // field 9.
        let port = |i: usize| u16::from_str_radix(f.get(i)?.rsplit(':').next()?, 16).ok();
        Some(TcpRow {
            local_port: port(1)?,
            remote_port: port(2)?,
            listening: *f.get(3)? == "0A",
            inode: f.get(9)?.to_string(),
        })
    })
}

/// The sockets of one /proc/net/tcp table whose inode is among `inodes`.
fn table_sockets(table: &str, inodes: &std::collections::HashSet<String>) -> Vec<TcpSocket> {
    tcp_rows(table)
        .filter(|r| inodes.contains(&r.inode))
        .map(|r| TcpSocket {
            local_port: r.local_port,
            remote_port: r.remote_port,
            inode: r.inode,
        })
        .collect()
}

fn parse_listening(table: &str, port: u16) -> Vec<String> {
    tcp_rows(table)
        .filter(|r| r.listening && r.local_port == port)
        .map(|r| r.inode)
        .collect()
}

/// Held by unit tests that open TCP connections from ephemeral ports and by the one that expects a port it has
/// just released to be free: a connection of another test could take that port in between.
#[cfg(test)]
pub(crate) static EPHEMERAL_PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_s_tcp_ports_come_from_its_socket_inodes() {
        let _ports = EPHEMERAL_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:9C40 0100007F:17E3 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: 0100007F:9C41 0100007F:17E3 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
";
        let mine: std::collections::HashSet<String> =
            ["111", "333"].iter().map(|s| s.to_string()).collect();
        let ports: Vec<u16> = table_sockets(table, &mine)
            .iter()
            .map(|s| s.local_port)
            .collect();
        assert_eq!(ports, vec![8080, 40001]);
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(tcp_sockets(std::process::id() as i32)
            .iter()
            .any(|s| s.local_port == port));
    }

    #[test]
    fn a_process_s_tcp_sockets_name_both_ports() {
        let _ports = EPHEMERAL_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let local = c.local_addr().unwrap().port();
        let mine = tcp_sockets(std::process::id() as i32);
        for want in [(port, 0), (local, port)] {
            assert!(
                mine.iter()
                    .any(|s| (s.local_port, s.remote_port) == want && !s.inode.is_empty()),
                "{want:?} not in {mine:?}"
            );
        }
        assert!(tcp_sockets(i32::MAX).is_empty(), "no such process");
    }

    #[test]
    fn parses_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F91 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(parse_listening(table, 8081), vec!["12345".to_string()]);
        assert!(parse_listening(table, 8080).is_empty());
    }

    #[test]
    fn busy_port_names_this_process() {
        let _ports = EPHEMERAL_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let err = check_port_free(port).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&port.to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(l);
        check_port_free(port).unwrap();
    }

    #[test]
    fn own_process_is_recognised_and_a_recycled_pid_is_not() {
        let me = std::process::id() as i32;
        let (start, _) = proc_stat(me).unwrap();
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
        })
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = stop_all(std::slice::from_ref(&rec), Duration::from_millis(500)).await;
        assert_eq!(r, vec![("stubborn".to_string(), Stopped::Killed)]);
        assert!(!rec.alive());
    }
}
