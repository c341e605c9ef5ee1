//! The coordinator on Kubernetes (`kubernetes: true`): watches, through kube-rs, the Flink cluster's TaskManager
//! pods (labels `app=<cluster-id>`, `component=taskmanager`), the nodes, the pods' events and the FlinkDeployment,
//! and feeds them to the model ([`crate::coordinator::model::kube`]), which decides. This side carries out what the
//! model asks: deletes a pod with no grace period (a fence when its agent is unreachable; only the pod with the
//! uid decided on) and writes every decision as a Kubernetes Event on the FlinkDeployment. At start-up it asks the
//! API server which of the permissions it needs it has (SelfSubjectAccessReview), names each missing one with the
//! feature that is then off, and runs the rest.

pub mod views;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, ObjectReference, Pod};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::config::KubeSettings;
use super::model::kube::{KubeOrder, Regarding};
use super::Shared;
use crate::daemon::Tasks;

/// How often orders and Events waiting in the model are taken.
const TICK: Duration = Duration::from_millis(100);
/// The operator's custom resource.
pub const FLINK_GROUP: &str = "flink.apache.org";
pub const FLINK_VERSION: &str = "v1beta1";
pub const FLINK_KIND: &str = "FlinkDeployment";
/// The name Events are reported under.
pub const CONTROLLER: &str = "streamshield-coordinator";

pub use crate::kube::api::{allowed, permission_text, Error};

/// A client for the API server of $KUBECONFIG or the pod's service account; checked with a version request.
pub async fn client() -> Result<Client, Error> {
    crate::kube::api::client("set kubernetes: false").await
}

/// One permission the coordinator uses, and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// Watch the TaskManager pods: pod deleted, evicted, OOM-killed; the pods of a node.
    Pods,
    /// Delete a pod: fencing when its agent is unreachable.
    FenceDelete,
    /// Watch nodes: NotReady, drains and termination notices.
    Nodes,
    /// Watch the pods' events (evidence).
    PodEvents,
    /// Write decisions as Events.
    WriteEvents,
    /// Watch the FlinkDeployment: its annotations as policy.
    Annotations,
}

impl Feature {
    pub const ALL: [Feature; 6] = [
        Feature::Pods,
        Feature::FenceDelete,
        Feature::Nodes,
        Feature::PodEvents,
        Feature::WriteEvents,
        Feature::Annotations,
    ];

    /// What is off without it.
    pub fn what(self) -> &'static str {
        match self {
            Feature::Pods => {
                "pod incidents (pod-deleted, pod-evicted, pod-oom-killed) and the pods of a node"
            }
            Feature::FenceDelete => "fencing by deleting a pod whose agent is unreachable",
            Feature::Nodes => "node incidents (node-not-ready, node-draining)",
            Feature::PodEvents => "the pods' Kubernetes events as evidence",
            Feature::WriteEvents => "decisions written as Kubernetes Events",
            Feature::Annotations => {
                "streamshield.io/<key> annotations of the FlinkDeployment as policy"
            }
        }
    }

    /// (group, resource, verbs, namespaced).
    fn needs(self) -> (&'static str, &'static str, &'static [&'static str], bool) {
        match self {
            Feature::Pods => ("", "pods", &["list", "watch"], true),
            Feature::FenceDelete => ("", "pods", &["delete"], true),
            Feature::Nodes => ("", "nodes", &["list", "watch"], false),
            Feature::PodEvents => ("", "events", &["list", "watch"], true),
            Feature::WriteEvents => ("events.k8s.io", "events", &["create", "patch"], true),
            Feature::Annotations => (FLINK_GROUP, "flinkdeployments", &["list", "watch"], true),
        }
    }
}

/// The permissions this coordinator lacks, each as `verb group/resource [in namespace]: what is off`.
pub async fn missing_permissions(
    client: &Client,
    namespace: &str,
) -> (BTreeSet<Feature>, Vec<String>) {
    let mut off = BTreeSet::new();
    let mut said = Vec::new();
    for f in Feature::ALL {
        let (group, resource, verbs, namespaced) = f.needs();
        let ns = namespaced.then_some(namespace);
        let missing = crate::kube::api::missing(client, group, resource, verbs, ns).await;
        if !missing.is_empty() {
            off.insert(f);
        }
        said.extend(
            missing
                .into_iter()
                .map(|m| format!("{m}: {} is off", f.what())),
        );
    }
    (off, said)
}

fn flink_deployments(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(FLINK_GROUP, FLINK_VERSION, FLINK_KIND);
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

/// Runs the watches, the order executor and the Event writer until `stop`.
pub async fn run(
    shared: Arc<Shared>,
    client: Client,
    settings: KubeSettings,
    stop: CancellationToken,
) -> Result<(), String> {
    let (off, missing) = missing_permissions(&client, &settings.namespace).await;
    for m in &missing {
        tracing::error!(permission = %m, "Kubernetes permission missing");
    }
    shared.model().kube_missing(missing);
    let ns = settings.namespace.clone();
    let mut tasks = Tasks::new("kubernetes", &stop);
    let token = tasks.token();
    if !off.contains(&Feature::Pods) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let cfg = watcher::Config::default().labels(&format!(
            "app={},component=taskmanager",
            settings.cluster_id
        ));
        tasks.spawn(
            "pod watch",
            watch_pods(shared.clone(), api, cfg, token.clone()),
        );
    }
    if !off.contains(&Feature::Nodes) {
        let api: Api<Node> = Api::all(client.clone());
        let taints = settings.drain_taints.clone();
        tasks.spawn(
            "node watch",
            watch(
                shared.clone(),
                api,
                watcher::Config::default(),
                "nodes",
                token.clone(),
                move |m, n: Node| {
                    if let Some(v) = views::node(&n, &taints) {
                        m.kube_node(v)
                    }
                },
            ),
        );
    }
    if !off.contains(&Feature::PodEvents) {
        let api: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
        tasks.spawn(
            "event watch",
            watch(
                shared.clone(),
                api,
                watcher::Config::default().fields("involvedObject.kind=Pod"),
                "events",
                token.clone(),
                |m, e: CoreEvent| {
                    if let Some((pod, ev)) = views::pod_event(&e) {
                        m.kube_pod_event(&pod, ev)
                    }
                },
            ),
        );
    }
    if !off.contains(&Feature::Annotations) {
        let api = flink_deployments(&client, &ns);
        tasks.spawn(
            "flinkdeployment watch",
            watch(
                shared.clone(),
                api,
                watcher::Config::default()
                    .fields(&format!("metadata.name={}", settings.cluster_id)),
                "flinkdeployments",
                token.clone(),
                |m, d: DynamicObject| {
                    let regarding = Regarding {
                        api_version: format!("{FLINK_GROUP}/{FLINK_VERSION}"),
                        kind: FLINK_KIND.into(),
                        name: d.metadata.name.clone().unwrap_or_default(),
                        uid: d.metadata.uid.clone(),
                    };
                    m.kube_deployment(
                        Some(regarding),
                        &d.metadata.annotations.clone().unwrap_or_default(),
                    )
                },
            ),
        );
    }
    let can_delete = !off.contains(&Feature::FenceDelete);
    let can_write = !off.contains(&Feature::WriteEvents);
    tasks.spawn(
        "kubernetes orders",
        carry_out(
            shared.clone(),
            client,
            settings,
            can_delete,
            can_write,
            token,
        ),
    );
    tasks.run().await.map(|_| ()).map_err(|e| e.to_string())
}

/// Watches `api` and hands every object applied to `on` (the watch is retried with back-off after an error).
async fn watch<K, F>(
    shared: Arc<Shared>,
    api: Api<K>,
    cfg: watcher::Config,
    resource: &'static str,
    stop: CancellationToken,
    on: F,
) -> Result<(), String>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(&mut super::model::Model, K) + Send + 'static,
{
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = stream.next() => ev,
        };
        match ev {
            None => return Err(format!("the {resource} watch ended")),
            Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                on(&mut shared.model(), o)
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => shared.model().kube_watch_error(resource, &e.to_string()),
        }
    }
}

/// Watches the TaskManager pods: added and changed ones, and those gone (deleted, or missing from a re-list).
async fn watch_pods(
    shared: Arc<Shared>,
    api: Api<Pod>,
    cfg: watcher::Config,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let mut listing: Option<BTreeSet<String>> = None;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = stream.next() => ev,
        };
        match ev {
            None => return Err("the pod watch ended".into()),
            Some(Ok(watcher::Event::Init)) => listing = Some(BTreeSet::new()),
            Some(Ok(watcher::Event::InitApply(p) | watcher::Event::Apply(p))) => {
                if let Some(v) = views::pod(&p) {
                    if let Some(l) = listing.as_mut() {
                        l.insert(v.name.clone());
                    }
                    shared.model().kube_pod(v);
                }
            }
            Some(Ok(watcher::Event::InitDone)) => {
                let seen = listing.take().unwrap_or_default();
                let mut m = shared.model();
                let gone: Vec<String> = m
                    .kube
                    .as_ref()
                    .map(|k| {
                        k.pods
                            .keys()
                            .filter(|n| !seen.contains(*n))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for name in gone {
                    m.kube_pod_gone(&name);
                }
            }
            Some(Ok(watcher::Event::Delete(p))) => {
                if let Some(name) = p.metadata.name.as_deref() {
                    shared.model().kube_pod_gone(name);
                }
            }
            Some(Err(e)) => shared.model().kube_watch_error("pods", &e.to_string()),
        }
    }
}

/// Carries out the model's orders (pod deletions) and writes its Events.
async fn carry_out(
    shared: Arc<Shared>,
    client: Client,
    settings: KubeSettings,
    can_delete: bool,
    can_write: bool,
    stop: CancellationToken,
) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &settings.namespace);
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: CONTROLLER.into(),
            instance,
        },
    );
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let orders = shared.model().take_kube_orders();
        for order in orders {
            let KubeOrder::DeletePod { decision, pod, uid } = order;
            let started = Instant::now();
            let outcome = if !can_delete {
                serde_json::json!({"outcome": "not-done", "error": "the coordinator may not delete pods (RBAC); see its start-up log"})
            } else {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match pods.delete(&pod, &dp).await {
                    Ok(_) => serde_json::json!({"outcome": "deleted", "pod": pod, "uid": uid}),
                    Err(e) => {
                        serde_json::json!({"outcome": "failed", "pod": pod, "error": e.to_string()})
                    }
                }
            };
            let mut outcome = outcome;
            outcome["took_ms"] = serde_json::json!(started.elapsed().as_millis() as u64);
            tracing::warn!(decision, %outcome, "Pod deletion (fence)");
            shared.model().kube_order_done(decision, outcome);
        }
        let (notices, regarding) = {
            let mut m = shared.model();
            let notices = m.take_kube_notices();
            let regarding = m.kube.as_ref().and_then(|k| k.regarding.clone());
            (notices, regarding)
        };
        if notices.is_empty() || !can_write {
            continue;
        }
        let regarding = regarding.unwrap_or_else(|| Regarding {
            api_version: format!("{FLINK_GROUP}/{FLINK_VERSION}"),
            kind: FLINK_KIND.into(),
            name: settings.cluster_id.clone(),
            uid: None,
        });
        let reference = ObjectReference {
            api_version: Some(regarding.api_version),
            kind: Some(regarding.kind),
            name: Some(regarding.name),
            namespace: Some(settings.namespace.clone()),
            uid: regarding.uid,
            ..ObjectReference::default()
        };
        let (mut written, mut failed) = (0, 0);
        for n in notices {
            let ev = Event {
                type_: if n.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: n.reason,
                note: Some(n.note),
                action: n.action,
                secondary: None,
            };
            match recorder.publish(&ev, &reference).await {
                Ok(()) => written += 1,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, reason = %ev.reason, "Cannot write a Kubernetes Event");
                }
            }
        }
        shared.model().kube_notices_done(written, failed);
    }
}
