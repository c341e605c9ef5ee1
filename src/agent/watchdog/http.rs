//! The HTTP watchdog: GET the health URL; any 2xx answer is up, anything else is down with its status.

use std::time::{Duration, Instant};

use super::{Observation, Reach};
use crate::protocol::watchdog::{Member, TargetState};

pub struct Http {
    client: reqwest::Client,
    url: String,
    host: String,
}

impl Http {
    pub fn new(url: &str, host: &str) -> Http {
        Http {
            client: reqwest::Client::builder()
                .user_agent(concat!("streamshield-watchdog/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            url: url.to_string(),
            host: host.to_string(),
        }
    }

    pub async fn probe(&mut self, timeout: Duration) -> Observation {
        let start = Instant::now();
        let r = self.client.get(&self.url).timeout(timeout).send().await;
        let ms = start.elapsed().as_millis();
        let (up, evidence) = match r {
            Ok(resp) if resp.status().is_success() => {
                (true, format!("HTTP {} in {ms} ms", resp.status().as_u16()))
            }
            Ok(resp) => (false, format!("HTTP {} in {ms} ms", resp.status().as_u16())),
            Err(e) if e.is_timeout() => (false, Reach::Hung(timeout).to_string()),
            Err(e) => (false, Reach::Refused(error_chain(&e)).to_string()),
        };
        let state = if up {
            TargetState::Healthy
        } else {
            TargetState::Down
        };
        let member = Member {
            name: self.host.clone(),
            up,
            evidence: evidence.clone(),
        };
        Observation::new(state, evidence, vec![member])
    }
}

/// reqwest's error with its causes (the outermost alone says only "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
