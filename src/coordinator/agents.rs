//! Agent connections: authenticated handshake (the coordinator's token; the HELLO names the agent), then
//! AGENT_STATUS and AGENT_EVENT about the processes it watches into the model, and the orders for those processes
//! back to it. An agent silent for longer than [`AGENT_TIMEOUT`] is treated as lost.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::protocol::handshake::{self, AcceptPolicy};
use crate::protocol::{FrameCodec, FrameError, Message, Role};

/// No status from a connected agent for this long: the connection is closed and the agent counted lost.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the coordinator tells a connected agent it is there.
pub const COORDINATOR_HEARTBEAT: Duration = Duration::from_millis(500);
/// Agents served at once.
pub const MAX_AGENTS: usize = 256;

pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut failures = 0u32;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => match a {
                Ok(x) => {
                    failures = 0;
                    x
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "Accepting an agent connection failed");
                    if failures >= 100 {
                        return Err(format!("the agent listener keeps failing: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.load(std::sync::atomic::Ordering::Relaxed) >= MAX_AGENTS {
            *shared
                .model()
                .agent_connections
                .entry("too_many")
                .or_default() += 1;
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (shared, shutdown, open) = (shared.clone(), shutdown.clone(), open.clone());
        tokio::spawn(async move {
            connection(&shared, stream, peer.to_string(), shutdown).await;
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

async fn connection(
    shared: &Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: String,
    shutdown: CancellationToken,
) {
    let mut framed = Framed::new(stream, FrameCodec::default());
    let policy = AcceptPolicy {
        secret: Some(shared.agent_token.clone()),
        roles: vec![Role::Agent],
        server: format!("streamshield-coordinator {}", env!("CARGO_PKG_VERSION")),
        heartbeat_interval_ms: 200,
        epoch: Some(shared.model().epoch),
    };
    // A follower sends agents away (to the next address they know): only the leader orders.
    let leading = shared.leadership.borrow().clone();
    // Leading, and the model already orders with the Lease's epoch (set just after the Lease is taken).
    let ready = leading.leading && leading.epoch.is_none_or(|e| Some(e) == policy.epoch);
    let hello =
        match handshake::accept_checked(&mut framed, &policy, Duration::from_secs(5), |_| {
            if ready {
                Ok(())
            } else if leading.leading {
                Err("taking the lead: try again in a moment".to_string())
            } else {
                Err(format!(
                    "not the leader: this coordinator ({}) follows; {} leads",
                    leading.identity,
                    leading.holder.as_deref().unwrap_or("nobody yet")
                ))
            }
        })
        .await
        {
            Ok(h) => h,
            Err(e) => {
                *shared
                    .model()
                    .agent_connections
                    .entry(e.label())
                    .or_default() += 1;
                tracing::warn!(%peer, reason = %e, "Refusing agent connection");
                return;
            }
        };
    let agent = hello.resource_id.clone();
    let conn = {
        let mut m = shared.model();
        *m.agent_connections.entry("accepted").or_default() += 1;
        m.agent_connected(&agent, &peer)
    };
    tracing::info!(%peer, %agent, "Agent connected");
    // Orders for this agent are picked up every 20 ms.
    let mut orders = tokio::time::interval(Duration::from_millis(20));
    let mut last_heard = tokio::time::Instant::now();
    // The agent learns from these that the link still carries (a cut link does not fail a write for long).
    let mut last_beat = tokio::time::Instant::now();
    let mut beat_seq = 0u64;
    let reason = loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = tokio::time::timeout_at(last_heard + AGENT_TIMEOUT, framed.next()) => n,
            _ = orders.tick() => {
                let cmds = shared.model().take_commands(&agent);
                let mut failed = None;
                if last_beat.elapsed() >= COORDINATOR_HEARTBEAT {
                    last_beat = tokio::time::Instant::now();
                    beat_seq += 1;
                    let hb = crate::protocol::Heartbeat { seq: beat_seq, ts_ms: crate::host::clock::now_ms() };
                    if let Err(e) = framed.send(Message::Heartbeat(hb).to_frame()).await {
                        break format!("sending a heartbeat failed: {e}");
                    }
                }
                for c in cmds {
                    tracing::warn!(%agent, resource_id = %c.resource_id, id = c.id, action = %c.action, epoch = c.epoch, "Sending order to agent");
                    if let Err(e) = framed.send(Message::AgentCommand(c).to_frame()).await {
                        failed = Some(e.to_string());
                        break;
                    }
                }
                if let Some(e) = failed {
                    break format!("sending an order failed: {e}");
                }
                continue;
            }
        };
        last_heard = tokio::time::Instant::now();
        match next {
            Err(_) => break format!("no status for {AGENT_TIMEOUT:?}"),
            Ok(None) => break "connection closed".to_string(),
            Ok(Some(Err(FrameError::Io(e)))) => break e.to_string(),
            Ok(Some(Err(e))) => break format!("protocol error: {e}"),
            Ok(Some(Ok(frame))) => match Message::from_frame(&frame) {
                Ok(Some(Message::AgentStatus(s))) => shared.model().agent_status(&agent, s),
                Ok(Some(Message::AgentEvent(ev))) => shared.model().agent_event(&agent, ev),
                // An agent that watches nothing yet (a sidecar before its Flink process) keeps the link alive.
                Ok(Some(Message::Heartbeat(_))) => {}
                Ok(Some(other)) => {
                    tracing::debug!(%peer, kind = other.kind(), "Ignoring a message an agent should not send")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "Skipping an undecodable agent message")
                }
            },
        }
    };
    tracing::warn!(%peer, %agent, %reason, "Agent lost");
    shared.model().agent_disconnected(&agent, conn, &reason);
}
