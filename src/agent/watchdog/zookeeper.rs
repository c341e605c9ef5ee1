//! The ZooKeeper watchdog: the `srvr` command (a four-letter word, whitelisted by default since ZooKeeper 3.5) to
//! every server of the ensemble. A server that answers with its mode (leader, follower, standalone) serves; one that
//! says it is not serving requests has lost its quorum. The ensemble is down when no majority serves.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Observation, Reach};
use crate::protocol::watchdog::{Member, TargetState};

/// An answer longer than this is not `srvr`'s.
const MAX_ANSWER: usize = 64 << 10;

pub struct Zookeeper {
    servers: Vec<String>,
}

/// What one server said.
enum Said {
    Serving {
        mode: String,
        took: Duration,
    },
    NotServing,
    /// It answered, but `srvr` is not in its `4lw.commands.whitelist`: alive, whether it serves is unknown.
    NotAllowed,
}

impl Zookeeper {
    pub fn new(servers: &[String]) -> Zookeeper {
        Zookeeper {
            servers: servers.to_vec(),
        }
    }

    pub async fn probe(&mut self, timeout: Duration) -> Observation {
        let asks = self
            .servers
            .iter()
            .map(|s| async move { srvr(s, timeout).await.map_err(|r| r.after(timeout)) });
        let answers = futures_util::future::join_all(asks).await;
        let mut members = Vec::new();
        let (mut serving, mut unknown, mut leader) = (0, 0, false);
        for (server, a) in self.servers.iter().zip(answers) {
            let (up, evidence) = match a {
                Ok(Said::Serving { mode, took }) => {
                    serving += 1;
                    leader |= mode == "leader" || mode == "standalone";
                    (true, format!("{mode}, answered in {} ms", took.as_millis()))
                }
                Ok(Said::NotServing) => {
                    (false, "not currently serving requests (no quorum)".into())
                }
                Ok(Said::NotAllowed) => {
                    unknown += 1;
                    (
                        true,
                        "answers, but srvr is not in its 4lw.commands.whitelist".into(),
                    )
                }
                Err(reach) => (false, reach.to_string()),
            };
            members.push(Member {
                name: server.clone(),
                up,
                evidence,
            });
        }
        let n = self.servers.len();
        let majority = n / 2 + 1;
        let list = |ms: &[Member]| {
            ms.iter()
                .filter(|m| !m.up)
                .map(|m| format!("{}: {}", m.name, m.evidence))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let (state, evidence) = if serving + unknown < majority {
            (
                TargetState::Down,
                format!(
                    "{serving} of {n} servers serving, {majority} needed ({})",
                    list(&members)
                ),
            )
        } else if unknown > 0 {
            (
                TargetState::Degraded,
                format!(
                    "{unknown} of {n} servers do not allow srvr: add it to 4lw.commands.whitelist"
                ),
            )
        } else if serving < n || !leader {
            (
                TargetState::Degraded,
                format!(
                    "{serving} of {n} servers serving, quorum kept ({})",
                    list(&members)
                ),
            )
        } else {
            (
                TargetState::Healthy,
                format!("{serving} of {n} servers serving"),
            )
        };
        Observation::new(state, evidence, members)
    }
}

async fn srvr(server: &str, timeout: Duration) -> Result<Said, Reach> {
    let start = Instant::now();
    let mut s = super::connect(server, timeout).await?;
    let exchange = async {
        s.write_all(b"srvr").await.map_err(Reach::io)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let k = s.read(&mut buf).await.map_err(Reach::io)?;
            if k == 0 {
                break;
            }
            out.extend_from_slice(&buf[..k]);
            if out.len() > MAX_ANSWER {
                return Err(Reach::Garbled(format!("an answer over {MAX_ANSWER} bytes")));
            }
        }
        Ok(out)
    };
    let out = tokio::time::timeout(timeout.saturating_sub(start.elapsed()), exchange)
        .await
        .map_err(|_| Reach::Hung(timeout))??;
    let text = String::from_utf8_lossy(&out);
    if text.contains("not in the whitelist") {
        return Ok(Said::NotAllowed);
    }
    if text.contains("not currently serving") {
        return Ok(Said::NotServing);
    }
    match text.lines().find_map(|l| l.strip_prefix("Mode:")) {
        Some(mode) => Ok(Said::Serving {
            mode: mode.trim().to_string(),
            took: start.elapsed(),
        }),
        None if text.is_empty() => Err(Reach::Garbled("closed without an answer".into())),
        None => Err(Reach::Garbled(format!(
            "an answer without its Mode: {:?}",
            text.chars().take(80).collect::<String>()
        ))),
    }
}
