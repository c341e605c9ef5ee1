//! The agent's link to the coordinator: an authenticated handshake (the agent's id and the coordinator's token),
//! then an AGENT_STATUS for every watched process every status interval and AGENT_EVENT for everything that happened (liveness transitions first-hand, Flink failures and spans). Reconnects
//! with back-off; events wait in a bounded buffer meanwhile and are delivered at least once.
//!
//! `coordinator` may name several addresses (the replicas of a highly available coordinator): the agent tries
//! them in turn, sticks to the one that welcomes it and moves on when a link breaks or a replica sends it away (a
//! follower does); the back-off grows only after a whole round failed. A coordinator whose WELCOME carries an
//! epoch lower than one this agent has already seen is a deposed leader: the agent leaves it at once (its orders
//! would be refused anyway), and a higher one raises the agent's fencing floor before any order arrives.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::state::Shared;
use crate::protocol::handshake;
use crate::protocol::message::AgentEvent;
use crate::protocol::{FrameCodec, Heartbeat, Hello, Message, Role, PROTOCOL_VERSION};

/// No frame from a coordinator that sends heartbeats for this long: the link counts as broken.
pub const UPLINK_SILENCE: Duration = Duration::from_secs(2);

/// The longest pause between two rounds over the coordinator's addresses.
pub const UPLINK_BACKOFF_MAX: Duration = Duration::from_secs(1);
const UPLINK_BACKOFF_MIN: Duration = Duration::from_millis(100);

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), String> {
    let addrs = shared.cfg.coordinator_addrs();
    if addrs.is_empty() {
        return Ok(());
    }
    let mut backoff = UPLINK_BACKOFF_MIN;
    let mut last_problem: Vec<String> = vec![String::new(); addrs.len()];
    let mut next = 0;
    // Failed attempts since the last welcome: a whole round of them pauses.
    let mut failed = 0;
    loop {
        let addr = &addrs[next];
        let mut welcomed = false;
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = session(&shared, addr, &mut welcomed, &shutdown) => r,
        };
        {
            let mut inner = shared.lock();
            inner.uplink_connected = false;
            if inner.counters.uplink_connects > 0 && inner.uplink_down_since.is_none() {
                inner.uplink_down_since = Some(shared.mono_ms());
            }
        }
        match result {
            Ok(()) => return Ok(()),
            Err(problem) => {
                if problem != last_problem[next] {
                    tracing::warn!(coordinator = %addr, %problem, "Coordinator link down; retrying");
                    last_problem[next] = problem;
                }
            }
        }
        if welcomed && started.elapsed() >= UPLINK_BACKOFF_MAX {
            // A link that was up a while: the next attempt (this address again if it is the only one) is immediate.
            // One that broke at once counts as a failure, so a coordinator that welcomes and drops is not hammered.
            failed = 0;
            backoff = UPLINK_BACKOFF_MIN;
        } else {
            failed += 1;
        }
        next = (next + 1) % addrs.len();
        if failed > 0 && failed % addrs.len() == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(UPLINK_BACKOFF_MAX);
        }
    }
}

async fn session(
    shared: &Arc<Shared>,
    addr: &str,
    welcomed: &mut bool,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let stream = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, FrameCodec::default());
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        role: Role::Agent,
        resource_id: shared.cfg.id.clone(),
        pid: std::process::id(),
        flink_version: String::new(),
        secret: shared.token.clone(),
    };
    let welcome = handshake::connect(&mut framed, hello, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    {
        let mut inner = shared.lock();
        if let Some(epoch) = welcome.epoch {
            if epoch < inner.max_epoch {
                inner.counters.uplink_deposed += 1;
                return Err(format!(
                    "deposed coordinator: its epoch {epoch} is lower than {} already seen; trying the next address",
                    inner.max_epoch
                ));
            }
            inner.max_epoch = epoch;
        }
        *welcomed = true;
        inner.uplink_connected = true;
        inner.counters.uplink_connects += 1;
        inner.uplink_down_since = None;
        for w in inner.processes.values_mut() {
            w.self_fenced = false;
        }
        super::watchdog::resync(shared, &mut inner);
    }
    tracing::info!(coordinator = %addr, epoch = ?welcome.epoch, "Connected to the coordinator");
    let mut tick = tokio::time::interval(shared.cfg.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Liveness transitions should not wait for the next status tick: look for new events often.
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    // A coordinator that sends heartbeats must keep sending them: a link cut silently fails no write for a long
    // time, so silence is how the agent learns it is cut off.
    let mut heard_beat = false;
    let mut beats = 0;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        if heard_beat && last_heard.elapsed() >= UPLINK_SILENCE {
            return Err(format!(
                "no word from the coordinator for {UPLINK_SILENCE:?}"
            ));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let statuses = shared.statuses();
                if statuses.is_empty() {
                    // Nothing watched yet (a sidecar starts before Flink): a heartbeat keeps the link alive.
                    beats += 1;
                    let beat = Heartbeat { seq: beats, ts_ms: crate::host::clock::now_ms() };
                    framed.feed(Message::Heartbeat(beat).to_frame()).await.map_err(|e| e.to_string())?;
                }
                for status in statuses {
                    framed.feed(Message::AgentStatus(status).to_frame()).await.map_err(|e| e.to_string())?;
                }
                tokio::time::timeout(UPLINK_SILENCE, framed.flush())
                    .await
                    .map_err(|_| "the link takes no more data".to_string())?
                    .map_err(|e| e.to_string())?;
            }
            _ = poll.tick() => {}
            next = framed.next() => match next {
                None => return Err("the coordinator closed the link".into()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(frame)) => match Message::from_frame(&frame) {
                    Ok(Some(Message::AgentCommand(cmd))) => {
                        last_heard = tokio::time::Instant::now();
                        super::command::handle(shared, &cmd);
                    }
                    Ok(Some(Message::Heartbeat(_))) => {
                        heard_beat = true;
                        last_heard = tokio::time::Instant::now();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "Skipping an undecodable message from the coordinator"),
                },
            },
        }
        // Send what is pending; forget it only once flushed, so a link that breaks meanwhile resends it.
        let batch: Vec<(u64, AgentEvent)> = shared
            .lock()
            .pending_events
            .iter()
            .take(256)
            .cloned()
            .collect();
        for (_, ev) in &batch {
            framed
                .feed(Message::AgentEvent(ev.clone()).to_frame())
                .await
                .map_err(|e| e.to_string())?;
        }
        tokio::time::timeout(UPLINK_SILENCE, framed.flush())
            .await
            .map_err(|_| "the link takes no more data".to_string())?
            .map_err(|e| e.to_string())?;
        if let Some((last, _)) = batch.last() {
            let mut inner = shared.lock();
            while inner
                .pending_events
                .front()
                .is_some_and(|(seq, _)| seq <= last)
            {
                inner.pending_events.pop_front();
            }
        }
    }
}
