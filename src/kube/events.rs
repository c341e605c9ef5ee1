//! The webhook's Kubernetes Events (`events: true`): an object admitted unchanged because the webhook could not
//! handle it, or admitted with warnings (a malformed or unknown `streamshield.io/<key>` annotation, a key the user
//! set that StreamShield's would replace), becomes a Warning Event (`events.k8s.io/v1`) regarding that object, in
//! its namespace, so that `kubectl get events` shows it to whoever owns the namespace, not only to whoever ran
//! `kubectl apply` (the admission warning) or reads the webhook's log.
//!
//! Writing never delays an answer: the review handler queues a notice ([`Events::send`], never waits; a full queue
//! drops it and counts it) and one task writes them. The same notice about the same object within
//! [`REPEAT_WINDOW`] updates the first Event's series (count, last seen) instead of making another, as client-go's
//! event recorder does; unlike kube-rs's `Recorder`, the note is part of what makes two notices the same, so a
//! different problem with the same object is a new Event, not a count on the old one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The name the webhook's Events are reported under (`reportingController`).
pub const CONTROLLER: &str = "streamshield-webhook";
/// Notices waiting to be written; more are dropped (and counted) rather than holding an admission.
const QUEUE: usize = 256;
/// The API server's limit on an Event's note.
const NOTE_MAX: usize = 1024;
/// A repeat of the same notice about the same object within this window is a count on the first Event.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Distinct notices remembered for repeats; the oldest are forgotten beyond this.
const REMEMBERED: usize = 4096;

/// Why the webhook writes an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The object was admitted unchanged because the webhook could not handle it.
    NotInjected,
    /// The object was admitted (injected or not) with warnings.
    AdmissionWarnings,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotInjected => "NotInjected",
            Reason::AdmissionWarnings => "AdmissionWarnings",
        }
    }
}

/// One Event to write.
#[derive(Debug, Clone)]
pub struct Notice {
    pub reason: Reason,
    pub regarding: ObjectReference,
    /// The object's controller (its owner reference), when it has one: a pod being created has no uid yet, its
    /// owner does.
    pub related: Option<ObjectReference>,
    pub note: String,
}

impl Notice {
    /// A notice about `object` (as the review carries it: `kind` and `api_version` from the review's request, since
    /// a created object may omit them), in `namespace`.
    pub fn about(
        reason: Reason,
        api_version: &str,
        kind: &str,
        namespace: &str,
        object: &Value,
        note: String,
    ) -> Notice {
        let meta = |k: &str| {
            object
                .pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        // A pod of a ReplicaSet or a Flink TaskManager has only a generateName when it is admitted: its prefix
        // (without the trailing dash, which no Event name may end a segment with) names it, so that the failures
        // of every pod of one template count on one Event.
        let name = meta("name")
            .or_else(|| meta("generateName"))
            .map(|n| n.trim_end_matches(['-', '.']).to_string())
            .filter(|n| !n.is_empty());
        let owners = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array);
        let owner = owners.and_then(|o| {
            o.iter()
                .find(|r| r["controller"] == Value::Bool(true))
                .or_else(|| o.first())
        });
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Notice {
            reason,
            regarding: ObjectReference {
                api_version: Some(api_version.to_string()),
                kind: Some(kind.to_string()),
                namespace: Some(namespace.to_string()),
                name,
                uid: meta("uid").map(str::to_string),
                ..Default::default()
            },
            related: owner.map(|o| ObjectReference {
                api_version: text(o, "apiVersion"),
                kind: text(o, "kind"),
                namespace: Some(namespace.to_string()),
                name: text(o, "name"),
                uid: text(o, "uid"),
                ..Default::default()
            }),
            note: truncate(&note, NOTE_MAX),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// What happened to the notices, for /metrics.
#[derive(Debug, Default)]
pub struct EventCounts {
    /// Events created.
    pub written: AtomicU64,
    /// Repeats counted on an Event already written.
    pub repeated: AtomicU64,
    /// Writes the API server refused or did not answer.
    pub failed: AtomicU64,
    /// Notices dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// The review handlers' side: queues notices for the writer.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::Sender<Notice>,
    pub counts: Arc<EventCounts>,
}

/// The writer's side, run by [`Writer::run`].
pub struct Writer {
    rx: mpsc::Receiver<Notice>,
    client: Client,
    instance: String,
    counts: Arc<EventCounts>,
}

/// A queue and its writer, which writes with `client` as reporting instance `instance` (the pod's name).
pub fn channel(client: Client, instance: String) -> (Events, Writer) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let counts = Arc::new(EventCounts::default());
    (
        Events {
            tx,
            counts: counts.clone(),
        },
        Writer {
            rx,
            client,
            instance,
            counts,
        },
    )
}

impl Events {
    /// Queues `n`; never waits.
    pub fn send(&self, n: Notice) {
        if self.tx.try_send(n).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What makes two notices the same Event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    kind: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    reason: Reason,
    note: String,
}

struct Written {
    /// The Event's name.
    name: String,
    count: i32,
    at: Instant,
}

impl Writer {
    /// Writes queued notices until `stop`.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), String> {
        let mut seen: HashMap<Key, Written> = HashMap::new();
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                n = self.rx.recv() => match n {
                    Some(n) => n,
                    None => return Ok(()),
                },
            };
            let namespace = n.regarding.namespace.clone().unwrap_or_default();
            let key = Key {
                namespace: namespace.clone(),
                kind: n.regarding.kind.clone(),
                name: n.regarding.name.clone(),
                uid: n.regarding.uid.clone(),
                reason: n.reason,
                note: n.note.clone(),
            };
            seen.retain(|_, w| w.at.elapsed() < REPEAT_WINDOW);
            if seen.len() >= REMEMBERED {
                if let Some(oldest) = seen
                    .iter()
                    .min_by_key(|(_, w)| w.at)
                    .map(|(k, _)| k.clone())
                {
                    seen.remove(&oldest);
                }
            }
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            let now = MicroTime(Timestamp::now());
            let result = match seen.get_mut(&key) {
                Some(w) => {
                    w.count += 1;
                    let series = EventSeries {
                        count: w.count,
                        last_observed_time: now,
                    };
                    let patch = serde_json::json!({ "series": series });
                    let r = api
                        .patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| &self.counts.repeated);
                    w.at = Instant::now();
                    r
                }
                None => {
                    let ev = self.event(&n, now);
                    match api.create(&PostParams::default(), &ev).await {
                        Ok(made) => {
                            seen.insert(
                                key,
                                Written {
                                    name: made.metadata.name.unwrap_or_default(),
                                    count: 1,
                                    at: Instant::now(),
                                },
                            );
                            Ok(&self.counts.written)
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(counter) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, namespace, reason = n.reason.as_str(), "Cannot write a Kubernetes Event");
                }
            }
        }
    }

    fn event(&self, n: &Notice, now: MicroTime) -> Event {
        let prefix = n.regarding.name.as_deref().unwrap_or(CONTROLLER);
        Event {
            metadata: ObjectMeta {
                // As client-go names Events: the object's name and the time in nanoseconds (hex).
                name: Some(format!(
                    "{}.{:x}",
                    truncate_name(prefix),
                    now.0.as_nanosecond()
                )),
                namespace: n.regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(now.clone()),
            action: Some("Admit".into()),
            reason: Some(n.reason.as_str().into()),
            note: Some(n.note.clone()),
            type_: Some("Warning".into()),
            regarding: Some(n.regarding.clone()),
            related: n.related.clone(),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

/// A name prefix short enough for the API server's generated suffix (names are at most 253 characters).
fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(200);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end_matches(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_with_only_a_generate_name_is_named_by_its_prefix_and_related_to_its_controller() {
        let pod = json!({"metadata": {"generateName": "orders-taskmanager-1-", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other", "uid": "u0"},
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders", "uid": "u1", "controller": true}
        ]}});
        let n = Notice::about(Reason::NotInjected, "v1", "Pod", "flink", &pod, "x".into());
        assert_eq!(n.regarding.name.as_deref(), Some("orders-taskmanager-1"));
        assert_eq!(n.regarding.uid, None);
        let owner = n.related.unwrap();
        assert_eq!(owner.name.as_deref(), Some("orders"));
        assert_eq!(owner.uid.as_deref(), Some("u1"));
        assert_eq!(owner.namespace.as_deref(), Some("flink"));
    }

    #[test]
    fn an_object_without_metadata_is_still_a_notice() {
        let n = Notice::about(
            Reason::AdmissionWarnings,
            "flink.apache.org/v1beta1",
            "FlinkDeployment",
            "ns",
            &json!(42),
            "é".repeat(2000),
        );
        assert!(n.regarding.name.is_none() && n.related.is_none());
        assert!(n.note.len() <= NOTE_MAX && n.note.ends_with("..."));
    }

    #[test]
    fn names_are_cut_on_a_character_boundary_and_end_with_no_separator() {
        let long = format!("{}-x", "a".repeat(199));
        assert_eq!(truncate_name(&long), "a".repeat(199));
        assert_eq!(truncate_name("orders-"), "orders");
        assert_eq!(truncate(&"ü".repeat(10), 7), "üü...");
    }
}
