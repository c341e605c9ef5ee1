//! Isolation of a partitioned TaskManager, carried out by the JobManager's agent on the coordinator's `isolate`
//! order: iptables rules that reject (TCP reset) every connection to the TaskManager's RPC endpoint and ports, and
//! the open connections to them closed through sock_diag, so that Flink's next heartbeat RPC fails as
//! "unreachable" instead of waiting for the GC-safe heartbeat time-out. Lifted by `unisolate`, after
//! [`ISOLATION_TTL`], or when the agent stops.

use std::time::Duration;

use super::command::Outcome;
use super::state::{Inner, Isolation, Shared};
use crate::protocol::message::AgentCommand;

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

pub(super) fn isolate(shared: &Shared, inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    let Some(addr) = cmd.address.as_deref() else {
        return Outcome::Refused("isolate needs an address".into());
    };
    let Some(rejects) = isolation_rules(addr, &cmd.ports) else {
        return Outcome::Refused(format!("{addr:?} is not an ip:port"));
    };
    if inner.isolations.iter().any(|i| i.address == addr) {
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
        inner.isolations.push(Isolation {
            address: addr.to_string(),
            rule,
            expires_ms: expires,
        });
    }
    Outcome::Done(format!(
        "connections to {addr} ({n} rule(s): its ports {:?}) are rejected (TCP reset), for at most {} s; {closed}",
        cmd.ports,
        ISOLATION_TTL.as_secs(),
    ))
}

pub(super) fn unisolate(inner: &mut Inner, cmd: &AgentCommand) -> Outcome {
    let Some(addr) = cmd.address.as_deref() else {
        return Outcome::Refused("unisolate needs an address".into());
    };
    let before = inner.isolations.len();
    inner.isolations.retain(|i| {
        if i.address == addr {
            let _ = iptables("-D", &i.rule);
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
    for i in inner.isolations.drain(..) {
        let _ = iptables("-D", &i.rule);
    }
}

/// Lifts isolations whose time is up.
pub fn expire(inner: &mut Inner, now_ms: u64) {
    inner.isolations.retain(|i| {
        if i.expires_ms <= now_ms {
            let _ = iptables("-D", &i.rule);
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
