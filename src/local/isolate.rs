//! Per-TaskManager network isolation for the drill's `tm-partition`: with `local up --isolate`, every TaskManager
//! (and its agent) starts inside its own cgroup (v2), so that one iptables rule pair matching that cgroup drops every
//! packet its sockets send or receive — on loopback, on this machine only. Nothing else is touched; `local down`
//! removes the rules and the cgroups of its run.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "network isolation needs a cgroup v2 hierarchy (none is mounted; see /proc/self/mounts)"
    )]
    NoCgroup2,
    #[error("network isolation needs iptables with the cgroup match: {0} (apt-get install iptables; run as root)")]
    NoIptables(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("iptables {args}: {detail}")]
    Iptables { args: String, detail: String },
}

/// Where the cgroup v2 hierarchy is mounted.
pub fn cgroup2_root() -> Result<PathBuf, Error> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .next()
        .ok_or(Error::NoCgroup2)
}

/// The run's cgroup, relative to the hierarchy: `streamshield-<hash of the run dir>`.
pub fn run_group(run_dir: &Path) -> String {
    let h = Sha256::digest(run_dir.display().to_string().as_bytes());
    format!(
        "streamshield-{}",
        h.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Checks that isolation can work here and creates the run's cgroup; returns its relative path.
pub fn prepare(run_dir: &Path) -> Result<String, Error> {
    let root = cgroup2_root()?;
    let out = Command::new("iptables")
        .args(["-m", "cgroup", "--help"])
        .output()
        .map_err(|e| Error::NoIptables(e.to_string()))?;
    if !String::from_utf8_lossy(&out.stdout).contains("--path") {
        return Err(Error::NoIptables(
            "its cgroup match does not offer --path".into(),
        ));
    }
    let group = run_group(run_dir);
    let dir = root.join(&group);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })?;
    Ok(group)
}

/// Creates the cgroup of one process of the run; returns its absolute directory.
pub fn member(group: &str, name: &str) -> Result<PathBuf, Error> {
    let dir = cgroup2_root()?.join(group).join(name);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn iptables(args: &[String]) -> Result<(), Error> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .map_err(|e| Error::NoIptables(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Iptables {
            args: args.join(" "),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The rules that cut `group/name` off: everything its sockets send (OUTPUT) or receive (INPUT) is dropped.
fn rules(group: &str, name: &str) -> Vec<Vec<String>> {
    let path = format!("{group}/{name}");
    ["OUTPUT", "INPUT"]
        .iter()
        .map(|chain| {
            [chain, "-m", "cgroup", "--path", &path, "-j", "DROP"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
        .collect()
}

/// Cuts the network of the process in `group/name`. Returns the rules to remove on heal.
pub fn cut(group: &str, name: &str) -> Result<Vec<Vec<String>>, Error> {
    let mut added = Vec::new();
    for r in rules(group, name) {
        let mut add = vec!["-I".to_string()];
        add.extend(r.iter().cloned());
        if let Err(e) = iptables(&add) {
            heal(&added);
            return Err(e);
        }
        added.push(r);
    }
    Ok(added)
}

/// Removes rules added by [`cut`] (each once; a rule already gone is fine).
pub fn heal(rules: &[Vec<String>]) {
    for r in rules {
        let mut del = vec!["-D".to_string()];
        del.extend(r.iter().cloned());
        let _ = iptables(&del);
    }
}

/// Removes the rejection rules agents of this run added (`isolate` orders; their comment names the agent's pid) —
/// the agents lift them when they stop, this catches agents that were killed.
pub fn sweep_agent_rules(agent_pids: &[i32]) {
    let listed = Command::new("iptables")
        .args(["-S", "OUTPUT"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for line in listed.lines() {
        let ours = agent_pids.iter().any(|p| {
            line.contains(&format!("streamshield-isolate:{p} "))
                || line.contains(&format!("streamshield-isolate:{p}\""))
        });
        if !ours {
            continue;
        }
        let mut args: Vec<String> = line
            .split_whitespace()
            .map(|s| s.trim_matches('"').to_string())
            .collect();
        if args.first().map(String::as_str) == Some("-A") {
            args[0] = "-D".into();
            let _ = iptables(&args);
        }
    }
}

/// Removes every iptables rule that names the run's cgroup, then the run's (empty) cgroups.
pub fn sweep(group: &str) {
    for chain in ["OUTPUT", "INPUT"] {
        let listed = Command::new("iptables")
            .args(["-S", chain])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for line in listed.lines().filter(|l| l.contains(&format!("{group}/"))) {
            let mut args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            if args.first().map(String::as_str) == Some("-A") {
                args[0] = "-D".into();
                let _ = iptables(&args);
            }
        }
    }
    if let Ok(root) = cgroup2_root() {
        let dir = root.join(group);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_per_run_and_rules_name_the_member() {
        let a = run_group(Path::new("/tmp/a"));
        assert!(a.starts_with("streamshield-") && a.len() == "streamshield-".len() + 12);
        assert_ne!(a, run_group(Path::new("/tmp/b")));
        let r = rules(&a, "tm-1");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0][0], "OUTPUT");
        assert_eq!(r[1][0], "INPUT");
        assert!(r[0].contains(&format!("{a}/tm-1")));
    }
}
