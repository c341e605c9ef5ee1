//! What an agent knows: every process it watches (by resource id), the events not yet delivered to the
//! coordinator, counters, and the isolations it holds. Behind one std mutex, held only for short bookkeeping and
//! never across an await.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc::Sender;

use super::config::{AgentSettings, RestartMode};
use super::liveness::Tracker;
use super::recipe::Recipe;
use crate::host::clock::now_ms;
use crate::host::sockets::{self, TcpSocket};
use crate::protocol::message::{AgentEvent, AgentStatus, MetricsBatch};
use crate::protocol::vocab::LivenessChange;
use crate::protocol::{EventKind, Liveness, Message, Role};

/// Counters the agent exports (see docs/metrics.md).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub connections_accepted: u64,
    /// By reason label.
    pub connections_rejected: BTreeMap<&'static str, u64>,
    /// By reason label.
    pub protocol_errors: BTreeMap<&'static str, u64>,
    /// By kind name.
    pub frames: BTreeMap<&'static str, u64>,
    pub events_dropped: u64,
    pub uplink_connects: u64,
    /// Coordinators left because their epoch was lower than one already seen (deposed leaders).
    pub uplink_deposed: u64,
    /// Commands by action and outcome.
    pub commands: BTreeMap<(&'static str, &'static str), u64>,
}

/// One Flink process the agent watches, learned from its plugin's handshake.
pub struct Watched {
    pub resource_id: String,
    pub role: Role,
    pub pid: u32,
    /// Start time (clock ticks) of `pid`, so a fence never hits a recycled pid.
    pub pid_start: Option<u64>,
    pub flink_version: String,
    pub tracker: Tracker,
    /// The plugin connection the tracker follows (a reconnect replaces it).
    pub current_conn: Option<u64>,
    pub metrics: Option<MetricsBatch>,
    /// How to start it again (Err: why it cannot be).
    pub recipe: Result<Recipe, String>,
    /// Its JobManager's RPC address (configured, or from its Flink configuration), for the partition check.
    pub jobmanager: Option<String>,
    /// Times the agent started it again.
    pub restarts: u64,
    /// Its agent fenced it in this partition already.
    pub self_fenced: bool,
    /// Its plugin announced a planned stop: an exit that follows is no crash to restart.
    pub stopping: bool,
    /// Its TCP sockets as last read from /proc: (pid, when (mono ms), sockets).
    pub sockets: Option<(u32, u64, Vec<TcpSocket>)>,
    /// Since when (mono ms) it has been dead, for forgetting it.
    pub dead_since: Option<u64>,
}

/// An address the agent rejects on the coordinator's `isolate` order.
#[derive(Debug, Clone)]
pub struct Isolation {
    pub address: String,
    /// The iptables rule (without the `-I`/`-D`).
    pub rule: Vec<String>,
    /// Mono ms when it lapses.
    pub expires_ms: u64,
}

pub struct Inner {
    pub processes: BTreeMap<String, Watched>,
    pub counters: Counters,
    /// Events not yet confirmed sent to the coordinator, with their sequence numbers; bounded (oldest dropped,
    /// counted). The uplink removes them only after they were flushed, so a broken link resends them (at least once).
    pub pending_events: VecDeque<(u64, AgentEvent)>,
    pub next_event_seq: u64,
    pub uplink_connected: bool,
    /// Since when (mono ms) the uplink has been down, after having been up once.
    pub uplink_down_since: Option<u64>,
    /// The highest coordinator epoch (fencing token) seen in a command.
    pub max_epoch: u64,
    pub isolations: Vec<Isolation>,
    /// Open plugin connections: id -> (resource id, sender of messages to that plugin: STOP_READY).
    pub plugin_tx: BTreeMap<u64, (String, Sender<Message>)>,
    pub open_connections: usize,
    /// Each watchdog target's status, by target name.
    pub watchdogs: BTreeMap<String, super::watchdog::Status>,
}

/// How long the watched process's sockets read from /proc are reused. Reading them walks the kernel's whole TCP
/// table (/proc/net/tcp); doing it for every status line (5 per second) cost each agent ~5% of a core on a machine
/// whose failover timing depends on free CPU. Listening ports never change and a TaskManager's connections are
/// long-lived, so isolation with ports up to this old still cuts its traffic.
pub const SOCKETS_MAX_AGE_MS: u64 = 10_000;

/// Events kept while the coordinator is away.
pub const EVENT_BUFFER: usize = 1024;

/// A dead process nobody restarted is forgotten after this long.
pub const DEAD_RETENTION_MS: u64 = 10 * 60 * 1000;

/// Which of a HELLO's claims the agent checks. The binary checks all of them; an embedder (a test driving the agent
/// with a fake plugin from its own process) may relax them through [`super::BoundAgent::bind_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityChecks {
    /// The claimed pid must be the connecting process (peer credentials, or the socket's owner).
    pub peer_is_claimed_pid: bool,
    /// The claimed pid must be a Java process.
    pub claimed_pid_is_jvm: bool,
}

impl Default for IdentityChecks {
    fn default() -> Self {
        IdentityChecks {
            peer_is_claimed_pid: true,
            claimed_pid_is_jvm: true,
        }
    }
}

pub struct Shared {
    pub cfg: AgentSettings,
    pub identity: IdentityChecks,
    pub secret: Option<String>,
    pub token: Option<String>,
    pub http_url: String,
    /// `streamshield_watchdog_probe_seconds{target}`.
    pub watchdog_probe_seconds: crate::metrics::LabelledHistogram,
    /// The spill log, when `spill-dir` is set.
    pub spill: Option<super::spill::Spill>,
    inner: Mutex<Inner>,
    clock: tokio::time::Instant,
}

impl Shared {
    pub fn new(
        cfg: AgentSettings,
        identity: IdentityChecks,
        secret: Option<String>,
        token: Option<String>,
        http_url: String,
        spill: Option<super::spill::Spill>,
    ) -> Self {
        Shared {
            cfg,
            identity,
            secret,
            token,
            http_url,
            watchdog_probe_seconds: crate::metrics::LabelledHistogram::new(
                "streamshield_watchdog_probe_seconds",
                "How long each watchdog probe took (connect and answer, or its time-out).",
                &["target"],
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
            spill,
            inner: Mutex::new(Inner {
                processes: BTreeMap::new(),
                counters: Counters::default(),
                pending_events: VecDeque::new(),
                next_event_seq: 0,
                uplink_connected: false,
                uplink_down_since: None,
                max_epoch: 0,
                isolations: Vec::new(),
                plugin_tx: BTreeMap::new(),
                open_connections: 0,
                watchdogs: BTreeMap::new(),
            }),
            clock: tokio::time::Instant::now(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Milliseconds on the agent's monotonic clock (tokio time, so tests can pause it).
    pub fn mono_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Wall time (unix ms) of a mono time.
    pub fn wall_of(&self, mono: u64) -> i64 {
        now_ms() - self.mono_ms().saturating_sub(mono) as i64
    }

    /// Queues an event for the coordinator (bounded: the oldest is dropped and counted).
    pub fn push_event(
        &self,
        inner: &mut Inner,
        resource_id: &str,
        kind: EventKind,
        detail: impl serde::Serialize,
    ) {
        if inner.pending_events.len() >= EVENT_BUFFER {
            inner.pending_events.pop_front();
            inner.counters.events_dropped += 1;
        }
        inner.next_event_seq += 1;
        let seq = inner.next_event_seq;
        inner
            .pending_events
            .push_back((seq, AgentEvent::new(now_ms(), resource_id, kind, detail)));
    }

    /// Logs a liveness transition of process `rid` and queues it as a `liveness` event (the coordinator closes an
    /// incident when a process is alive again). Every transition goes through here; a non-change is ignored.
    pub fn note_transition(
        &self,
        inner: &mut Inner,
        rid: &str,
        from: Liveness,
        to: Liveness,
        reason: Option<&str>,
    ) {
        if from == to {
            return;
        }
        let Some(w) = inner.processes.get_mut(rid) else {
            return;
        };
        let pid = w.pid;
        log_transition(rid, pid, from, to);
        if to == Liveness::Dead {
            w.dead_since = Some(self.mono_ms());
        } else {
            w.dead_since = None;
        }
        // Since when the new state holds (wall ms): for a silence, the last heartbeat, ~300 ms before it is noticed;
        // the coordinator times the hang and GC tolerances from it.
        let since_ms = self.wall_of(w.tracker.since_ms());
        let change = LivenessChange {
            from,
            to,
            pid: Some(pid),
            since_ms: Some(since_ms),
            reason: reason.map(str::to_string),
        };
        self.push_event(inner, rid, EventKind::Liveness, change);
    }

    /// Sends a message to every open plugin connection of process `rid`; false when none took it.
    pub fn tell_plugin(inner: &Inner, rid: &str, msg: Message) -> bool {
        inner
            .plugin_tx
            .values()
            .filter(|(r, tx)| r == rid && tx.try_send(msg.clone()).is_ok())
            .count()
            > 0
    }

    /// Whether a `restart` order can be carried out for `w`.
    pub fn restartable(&self, w: &Watched) -> bool {
        self.cfg.restart == RestartMode::InPlace && w.recipe.is_ok()
    }

    /// The status line of every watched process.
    pub fn statuses(&self) -> Vec<AgentStatus> {
        let rids: Vec<(String, Role, u32)> = self
            .lock()
            .processes
            .values()
            .map(|w| (w.resource_id.clone(), w.role, w.pid))
            .collect();
        let ports: BTreeMap<String, Vec<u16>> = rids
            .iter()
            .filter(|(_, role, _)| *role == Role::Tm)
            .map(|(rid, _, pid)| (rid.clone(), self.ports(rid, *pid)))
            .collect();
        let inner = self.lock();
        inner
            .processes
            .values()
            .map(|w| AgentStatus {
                resource_id: w.resource_id.clone(),
                watches: w.role,
                pid: Some(w.pid),
                liveness: w.tracker.state(),
                since_ms: self.wall_of(w.tracker.since_ms()),
                last_heartbeat_ms: w.tracker.last_heartbeat_ms().map(|m| self.wall_of(m)),
                plugin_connected: w.tracker.connected(),
                metrics_url: self.http_url.clone(),
                ts_ms: now_ms(),
                ports: ports.get(&w.resource_id).cloned().unwrap_or_default(),
                restartable: self.restartable(w),
            })
            .collect()
    }

    /// The local TCP ports of process `rid` (pid `pid`), from the socket cache.
    fn ports(&self, rid: &str, pid: u32) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .sockets(rid, pid)
            .iter()
            .map(|s| s.local_port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Process `rid`'s TCP sockets, as cached for [`SOCKETS_MAX_AGE_MS`]; the read itself happens without the lock.
    pub fn sockets(&self, rid: &str, pid: u32) -> Vec<TcpSocket> {
        let now = self.mono_ms();
        {
            let inner = self.lock();
            if let Some((p, at, s)) = inner.processes.get(rid).and_then(|w| w.sockets.as_ref()) {
                if *p == pid && now.saturating_sub(*at) < SOCKETS_MAX_AGE_MS {
                    return s.clone();
                }
            }
        }
        let fresh = sockets::tcp_sockets(pid as i32);
        if let Some(w) = self.lock().processes.get_mut(rid) {
            // A process that holds no socket yet is asked again next time.
            w.sockets = (!fresh.is_empty()).then(|| (pid, now, fresh.clone()));
        }
        fresh
    }
}

/// The inodes of `w`'s TCP sockets as last cached for pid `pid` (empty when the cache is another process's): what
/// a reset of a dying process destroys first, before reading its files.
pub fn cached_inodes(w: &Watched, pid: u32) -> std::collections::HashSet<u32> {
    match &w.sockets {
        Some((p, _, sockets)) if *p == pid => sockets
            .iter()
            .filter_map(|s| s.inode.parse().ok())
            .collect(),
        _ => Default::default(),
    }
}

fn log_transition(resource_id: &str, pid: u32, from: Liveness, to: Liveness) {
    match to {
        Liveness::Alive | Liveness::Unknown => {
            tracing::info!(resource_id, pid, from = %from, to = %to, "Liveness changed")
        }
        _ => tracing::warn!(resource_id, pid, from = %from, to = %to, "Liveness changed"),
    }
}
