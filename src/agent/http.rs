//! The agent's HTTP endpoint: `/metrics` (Prometheus text: the agent's own metrics, per watched process, and the
//! Flink metrics each process's plugin forwards) and `/healthz` (the agent serves; its view of every process as
//! JSON, with each watchdog target's state).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::state::Shared;
use crate::metrics::{self, Families, Text};
use crate::protocol::message::AgentStatus;
use crate::protocol::Liveness;

/// What `/healthz` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub agent: String,
    pub coordinator_connected: bool,
    pub processes: Vec<AgentStatus>,
    /// Each watchdog target's state, evidence and members.
    #[serde(default)]
    pub watchdogs: Vec<super::watchdog::Status>,
}

impl Health {
    /// The status of process `rid`, if the agent watches it.
    pub fn process(&self, rid: &str) -> Option<&AgentStatus> {
        self.processes.iter().find(|p| p.resource_id == rid)
    }
}

pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| format!("the agent's HTTP server failed: {e}"))
}

pub fn health(shared: &Shared) -> Health {
    let processes = shared.statuses();
    let inner = shared.lock();
    Health {
        agent: shared.cfg.id.clone(),
        coordinator_connected: inner.uplink_connected,
        processes,
        watchdogs: inner.watchdogs.values().cloned().collect(),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(health(&shared))
}

async fn metrics_page(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        render(&shared),
    )
}

/// The whole metrics page.
pub fn render(shared: &Shared) -> String {
    let statuses = shared.statuses();
    let inner = shared.lock();
    let agent = shared.cfg.id.as_str();
    let now = crate::host::clock::now_ms();
    let mut t = Text::new();
    t.family(
        "streamshield_agent_liveness",
        "gauge",
        "1 for each watched process's current liveness state (alive, paused, hung, busy-gc, dead, unknown).",
    );
    for s in &statuses {
        for l in Liveness::ALL {
            t.sample(
                "streamshield_agent_liveness",
                &[("resource_id", &s.resource_id), ("state", l.as_str())],
                if s.liveness == l { 1.0 } else { 0.0 },
            );
        }
    }
    t.family(
        "streamshield_agent_liveness_state_seconds",
        "gauge",
        "How long each watched process has been in its current liveness state.",
    );
    for s in &statuses {
        t.sample(
            "streamshield_agent_liveness_state_seconds",
            &[("resource_id", &s.resource_id)],
            (now - s.since_ms).max(0) as f64 / 1000.0,
        );
    }
    t.family(
        "streamshield_agent_heartbeat_age_seconds",
        "gauge",
        "Time since each plugin's last heartbeat.",
    );
    for s in &statuses {
        if let Some(hb) = s.last_heartbeat_ms {
            t.sample(
                "streamshield_agent_heartbeat_age_seconds",
                &[("resource_id", &s.resource_id)],
                (now - hb).max(0) as f64 / 1000.0,
            );
        }
    }
    t.family(
        "streamshield_agent_plugin_connected",
        "gauge",
        "1 while a process's plugin is connected.",
    );
    for s in &statuses {
        t.sample(
            "streamshield_agent_plugin_connected",
            &[("resource_id", &s.resource_id)],
            f64::from(u8::from(s.plugin_connected)),
        );
    }
    t.family(
        "streamshield_agent_restarts_total",
        "counter",
        "Times the agent started a process again in place.",
    );
    for w in inner.processes.values() {
        t.sample(
            "streamshield_agent_restarts_total",
            &[("resource_id", &w.resource_id)],
            w.restarts as f64,
        );
    }
    t.single(
        "streamshield_agent_processes",
        "gauge",
        "Flink processes this agent watches.",
        statuses.len() as f64,
    );
    t.family(
        "streamshield_agent_coordinator_connected",
        "gauge",
        "1 while the agent is connected to the coordinator.",
    )
    .sample(
        "streamshield_agent_coordinator_connected",
        &[("agent", agent)],
        f64::from(u8::from(inner.uplink_connected)),
    );
    t.single(
        "streamshield_agent_coordinator_epoch",
        "gauge",
        "The highest coordinator epoch (fencing token) this agent has seen; orders below it are refused.",
        inner.max_epoch as f64,
    );
    let c = &inner.counters;
    t.single(
        "streamshield_agent_coordinator_deposed_total",
        "counter",
        "Coordinators this agent left at the handshake because their epoch was lower than one already seen.",
        c.uplink_deposed as f64,
    );
    t.family(
        "streamshield_agent_plugin_connections_total",
        "counter",
        "Plugin connections by result (accepted, or the reason they were refused).",
    )
    .sample(
        "streamshield_agent_plugin_connections_total",
        &[("result", "accepted")],
        c.connections_accepted as f64,
    );
    for (reason, n) in &c.connections_rejected {
        t.sample(
            "streamshield_agent_plugin_connections_total",
            &[("result", reason)],
            *n as f64,
        );
    }
    t.family(
        "streamshield_agent_protocol_errors_total",
        "counter",
        "Protocol errors on plugin connections, by reason.",
    );
    for (reason, n) in &c.protocol_errors {
        t.sample(
            "streamshield_agent_protocol_errors_total",
            &[("reason", reason)],
            *n as f64,
        );
    }
    t.family(
        "streamshield_agent_frames_total",
        "counter",
        "Frames received from plugins, by kind.",
    );
    for (k, n) in &c.frames {
        t.sample("streamshield_agent_frames_total", &[("kind", k)], *n as f64);
    }
    t.family(
        "streamshield_agent_commands_total",
        "counter",
        "Coordinator commands carried out, by action and outcome.",
    );
    for ((action, outcome), n) in &c.commands {
        t.sample(
            "streamshield_agent_commands_total",
            &[("action", action), ("outcome", outcome)],
            *n as f64,
        );
    }
    t.single(
        "streamshield_agent_events_dropped_total",
        "counter",
        "Events dropped because the coordinator was away and the buffer was full.",
        c.events_dropped as f64,
    );
    t.family(
        "streamshield_agent_plugin_dropped_messages",
        "gauge",
        "Messages a plugin dropped (its queue was full), as last reported by the plugin.",
    );
    for w in inner.processes.values() {
        t.sample(
            "streamshield_agent_plugin_dropped_messages",
            &[("resource_id", &w.resource_id)],
            w.metrics.as_ref().map(|m| m.dropped as f64).unwrap_or(0.0),
        );
    }
    let mut fams = Families::default();
    for w in inner.processes.values() {
        let Some(batch) = &w.metrics else { continue };
        for m in &batch.metrics {
            let (name, scale) = metrics::flink_metric(&m.name);
            let mut labels = vec![("resource_id".to_string(), w.resource_id.clone())];
            labels.extend(
                m.labels
                    .iter()
                    .map(|(k, v)| (metrics::label_name(k), v.clone())),
            );
            fams.add(name, labels, m.value * scale);
        }
    }
    fams.render(
        &mut t,
        "gauge",
        "A Flink metric forwarded by the StreamShield plugin (see docs/metrics.md).",
    );
    super::watchdog::render(
        &inner.watchdogs,
        &shared.watchdog_probe_seconds,
        now,
        &mut t,
    );
    drop(inner);
    if let Some(spill) = &shared.spill {
        spill.render(&mut t);
    }
    metrics::process_metrics(&mut t);
    t.finish()
}
