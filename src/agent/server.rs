//! The plugin side of the agent: accepts connections, runs the handshake and checks who connected, then feeds
//! heartbeats, metrics, spans and failures into the state of the process the connection belongs to. One agent
//! serves any number of Flink processes (every JVM of a host, or one pod's TaskManager); each is known by the
//! resource id of its HELLO.
//!
//! A HELLO's claims are checked before WELCOME: the pid must be a Java process, and the one at the other end of the
//! connection (the kernel's peer credentials on a Unix socket, the socket's owner in /proc on loopback TCP); a
//! resource id already held by another live process is refused. A malformed or hostile connection is closed with a
//! logged reason and a counted label; the others keep being served. Memory per connection is bounded by the frame
//! limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::liveness::{self, Tracker};
use super::recipe::Recipe;
use super::state::{Shared, Watched};
use crate::host::endpoint::{Listener, Peer, Stream};
use crate::host::{procfs, sockets};
use crate::protocol::handshake::{self, AcceptPolicy};
use crate::protocol::message::{kind, StopReady};
use crate::protocol::vocab::{Attached, PlannedStop};
use crate::protocol::{EventKind, FrameCodec, FrameError, Hello, Message, StopOutcome};

/// Plugin connections served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 256;
/// A HELLO must arrive this soon after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive undecodable payloads that close a connection.
const MAX_BAD_PAYLOADS: u32 = 3;
/// The longest resource id accepted.
const MAX_RESOURCE_ID: usize = 256;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accepts plugin connections until `shutdown`; only a broken listener ends it early (an error the daemon stops
/// on).
pub async fn serve(
    shared: Arc<Shared>,
    listener: Listener,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                failures = 0;
                x
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "Accepting a plugin connection failed");
                if failures >= 100 {
                    return Err(format!(
                        "the plugin listener {} keeps failing: {e}",
                        listener.endpoint()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        {
            let mut inner = shared.lock();
            if inner.open_connections >= MAX_CONNECTIONS {
                *inner
                    .counters
                    .connections_rejected
                    .entry("too_many_connections")
                    .or_default() += 1;
                tracing::warn!(%peer, "Refusing plugin connection: {MAX_CONNECTIONS} already open");
                continue;
            }
            inner.open_connections += 1;
        }
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(&shared, stream, &peer, shutdown).await;
            shared.lock().open_connections -= 1;
        });
    }
}

fn kind_name(k: u8) -> &'static str {
    match k {
        kind::HEARTBEAT => "heartbeat",
        kind::METRICS => "metrics",
        kind::SPAN => "span",
        kind::FAILURE => "failure",
        kind::STOPPING => "stopping",
        _ => "other",
    }
}

/// Checks what a HELLO claims about the connecting process.
fn check_identity(shared: &Shared, peer: &Peer, hello: &Hello) -> Result<(), String> {
    let rid = &hello.resource_id;
    if rid.is_empty() || rid.len() > MAX_RESOURCE_ID || rid.chars().any(char::is_control) {
        return Err(format!(
            "resource id {rid:?} must be 1 to {MAX_RESOURCE_ID} printable characters"
        ));
    }
    let pid = hello.pid;
    let Some(stat) = procfs::stat(pid).filter(|_| pid > 1) else {
        return Err(format!("pid {pid} is not a running process on this host"));
    };
    if shared.identity.claimed_pid_is_jvm && !procfs::is_jvm(pid) {
        return Err(format!("pid {pid} is not a Java process"));
    }
    let actual = match peer {
        // 0: the peer is in a PID namespace this agent cannot see into.
        Peer::Unix { pid, .. } => pid.filter(|p| *p > 0),
        Peer::Tcp { remote, local } => sockets::owner_of_connection(*remote, *local),
    };
    if let (Some(actual), true) = (actual, shared.identity.peer_is_claimed_pid) {
        if actual != pid {
            return Err(format!(
                "the connection comes from pid {actual}, not from pid {pid}"
            ));
        }
    }
    let inner = shared.lock();
    if let Some(w) = inner.processes.get(rid) {
        let same = w.pid == pid && w.pid_start == Some(stat.start_ticks);
        let other_alive = !same
            && procfs::stat(w.pid)
                .is_some_and(|s| Some(s.start_ticks) == w.pid_start && !s.gone() && !s.exiting());
        if other_alive {
            return Err(format!(
                "resource id {rid} is already used by pid {}, which still runs",
                w.pid
            ));
        }
    } else if inner.processes.len() >= shared.cfg.max_processes {
        return Err(format!(
            "this agent watches {} processes already (max-processes)",
            shared.cfg.max_processes
        ));
    }
    Ok(())
}

async fn connection(
    shared: &Arc<Shared>,
    stream: Box<dyn Stream>,
    peer: &Peer,
    shutdown: CancellationToken,
) {
    let mut framed = Framed::new(stream, FrameCodec::default());
    let policy = AcceptPolicy {
        secret: shared.secret.clone(),
        roles: shared.cfg.roles.clone(),
        server: format!("streamshield-agent {}", env!("CARGO_PKG_VERSION")),
        heartbeat_interval_ms: shared.cfg.heartbeat_interval.as_millis() as u64,
        epoch: None,
    };
    let checked = handshake::accept_checked(&mut framed, &policy, HANDSHAKE_TIMEOUT, |h| {
        check_identity(shared, peer, h)
    })
    .await;
    let hello = match checked {
        Ok(h) => h,
        Err(e) => {
            let label = e.label();
            let mut inner = shared.lock();
            *inner
                .counters
                .connections_rejected
                .entry(label)
                .or_default() += 1;
            if let handshake::HandshakeError::Refused(reason) = &e {
                tracing::warn!(%peer, %reason, "Refusing a plugin: its handshake's claims do not hold");
                shared.push_event(
                    &mut inner,
                    "",
                    EventKind::PluginRefused,
                    serde_json::json!({"peer": peer.to_string(), "reason": reason}),
                );
            } else {
                tracing::warn!(%peer, reason = %e, label, "Closing plugin connection: handshake failed");
            }
            return;
        }
    };
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let rid = hello.resource_id.clone();
    let (to_plugin, mut outgoing) = tokio::sync::mpsc::channel::<Message>(4);
    attach(shared, &hello, conn, to_plugin);
    tracing::info!(%peer, pid = hello.pid, resource_id = %rid, role = ?hello.role, "Plugin connected");

    let mut bad_payloads = 0u32;
    let mut last_progress = tokio::time::Instant::now();
    let mut check = tokio::time::interval(shared.cfg.stall_timeout / 4);
    let ended_by_peer = loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break false,
            _ = check.tick() => {
                let stall = shared.cfg.stall_timeout;
                if !framed.read_buffer().is_empty() && last_progress.elapsed() >= stall {
                    count_error(shared, "stalled_frame");
                    tracing::warn!(%peer, "Closing plugin connection: a frame stalled half-written for {stall:?}");
                    break false;
                }
                if framed.read_buffer().is_empty() {
                    last_progress = tokio::time::Instant::now();
                }
                continue;
            }
            Some(m) = outgoing.recv() => {
                if let Err(e) = framed.send(m.to_frame()).await {
                    tracing::warn!(%peer, error = %e, "Writing to the plugin failed");
                    break true;
                }
                continue;
            }
            n = framed.next() => n,
        };
        let frame = match next {
            None => break true,
            Some(Ok(f)) => f,
            Some(Err(FrameError::Io(e))) => {
                tracing::debug!(%peer, error = %e, "Plugin connection ended");
                break true;
            }
            Some(Err(e)) => {
                count_error(shared, e.label());
                tracing::warn!(%peer, reason = %e, "Closing plugin connection: bad frame");
                break false;
            }
        };
        last_progress = tokio::time::Instant::now();
        match Message::from_frame(&frame) {
            Ok(Some(msg)) => {
                bad_payloads = 0;
                *shared
                    .lock()
                    .counters
                    .frames
                    .entry(kind_name(frame.kind))
                    .or_default() += 1;
                handle(shared, conn, &rid, hello.pid, msg);
            }
            Ok(None) => count_error(shared, "unknown_kind"),
            Err(e) => {
                count_error(shared, "bad_payload");
                bad_payloads += 1;
                tracing::warn!(%peer, reason = %e, "Skipping an undecodable plugin message");
                if bad_payloads >= MAX_BAD_PAYLOADS {
                    tracing::warn!(%peer, "Closing plugin connection: {MAX_BAD_PAYLOADS} bad messages in a row");
                    break false;
                }
            }
        }
    };
    detach(shared, &rid, hello.pid, conn, ended_by_peer);
}

/// A plugin completed its handshake: the process is watched from now on (a reconnect or a restarted process
/// replaces what was known of it).
fn attach(
    shared: &Shared,
    hello: &Hello,
    conn: u64,
    to_plugin: tokio::sync::mpsc::Sender<Message>,
) {
    let pid = hello.pid;
    let rid = hello.resource_id.clone();
    let sample = liveness::sample(pid);
    let start = procfs::stat(pid).map(|s| s.start_ticks);
    // Reading /proc/<pid>/environ and friends: before taking the lock.
    let recipe = Recipe::record(pid);
    if let Err(why) = &recipe {
        tracing::warn!(resource_id = %rid, pid, %why, "Cannot record how the process was started: it will not be restarted in place");
    }
    let jobmanager = shared.cfg.jobmanager.clone().or_else(|| {
        recipe
            .as_ref()
            .ok()
            .and_then(|r| r.jobmanager(&hello.flink_version))
    });
    let now = shared.mono_ms();
    let mut inner = shared.lock();
    inner.counters.connections_accepted += 1;
    inner.plugin_tx.insert(conn, (rid.clone(), to_plugin));
    let w = inner
        .processes
        .entry(rid.clone())
        .or_insert_with(|| Watched {
            resource_id: rid.clone(),
            role: hello.role,
            pid,
            pid_start: start,
            flink_version: hello.flink_version.clone(),
            tracker: Tracker::new(shared.cfg.suspect_after.as_millis() as u64, now),
            current_conn: None,
            metrics: None,
            recipe: Err("not recorded yet".into()),
            jobmanager: None,
            restarts: 0,
            self_fenced: false,
            stopping: false,
            sockets: None,
            dead_since: None,
        });
    let new_process = w.pid != pid || w.pid_start != start;
    w.role = hello.role;
    w.pid = pid;
    w.pid_start = start;
    w.flink_version = hello.flink_version.clone();
    w.current_conn = Some(conn);
    if new_process {
        w.stopping = false;
        w.self_fenced = false;
        w.sockets = None;
        w.metrics = None;
    }
    // A recipe that could not be read this time keeps the one recorded from the same process earlier.
    if recipe.is_ok() || new_process {
        w.recipe = recipe;
    }
    w.jobmanager = jobmanager;
    let before = w.tracker.state();
    w.tracker.on_connect(now, sample);
    let after = w.tracker.state();
    let restartable = shared.restartable(w);
    let attached = Attached {
        pid,
        role: hello.role,
        flink_version: hello.flink_version.clone(),
        restartable,
    };
    shared.push_event(&mut inner, &rid, EventKind::PluginConnected, attached);
    shared.note_transition(&mut inner, &rid, before, after, Some("plugin connected"));
}

/// A plugin connection ended: the process is dead when its side closed it (a process that exits closes it) and the
/// connection was the current one.
fn detach(shared: &Shared, rid: &str, pid: u32, conn: u64, ended_by_peer: bool) {
    let now = shared.mono_ms();
    let mut inner = shared.lock();
    inner.plugin_tx.remove(&conn);
    let Some(w) = inner.processes.get_mut(rid) else {
        return;
    };
    if w.current_conn != Some(conn) {
        return;
    }
    w.current_conn = None;
    let before = w.tracker.state();
    if ended_by_peer {
        w.tracker.on_disconnect(now);
    }
    let after = w.tracker.state();
    shared.note_transition(&mut inner, rid, before, after, Some("plugin socket closed"));
    shared.push_event(
        &mut inner,
        rid,
        EventKind::PluginDisconnected,
        serde_json::json!({"pid": pid, "by_peer": ended_by_peer}),
    );
}

fn count_error(shared: &Shared, label: &'static str) {
    *shared
        .lock()
        .counters
        .protocol_errors
        .entry(label)
        .or_default() += 1;
}

fn handle(shared: &Arc<Shared>, conn: u64, rid: &str, pid: u32, msg: Message) {
    match msg {
        Message::Heartbeat(_) => {
            let sample = liveness::sample(pid);
            let now = shared.mono_ms();
            let mut inner = shared.lock();
            let Some(w) = inner
                .processes
                .get_mut(rid)
                .filter(|w| w.current_conn == Some(conn))
            else {
                return;
            };
            let before = w.tracker.state();
            w.tracker.on_heartbeat(now, sample);
            let after = w.tracker.state();
            shared.note_transition(&mut inner, rid, before, after, None);
        }
        Message::Metrics(batch) => {
            if let Some(w) = shared.lock().processes.get_mut(rid) {
                w.metrics = Some(batch);
            }
        }
        Message::Span(span) => {
            let mut inner = shared.lock();
            shared.push_event(&mut inner, rid, EventKind::Span, span);
        }
        Message::Stopping(s) => {
            tracing::warn!(resource_id = %rid, pid, signal = %s.signal, max_wait_ms = s.max_wait_ms, "Planned stop: the plugin holds the stop for a checkpoint");
            let mut inner = shared.lock();
            if let Some(w) = inner.processes.get_mut(rid) {
                w.stopping = true;
            }
            let stop = PlannedStop {
                pid,
                signal: s.signal,
                max_wait_ms: s.max_wait_ms,
                plugin_ts_ms: s.ts_ms,
            };
            shared.push_event(&mut inner, rid, EventKind::PlannedStop, stop);
            if !inner.uplink_connected {
                // Nobody can take the checkpoint: let the process stop now rather than hold it for nothing.
                let ready = StopReady {
                    outcome: StopOutcome::Skipped,
                    detail: "the agent has no link to the coordinator".into(),
                };
                Shared::tell_plugin(&inner, rid, Message::StopReady(ready));
            }
        }
        Message::Failure(f) => {
            tracing::info!(resource_id = %rid, job_id = %f.job_id, failure_type = %f.failure_type, exception = %f.exception, "Flink reported a failure");
            let mut inner = shared.lock();
            shared.push_event(&mut inner, rid, EventKind::Failure, f);
        }
        // Handshake kinds after the handshake, or coordinator kinds on a plugin link: not for us.
        other => {
            tracing::debug!(
                kind = other.kind(),
                "Ignoring a message kind that plugins do not send"
            );
            count_error(shared, "unexpected_kind");
        }
    }
}
