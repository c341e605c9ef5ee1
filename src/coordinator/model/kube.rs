//! Kubernetes' side of the model: the cluster's TaskManager pods and their nodes as the coordinator's watches show
//! them, the FlinkDeployment's `streamshield.io/<key>` annotations (a policy level, read live), and the incidents
//! Kubernetes alone can tell: a pod deleted or evicted, a container OOM-killed, a node NotReady or being drained.
//! Each becomes a decision with that evidence; where the policy acts, a node NotReady whose pods' agents are
//! unreachable fences those pods by deleting them with no grace period, and a drain or a deletion no plugin holds
//! checkpoints the jobs first. What the I/O side is to do waits here ([`KubeOrder`], [`KubeNotice`]) until
//! `coordinator::kube` takes it. Pure bookkeeping, tested without a cluster.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Decision, Evidence, Model, StopRequest};
use crate::coordinator::policy::{keys, Mode, Source, Trigger};
use crate::host::clock::now_ms;
use crate::protocol::Role;

/// Kubernetes events kept per pod as evidence.
const POD_EVENTS: usize = 8;
/// Decisions waiting to be written as Kubernetes Events (the oldest go first when the API server is unreachable).
const NOTICES: usize = 500;
/// How long a drain's checkpoints may take before they are given up (the pods' own grace period is usually 30 s).
pub const DRAIN_CHECKPOINT_BUDGET_MS: i64 = 60_000;
/// The annotations of StreamShield's own that are not policy keys.
const OWN_ANNOTATIONS: [&str; 3] = [
    crate::kube::inject::ENABLED_ANNOTATION,
    crate::kube::inject::INJECT_LABEL,
    crate::kube::inject::INJECTED_ANNOTATION,
];

/// A TaskManager pod as the coordinator's watch last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub phase: String,
    /// `status.reason` (the kubelet's `Evicted`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Being deleted: the grace period it was given (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting_grace_s: Option<i64>,
    /// The `DisruptionTarget` condition's reason (`EvictionByEvictionAPI`, `PreemptionByScheduler`,
    /// `DeletionByTaintManager`, `TerminationByKubelet`) and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<(String, String)>,
    /// The containers' OOM kills the pod's status shows (its current and its last termination).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oom_kills: Vec<OomKill>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomKill {
    pub container: String,
    /// When the container was killed (RFC 3339): one kill seen as the current and later as the last state is one.
    pub finished_at: String,
    pub exit_code: i32,
    /// The container's memory limit, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
}

/// A node as the coordinator's watch last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// The `Ready` condition's status (`True`, `False`, `Unknown`); none: not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_message: Option<String>,
    /// When the `Ready` condition last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<String>,
    pub unschedulable: bool,
    /// Its taints that announce a termination (configurable keys: drain, spot or maintenance notices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drain_taints: Vec<String>,
}

impl NodeView {
    pub fn not_ready(&self) -> bool {
        self.ready.as_deref().is_some_and(|r| r != "True")
    }

    pub fn draining(&self) -> bool {
        self.unschedulable || !self.drain_taints.is_empty()
    }
}

/// A Kubernetes event about one of the pods (kept as evidence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeEventView {
    pub ts_ms: i64,
    pub type_: String,
    pub reason: String,
    pub message: String,
}

/// The object decisions are written on as Kubernetes Events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regarding {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: Option<String>,
}

/// What the coordinator sees of Kubernetes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KubeView {
    pub namespace: String,
    /// The FlinkDeployment's name: Flink's `kubernetes.cluster-id`, the pods' `app` label.
    pub cluster_id: String,
    /// Delete a pod with no grace period to fence it when its agent is unreachable.
    pub fence_by_delete: bool,
    /// TaskManager pods by name.
    pub pods: BTreeMap<String, PodView>,
    /// The nodes those pods run on.
    pub nodes: BTreeMap<String, NodeView>,
    /// Recent Kubernetes events per pod.
    pub pod_events: BTreeMap<String, VecDeque<KubeEventView>>,
    /// The FlinkDeployment's policy annotations as `streamshield.<key>` keys.
    pub annotations: BTreeMap<String, String>,
    /// Where decisions go as Events: the FlinkDeployment (or, without the operator, the JobManager's Deployment).
    pub regarding: Option<Regarding>,
    /// Features that are off because a permission is missing, with the permission.
    pub missing: Vec<String>,
    /// Incidents already decided: (trigger, pod or node), until the pod is gone or the node recovered.
    #[serde(skip)]
    decided: BTreeSet<(Trigger, String)>,
    #[serde(skip)]
    orders: Vec<KubeOrder>,
    #[serde(skip)]
    notices: VecDeque<KubeNotice>,
    /// Watch errors by resource.
    pub watch_errors: BTreeMap<String, u64>,
    /// Events written, and those that failed.
    pub notices_written: u64,
    pub notices_failed: u64,
}

/// What the coordinator asks Kubernetes to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeOrder {
    /// Delete a pod now (grace period 0), only if it is still the pod with this uid.
    DeletePod {
        decision: u64,
        pod: String,
        uid: String,
    },
}

/// A Kubernetes Event to write on the FlinkDeployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeNotice {
    pub warning: bool,
    /// PascalCase, e.g. `NodeNotReady`.
    pub reason: String,
    /// PascalCase: the order, or `Record`.
    pub action: String,
    pub note: String,
}

impl KubeView {
    pub fn new(namespace: &str, cluster_id: &str, fence_by_delete: bool) -> Self {
        KubeView {
            namespace: namespace.into(),
            cluster_id: cluster_id.into(),
            fence_by_delete,
            ..KubeView::default()
        }
    }
}

/// `node-not-ready` → `NodeNotReady`.
fn pascal(s: &str) -> String {
    s.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

impl Model {
    /// Starts watching Kubernetes: the model keeps what the watches show from now on.
    pub fn kube_enable(&mut self, view: KubeView) {
        self.kube = Some(view);
    }

    /// Features turned off at start-up because the coordinator's account lacks a permission.
    pub fn kube_missing(&mut self, missing: Vec<String>) {
        if let Some(k) = self.kube.as_mut() {
            k.missing = missing.clone();
        }
        if !missing.is_empty() {
            self.record(
                "coordinator",
                None,
                "kubernetes-permissions",
                now_ms(),
                serde_json::json!({ "missing": missing }),
            );
        }
    }

    /// A watch failed (it is retried with back-off).
    pub fn kube_watch_error(&mut self, resource: &str, error: &str) {
        if let Some(k) = self.kube.as_mut() {
            *k.watch_errors.entry(resource.to_string()).or_default() += 1;
        }
        tracing::warn!(resource, error, "Kubernetes watch failed; retrying");
    }

    /// The TaskManager (resource id) a pod runs: the one its sidecar agent reports (the agent's id is the pod's
    /// name), else the pod's name (Flink's native integration names its TaskManagers after their pods), else the
    /// TaskManager Flink lists at the pod's IP (the operator's standalone mode).
    pub fn rid_of_pod(&self, pod: &PodView) -> String {
        if let Some(p) = self.processes.values().find(|p| {
            p.agent == pod.name && p.status.as_ref().is_some_and(|s| s.watches == Role::Tm)
        }) {
            return p.resource_id.clone();
        }
        let known = |id: &str| {
            self.processes.contains_key(id) || self.flink.taskmanagers.iter().any(|t| t.id == id)
        };
        if known(&pod.name) {
            return pod.name.clone();
        }
        if let Some(ip) = &pod.ip {
            let prefix = format!("{ip}:");
            if let Some(t) = self
                .flink
                .taskmanagers
                .iter()
                .find(|t| t.id.starts_with(&prefix))
            {
                return t.id.clone();
            }
        }
        pod.name.clone()
    }

    /// Whether the agent watching TaskManager `rid` is connected now.
    fn agent_reachable(&self, rid: &str) -> bool {
        self.processes.get(rid).is_some_and(|p| p.connected)
    }

    /// The running jobs on TaskManager `rid` whose policy wants a checkpoint before a stop.
    fn jobs_to_checkpoint(&self, rid: &str) -> Vec<String> {
        self.flink
            .jobs
            .iter()
            .filter(|j| j.state == "RUNNING" && j.taskmanagers.iter().any(|t| t == rid))
            .filter(|j| {
                j.policy
                    .as_ref()
                    .is_some_and(|p| p.config.failover && p.config.planned_stop)
            })
            .map(|j| j.id.clone())
            .collect()
    }

    /// The FlinkDeployment as the watch shows it: where Events go, and its policy annotations (a change applies at
    /// once: every job's policy is resolved again).
    pub fn kube_deployment(
        &mut self,
        regarding: Option<Regarding>,
        annotations: &BTreeMap<String, String>,
    ) {
        let prefix = crate::kube::inject::ANNOTATION_PREFIX;
        let keys: BTreeMap<String, String> = annotations
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && !OWN_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (format!("{}{}", keys::PREFIX, &k[prefix.len()..]), v.clone()))
            .collect();
        let Some(k) = self.kube.as_mut() else { return };
        if regarding.is_some() || k.regarding.is_none() {
            k.regarding = regarding;
        }
        if k.annotations == keys {
            return;
        }
        k.annotations = keys.clone();
        let resolved = keys::resolve(&[(Source::Annotation, &keys)], &self.base);
        self.record(
            "kubernetes",
            None,
            "annotation-policy",
            now_ms(),
            serde_json::json!({"annotations": keys, "problems": resolved.problems}),
        );
        for p in &resolved.problems {
            let name = p.key.strip_prefix(keys::PREFIX).unwrap_or(&p.key);
            tracing::warn!(annotation = %format!("{prefix}{name}"), value = %p.value, problem = %p.problem, "Ignoring a StreamShield annotation of the FlinkDeployment");
            self.kube_notice(KubeNotice {
                warning: true,
                reason: "InvalidAnnotation".into(),
                action: "Ignore".into(),
                note: format!("annotation {prefix}{name}: {:?}: {}", p.value, p.problem),
            });
        }
        self.policies_changed();
    }

    /// The annotations as a policy level over the cluster's configuration (none without Kubernetes).
    pub(super) fn annotation_settings(&self) -> BTreeMap<String, String> {
        self.kube
            .as_ref()
            .map(|k| k.annotations.clone())
            .unwrap_or_default()
    }

    fn kube_notice(&mut self, n: KubeNotice) {
        if let Some(k) = self.kube.as_mut() {
            if k.notices.len() >= NOTICES {
                k.notices.pop_front();
            }
            k.notices.push_back(n);
        }
    }

    /// A decision, as the Kubernetes Event written on the FlinkDeployment.
    pub(super) fn kube_decision_notice(&mut self, d: &Decision) {
        if self.kube.is_none() {
            return;
        }
        let calm = matches!(d.trigger, Trigger::TmStopping | Trigger::NodeDraining)
            || d.mode == Mode::ObserveOnly && d.command.is_none();
        let mode = match d.mode {
            Mode::Acted => "acted",
            Mode::ObserveOnly => "observe-only",
        };
        let note = format!(
            "{}: {} [{mode}, decision {}{}]",
            d.resource_id,
            d.action,
            d.id,
            d.fencing_token
                .map(|t| format!(", epoch {t}"))
                .unwrap_or_default()
        );
        self.kube_notice(KubeNotice {
            warning: !calm,
            reason: pascal(d.trigger.as_str()),
            action: d
                .command
                .as_deref()
                .map_or_else(|| "Record".to_string(), pascal),
            note: note.chars().take(1000).collect(),
        });
    }

    /// Orders for Kubernetes (taken: the caller carries them out).
    pub fn take_kube_orders(&mut self) -> Vec<KubeOrder> {
        self.kube
            .as_mut()
            .map(|k| std::mem::take(&mut k.orders))
            .unwrap_or_default()
    }

    /// Events to write (taken).
    pub fn take_kube_notices(&mut self) -> Vec<KubeNotice> {
        self.kube
            .as_mut()
            .map(|k| k.notices.drain(..).collect())
            .unwrap_or_default()
    }

    /// Counts written and failed Events.
    pub fn kube_notices_done(&mut self, written: u64, failed: u64) {
        if let Some(k) = self.kube.as_mut() {
            k.notices_written += written;
            k.notices_failed += failed;
        }
    }

    /// What became of an order: kept in its decision.
    pub fn kube_order_done(&mut self, decision: u64, outcome: serde_json::Value) {
        if let Some(d) = self.decisions.iter_mut().find(|d| d.id == decision) {
            d.outcome = Some(outcome.clone());
        }
        self.record(
            "kubernetes",
            None,
            "order-done",
            now_ms(),
            serde_json::json!({"decision": decision, "outcome": outcome}),
        );
    }

    /// A Kubernetes event about pod `pod` (kept as evidence of later decisions about it).
    pub fn kube_pod_event(&mut self, pod: &str, ev: KubeEventView) {
        let Some(k) = self.kube.as_mut() else { return };
        if !k.pods.contains_key(pod) {
            return;
        }
        let q = k.pod_events.entry(pod.to_string()).or_default();
        if q.len() >= POD_EVENTS {
            q.pop_front();
        }
        q.push_back(ev);
    }

    fn pod_evidence(&self, pod: &PodView) -> Vec<Evidence> {
        let now = now_ms();
        let mut ev = vec![Evidence {
            ts_ms: now,
            signal: "kubernetes pod".into(),
            detail: serde_json::to_value(pod).unwrap_or_default(),
        }];
        if let Some(events) = self.kube.as_ref().and_then(|k| k.pod_events.get(&pod.name)) {
            ev.push(Evidence {
                ts_ms: now,
                signal: "kubernetes events of the pod".into(),
                detail: serde_json::to_value(events).unwrap_or_default(),
            });
        }
        if let Some(node) = pod
            .node
            .as_ref()
            .and_then(|n| self.kube.as_ref()?.nodes.get(n))
        {
            ev.push(Evidence {
                ts_ms: now,
                signal: "kubernetes node".into(),
                detail: serde_json::to_value(node).unwrap_or_default(),
            });
        }
        let rid = self.rid_of_pod(pod);
        ev.push(Evidence {
            ts_ms: now,
            signal: "agent".into(),
            detail: serde_json::json!({
                "resource_id": rid,
                "connected": self.agent_reachable(&rid),
                "last_status": self.processes.get(&rid).and_then(|p| p.status.as_ref()),
            }),
        });
        ev
    }

    /// Once per (trigger, subject) until [`Self::kube_forget`]: whether this incident is new.
    fn kube_first(&mut self, trigger: Trigger, subject: &str) -> bool {
        self.kube
            .as_mut()
            .is_some_and(|k| k.decided.insert((trigger, subject.to_string())))
    }

    fn kube_forget(&mut self, trigger: Trigger, subject: &str) {
        if let Some(k) = self.kube.as_mut() {
            k.decided.remove(&(trigger, subject.to_string()));
        }
    }

    /// Logs a decision about TaskManager `rid`, with the policy that applies to it.
    fn kube_decide(
        &mut self,
        trigger: Trigger,
        rid: &str,
        evidence: Vec<Evidence>,
        action: String,
        mode: Mode,
        command: Option<&str>,
    ) -> u64 {
        self.next_decision += 1;
        let id = self.next_decision;
        let policy = self.context().tm(rid).policy;
        tracing::warn!(trigger = %trigger, resource_id = rid, %action, mode = mode.as_str(), epoch = self.epoch, "Kubernetes decision");
        self.log_decision(Decision {
            id,
            ts_ms: now_ms(),
            trigger,
            resource_id: rid.to_string(),
            evidence,
            action,
            mode,
            policy: Some(policy),
            fencing_token: (mode == Mode::Acted).then_some(self.epoch),
            command: command.map(str::to_string),
            outcome: None,
            recovery_ms: None,
            incident_ms: Some(now_ms()),
        });
        id
    }

    /// A TaskManager pod was added or changed.
    pub fn kube_pod(&mut self, pod: PodView) {
        let Some(k) = self.kube.as_mut() else { return };
        let old = k.pods.insert(pod.name.clone(), pod.clone());
        if old.as_ref() == Some(&pod) {
            return;
        }
        if pod.deleting_grace_s.is_some() && self.kube_first(Trigger::PodDeleted, &pod.name) {
            self.pod_deleting(&pod);
        }
        if pod.phase == "Failed"
            && pod.reason.as_deref() == Some("Evicted")
            && self.kube_first(Trigger::PodEvicted, &pod.name)
        {
            let rid = self.rid_of_pod(&pod);
            let action = format!(
                "record: the kubelet evicted {} ({}); Flink requests a new TaskManager pod and restarts its tasks",
                pod.name,
                pod.message.as_deref().unwrap_or("no message")
            );
            let evidence = self.pod_evidence(&pod);
            self.kube_decide(
                Trigger::PodEvicted,
                &rid,
                evidence,
                action,
                Mode::ObserveOnly,
                None,
            );
        }
        let seen = old.map(|o| o.oom_kills).unwrap_or_default();
        for kill in pod.oom_kills.iter().filter(|k| !seen.contains(k)) {
            let rid = self.rid_of_pod(&pod);
            let action = format!(
                "record: {}'s container {} was OOM-killed (exit {}, memory limit {}): Flink restarts its tasks; raise taskmanager.memory.process.size together with the pod's memory limit, or find what outgrew it",
                pod.name,
                kill.container,
                kill.exit_code,
                kill.memory_limit.as_deref().unwrap_or("none")
            );
            let evidence = self.pod_evidence(&pod);
            self.kube_decide(
                Trigger::PodOomKilled,
                &rid,
                evidence,
                action,
                Mode::ObserveOnly,
                None,
            );
        }
    }

    /// A TaskManager pod is being deleted: the plugin's planned stop checkpoints first when its agent is connected;
    /// when it is not (nothing will hold the SIGTERM for the coordinator), the coordinator checkpoints the jobs on it
    /// itself, within the pod's grace period.
    fn pod_deleting(&mut self, pod: &PodView) {
        let rid = self.rid_of_pod(pod);
        let grace = pod.deleting_grace_s.unwrap_or(0);
        let why = pod
            .disruption
            .as_ref()
            .map(|(r, m)| format!("{r}: {m}"))
            .unwrap_or_else(|| "deleted through the API".into());
        let evidence = self.pod_evidence(pod);
        if self.agent_reachable(&rid) || self.stopping.contains(&rid) {
            let action = format!(
                "record: {} is being deleted (grace {grace} s; {why}); its agent is connected, so the plugin's held SIGTERM gets the planned stop's checkpoint",
                pod.name
            );
            self.kube_decide(
                Trigger::PodDeleted,
                &rid,
                evidence,
                action,
                Mode::ObserveOnly,
                None,
            );
            return;
        }
        let jobs = self.jobs_to_checkpoint(&rid);
        let deadline = now_ms() + grace * 1000 - super::decide::STOP_RELEASE_MARGIN_MS;
        if jobs.is_empty() || grace <= 0 {
            let action = format!(
                "record: {} is being deleted (grace {grace} s; {why}) and its agent is unreachable; no checkpoint first ({})",
                pod.name,
                if grace <= 0 {
                    "no grace period"
                } else {
                    "no running job on it has failover and planned-stop on"
                }
            );
            self.kube_decide(
                Trigger::PodDeleted,
                &rid,
                evidence,
                action,
                Mode::ObserveOnly,
                None,
            );
            return;
        }
        let action = format!(
            "checkpoint: {} is being deleted (grace {grace} s; {why}) and its agent is unreachable: checkpoint {} job(s) before it stops",
            pod.name,
            jobs.len()
        );
        let id = self.kube_decide(
            Trigger::PodDeleted,
            &rid,
            evidence,
            action,
            Mode::Acted,
            Some("checkpoint"),
        );
        self.stop_requests.push(StopRequest {
            decision: id,
            resource_id: rid,
            jobs,
            deadline_ms: deadline,
            release: false,
        });
    }

    /// A TaskManager pod is gone.
    pub fn kube_pod_gone(&mut self, name: &str) {
        let Some(k) = self.kube.as_mut() else { return };
        let Some(pod) = k.pods.remove(name) else {
            return;
        };
        if self.kube_first(Trigger::PodDeleted, name) {
            let rid = self.rid_of_pod(&pod);
            let evidence = self.pod_evidence(&pod);
            let action = format!(
                "record: {name} is gone; Flink requests a new TaskManager pod and restarts its tasks"
            );
            self.kube_decide(
                Trigger::PodDeleted,
                &rid,
                evidence,
                action,
                Mode::ObserveOnly,
                None,
            );
        }
        if let Some(k) = self.kube.as_mut() {
            k.pod_events.remove(name);
            k.decided.retain(|(_, s)| s != name);
        }
    }

    /// The TaskManager pods on node `node` that are not being deleted.
    fn pods_on(&self, node: &str) -> Vec<PodView> {
        self.kube
            .as_ref()
            .map(|k| {
                k.pods
                    .values()
                    .filter(|p| p.node.as_deref() == Some(node) && p.deleting_grace_s.is_none())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A node was added or changed.
    pub fn kube_node(&mut self, node: NodeView) {
        let Some(k) = self.kube.as_mut() else { return };
        let old = k.nodes.insert(node.name.clone(), node.clone());
        if old.as_ref() == Some(&node) {
            return;
        }
        if node.not_ready() {
            if self.kube_first(Trigger::NodeNotReady, &node.name) {
                self.node_not_ready(&node);
            }
        } else {
            self.kube_forget(Trigger::NodeNotReady, &node.name);
        }
        if node.draining() {
            if self.kube_first(Trigger::NodeDraining, &node.name) {
                self.node_draining(&node);
            }
        } else {
            self.kube_forget(Trigger::NodeDraining, &node.name);
        }
    }

    /// A node turned NotReady: each TaskManager pod on it whose agent is unreachable too (two independent signals)
    /// is fenced by deleting it with no grace period, so that Flink's resource manager sees the pod gone and fails
    /// its tasks over at once instead of waiting out its heartbeat timeout, and the pod's name is free for a new one.
    /// A pod whose agent still answers is left to Flink's heartbeats.
    fn node_not_ready(&mut self, node: &NodeView) {
        let fence = self.kube.as_ref().is_some_and(|k| k.fence_by_delete);
        for pod in self.pods_on(&node.name) {
            let rid = self.rid_of_pod(&pod);
            let evidence = self.pod_evidence(&pod);
            let state = format!(
                "node {} is {} ({})",
                node.name,
                if node.ready.as_deref() == Some("Unknown") {
                    "not reporting (Ready Unknown)"
                } else {
                    "NotReady"
                },
                node.ready_reason.as_deref().unwrap_or("no reason")
            );
            let failover = self.context().tm(&rid).policy.failover;
            let (action, mode, command) = if self.agent_reachable(&rid) {
                (
                    format!("record: {state}, but {}'s agent still answers: no fence; Flink's heartbeats decide", pod.name),
                    Mode::ObserveOnly,
                    None,
                )
            } else if !fence {
                (
                    format!("record: {state} and {}'s agent is unreachable; fencing by pod deletion is off (kubernetes-fence-delete)", pod.name),
                    Mode::ObserveOnly,
                    None,
                )
            } else if !failover {
                (
                    format!("would delete-pod (observe-only): {state} and {}'s agent is unreachable: delete it with no grace period", pod.name),
                    Mode::ObserveOnly,
                    Some("delete-pod"),
                )
            } else {
                (
                    format!("delete-pod: {state} and {}'s agent is unreachable: delete it with no grace period so Flink fails its tasks over now", pod.name),
                    Mode::Acted,
                    Some("delete-pod"),
                )
            };
            let id = self.kube_decide(Trigger::NodeNotReady, &rid, evidence, action, mode, command);
            if mode == Mode::Acted {
                self.kube_order(KubeOrder::DeletePod {
                    decision: id,
                    pod: pod.name.clone(),
                    uid: pod.uid.clone(),
                });
            }
        }
    }

    pub(super) fn kube_order(&mut self, o: KubeOrder) {
        if let Some(k) = self.kube.as_mut() {
            k.orders.push(o);
        }
    }

    /// A node is cordoned or tainted for termination: its pods will be evicted soon, so the jobs on them are
    /// checkpointed now (their restart then replays from just before the drain).
    fn node_draining(&mut self, node: &NodeView) {
        let what = if node.drain_taints.is_empty() {
            "cordoned (unschedulable)".to_string()
        } else {
            format!("tainted {}", node.drain_taints.join(", "))
        };
        for pod in self.pods_on(&node.name) {
            let rid = self.rid_of_pod(&pod);
            let evidence = self.pod_evidence(&pod);
            let jobs = self.jobs_to_checkpoint(&rid);
            let (action, mode, command) = if jobs.is_empty() {
                (
                    format!("record: node {} is {what}; {} will be evicted; no running job on it has failover and planned-stop on", node.name, pod.name),
                    Mode::ObserveOnly,
                    None,
                )
            } else {
                (
                    format!("checkpoint: node {} is {what}; checkpoint {} job(s) on {} before its eviction", node.name, jobs.len(), pod.name),
                    Mode::Acted,
                    Some("checkpoint"),
                )
            };
            let id = self.kube_decide(Trigger::NodeDraining, &rid, evidence, action, mode, command);
            if mode == Mode::Acted {
                self.stop_requests.push(StopRequest {
                    decision: id,
                    resource_id: rid,
                    jobs,
                    deadline_ms: now_ms() + DRAIN_CHECKPOINT_BUDGET_MS,
                    release: false,
                });
            }
        }
    }

    /// Whether a fence of TaskManager `rid` should also delete its pod: its agent is unreachable (the agent cannot
    /// carry the order out) and fencing by deletion is on. Returns the order.
    pub(super) fn fence_pod(&self, rid: &str, decision: u64) -> Option<KubeOrder> {
        let k = self.kube.as_ref().filter(|k| k.fence_by_delete)?;
        if self.agent_reachable(rid) {
            return None;
        }
        let pod = k
            .pods
            .values()
            .find(|p| p.deleting_grace_s.is_none() && self.rid_of_pod(p) == rid)?;
        Some(KubeOrder::DeletePod {
            decision,
            pod: pod.name.clone(),
            uid: pod.uid.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
