//! `streamshield agent`: the sidecar beside one Flink process (a TaskManager, or the JobManager).
//!
//! It accepts the plugin's connection on a local socket ([`server`]), keeps the process's liveness from heartbeats,
//! the socket and `/proc` ([`liveness`]), serves `/metrics` and `/healthz` ([`http`]), and streams its status and
//! events to the coordinator ([`uplink`]). It acts only on the coordinator's orders ([`command`]: fence, restart),
//! each checked against the coordinator's fencing token.

pub mod command;
pub mod http;
pub mod liveness;
pub mod server;
pub mod uplink;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::host::clock::now_ms;
use crate::host::endpoint::{self, Endpoint, Listener};
use crate::protocol::message::{AgentEvent, AgentStatus, MetricsBatch};
use crate::protocol::Role;
use liveness::{Liveness, Tracker};

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Endpoint(#[from] endpoint::Error),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {path}: {source}")]
    Secret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid agent configuration: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the agent needs, validated before anything starts.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the plugin connects.
    pub listen: Endpoint,
    /// The secret plugins must present (required for a TCP listener; created with a random value when missing).
    pub secret_file: Option<PathBuf>,
    /// The watched process's identity (the TaskManager's resource id, or `jobmanager`).
    pub resource_id: String,
    pub watches: Role,
    /// The watched pid when known up front; otherwise learned from the plugin's HELLO.
    pub pid: Option<u32>,
    /// Where `/metrics` and `/healthz` are served.
    pub http: SocketAddr,
    /// The coordinator's agent port (None: no uplink).
    pub coordinator: Option<String>,
    /// The coordinator's token (required with `coordinator`).
    pub token_file: Option<PathBuf>,
    /// No heartbeat for this long makes the process suspect (paused, hung or busy-gc by /proc).
    pub suspect_after: Duration,
    /// How often status goes to the coordinator.
    pub status_interval: Duration,
    /// The heartbeat interval the plugin is told to use.
    pub heartbeat_interval: Duration,
    /// A connection holding part of a frame without progress for this long is closed.
    pub stall_timeout: Duration,
    /// How to start the watched process again on the coordinator's `restart` order (None: refuse restarts).
    pub restart_spec: Option<PathBuf>,
    /// The JobManager's RPC `host:port`: a TaskManager's agent that has lost the coordinator for
    /// `partition_tolerance` and cannot reach this either fences its own TaskManager (it is cut off; the cluster
    /// fails it over, and it must not come back with output of its own). None: never.
    pub jobmanager: Option<String>,
    pub partition_tolerance: Duration,
}

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
}

/// What the agent knows; behind one std mutex, held only for short bookkeeping, never across an await.
pub struct Inner {
    pub tracker: Tracker,
    pub pid: Option<u32>,
    pub flink_version: String,
    /// Id of the connection the tracker follows (a reconnect replaces it).
    pub current_conn: Option<u64>,
    pub open_connections: usize,
    pub metrics: Option<MetricsBatch>,
    pub counters: Counters,
    /// Events not yet confirmed sent to the coordinator, with their sequence numbers; bounded (oldest dropped,
    /// counted). The uplink removes them only after they were flushed, so a broken link resends them (at least once).
    pub pending_events: VecDeque<(u64, AgentEvent)>,
    pub next_event_seq: u64,
    pub uplink_connected: bool,
    /// Start time (clock ticks) of `pid`, so a fence never hits a recycled pid.
    pub pid_start: Option<u64>,
    /// The highest coordinator epoch (fencing token) seen in a command.
    pub max_epoch: u64,
    /// Times the agent started its process again.
    pub restarts: u64,
    /// Addresses this agent rejects on the coordinator's `isolate` order: (address, iptables rule, expiry mono ms).
    pub isolations: Vec<(String, Vec<String>, u64)>,
    /// Since when (mono ms) the uplink has been down, after having been up once.
    pub uplink_down_since: Option<u64>,
    /// The agent fenced its own process in this partition already.
    pub self_fenced: bool,
    /// The TCP sockets of `pid` as last read from /proc: (pid, when (mono ms), sockets).
    pub sockets: Option<(u32, u64, Vec<crate::host::sockets::TcpSocket>)>,
    /// Messages to every open plugin connection (by connection id): STOP_READY. A process whose plugin parts
    /// opened more than one link hears on each, whichever holds its planned stop.
    pub plugin_tx:
        std::collections::BTreeMap<u64, tokio::sync::mpsc::Sender<crate::protocol::Message>>,
}

/// How long the TaskManager's ports read from /proc are reused. Reading them walks the kernel's whole TCP table
/// (/proc/net/tcp); doing it for every status line (5 per second) cost each agent ~5% of a core, most of the
/// agents' CPU, on a machine whose failover timing depends on free CPU. The listening ports never change and the
/// TaskManager's connections are long-lived, so isolation with ports up to this old still cuts its traffic.
const PORTS_MAX_AGE_MS: u64 = 10_000;

/// Events kept while the coordinator is away.
const EVENT_BUFFER: usize = 1024;

pub struct Shared {
    pub cfg: AgentConfig,
    pub secret: Option<String>,
    pub token: Option<String>,
    pub http_url: String,
    inner: Mutex<Inner>,
    clock: tokio::time::Instant,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Milliseconds on the agent's monotonic clock (tokio time, so tests can pause it).
    pub fn mono_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub fn push_event(&self, inner: &mut Inner, kind: &str, detail: serde_json::Value) {
        if inner.pending_events.len() >= EVENT_BUFFER {
            inner.pending_events.pop_front();
            inner.counters.events_dropped += 1;
        }
        inner.next_event_seq += 1;
        let seq = inner.next_event_seq;
        inner.pending_events.push_back((
            seq,
            AgentEvent {
                ts_ms: now_ms(),
                resource_id: self.cfg.resource_id.clone(),
                kind: kind.to_string(),
                detail,
            },
        ));
    }

    /// Logs a liveness transition and queues it as a `liveness` event for the coordinator (which closes an
    /// incident when a process is alive again). Every transition goes through here; a non-change is ignored.
    pub fn note_transition(
        &self,
        inner: &mut Inner,
        pid: Option<u32>,
        from: Liveness,
        to: Liveness,
        reason: Option<&str>,
    ) {
        if from == to {
            return;
        }
        log_transition(&self.cfg.resource_id, pid, from, to);
        // Since when the new state holds (wall ms): for a silence, the last heartbeat, ~300 ms before it is noticed;
        // the coordinator times the hang and GC tolerances from it.
        let since_ms = now_ms() - self.mono_ms().saturating_sub(inner.tracker.since_ms()) as i64;
        let mut detail = serde_json::json!({
            "from": from.as_str(),
            "to": to.as_str(),
            "pid": pid,
            "since_ms": since_ms,
        });
        if let Some(r) = reason {
            detail["reason"] = r.into();
        }
        self.push_event(inner, "liveness", detail);
    }

    /// Sends a message to every open plugin connection; false when none took it (none open, or none reading).
    pub fn tell_plugin(inner: &Inner, msg: crate::protocol::Message) -> bool {
        inner
            .plugin_tx
            .values()
            .filter(|tx| tx.try_send(msg.clone()).is_ok())
            .count()
            > 0
    }

    /// The status line sent to the coordinator.
    pub fn status(&self) -> AgentStatus {
        let ports = self.ports();
        let inner = self.lock();
        let mono = self.mono_ms();
        let to_wall = |m: u64| now_ms() - (mono.saturating_sub(m)) as i64;
        AgentStatus {
            resource_id: self.cfg.resource_id.clone(),
            watches: self.cfg.watches,
            pid: inner.pid,
            liveness: inner.tracker.state().as_str().to_string(),
            since_ms: to_wall(inner.tracker.since_ms()),
            last_heartbeat_ms: inner.tracker.last_heartbeat_ms().map(to_wall),
            plugin_connected: inner.tracker.connected(),
            metrics_url: self.http_url.clone(),
            ts_ms: now_ms(),
            ports,
        }
    }

    /// The TCP ports of the watched TaskManager (none for a JobManager), reread from /proc when older than
    /// [`PORTS_MAX_AGE_MS`] or the process changed (or held none); the read itself happens without the lock.
    fn ports(&self) -> Vec<u16> {
        if self.cfg.watches != Role::Tm {
            return Vec::new();
        }
        let mut ports: Vec<u16> = self.sockets().iter().map(|s| s.local_port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The watched process's TCP sockets, as cached for [`PORTS_MAX_AGE_MS`] (see [`Shared::ports`]).
    fn sockets(&self) -> Vec<crate::host::sockets::TcpSocket> {
        let now = self.mono_ms();
        let pid = {
            let inner = self.lock();
            match (&inner.sockets, inner.pid) {
                (Some((p, at, sockets)), Some(pid))
                    if *p == pid && now.saturating_sub(*at) < PORTS_MAX_AGE_MS =>
                {
                    return sockets.clone()
                }
                (_, Some(pid)) => pid,
                (_, None) => return Vec::new(),
            }
        };
        let sockets = crate::host::sockets::tcp_sockets(pid as i32);
        // A process that holds no socket yet is asked again next time.
        self.lock().sockets = (!sockets.is_empty()).then(|| (pid, now, sockets.clone()));
        sockets
    }
}

/// The inodes of process `pid`'s TCP sockets as last cached (at most [`PORTS_MAX_AGE_MS`] old; empty when the
/// cache is another process's): what a reset of a dying process destroys first, before reading its files.
pub(crate) fn cached_inodes(inner: &Inner, pid: u32) -> std::collections::HashSet<u32> {
    match &inner.sockets {
        Some((p, _, sockets)) if *p == pid => sockets
            .iter()
            .filter_map(|s| s.inode.parse().ok())
            .collect(),
        _ => Default::default(),
    }
}

/// An agent with its sockets bound, ready to run.
pub struct BoundAgent {
    shared: Arc<Shared>,
    plugin_listener: Listener,
    http_listener: tokio::net::TcpListener,
}

/// Reads a secret file, or creates it (0600, 32 random hex bytes) when `create` and it does not exist.
pub fn read_or_create_secret(path: &PathBuf, create: bool) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(Error::Invalid(format!(
            "secret file {} is empty",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let mut bytes = [0u8; 32];
            let mut f = std::fs::File::open("/dev/urandom").map_err(|source| Error::Secret {
                path: path.clone(),
                source,
            })?;
            std::io::Read::read_exact(&mut f, &mut bytes).map_err(|source| Error::Secret {
                path: path.clone(),
                source,
            })?;
            let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| Error::Secret {
                    path: path.clone(),
                    source,
                })?;
            std::io::Write::write_all(&mut out, secret.as_bytes()).map_err(|source| {
                Error::Secret {
                    path: path.clone(),
                    source,
                }
            })?;
            Ok(secret)
        }
        Err(source) => Err(Error::Secret {
            path: path.clone(),
            source,
        }),
    }
}

impl BoundAgent {
    /// Validates the configuration and binds the plugin socket and the HTTP port.
    pub async fn bind(cfg: AgentConfig) -> Result<BoundAgent> {
        if cfg.resource_id.is_empty() {
            return Err(Error::Invalid("--resource-id must not be empty".into()));
        }
        let minimums = [
            (cfg.suspect_after, 50, "--suspect-after"),
            (cfg.status_interval, 10, "--status-interval"),
            (cfg.stall_timeout, 100, "--stall-timeout"),
            (cfg.heartbeat_interval, 10, "--heartbeat-interval"),
        ];
        for (value, min_ms, flag) in minimums {
            if value < Duration::from_millis(min_ms) {
                return Err(Error::Invalid(format!(
                    "{flag} must be at least {min_ms}ms"
                )));
            }
        }
        if cfg.coordinator.is_some() && cfg.token_file.is_none() {
            return Err(Error::Invalid(
                "--coordinator needs --token-file (the coordinator's agent token)".into(),
            ));
        }
        let secret = match (&cfg.listen, &cfg.secret_file) {
            (Endpoint::Tcp(_), None) => {
                return Err(Error::Invalid(
                    "a tcp: plugin listener needs --secret-file (created if missing)".into(),
                ))
            }
            (_, Some(p)) => Some(read_or_create_secret(p, true)?),
            (Endpoint::Unix(_), None) => None,
        };
        let token = match &cfg.token_file {
            Some(p) => Some(read_or_create_secret(p, false)?),
            None => None,
        };
        let plugin_listener = Listener::bind(&cfg.listen).await?;
        let http_listener = tokio::net::TcpListener::bind(cfg.http)
            .await
            .map_err(|source| Error::Http {
                addr: cfg.http,
                source,
            })?;
        let http_addr = http_listener.local_addr().map_err(|source| Error::Http {
            addr: cfg.http,
            source,
        })?;
        let clock = tokio::time::Instant::now();
        let shared = Arc::new(Shared {
            secret,
            token,
            http_url: format!("http://{http_addr}/metrics"),
            inner: Mutex::new(Inner {
                tracker: Tracker::new(cfg.suspect_after.as_millis() as u64, 0),
                pid: cfg.pid,
                flink_version: String::new(),
                current_conn: None,
                open_connections: 0,
                metrics: None,
                counters: Counters::default(),
                pending_events: VecDeque::new(),
                next_event_seq: 0,
                uplink_connected: false,
                pid_start: cfg
                    .pid
                    .and_then(crate::host::procfs::stat)
                    .map(|s| s.start_ticks),
                max_epoch: 0,
                restarts: 0,
                isolations: Vec::new(),
                uplink_down_since: None,
                self_fenced: false,
                sockets: None,
                plugin_tx: Default::default(),
            }),
            cfg,
            clock,
        });
        Ok(BoundAgent {
            shared,
            plugin_listener,
            http_listener,
        })
    }

    pub fn plugin_endpoint(&self) -> Endpoint {
        self.plugin_listener.endpoint()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Runs until `shutdown`; then closes the listeners and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let BoundAgent {
            shared,
            plugin_listener,
            http_listener,
        } = self;
        tracing::info!(
            resource_id = %shared.cfg.resource_id,
            plugin = %plugin_listener.endpoint(),
            http = %shared.http_url,
            "Agent started"
        );
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(server::serve(
            shared.clone(),
            plugin_listener,
            shutdown.clone(),
        ));
        tasks.spawn(watch(shared.clone(), shutdown.clone()));
        tasks.spawn(command::partition_watch(shared.clone(), shutdown.clone()));
        tasks.spawn(http::serve(shared.clone(), http_listener, shutdown.clone()));
        if shared.cfg.coordinator.is_some() {
            tasks.spawn(uplink::run(shared.clone(), shutdown.clone()));
        }
        shutdown.cancelled().await;
        let grace = tokio::time::timeout(Duration::from_secs(3), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if grace.is_err() {
            tracing::warn!("Agent tasks did not stop within 3 s; abandoning them");
        }
        Ok(())
    }
}

/// How often liveness is re-evaluated from /proc.
const WATCH_TICK: Duration = Duration::from_millis(20);

/// Re-evaluates liveness every tick; transitions become events (and log lines).
async fn watch(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(WATCH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pid = shared.lock().pid;
        let sample = pid.and_then(liveness::sample);
        let now = shared.mono_ms();
        let died = {
            let mut inner = shared.lock();
            match inner.tracker.evaluate(now, sample, pid.is_some()) {
                Some((from, to)) => {
                    shared.note_transition(&mut inner, pid, from, to, None);
                    to == Liveness::Dead
                }
                None => false,
            }
        };
        if let (true, Some(pid)) = (died, pid) {
            reset_dying(&shared, pid).await;
        }
    }
}

/// A killed process is `dead` to the agent within a tick (its first thread exiting, see [`liveness::ProcSample`]),
/// but the kernel closes its sockets only once every thread has exited and its memory is unmapped: for a TaskManager
/// JVM 30-40 ms on an idle machine, ~300 ms on a loaded 2-core one (kept drill logs: kill -9 at +0, the JobManager's
/// and the other TaskManagers' connections closed at +300 ms, Flink's failure at +410 ms). Resetting the dying
/// process's connections at once lets its peers learn now. Nothing to do when its files are already closed.
async fn reset_dying(shared: &Arc<Shared>, pid: u32) {
    let started = std::time::Instant::now();
    let cached = cached_inodes(&shared.lock(), pid);
    let outcome =
        tokio::task::spawn_blocking(move || command::reset_connections(pid, &cached)).await;
    if let Ok(outcome) = outcome {
        tracing::info!(
            resource_id = %shared.cfg.resource_id,
            pid,
            %outcome,
            took_ms = started.elapsed().as_millis() as u64,
            "Reset the dead process's connections"
        );
    }
}

fn log_transition(resource_id: &str, pid: Option<u32>, from: Liveness, to: Liveness) {
    match to {
        Liveness::Alive | Liveness::Unknown => {
            tracing::info!(
                resource_id,
                ?pid,
                from = from.as_str(),
                to = to.as_str(),
                "Liveness changed"
            )
        }
        _ => tracing::warn!(
            resource_id,
            ?pid,
            from = from.as_str(),
            to = to.as_str(),
            "Liveness changed"
        ),
    }
}
