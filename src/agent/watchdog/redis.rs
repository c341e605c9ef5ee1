//! The Redis watchdog: PING on a kept connection (the maintained `redis` crate), reconnecting after any failure, so
//! a server that accepts connections and never answers (SIGSTOPped, blocked by a long script) shows as hung, and an
//! error answer (`LOADING`, `NOAUTH`, `MASTERDOWN`) is the evidence as Redis wrote it.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::{Observation, Reach};
use crate::protocol::watchdog::{Member, TargetState};

pub struct Redis {
    client: Result<redis::Client, String>,
    host: String,
    conn: Option<MultiplexedConnection>,
}

impl Redis {
    pub fn new(url: &str, host: &str) -> Redis {
        Redis {
            client: redis::Client::open(url).map_err(|e| e.to_string()),
            host: host.to_string(),
            conn: None,
        }
    }

    pub async fn probe(&mut self, timeout: Duration) -> Observation {
        let r = self.ping(timeout).await.map_err(|r| r.after(timeout));
        let (state, evidence) = match &r {
            Ok(took) => (
                TargetState::Healthy,
                format!("PONG in {} ms", took.as_millis()),
            ),
            Err(reach) => {
                // The next probe connects afresh.
                self.conn = None;
                (TargetState::Down, format!("{}: {reach}", self.host))
            }
        };
        let member = Member {
            name: self.host.clone(),
            up: r.is_ok(),
            evidence: evidence.clone(),
        };
        Observation::new(state, evidence, vec![member])
    }

    async fn ping(&mut self, timeout: Duration) -> Result<Duration, Reach> {
        let start = Instant::now();
        let client = self
            .client
            .as_ref()
            .map_err(|e| Reach::Refused(e.clone()))?;
        if self.conn.is_none() {
            // Connected at the TCP level first, so that a server that accepts and never answers is told apart.
            drop(super::connect(&self.host, timeout).await?);
            let rest = timeout.saturating_sub(start.elapsed());
            let c = tokio::time::timeout(rest, client.get_multiplexed_async_connection())
                .await
                .map_err(|_| Reach::Hung(timeout))?
                .map_err(|e| answer_error(e, timeout))?;
            self.conn = Some(c);
        }
        let conn = self.conn.as_mut().expect("set above");
        let rest = timeout.saturating_sub(start.elapsed());
        let pong: String = tokio::time::timeout(rest, redis::cmd("PING").query_async(conn))
            .await
            .map_err(|_| Reach::Hung(timeout))?
            .map_err(|e| answer_error(e, timeout))?;
        if pong != "PONG" {
            return Err(Reach::Garbled(format!("PING answered {pong:?}")));
        }
        Ok(start.elapsed())
    }
}

/// The client's own time-outs are a hung server too; any other error is Redis's answer or the connection's end.
fn answer_error(e: redis::RedisError, timeout: Duration) -> Reach {
    if e.is_timeout() {
        Reach::Hung(timeout)
    } else {
        Reach::Refused(e.to_string())
    }
}
