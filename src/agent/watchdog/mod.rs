//! Connector watchdogs (issue 17): the agent probes the systems its TaskManagers' sinks write to — Kafka
//! ([`kafka`]), Redis ([`redis`]), an HTTP health URL ([`http`]), ZooKeeper ([`zookeeper`]) — and keeps each
//! target's state (healthy / degraded / down, [`TargetState`]) with the evidence. Every transition is logged, counted
//! and sent to the coordinator as a `watchdog` event; the states, probe latencies and members are on `/metrics`
//! (`streamshield_watchdog_*`) and `/healthz`. Targets come from configuration (`watchdog-targets`).
//!
//! The state follows the probes with hysteresis ([`Status::observe`]): a failed probe makes a healthy target
//! `degraded` at once and `down` after `watchdog-down-after` failures in a row; a down or degraded target is
//! `healthy` again only after `watchdog-up-after` good probes in a row, so that a guard does not switch back and
//! forth on a flapping system. A probe that answers slower than `watchdog-slow` counts as degraded.

pub mod http;
pub mod kafka;
pub mod redis;
pub mod target;
pub mod zookeeper;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use target::Target;

use super::Shared;
use crate::host::clock::now_ms;
use crate::protocol::watchdog::{Member, TargetKind, TargetState, WatchdogChange};
use crate::protocol::EventKind;

/// The watchdogs' settings, resolved (defaults in the agent's configuration).
#[derive(Debug, Clone)]
pub struct WatchdogSettings {
    pub targets: Vec<Target>,
    /// Time between the end of one probe and the start of the next.
    pub interval: Duration,
    /// A probe (connect and answer) that takes longer has failed: the target is hung.
    pub timeout: Duration,
    /// Failed probes in a row that make a target down.
    pub down_after: u32,
    /// Good probes in a row that make a down or degraded target healthy again.
    pub up_after: u32,
    /// A good probe slower than this counts as degraded.
    pub slow: Duration,
}

/// Why a probe did not get its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reach {
    /// The connection was refused, reset or failed (or the client said why).
    Refused(String),
    /// No connection within the time-out (packets dropped, host gone).
    NoConnection(Duration),
    /// Connected (or asked), and no answer within the time-out.
    Hung(Duration),
    /// An answer that is not one (a different protocol, a broken peer).
    Garbled(String),
}

impl Reach {
    pub fn io(e: std::io::Error) -> Reach {
        Reach::Refused(e.to_string())
    }

    /// The same, naming the probe's whole time-out (a step that ran out of what was left of it says the budget).
    pub fn after(self, timeout: Duration) -> Reach {
        match self {
            Reach::Hung(_) => Reach::Hung(timeout),
            Reach::NoConnection(_) => Reach::NoConnection(timeout),
            other => other,
        }
    }
}

impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reach::Refused(e) => write!(f, "{e}"),
            Reach::NoConnection(t) => {
                write!(f, "no connection within {}", humantime::format_duration(*t))
            }
            Reach::Hung(t) => write!(
                f,
                "hung: no answer within {}",
                humantime::format_duration(*t)
            ),
            Reach::Garbled(e) => write!(f, "not a valid answer: {e}"),
        }
    }
}

/// A TCP connection to `addr` within `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> Result<tokio::net::TcpStream, Reach> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Err(Reach::NoConnection(timeout)),
        Ok(Err(e)) => Err(Reach::Refused(e.to_string())),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Healthy, Degraded or Down.
    pub state: TargetState,
    pub evidence: String,
    pub members: Vec<Member>,
}

impl Observation {
    pub fn new(state: TargetState, evidence: String, members: Vec<Member>) -> Observation {
        Observation {
            state,
            evidence,
            members,
        }
    }
}

/// A target's state and its recent history, as `/healthz` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub target: String,
    pub kind: TargetKind,
    pub state: TargetState,
    /// When the current state began (wall ms).
    pub since_ms: i64,
    pub evidence: String,
    pub members: Vec<Member>,
    pub last_probe_ms: Option<i64>,
    pub last_probe_seconds: Option<f64>,
    #[serde(skip)]
    ok_streak: u32,
    #[serde(skip)]
    fail_streak: u32,
    /// Probes by what they found (healthy, degraded, down).
    #[serde(skip)]
    pub probes: [u64; 3],
    /// Transitions: (from, to) -> count.
    #[serde(skip)]
    pub transitions: std::collections::BTreeMap<(TargetState, TargetState), u64>,
}

impl Status {
    pub fn new(t: &Target, now_ms: i64) -> Status {
        Status {
            target: t.name.clone(),
            kind: t.kind,
            state: TargetState::Unknown,
            since_ms: now_ms,
            evidence: "not probed yet".into(),
            members: Vec::new(),
            last_probe_ms: None,
            last_probe_seconds: None,
            ok_streak: 0,
            fail_streak: 0,
            probes: [0; 3],
            transitions: Default::default(),
        }
    }

    /// The `watchdog` event's detail for arriving at the current state from `from`.
    pub fn change(&self, from: TargetState) -> WatchdogChange {
        WatchdogChange {
            target: self.target.clone(),
            kind: self.kind,
            from,
            to: self.state,
            evidence: self.evidence.clone(),
            members: self.members.clone(),
            since_ms: self.since_ms,
        }
    }

    /// Takes in one probe's result; returns the transition (from, to) when the state changed.
    pub fn observe(
        &mut self,
        mut obs: Observation,
        took: Duration,
        cfg: &WatchdogSettings,
        now_ms: i64,
    ) -> Option<(TargetState, TargetState)> {
        if obs.state == TargetState::Healthy && took > cfg.slow {
            obs.state = TargetState::Degraded;
            obs.evidence = format!(
                "slow: the probe took {} ms, over watchdog-slow {} ms ({})",
                took.as_millis(),
                cfg.slow.as_millis(),
                obs.evidence
            );
        }
        self.last_probe_ms = Some(now_ms);
        self.last_probe_seconds = Some(took.as_secs_f64());
        self.members = obs.members;
        let before = self.state;
        let next = match obs.state {
            TargetState::Healthy => {
                self.probes[0] += 1;
                self.fail_streak = 0;
                self.ok_streak += 1;
                if before == TargetState::Unknown || self.ok_streak >= cfg.up_after {
                    TargetState::Healthy
                } else {
                    before
                }
            }
            TargetState::Degraded => {
                self.probes[1] += 1;
                self.ok_streak = 0;
                self.fail_streak = 0;
                TargetState::Degraded
            }
            TargetState::Down | TargetState::Unknown => {
                self.probes[2] += 1;
                self.ok_streak = 0;
                self.fail_streak += 1;
                if self.fail_streak >= cfg.down_after {
                    TargetState::Down
                } else if before == TargetState::Down {
                    before
                } else {
                    obs.evidence = format!(
                        "{} of {} failed probes before down: {}",
                        self.fail_streak, cfg.down_after, obs.evidence
                    );
                    TargetState::Degraded
                }
            }
        };
        // The evidence is the last probe's, unless the state is held (a recovering target says why it waits).
        if next == before && next != obs.state && obs.state == TargetState::Healthy {
            self.evidence = format!(
                "recovering: {} of {} good probes ({})",
                self.ok_streak, cfg.up_after, obs.evidence
            );
        } else {
            self.evidence = obs.evidence;
        }
        if next == before {
            return None;
        }
        self.state = next;
        self.since_ms = now_ms;
        *self.transitions.entry((before, next)).or_default() += 1;
        Some((before, next))
    }
}

/// One target's prober.
enum Prober {
    Kafka(kafka::Kafka),
    Redis(redis::Redis),
    Http(http::Http),
    Zookeeper(zookeeper::Zookeeper),
}

impl Prober {
    fn new(t: &Target) -> Prober {
        match t.kind {
            TargetKind::Kafka => Prober::Kafka(kafka::Kafka::new(&t.hosts)),
            TargetKind::Redis => Prober::Redis(redis::Redis::new(&t.url, &t.hosts[0])),
            TargetKind::Http => Prober::Http(http::Http::new(&t.url, &t.hosts[0])),
            TargetKind::Zookeeper | TargetKind::Unknown => {
                Prober::Zookeeper(zookeeper::Zookeeper::new(&t.hosts))
            }
        }
    }

    async fn probe(&mut self, timeout: Duration) -> Observation {
        match self {
            Prober::Kafka(p) => p.probe(timeout).await,
            Prober::Redis(p) => p.probe(timeout).await,
            Prober::Http(p) => p.probe(timeout).await,
            Prober::Zookeeper(p) => p.probe(timeout).await,
        }
    }
}

/// Probes every configured target until `stop`; one task per target, so a hung one delays no other.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), String> {
    let cfg = shared.cfg.watchdog.clone();
    let tasks: Vec<_> = cfg
        .targets
        .iter()
        .cloned()
        .map(|t| tokio::spawn(watch_one(shared.clone(), t, stop.clone())))
        .collect();
    stop.cancelled().await;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn watch_one(shared: Arc<Shared>, target: Target, stop: CancellationToken) {
    let cfg = &shared.cfg.watchdog;
    let mut prober = Prober::new(&target);
    loop {
        let start = Instant::now();
        let obs = tokio::select! {
            o = prober.probe(cfg.timeout) => o,
            _ = stop.cancelled() => return,
        };
        let took = start.elapsed();
        shared
            .watchdog_probe_seconds
            .observe(&[&target.name], took.as_secs_f64());
        record(&shared, &target, obs, took);
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Takes in a probe's result: the target's status, and on a transition a log line and a `watchdog` event.
pub fn record(shared: &Shared, target: &Target, obs: Observation, took: Duration) {
    let now = now_ms();
    let mut inner = shared.lock();
    let status = inner
        .watchdogs
        .entry(target.name.clone())
        .or_insert_with(|| Status::new(target, now));
    let Some((from, to)) = status.observe(obs, took, &shared.cfg.watchdog, now) else {
        return;
    };
    let change = status.change(from);
    match to {
        TargetState::Healthy => {
            tracing::info!(watchdog = %change.target, %from, %to, evidence = %change.evidence, "Watchdog: target healthy")
        }
        _ => {
            tracing::warn!(watchdog = %change.target, %from, %to, evidence = %change.evidence, "Watchdog: target {to}")
        }
    }
    shared.push_event(&mut inner, "", EventKind::Watchdog, change);
}

/// Queues every probed target's current state as a `watchdog` event (`from` = `to`), so that a coordinator the
/// agent has just connected to (a new one, or a new leader) knows them without waiting for the next transition.
pub fn resync(shared: &Shared, inner: &mut super::state::Inner) {
    let changes: Vec<WatchdogChange> = inner
        .watchdogs
        .values()
        .filter(|s| s.state != TargetState::Unknown)
        .map(|s| s.change(s.state))
        .collect();
    for c in changes {
        shared.push_event(inner, "", EventKind::Watchdog, c);
    }
}

/// The `streamshield_watchdog_*` metrics.
pub fn render(
    statuses: &std::collections::BTreeMap<String, Status>,
    probe_seconds: &crate::metrics::LabelledHistogram,
    now_ms: i64,
    t: &mut crate::metrics::Text,
) {
    t.family(
        "streamshield_watchdog_state",
        "gauge",
        "1 for each watchdog target's current state (unknown, healthy, degraded, down).",
    );
    for s in statuses.values() {
        for st in TargetState::ALL {
            t.sample(
                "streamshield_watchdog_state",
                &[
                    ("target", &s.target),
                    ("kind", s.kind.as_str()),
                    ("state", st.as_str()),
                ],
                f64::from(u8::from(s.state == st)),
            );
        }
    }
    t.family(
        "streamshield_watchdog_state_seconds",
        "gauge",
        "How long each watchdog target has been in its current state.",
    );
    for s in statuses.values() {
        t.sample(
            "streamshield_watchdog_state_seconds",
            &[("target", &s.target)],
            (now_ms - s.since_ms).max(0) as f64 / 1000.0,
        );
    }
    t.family(
        "streamshield_watchdog_transitions_total",
        "counter",
        "Watchdog state transitions, by target, from and to.",
    );
    for s in statuses.values() {
        for ((from, to), n) in &s.transitions {
            t.sample(
                "streamshield_watchdog_transitions_total",
                &[
                    ("target", &s.target),
                    ("from", from.as_str()),
                    ("to", to.as_str()),
                ],
                *n as f64,
            );
        }
    }
    t.family(
        "streamshield_watchdog_probes_total",
        "counter",
        "Watchdog probes by what they found (healthy, degraded, down).",
    );
    for s in statuses.values() {
        for (i, r) in ["healthy", "degraded", "down"].iter().enumerate() {
            t.sample(
                "streamshield_watchdog_probes_total",
                &[("target", &s.target), ("result", r)],
                s.probes[i] as f64,
            );
        }
    }
    t.family(
        "streamshield_watchdog_member_up",
        "gauge",
        "1 while a target's member (a Kafka broker, a ZooKeeper server, the Redis or HTTP server) answered its last probe.",
    );
    for s in statuses.values() {
        for m in &s.members {
            t.sample(
                "streamshield_watchdog_member_up",
                &[("target", &s.target), ("member", &m.name)],
                f64::from(u8::from(m.up)),
            );
        }
    }
    t.labelled_histogram(probe_seconds);
}

#[cfg(test)]
mod tests;
