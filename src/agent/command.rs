//! Commands from the coordinator: `fence` (SIGKILL the watched process) and `restart` (start it again from the
//! agent's restart spec). Every command carries the coordinator's epoch as a fencing token: a command older than the
//! highest epoch this agent has seen is refused, so a replaced coordinator cannot act any more. Each command is
//! answered with an AGENT_EVENT of kind `command` (outcome `done`, `refused` or `failed`, and why).

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{Inner, Shared};
use crate::host::clock::now_ms;
use crate::host::process;
use crate::protocol::message::{AgentCommand, StopReady};
use crate::protocol::Message;

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
        "isolate" => isolate(shared, inner, cmd),
        "unisolate" => unisolate(inner, cmd),
        "stop-ready" => stop_ready(inner, cmd),
        other => Outcome::Refused(format!("unknown action {other:?}")),
    }
}

/// The watched process if it still runs (same pid and start time as when the agent learned it).
fn running(inner: &Inner) -> Option<u32> {
    let pid = inner.pid?;
    let s = crate::host::procfs::stat(pid)?;
    let start = s.start_ticks;
    if s.gone() {
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
        Ok(()) => {
            let reset = reset_connections(pid, &super::cached_inodes(inner, pid));
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

/// How long an isolation lasts at most (the coordinator lifts it earlier when the TaskManager's agent is back).
pub const ISOLATION_TTL: Duration = Duration::from_secs(120);

/// What to reject for an isolated TaskManager: TCP to `host` (only to `dport`, when set).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reject {
    host: std::net::IpAddr,
    dport: Option<u16>,
}

impl Reject {
    /// The iptables rule that makes every such connection fail with a TCP reset. The comment names this agent's
    /// pid, so `local down` can remove rules of agents that could not (killed).
    fn rule(&self) -> Vec<String> {
        let mut r: Vec<String> = vec![
            "OUTPUT".into(),
            "-p".into(),
            "tcp".into(),
            "-d".into(),
            self.host.to_string(),
        ];
        if let Some(p) = self.dport {
            r.extend(["--dport".into(), p.to_string()]);
        }
        r.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            format!("streamshield-isolate:{}", std::process::id()),
            "-j".into(),
            "REJECT".into(),
            "--reject-with".into(),
            "tcp-reset".into(),
        ]);
        r
    }

    /// Whether a TCP socket's remote end is one this rule rejects.
    fn matches(&self, s: &crate::host::sockdiag::DiagSocket) -> bool {
        s.remote.ip() == self.host && self.dport.is_none_or(|p| p == s.remote.port())
    }
}

/// Closes this host's open TCP connections that `rejects` match, at once and in one pass (SOCK_DESTROY through
/// sock_diag netlink, see [`crate::host::sockdiag`]), so that the JobManager does not wait for a retransmission to hit
/// the reject rules. Best effort: says what it did.
fn destroy_connections(rejects: &[Reject]) -> String {
    match crate::host::sockdiag::destroy_tcp_where(|s| rejects.iter().any(|r| r.matches(s))) {
        Ok(d) => match d.first_error {
            None => format!("{} open connection(s) closed", d.destroyed),
            Some(e) => format!(
                "{} of {} open connection(s) closed; the kernel refused the rest: {e}",
                d.destroyed, d.found
            ),
        },
        Err(e) => format!("open connections not closed: {e}"),
    }
}

/// What to reject so that every connection to `address` (and to `extra` ports of its host) fails: one port each on
/// a loopback host (everything local shares the address), the whole host otherwise.
fn isolation_rules(address: &str, extra: &[u16]) -> Option<Vec<Reject>> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host: std::net::IpAddr = host.parse().ok()?;
    if !host.is_loopback() {
        return Some(vec![Reject { host, dport: None }]);
    }
    let mut ports: Vec<u16> = extra.to_vec();
    ports.push(port);
    ports.sort_unstable();
    ports.dedup();
    Some(
        ports
            .into_iter()
            .map(|p| Reject {
                host,
                dport: Some(p),
            })
            .collect(),
    )
}

fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let out = std::process::Command::new("iptables")
        .arg(op)
        .args(rule)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {op}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn isolate(shared: &Shared, inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    let Some(addr) = cmd.address.as_deref() else {
        return Outcome::Refused("isolate needs an address".into());
    };
    let Some(rejects) = isolation_rules(addr, &cmd.ports) else {
        return Outcome::Refused(format!("{addr:?} is not an ip:port"));
    };
    if inner.isolations.iter().any(|(a, _, _)| a == addr) {
        return Outcome::Done(format!("{addr} is already rejected"));
    }
    let mut added: Vec<Vec<String>> = Vec::new();
    for reject in &rejects {
        let rule = reject.rule();
        let mut insert = vec![rule[0].clone(), "1".to_string()];
        insert.extend(rule[1..].iter().cloned());
        if let Err(e) = iptables("-I", &insert) {
            for r in &added {
                let _ = iptables("-D", r);
            }
            return Outcome::Failed(e);
        }
        added.push(rule);
    }
    let closed = destroy_connections(&rejects);
    let expires = shared.mono_ms() + ISOLATION_TTL.as_millis() as u64;
    let n = added.len();
    for rule in added {
        inner.isolations.push((addr.to_string(), rule, expires));
    }
    Outcome::Done(format!(
        "connections to {addr} ({n} rule(s): its ports {:?}) are rejected (TCP reset), for at most {} s; {closed}",
        cmd.ports,
        ISOLATION_TTL.as_secs(),
    ))
}

/// Releases a planned stop the plugin is holding (the coordinator's checkpoint is done, or could not be).
fn stop_ready(inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    let outcome = cmd.outcome.clone().unwrap_or_else(|| "skipped".into());
    let ready = StopReady {
        outcome: outcome.clone(),
        detail: cmd.reason.clone(),
    };
    if Shared::tell_plugin(inner, Message::StopReady(ready)) {
        Outcome::Done(format!("the plugin may stop its process now ({outcome})"))
    } else {
        Outcome::Failed(
            "no plugin connected: the process is gone already or stopped on its own time-out"
                .into(),
        )
    }
}

fn unisolate(inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    let Some(addr) = cmd.address.as_deref() else {
        return Outcome::Refused("unisolate needs an address".into());
    };
    let before = inner.isolations.len();
    inner.isolations.retain(|(a, rule, _)| {
        if a == addr {
            let _ = iptables("-D", rule);
            false
        } else {
            true
        }
    });
    if inner.isolations.len() < before {
        Outcome::Done(format!("{addr} is no longer rejected"))
    } else {
        Outcome::Done(format!("{addr} was not rejected"))
    }
}

/// Lifts every isolation (agent shutdown).
pub fn lift_all(shared: &Shared) {
    let mut inner = shared.lock();
    for (_, rule, _) in inner.isolations.drain(..) {
        let _ = iptables("-D", &rule);
    }
}

/// Expires isolations, and fences a TaskManager cut off from everything: its agent has lost the coordinator for
/// the partition tolerance and cannot reach the JobManager either. The cluster fails it over; fencing it here keeps a
/// TaskManager that comes back from the partition from producing output of its own.
pub async fn partition_watch(
    shared: std::sync::Arc<Shared>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                lift_all(&shared);
                return;
            }
            _ = tick.tick() => {}
        }
        let now = shared.mono_ms();
        let cut_off_since = {
            let mut inner = shared.lock();
            inner.isolations.retain(|(_, rule, expires)| {
                if *expires <= now {
                    let _ = iptables("-D", rule);
                    false
                } else {
                    true
                }
            });
            if inner.self_fenced {
                continue;
            }
            inner.uplink_down_since
        };
        let (Some(since), Some(jm)) = (cut_off_since, shared.cfg.jobmanager.clone()) else {
            continue;
        };
        if shared.cfg.watches != crate::protocol::Role::Tm {
            // Only a TaskManager is fenced by its own agent; a JobManager never.
            continue;
        }
        if now.saturating_sub(since) < shared.cfg.partition_tolerance.as_millis() as u64 {
            continue;
        }
        let reachable = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(&jm),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if reachable {
            continue;
        }
        let mut inner = shared.lock();
        inner.self_fenced = true;
        let outcome = match running(&inner) {
            Some(pid) => match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
                Ok(()) => format!("SIGKILL sent to pid {pid}"),
                Err(e) => format!("SIGKILL of pid {pid} failed: {e}"),
            },
            None => "nothing to fence: the process is already gone".into(),
        };
        tracing::warn!(%outcome, jobmanager = %jm, "Cut off from the coordinator and the JobManager: fencing the TaskManager");
        let detail = serde_json::json!({
            "outcome": outcome,
            "coordinator_silent_ms": now.saturating_sub(since),
            "jobmanager": jm,
        });
        shared.push_event(&mut inner, "self-fenced", detail);
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

    #[test]
    fn isolation_rules_need_an_ip_and_a_port() {
        let rules: Vec<Vec<String>> = isolation_rules("127.0.0.1:35393", &[40001, 35393])
            .unwrap()
            .iter()
            .map(Reject::rule)
            .collect();
        assert_eq!(rules.len(), 2, "one per distinct port on loopback");
        let r = &rules[0];
        assert_eq!(r[0], "OUTPUT");
        assert!(r.windows(2).any(|w| w == ["--dport", "35393"]));
        assert!(rules[1].windows(2).any(|w| w == ["--dport", "40001"]));
        assert!(r.windows(2).any(|w| w == ["--reject-with", "tcp-reset"]));
        assert!(r.iter().any(|a| a.starts_with("streamshield-isolate:")));
        let remote = isolation_rules("10.0.0.7:6122", &[1, 2]).unwrap();
        assert_eq!(remote.len(), 1, "a remote host is rejected whole");
        assert!(!remote[0].rule().iter().any(|a| a == "--dport"));
        // The open connections closed with them: those whose remote end the rules name.
        let sock = |remote: &str| crate::host::sockdiag::DiagSocket {
            inode: 1,
            remote: remote.parse().unwrap(),
        };
        let local = isolation_rules("127.0.0.1:35393", &[40001]).unwrap();
        let hit = |s| local.iter().any(|r| r.matches(&s));
        assert!(hit(sock("127.0.0.1:35393")) && hit(sock("127.0.0.1:40001")));
        assert!(!hit(sock("127.0.0.1:40002")) && !hit(sock("10.0.0.7:35393")));
        assert!(remote[0].matches(&sock("10.0.0.7:1234")));
        assert!(!remote[0].matches(&sock("10.0.0.8:6122")));
        assert!(
            isolation_rules("localhost:1", &[]).is_none(),
            "names are not resolved"
        );
        assert!(isolation_rules("127.0.0.1", &[]).is_none());
        assert!(isolation_rules("127.0.0.1:99999", &[]).is_none());
    }
}
