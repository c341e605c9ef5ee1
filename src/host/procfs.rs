//! What /proc says about a process: its state and CPU time, its command line, environment, working directory,
//! executable, open files and cgroup. Every reader returns `None` (or an error naming the file) for a process that
//! is gone or not readable; nothing here panics on what a file holds.

use std::path::{Path, PathBuf};

/// The fields of `/proc/<pid>/stat` StreamShield uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The state letter (R, S, D, T, t, Z, X, ...).
    pub state: char,
    /// The kernel's per-process flags (field 9).
    pub flags: u64,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// Start time in clock ticks since boot (field 22): with the pid, identifies a process.
    pub start_ticks: u64,
    /// Resident set size, pages (field 24).
    pub rss_pages: u64,
}

/// PF_EXITING in a task's flags (include/linux/sched.h): the task is in do_exit().
pub const PF_EXITING: u64 = 0x4;

/// PF_KTHREAD (include/linux/sched.h): a kernel thread, which has no command line at all.
pub const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat {
    /// The process's first thread is exiting: it is dying (a killed JVM shows this within a millisecond, long before
    /// it is a zombie).
    pub fn exiting(&self) -> bool {
        self.flags & PF_EXITING != 0
    }

    /// A zombie or dead entry.
    pub fn gone(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The host's name, from the kernel (none when it cannot be read or is empty).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Parses the text of a stat file; None when it is not one.
pub fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may contain spaces or ')': split after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(Stat {
        state: f.first()?.chars().next()?,
        flags: field(9)?,
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        rss_pages: field(24)?,
    })
}

/// `/proc/<pid>/stat`, or None when the process does not exist.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn proc_path(pid: u32, what: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{what}"))
}

/// Reads a /proc file of `pid`, naming it in the error.
fn read(pid: u32, what: &str) -> Result<Vec<u8>, String> {
    let p = proc_path(pid, what);
    std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Splits a NUL-separated /proc file (cmdline, environ) into its strings.
pub fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The command line (argv) of `pid`.
///
/// A process in the middle of `execve` (just spawned) briefly shows an empty command line while its new memory is
/// set up: that is read again for up to [`EXEC_SETTLE`] as long as the process is not a zombie.
pub fn cmdline(pid: u32) -> Result<Vec<String>, String> {
    let deadline = std::time::Instant::now() + EXEC_SETTLE;
    loop {
        let argv = nul_separated(&read(pid, "cmdline")?);
        if !argv.is_empty() {
            return Ok(argv);
        }
        let settling =
            stat(pid).is_some_and(|s| !s.gone() && !s.exiting() && s.flags & PF_KTHREAD == 0);
        if !settling || std::time::Instant::now() >= deadline {
            return Err(format!(
                "/proc/{pid}/cmdline is empty (a kernel thread or a zombie)"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// How long an empty command line of a live process is read again (an `execve` in progress).
pub const EXEC_SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

/// The environment `pid` was started with (needs the same user or root).
pub fn environ(pid: u32) -> Result<Vec<(String, String)>, String> {
    Ok(nul_separated(&read(pid, "environ")?)
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

fn link(pid: u32, what: &str) -> Result<PathBuf, String> {
    let p = proc_path(pid, what);
    std::fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))
}

/// The working directory of `pid`.
pub fn cwd(pid: u32) -> Result<PathBuf, String> {
    link(pid, "cwd")
}

/// The executable of `pid`.
pub fn exe(pid: u32) -> Result<PathBuf, String> {
    link(pid, "exe")
}

/// Where file descriptor `fd` of `pid` points (a path, `pipe:[..]`, `socket:[..]`, `/dev/null`, ...).
pub fn fd_target(pid: u32, fd: u32) -> Option<PathBuf> {
    link(pid, &format!("fd/{fd}")).ok()
}

/// The cgroup v2 directory `pid` belongs to (under /sys/fs/cgroup), when the host uses the unified hierarchy.
pub fn cgroup_v2(pid: u32) -> Option<PathBuf> {
    let text = String::from_utf8(read(pid, "cgroup").ok()?).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

/// True when `pid` runs a Java virtual machine: its executable is called `java`, or it has `libjvm.so` mapped
/// (a JVM embedded by another launcher).
pub fn is_jvm(pid: u32) -> bool {
    if exe(pid).is_ok_and(|e| e.file_name().is_some_and(|n| n == "java")) {
        return true;
    }
    std::fs::read_to_string(proc_path(pid, "maps"))
        .is_ok_and(|m| m.lines().any(|l| l.ends_with("/libjvm.so")))
}

/// The owner (real uid) of `pid`.
pub fn uid(pid: u32) -> Option<u32> {
    let text = String::from_utf8(read(pid, "status").ok()?).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let text = "4242 (ja) va) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 40 0 123456 1000 77 1844";
        let s = parse_stat(text).unwrap();
        assert_eq!(
            (s.state, s.cpu_ticks, s.start_ticks, s.rss_pages),
            ('S', 300, 123456, 77)
        );
        assert!(!s.exiting() && !s.gone());
        let dying = text.replace("4194560", "4194564");
        assert!(parse_stat(&dying).unwrap().exiting());
        for bad in ["", "no parens", "1 (x) S 1 2", "1 (x)"] {
            assert!(parse_stat(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert!(matches!(s.state, 'R' | 'S'));
        assert!(s.rss_pages > 0);
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(environ(me).unwrap().iter().any(|(k, _)| k == "PATH"));
        assert_eq!(cwd(me).unwrap(), std::env::current_dir().unwrap());
        assert!(exe(me).is_ok());
        assert!(!is_jvm(me), "the test binary is no JVM");
        assert!(stat(u32::MAX).is_none());
        assert!(cmdline(u32::MAX)
            .unwrap_err()
            .contains("/proc/4294967295/cmdline"));
        assert_eq!(nul_separated(b"a\0b c\0\0"), vec!["a", "b c"]);
    }
}
