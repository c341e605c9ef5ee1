//! Talking to a HotSpot JVM through its attach socket, the way `jcmd` does, without starting a JVM of our own
//! (which takes most of a second on a small machine and would blur when a pause begins).
//!
//! HotSpot on Linux: the client creates `.attach_pid<pid>` in the target's working directory (or /tmp) and sends
//! SIGQUIT; the target then listens on `/tmp/.java_pid<pid>`. A request is `1\0<command>\0<arg0>\0<arg1>\0<arg2>\0`;
//! the reply is a status line (`0` = ok) followed by the command's output, and the socket closes when done.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("JVM {pid} did not open its attach socket {socket} within {waited:?} (is the attach mechanism disabled?)")]
    NoSocket {
        pid: i32,
        socket: PathBuf,
        waited: Duration,
    },
    #[error("attach to JVM {pid}: {source}")]
    Io {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("JVM {pid} answered {command:?} with status {status}: {output}")]
    Failed {
        pid: i32,
        command: String,
        status: String,
        output: String,
    },
}

fn socket_path(pid: i32) -> PathBuf {
    PathBuf::from(format!("/tmp/.java_pid{pid}"))
}

/// Makes sure the JVM's attach listener runs (starting it with the attach file and SIGQUIT if needed).
pub fn ensure_listener(pid: i32, waited: Duration) -> Result<(), Error> {
    let socket = socket_path(pid);
    if UnixStream::connect(&socket).is_ok() {
        return Ok(());
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| "/tmp".into());
    let mut trigger = cwd.join(format!(".attach_pid{pid}"));
    if std::fs::write(&trigger, b"").is_err() {
        trigger = PathBuf::from(format!("/tmp/.attach_pid{pid}"));
        std::fs::write(&trigger, b"").map_err(|source| Error::Io { pid, source })?;
    }
    let start = Instant::now();
    let result = loop {
        kill(Pid::from_raw(pid), Signal::SIGQUIT).map_err(|e| Error::Io {
            pid,
            source: std::io::Error::from_raw_os_error(e as i32),
        })?;
        std::thread::sleep(Duration::from_millis(100));
        if UnixStream::connect(&socket).is_ok() {
            break Ok(());
        }
        if start.elapsed() >= waited {
            break Err(Error::NoSocket {
                pid,
                socket: socket.clone(),
                waited,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = std::fs::remove_file(&trigger);
    result
}

/// [`jcmd`], asked again (up to `attempts` times in all, the listener re-checked in between) while the JVM's
/// answer does not even start with a numeric status: such a reply means the command was not taken (one `tm-gc-pause`
/// round in 3 got the status line ":" from a loaded JVM and measured nothing).
pub fn jcmd_retrying(pid: i32, command: &str, attempts: u32) -> Result<String, Error> {
    let mut left = attempts.max(1);
    loop {
        left -= 1;
        match jcmd(pid, command) {
            Err(Error::Failed { status, .. }) if left > 0 && status.parse::<i64>().is_err() => {
                tracing::warn!(pid, command, status, "garbled attach reply; asking again");
                std::thread::sleep(Duration::from_millis(200));
                ensure_listener(pid, Duration::from_secs(5))?;
            }
            other => return other,
        }
    }
}

/// Runs a diagnostic command (`jcmd <pid> <command>`) and returns its output once the JVM has finished it.
pub fn jcmd(pid: i32, command: &str) -> Result<String, Error> {
    let io = |source| Error::Io { pid, source };
    let mut s = UnixStream::connect(socket_path(pid)).map_err(io)?;
    let mut req = Vec::new();
    for part in ["1", "jcmd", command, "", ""] {
        req.extend_from_slice(part.as_bytes());
        req.push(0);
    }
    s.write_all(&req).map_err(io)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(io)?;
    let (status, rest) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    if status.trim() != "0" {
        return Err(Error::Failed {
            pid,
            command: command.into(),
            status: status.trim().into(),
            output: rest.trim().chars().take(300).collect(),
        });
    }
    Ok(rest.to_string())
}

/// The longest full-GC pause in a HotSpot `-Xlog:gc` file (unified logging, info level), with its line:
/// `[...] GC(7) Pause Full (System.gc()) 1500M->1490M(3000M) 11234.567ms`.
pub fn longest_full_pause(log: &str) -> Option<(f64, String)> {
    log.lines()
        .filter(|l| l.contains("Pause Full"))
        .filter_map(|l| {
            let last = l.split_whitespace().last()?;
            let ms: f64 = last.strip_suffix("ms")?.parse().ok()?;
            Some((ms, l.trim().to_string()))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_longest_full_pause_in_a_gc_log() {
        let log = "[1795521000123ms][12.001s] GC(3) Pause Young (Allocation Failure) 800M->600M(3000M) 45.100ms\n\
                   [1795521010456ms][22.334s] GC(4) Pause Full (System.gc()) 1700M->1650M(3000M) 11234.567ms\n\
                   [1795521020000ms][31.000s] GC(5) Pause Full (Allocation Failure) 1800M->1700M(3000M) 900.5ms\n\
                   garbage line\n";
        let (ms, line) = longest_full_pause(log).unwrap();
        assert!((ms - 11234.567).abs() < 1e-6);
        assert!(line.contains("GC(4)"));
        assert_eq!(longest_full_pause("nothing here"), None);
    }

    #[test]
    fn a_process_without_a_jvm_is_a_clear_error() {
        // Our own pid: not a JVM, and nothing listens on its attach socket.
        let me = std::process::id() as i32;
        assert!(matches!(jcmd(me, "GC.run"), Err(Error::Io { .. })));
    }
}
