//! `streamshield webhook`: the mutating admission webhook (HTTPS, AdmissionReview `admission.k8s.io/v1`).
//!
//! - `POST /mutate/pods`: Flink pods whose own label opts them in (`streamshield.io/inject: enabled`, put into the
//!   pod template by the FlinkDeployment's injection);
//! - `POST /mutate/pods/namespace`: Flink pods of namespaces labelled `streamshield.io/inject: enabled` (the
//!   webhook entry with that namespace selector calls this path);
//! - `POST /mutate/flinkdeployments`: the plugin's keys and the opt-in label for FlinkDeployments annotated
//!   `streamshield.io/enabled: "true"`, and warnings for malformed `streamshield.io/<key>` annotations;
//! - `POST /mutate/flinkdeployments/namespace`: the same for every FlinkDeployment of a labelled namespace (unless
//!   annotated `"false"`), whose pods get the agent and so need the keys.
//!
//! It never blocks a pod: whatever goes wrong with an object (it does not parse, a patch cannot be made) the object
//! is admitted unchanged, with a warning to whoever created it, a log line and `streamshield_webhook_admissions_total
//! {outcome="error"}`, and with `events: true` a Warning Event in the object's namespace ([`super::events`]). Only a request that is not an AdmissionReview v1 gets an HTTP error (400, with a review that
//! says what was expected). `/metrics` and `/healthz` are on a separate plain-HTTP port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde_json::Value;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::WebhookSettings;
use super::events::{self, Events, Notice, Reason, Writer};
use super::inject::{self, InjectSettings, Outcome};
use super::tls::{self, Reloading};
use crate::daemon::{Drained, TaskDied, Tasks};
use crate::metrics::{Histogram, Text};

/// The review version the webhook speaks (the MutatingWebhookConfiguration's `admissionReviewVersions: [v1]`).
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
/// The largest review accepted: Kubernetes objects are at most ~1.5 MiB in etcd, a review carries up to two.
const MAX_BODY: usize = 4 << 20;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for a rotation.
const TLS_RELOAD_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error(transparent)]
    Kube(#[from] super::api::Error),
    #[error("cannot listen on {addr}: {source}{holder}")]
    Bind {
        addr: SocketAddr,
        holder: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which webhook path a review came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Pods { namespace_opted_in: bool },
    FlinkDeployments { namespace_opted_in: bool },
}

impl Target {
    fn resource(self) -> &'static str {
        match self {
            Target::Pods { .. } => "pods",
            Target::FlinkDeployments { .. } => "flinkdeployments",
        }
    }
}

/// Counters by (resource, outcome, reason).
type Counts = BTreeMap<(&'static str, &'static str, String), u64>;

struct Shared {
    inject: InjectSettings,
    counts: Mutex<Counts>,
    bad_requests: Mutex<BTreeMap<&'static str, u64>>,
    duration: Histogram,
    tls: Arc<Reloading>,
    /// None: `events: false`, or a permission is missing (named in the start-up log).
    events: Option<Events>,
}

impl Shared {
    fn count(&self, resource: &'static str, outcome: &'static str, reason: &str) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((resource, outcome, reason.to_string()))
                .or_default() += 1;
        }
    }
}

/// The webhook, its certificate loaded and both ports bound.
pub struct BoundWebhook {
    shared: Arc<Shared>,
    tls_listener: TcpListener,
    http_listener: TcpListener,
    writer: Option<Writer>,
}

/// With `events: true`: the API client, checked, and whether it may write Events (each missing permission named).
async fn events_writer() -> Result<Option<(Events, Writer)>, Error> {
    let client = super::api::client("set events: false").await?;
    let missing = super::api::missing(
        &client,
        "events.k8s.io",
        "events",
        &["create", "patch"],
        None,
    )
    .await;
    if !missing.is_empty() {
        let said = missing.join(", ");
        tracing::warn!(missing = %said, "The webhook may not write Kubernetes Events: they are off (admissions are not affected); grant the permissions or set events: false");
        return Ok(None);
    }
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(crate::host::procfs::host_name)
        .unwrap_or_else(|| events::CONTROLLER.into());
    Ok(Some(events::channel(client, instance)))
}

impl BoundWebhook {
    pub async fn bind(s: WebhookSettings) -> Result<Self, Error> {
        let tls = Reloading::load(&s.tls_cert_file, &s.tls_key_file)?;
        let tcp = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| Error::Bind {
                addr,
                holder: crate::host::sockets::port_holder(addr.port())
                    .map(|h| format!(" (held by {h})"))
                    .unwrap_or_default(),
                source,
            })
        };
        let tls_listener = tcp(s.listen).await?;
        let http_listener = tcp(s.http).await?;
        let (events, writer) = match s.events {
            true => events_writer().await?.unzip(),
            false => (None, None),
        };
        Ok(BoundWebhook {
            shared: Arc::new(Shared {
                inject: s.inject,
                counts: Mutex::new(BTreeMap::new()),
                bad_requests: Mutex::new(BTreeMap::new()),
                duration: Histogram::new(
                    "streamshield_webhook_admission_duration_seconds",
                    "Time to answer one AdmissionReview, from its body read to the response.",
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
                ),
                tls,
                events,
            }),
            tls_listener,
            http_listener,
            writer,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.tls_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Drained, TaskDied> {
        let mut tasks = Tasks::new("webhook", &shutdown);
        let token = tasks.token();
        let reviews = Router::new()
            .route("/mutate/pods", post(pods_by_label))
            .route("/mutate/pods/namespace", post(pods_by_namespace))
            .route("/mutate/flinkdeployments", post(flink_deployments))
            .route(
                "/mutate/flinkdeployments/namespace",
                post(flink_deployments_by_namespace),
            )
            .layer(DefaultBodyLimit::max(MAX_BODY))
            // A refused body is left unread and the connection closed after the answer: say so, so that the client
            // does not send its next request into a connection that is going away.
            .layer(axum::middleware::map_response(close_after_413))
            .with_state(self.shared.clone());
        tasks.spawn(
            "admission",
            serve_tls(
                self.tls_listener,
                self.shared.tls.clone(),
                reviews,
                token.clone(),
            ),
        );
        let pages = Router::new()
            .route("/metrics", get(metrics_page))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(self.shared.clone());
        let http = self.http_listener;
        let t = token.clone();
        tasks.spawn("http", async move {
            axum::serve(http, pages)
                .with_graceful_shutdown(async move { t.cancelled().await })
                .await
                .map_err(|e| format!("the webhook's HTTP server failed: {e}"))
        });
        if let Some(w) = self.writer {
            tasks.spawn("events", w.run(token.clone()));
        }
        tasks.spawn(
            "tls-reload",
            self.shared.tls.clone().watch(TLS_RELOAD_EVERY, token),
        );
        tasks.run().await
    }
}

async fn serve_tls(
    listener: TcpListener,
    certs: Arc<Reloading>,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.server_config()));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the connections there are.
                    tracing::warn!(error = %e, "Cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .into_owned();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "Connection ended with an error");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn close_after_413(mut r: Response) -> Response {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    r
}

async fn pods_by_label(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    review(
        &s,
        Target::Pods {
            namespace_opted_in: false,
        },
        &body,
    )
}

async fn pods_by_namespace(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    review(
        &s,
        Target::Pods {
            namespace_opted_in: true,
        },
        &body,
    )
}

async fn flink_deployments(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    review(
        &s,
        Target::FlinkDeployments {
            namespace_opted_in: false,
        },
        &body,
    )
}

async fn flink_deployments_by_namespace(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    review(
        &s,
        Target::FlinkDeployments {
            namespace_opted_in: true,
        },
        &body,
    )
}

/// Answers one review. Only a request that is not an AdmissionReview v1 is refused; every object is admitted.
fn review(s: &Shared, target: Target, body: &[u8]) -> Response {
    let started = Instant::now();
    let response = match parse_review(body) {
        Err(problem) => {
            if let Ok(mut b) = s.bad_requests.lock() {
                *b.entry(problem.reason()).or_default() += 1;
            }
            tracing::warn!(problem = %problem, "Refused a request that is not an AdmissionReview v1");
            (
                StatusCode::BAD_REQUEST,
                axum::Json(AdmissionResponse::invalid(problem.to_string()).into_review()),
            )
                .into_response()
        }
        Ok((request, object)) => {
            let answer = decide(s, target, &request, object.as_ref());
            axum::Json(wire_review(answer)).into_response()
        }
    };
    s.duration.observe(started.elapsed().as_secs_f64());
    response
}

/// The review as the API server documents it: `response.patch` is `[]byte`, so base64 in JSON. kube-core serializes
/// it as an array of numbers, which Go's decoder happens to accept; other readers (proxies, tests, tools) do not.
fn wire_review(answer: AdmissionResponse) -> Value {
    use base64::Engine;
    let patch = answer.patch.clone();
    let mut v = serde_json::to_value(answer.into_review()).unwrap_or(Value::Null);
    if let (Some(p), Some(r)) = (patch, v.get_mut("response").and_then(Value::as_object_mut)) {
        r.insert(
            "patch".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(p)),
        );
    }
    v
}

/// Why a body is not a review the webhook can answer.
#[derive(Debug, Error)]
enum BadReview {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("expected an AdmissionReview of {REVIEW_API_VERSION}, got kind {kind:?} of {api_version:?} (set admissionReviewVersions: [v1] in the webhook configuration)")]
    WrongVersion { api_version: String, kind: String },
    #[error("the AdmissionReview has no valid request: {0}")]
    NoRequest(String),
}

impl BadReview {
    fn reason(&self) -> &'static str {
        match self {
            BadReview::NotJson(_) => "not-json",
            BadReview::WrongVersion { .. } => "wrong-version",
            BadReview::NoRequest(_) => "no-request",
        }
    }
}

/// The review's request (its envelope, parsed by kube's types) and its object as plain JSON: an object that does
/// not parse must still get an answer with the request's uid, so the object is taken out before the envelope is
/// parsed.
fn parse_review(
    body: &[u8],
) -> Result<(AdmissionRequest<DynamicObject>, Option<Value>), BadReview> {
    let mut v: Value =
        serde_json::from_slice(body).map_err(|e| BadReview::NotJson(e.to_string()))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if api_version != REVIEW_API_VERSION || kind != "AdmissionReview" {
        return Err(BadReview::WrongVersion { api_version, kind });
    }
    let Some(request) = v.get_mut("request").and_then(Value::as_object_mut) else {
        return Err(BadReview::NoRequest("it has no request object".into()));
    };
    let object = request
        .insert("object".into(), Value::Null)
        .filter(|o| !o.is_null());
    request.insert("oldObject".into(), Value::Null);
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(v).map_err(|e| BadReview::NoRequest(e.to_string()))?;
    let request: AdmissionRequest<DynamicObject> =
        review
            .try_into()
            .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| {
                BadReview::NoRequest(e.to_string())
            })?;
    Ok((request, object))
}

fn decide(
    s: &Shared,
    target: Target,
    request: &AdmissionRequest<DynamicObject>,
    object: Option<&Value>,
) -> AdmissionResponse {
    let resource = target.resource();
    let allowed = AdmissionResponse::from(request);
    let namespace = request.namespace.as_deref().unwrap_or("");
    let relevant = match target {
        Target::Pods { .. } => request.operation == Operation::Create,
        Target::FlinkDeployments { .. } => {
            matches!(request.operation, Operation::Create | Operation::Update)
        }
    };
    let Some(object) = object.filter(|_| relevant) else {
        s.count(resource, "unchanged", "operation");
        return allowed;
    };
    let outcome = match target {
        Target::Pods { namespace_opted_in } => inject::pod(object, namespace_opted_in, &s.inject),
        Target::FlinkDeployments { namespace_opted_in } => {
            inject::flink_deployment(object, namespace_opted_in)
        }
    };
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let notice = |reason, note: String| {
        let gvk = &request.kind;
        let api_version = match gvk.group.as_str() {
            "" => gvk.version.clone(),
            g => format!("{g}/{}", gvk.version),
        };
        Notice::about(reason, &api_version, &gvk.kind, namespace, object, note)
    };
    let warned = |warnings: &[String]| {
        if !warnings.is_empty() {
            if let Some(e) = &s.events {
                e.send(notice(
                    Reason::AdmissionWarnings,
                    format!(
                        "StreamShield admitted this {resource} object with warnings: {}",
                        warnings.join("; ")
                    ),
                ));
            }
        }
    };
    let failed = |allowed, error: &str| {
        if let Some(e) = &s.events {
            e.send(notice(
                Reason::NotInjected,
                format!("StreamShield did not inject this {resource} object, admitted it unchanged: {error}"),
            ));
        }
        admitted_with_error(s, allowed, resource, namespace, name, error)
    };
    match outcome {
        Ok(Outcome::Patch { patch, warnings }) => match allowed.clone().with_patch(patch) {
            Ok(mut r) => {
                s.count(resource, "injected", "");
                tracing::info!(resource, namespace, name, "Injected");
                warned(&warnings);
                r.warnings = (!warnings.is_empty()).then_some(warnings);
                r
            }
            Err(e) => failed(allowed, &e.to_string()),
        },
        Ok(Outcome::Unchanged { skip, warnings }) => {
            s.count(resource, "unchanged", skip.as_str());
            tracing::debug!(
                resource,
                namespace,
                name,
                reason = skip.as_str(),
                "Admitted unchanged"
            );
            warned(&warnings);
            let mut r = allowed;
            r.warnings = (!warnings.is_empty()).then_some(warnings);
            r
        }
        Err(e) => failed(allowed, &e.to_string()),
    }
}

fn admitted_with_error(
    s: &Shared,
    mut allowed: AdmissionResponse,
    resource: &'static str,
    namespace: &str,
    name: &str,
    error: &str,
) -> AdmissionResponse {
    s.count(resource, "error", "malformed");
    tracing::warn!(
        resource,
        namespace,
        name,
        error,
        "Admitted unchanged: StreamShield could not inject"
    );
    allowed.warnings = Some(vec![format!(
        "StreamShield did not inject this {resource} object: {error}"
    )]);
    allowed
}

fn events_metrics(t: &mut Text, events: Option<&Events>) {
    t.single(
        "streamshield_webhook_events_enabled",
        "gauge",
        "1 when the webhook writes Kubernetes Events (events: true and the permissions are there), else 0.",
        events.is_some() as u8 as f64,
    );
    t.family(
        "streamshield_webhook_events_total",
        "counter",
        "Kubernetes Events about admitted objects, by outcome: written (created), repeated (counted on an Event already written), failed (the API server refused or did not answer), dropped (the queue was full).",
    );
    let ord = std::sync::atomic::Ordering::Relaxed;
    let zero = events::EventCounts::default();
    let c = events.map_or(&zero, |e| &e.counts);
    for (outcome, n) in [
        ("written", &c.written),
        ("repeated", &c.repeated),
        ("failed", &c.failed),
        ("dropped", &c.dropped),
    ] {
        t.sample(
            "streamshield_webhook_events_total",
            &[("outcome", outcome)],
            n.load(ord) as f64,
        );
    }
}

async fn metrics_page(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let mut t = Text::new();
    t.family(
        "streamshield_webhook_admissions_total",
        "counter",
        "AdmissionReviews answered, by resource, outcome (injected, unchanged, error: admitted unchanged because the object could not be handled) and reason.",
    );
    if let Ok(c) = s.counts.lock() {
        for ((resource, outcome, reason), n) in c.iter() {
            t.sample(
                "streamshield_webhook_admissions_total",
                &[
                    ("resource", resource),
                    ("outcome", outcome),
                    ("reason", reason),
                ],
                *n as f64,
            );
        }
    }
    t.family(
        "streamshield_webhook_bad_requests_total",
        "counter",
        "Requests refused with HTTP 400 because they were not an AdmissionReview v1, by reason.",
    );
    if let Ok(b) = s.bad_requests.lock() {
        for (reason, n) in b.iter() {
            t.sample(
                "streamshield_webhook_bad_requests_total",
                &[("reason", reason)],
                *n as f64,
            );
        }
    }
    t.histogram(&s.duration);
    let ord = std::sync::atomic::Ordering::Relaxed;
    t.single(
        "streamshield_webhook_tls_reloads_total",
        "counter",
        "Times a changed serving certificate was loaded.",
        s.tls.reloads.load(ord) as f64,
    );
    t.single(
        "streamshield_webhook_tls_reload_failures_total",
        "counter",
        "Times the certificate files changed but did not load (the previous certificate stays).",
        s.tls.reload_failures.load(ord) as f64,
    );
    events_metrics(&mut t, s.events.as_ref());
    crate::metrics::process_metrics(&mut t);
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        t.finish(),
    )
}
