//! The coordinator's HTTP API. Everything under `/v1/` and `/metrics` needs `Authorization: Bearer <api token>`;
//! `/healthz` is open (for liveness probes) and says only whether the coordinator serves.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::model::{
    AgentView, Decision, Event, FlinkView, JobView, Model, ProcessView, TaskManagerView,
};
use super::policy::{Mode, Trigger};
use super::Shared;
use crate::metrics::{self, Text};
use crate::protocol::handshake::secrets_equal;

pub fn router(shared: Arc<Shared>) -> Router {
    let authed = Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/jobs", get(jobs))
        .route("/v1/taskmanagers", get(taskmanagers))
        .route("/v1/events", get(events))
        .route("/v1/decisions", get(decisions))
        .route("/v1/kubernetes", get(kubernetes))
        .route("/v1/leader", get(leader))
        .route("/metrics", get(metrics_page))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(authed)
        .with_state(shared)
}

pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), String> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| format!("the API server failed: {e}"))
}

async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| secrets_equal(t.trim(), &shared.api_token));
    if ok {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({"error": "a valid bearer token is required (the coordinator's API token file)"})),
        )
            .into_response()
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let m = shared.model();
    Json(serde_json::json!({
        "ok": true,
        "agents_connected": m.agents.values().filter(|a| a.connected).count(),
        "flink_reachable": m.flink.reachable,
    }))
}

/// A TaskManager as Flink and its agent see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergedTaskManager {
    pub resource_id: String,
    /// `active` (some slots in use), `standby` (all free), or `unknown` (not registered with Flink).
    pub role: String,
    pub flink: Option<TaskManagerView>,
    /// Its process as its agent reports it.
    pub agent: Option<ProcessView>,
}

/// `/v1/cluster`: everything at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    /// `acting` when the policy of some job (or the cluster's) has failover on, else `observe-only`.
    pub mode: String,
    pub epoch: u64,
    pub flink: FlinkView,
    pub agents: Vec<AgentView>,
    pub processes: Vec<ProcessView>,
    pub taskmanagers: Vec<MergedTaskManager>,
    /// The newest decisions first (at most 50).
    pub decisions: Vec<Decision>,
}

impl Cluster {
    /// The process (TaskManager or JobManager) `rid` as its agent reports it.
    pub fn process(&self, rid: &str) -> Option<&ProcessView> {
        self.processes.iter().find(|p| p.resource_id == rid)
    }
}

pub fn merged(m: &Model) -> Vec<MergedTaskManager> {
    let mut ids: Vec<String> = m.flink.taskmanagers.iter().map(|t| t.id.clone()).collect();
    for (id, p) in &m.processes {
        let is_tm = p
            .status
            .as_ref()
            .is_none_or(|s| s.watches == crate::protocol::Role::Tm);
        if is_tm && !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids.sort();
    ids.into_iter()
        .map(|id| {
            let flink = m.flink.taskmanagers.iter().find(|t| t.id == id).cloned();
            let role = match &flink {
                Some(t) if t.free_slots < t.slots => "active",
                Some(_) => "standby",
                None => "unknown",
            };
            MergedTaskManager {
                role: role.into(),
                agent: m.processes.get(&id).cloned(),
                flink,
                resource_id: id,
            }
        })
        .collect()
}

pub fn cluster_view(m: &Model) -> Cluster {
    let acting = m.cluster_policy().config.failover || m.flink.jobs.iter().any(JobView::failover);
    Cluster {
        mode: if acting { "acting" } else { "observe-only" }.into(),
        epoch: m.epoch,
        flink: m.flink.clone(),
        agents: m.agents.values().cloned().collect(),
        processes: m.processes.values().cloned().collect(),
        taskmanagers: merged(m),
        decisions: m.decisions.iter().rev().take(50).cloned().collect(),
    }
}

async fn cluster(State(shared): State<Arc<Shared>>) -> Json<Cluster> {
    // One snapshot of the model for the whole answer.
    Json(cluster_view(&shared.model()))
}

async fn jobs(State(shared): State<Arc<Shared>>) -> Json<Vec<JobView>> {
    Json(shared.model().flink.jobs.clone())
}

async fn taskmanagers(State(shared): State<Arc<Shared>>) -> Json<Vec<MergedTaskManager>> {
    Json(merged(&shared.model()))
}

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    /// Only events with a larger id.
    since: Option<u64>,
    limit: Option<usize>,
}

async fn events(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<EventQuery>,
) -> Json<Vec<Event>> {
    let m = shared.model();
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(500).min(super::model::EVENT_LOG);
    let all: Vec<Event> = m.events.iter().filter(|e| e.id > since).cloned().collect();
    let skip = all.len().saturating_sub(limit);
    Json(all.into_iter().skip(skip).collect())
}

async fn decisions(State(shared): State<Arc<Shared>>) -> Json<Vec<Decision>> {
    Json(shared.model().decisions.iter().cloned().collect())
}

/// 200 while this coordinator leads, 503 while it follows: a Service whose pods are ready only while leading sends
/// agents to the leader. Open, like `/healthz`.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let l = shared.leadership.borrow().clone();
    let code = if l.leading {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({"leading": l.leading, "holder": l.holder})),
    )
        .into_response()
}

/// This coordinator's part in the election.
async fn leader(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.leadership.borrow().clone())
}

/// What the coordinator sees of Kubernetes (null when it does not watch it).
async fn kubernetes(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.model().kube.clone())
}

async fn metrics_page(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        render(&shared),
    )
}

pub fn render(shared: &Shared) -> String {
    let m = shared.model();
    let mut t = Text::new();
    t.single(
        "streamshield_coordinator_agents_connected",
        "gauge",
        "Agents connected to the coordinator.",
        m.agents.values().filter(|a| a.connected).count() as f64,
    );
    t.family(
        "streamshield_coordinator_watchdog_state",
        "gauge",
        "1 for each agent's watchdog target's state, as its last watchdog event said.",
    );
    for a in m.agents.values() {
        for w in a.watchdogs.values() {
            for st in crate::protocol::watchdog::TargetState::ALL {
                t.sample(
                    "streamshield_coordinator_watchdog_state",
                    &[
                        ("agent", &a.id),
                        ("target", &w.target),
                        ("kind", w.kind.as_str()),
                        ("state", st.as_str()),
                    ],
                    f64::from(u8::from(w.to == st)),
                );
            }
        }
    }
    t.family(
        "streamshield_coordinator_agent_liveness",
        "gauge",
        "1 for each agent's reported liveness of its process.",
    );
    for p in m.processes.values() {
        if let Some(s) = &p.status {
            t.sample(
                "streamshield_coordinator_agent_liveness",
                &[
                    ("resource_id", &p.resource_id),
                    ("state", s.liveness.as_str()),
                ],
                1.0,
            );
        }
    }
    t.single(
        "streamshield_coordinator_flink_reachable",
        "gauge",
        "1 when the last poll of Flink's REST API succeeded.",
        f64::from(u8::from(m.flink.reachable)),
    );
    t.family(
        "streamshield_coordinator_flink_polls_total",
        "counter",
        "Polls of Flink's REST API, by result.",
    )
    .sample(
        "streamshield_coordinator_flink_polls_total",
        &[("result", "ok")],
        m.flink.polls_ok as f64,
    )
    .sample(
        "streamshield_coordinator_flink_polls_total",
        &[("result", "error")],
        m.flink.polls_failed as f64,
    );
    t.family(
        "streamshield_coordinator_events_total",
        "counter",
        "Events recorded, by source.",
    );
    for (s, n) in &m.events_by_source {
        t.sample(
            "streamshield_coordinator_events_total",
            &[("source", s)],
            *n as f64,
        );
    }
    t.family(
        "streamshield_coordinator_decisions_total",
        "counter",
        "Decisions, by trigger and mode (acted, or observe-only: recorded with what would have been done).",
    );
    // Every series from the start (at 0), so that the first decision of a kind is an increase a rule can see.
    for trigger in Trigger::ALL {
        for mode in Mode::ALL {
            t.sample(
                "streamshield_coordinator_decisions_total",
                &[("kind", trigger.as_str()), ("mode", mode.as_str())],
                m.decisions_total
                    .get(&(trigger, mode))
                    .copied()
                    .unwrap_or(0) as f64,
            );
        }
    }
    t.histogram(&m.recovery.0);
    t.family(
        "streamshield_coordinator_epoch",
        "gauge",
        "This coordinator's epoch: the fencing token its orders carry.",
    );
    t.sample("streamshield_coordinator_epoch", &[], m.epoch as f64);
    t.single(
        "streamshield_coordinator_leader",
        "gauge",
        "1 while this coordinator leads (holds the Lease, or runs without ha-lease), 0 while it follows.",
        f64::from(u8::from(shared.leading())),
    );
    t.family(
        "streamshield_coordinator_agent_connections_total",
        "counter",
        "Agent connections, by result (accepted, or why they were refused).",
    );
    for (r, n) in &m.agent_connections {
        t.sample(
            "streamshield_coordinator_agent_connections_total",
            &[("result", r)],
            *n as f64,
        );
    }
    if let Some(k) = &m.kube {
        t.family(
            "streamshield_coordinator_kubernetes_watch_errors_total",
            "counter",
            "Kubernetes watches that failed and were retried, by resource.",
        );
        for (r, n) in &k.watch_errors {
            t.sample(
                "streamshield_coordinator_kubernetes_watch_errors_total",
                &[("resource", r)],
                *n as f64,
            );
        }
        t.family(
            "streamshield_coordinator_kubernetes_events_total",
            "counter",
            "Decisions written as Kubernetes Events, by result.",
        )
        .sample(
            "streamshield_coordinator_kubernetes_events_total",
            &[("result", "written")],
            k.notices_written as f64,
        )
        .sample(
            "streamshield_coordinator_kubernetes_events_total",
            &[("result", "failed")],
            k.notices_failed as f64,
        );
        t.single(
            "streamshield_coordinator_kubernetes_permissions_missing",
            "gauge",
            "Permissions the coordinator lacks (each turns a Kubernetes feature off; its log names them).",
            k.missing.len() as f64,
        );
    }
    drop(m);
    metrics::process_metrics(&mut t);
    t.finish()
}
