//! The plugin side of the agent: accepts connections, runs the handshake, and feeds heartbeats, metrics, spans and
//! failures into the agent's state. A malformed or hostile connection is closed with a logged reason and a counted
//! label; the others keep being served. Memory per connection is bounded by the frame limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::liveness;
use super::Shared;
use crate::host::endpoint::{Listener, Stream};
use crate::protocol::handshake::{self, AcceptPolicy};
use crate::protocol::message::{kind, StopReady};
use crate::protocol::{FrameCodec, FrameError, Message};

/// Plugin connections served at once; more are refused (there is one plugin per process).
pub const MAX_CONNECTIONS: usize = 16;
/// A HELLO must arrive this soon after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive undecodable payloads that close a connection.
const MAX_BAD_PAYLOADS: u32 = 3;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub async fn serve(shared: Arc<Shared>, listener: Listener, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "Accepting a plugin connection failed");
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

async fn connection(
    shared: &Arc<Shared>,
    stream: Box<dyn Stream>,
    peer: &str,
    shutdown: CancellationToken,
) {
    let mut framed = Framed::new(stream, FrameCodec::default());
    let policy = AcceptPolicy {
        secret: shared.secret.clone(),
        roles: vec![shared.cfg.watches],
        server: format!("streamshield-agent {}", env!("CARGO_PKG_VERSION")),
        heartbeat_interval_ms: shared.cfg.heartbeat_interval.as_millis() as u64,
    };
    let hello = match handshake::accept(&mut framed, &policy, HANDSHAKE_TIMEOUT).await {
        Ok(h) => h,
        Err(e) => {
            let label = e.label();
            *shared
                .lock()
                .counters
                .connections_rejected
                .entry(label)
                .or_default() += 1;
            tracing::warn!(%peer, reason = %e, label, "Closing plugin connection: handshake failed");
            return;
        }
    };
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (to_plugin, mut outgoing) = tokio::sync::mpsc::channel::<Message>(4);
    {
        let sample = liveness::sample(hello.pid);
        let now = shared.mono_ms();
        let mut inner = shared.lock();
        inner.counters.connections_accepted += 1;
        inner.current_conn = Some(conn);
        inner.plugin_tx.insert(conn, to_plugin);
        inner.pid = Some(hello.pid);
        inner.pid_start = crate::host::procfs::stat(hello.pid).map(|s| s.start_ticks);
        inner.flink_version = hello.flink_version.clone();
        let before = inner.tracker.state();
        inner.tracker.on_connect(now, sample);
        shared.push_event(
            &mut inner,
            "plugin-connected",
            serde_json::json!({"pid": hello.pid, "role": hello.role, "flink_version": hello.flink_version}),
        );
        let after = inner.tracker.state();
        shared.note_transition(
            &mut inner,
            Some(hello.pid),
            before,
            after,
            Some("plugin connected"),
        );
    }
    tracing::info!(%peer, pid = hello.pid, resource_id = %hello.resource_id, "Plugin connected");

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
                handle(shared, conn, hello.pid, msg);
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
    let now = shared.mono_ms();
    let mut inner = shared.lock();
    inner.plugin_tx.remove(&conn);
    if inner.current_conn == Some(conn) {
        inner.current_conn = None;
        if ended_by_peer {
            let before = inner.tracker.state();
            inner.tracker.on_disconnect(now);
            let after = inner.tracker.state();
            shared.note_transition(
                &mut inner,
                Some(hello.pid),
                before,
                after,
                Some("plugin socket closed"),
            );
        }
        shared.push_event(
            &mut inner,
            "plugin-disconnected",
            serde_json::json!({"pid": hello.pid, "by_peer": ended_by_peer}),
        );
    }
}

fn count_error(shared: &Shared, label: &'static str) {
    *shared
        .lock()
        .counters
        .protocol_errors
        .entry(label)
        .or_default() += 1;
}

fn handle(shared: &Arc<Shared>, conn: u64, pid: u32, msg: Message) {
    match msg {
        Message::Heartbeat(_) => {
            let sample = liveness::sample(pid);
            let now = shared.mono_ms();
            let mut inner = shared.lock();
            if inner.current_conn == Some(conn) {
                let before = inner.tracker.state();
                inner.tracker.on_heartbeat(now, sample);
                let after = inner.tracker.state();
                shared.note_transition(&mut inner, Some(pid), before, after, None);
            }
        }
        Message::Metrics(batch) => shared.lock().metrics = Some(batch),
        Message::Span(span) => {
            let mut inner = shared.lock();
            shared.push_event(
                &mut inner,
                "span",
                serde_json::to_value(span).unwrap_or_default(),
            );
        }
        Message::Stopping(s) => {
            tracing::warn!(pid, signal = %s.signal, max_wait_ms = s.max_wait_ms, "Planned stop: the plugin holds the stop for a checkpoint");
            let mut inner = shared.lock();
            shared.push_event(
                &mut inner,
                "planned-stop",
                serde_json::json!({"pid": pid, "signal": s.signal, "max_wait_ms": s.max_wait_ms, "plugin_ts_ms": s.ts_ms}),
            );
            if !inner.uplink_connected {
                // Nobody can take the checkpoint: let the process stop now rather than hold it for nothing.
                let ready = StopReady {
                    outcome: "skipped".into(),
                    detail: "the agent has no link to the coordinator".into(),
                };
                Shared::tell_plugin(&inner, Message::StopReady(ready));
            }
        }
        Message::Failure(f) => {
            tracing::info!(job_id = %f.job_id, failure_type = %f.failure_type, exception = %f.exception, "Flink reported a failure");
            let mut inner = shared.lock();
            shared.push_event(
                &mut inner,
                "failure",
                serde_json::to_value(f).unwrap_or_default(),
            );
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
