//! The agent's HTTP endpoint (loopback): `/metrics` (Prometheus text: the agent's own metrics and the Flink metrics
//! its plugin forwards) and `/healthz` (the agent is serving; its view of the process as JSON).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::liveness::Liveness;
use super::Shared;
use crate::metrics::{self, Families, Text};

pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(shared);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "Agent HTTP server failed");
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(shared.status())
}

async fn metrics_page(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&shared),
    )
}

/// The whole metrics page.
pub fn render(shared: &Shared) -> String {
    let status = shared.status();
    let inner = shared.lock();
    let rid = shared.cfg.resource_id.as_str();
    let mut t = Text::new();
    t.family(
        "streamshield_agent_liveness",
        "gauge",
        "1 for the watched process's current liveness state (alive, paused, hung, busy-gc, dead, unknown).",
    );
    for s in Liveness::ALL {
        let v = if inner.tracker.state() == s { 1.0 } else { 0.0 };
        t.sample(
            "streamshield_agent_liveness",
            &[("resource_id", rid), ("state", s.as_str())],
            v,
        );
    }
    let now = crate::host::clock::now_ms();
    t.family(
        "streamshield_agent_liveness_state_seconds",
        "gauge",
        "How long the watched process has been in its current liveness state.",
    )
    .sample(
        "streamshield_agent_liveness_state_seconds",
        &[("resource_id", rid)],
        (now - status.since_ms).max(0) as f64 / 1000.0,
    );
    if let Some(hb) = status.last_heartbeat_ms {
        t.family(
            "streamshield_agent_heartbeat_age_seconds",
            "gauge",
            "Time since the plugin's last heartbeat.",
        )
        .sample(
            "streamshield_agent_heartbeat_age_seconds",
            &[("resource_id", rid)],
            (now - hb).max(0) as f64 / 1000.0,
        );
    }
    t.family(
        "streamshield_agent_plugin_connected",
        "gauge",
        "1 while the plugin is connected.",
    )
    .sample(
        "streamshield_agent_plugin_connected",
        &[("resource_id", rid)],
        f64::from(u8::from(inner.tracker.connected())),
    );
    t.family(
        "streamshield_agent_coordinator_connected",
        "gauge",
        "1 while the agent is connected to the coordinator.",
    )
    .sample(
        "streamshield_agent_coordinator_connected",
        &[("resource_id", rid)],
        f64::from(u8::from(inner.uplink_connected)),
    );
    let c = &inner.counters;
    t.family(
        "streamshield_agent_plugin_connections_total",
        "counter",
        "Plugin connections by result (accepted, or the reason they were refused).",
    )
    .sample(
        "streamshield_agent_plugin_connections_total",
        &[("resource_id", rid), ("result", "accepted")],
        c.connections_accepted as f64,
    );
    for (reason, n) in &c.connections_rejected {
        t.sample(
            "streamshield_agent_plugin_connections_total",
            &[("resource_id", rid), ("result", reason)],
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
            &[("resource_id", rid), ("reason", reason)],
            *n as f64,
        );
    }
    t.family(
        "streamshield_agent_frames_total",
        "counter",
        "Frames received from the plugin, by kind.",
    );
    for (k, n) in &c.frames {
        t.sample(
            "streamshield_agent_frames_total",
            &[("resource_id", rid), ("kind", k)],
            *n as f64,
        );
    }
    t.family(
        "streamshield_agent_events_dropped_total",
        "counter",
        "Events dropped because the coordinator was away and the buffer was full.",
    )
    .sample(
        "streamshield_agent_events_dropped_total",
        &[("resource_id", rid)],
        c.events_dropped as f64,
    );
    t.family(
        "streamshield_agent_plugin_dropped_messages",
        "gauge",
        "Messages the plugin dropped (its queue was full), as last reported by the plugin.",
    )
    .sample(
        "streamshield_agent_plugin_dropped_messages",
        &[("resource_id", rid)],
        inner
            .metrics
            .as_ref()
            .map(|m| m.dropped as f64)
            .unwrap_or(0.0),
    );
    if let Some(batch) = &inner.metrics {
        let mut fams = Families::default();
        for m in &batch.metrics {
            let (name, scale) = metrics::flink_metric(&m.name);
            let mut labels = vec![("resource_id".to_string(), rid.to_string())];
            labels.extend(
                m.labels
                    .iter()
                    .map(|(k, v)| (metrics::label_name(k), v.clone())),
            );
            fams.add(name, labels, m.value * scale);
        }
        fams.render(
            &mut t,
            "gauge",
            "A Flink metric forwarded by the StreamShield plugin (see docs/metrics.md).",
        );
    }
    drop(inner);
    metrics::process_metrics(&mut t);
    t.finish()
}
