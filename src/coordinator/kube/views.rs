//! From the API server's objects to what the model keeps of them: pure functions, tested on objects as the
//! kubelet and the API server write them.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Event, Node, Pod};

use crate::coordinator::model::kube::{KubeEventView, NodeView, OomKill, PodView};

/// The pod as the model keeps it (none without a name).
pub fn pod(p: &Pod) -> Option<PodView> {
    let name = p.metadata.name.clone()?;
    let status = p.status.clone().unwrap_or_default();
    let spec = p.spec.clone().unwrap_or_default();
    let limit = |container: &str| {
        spec.containers
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| {
                c.resources
                    .as_ref()?
                    .limits
                    .as_ref()?
                    .get("memory")
                    .cloned()
            })
            .map(|q| q.0)
    };
    let mut oom_kills = Vec::new();
    for cs in status.container_statuses.iter().flatten() {
        let terminated = [
            cs.state.as_ref().and_then(|s| s.terminated.as_ref()),
            cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()),
        ];
        for t in terminated.into_iter().flatten() {
            if t.reason.as_deref() == Some("OOMKilled") {
                let kill = OomKill {
                    container: cs.name.clone(),
                    finished_at: finished(t),
                    exit_code: t.exit_code,
                    memory_limit: limit(&cs.name),
                };
                if !oom_kills.contains(&kill) {
                    oom_kills.push(kill);
                }
            }
        }
    }
    let disruption = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
    Some(PodView {
        name,
        uid: p.metadata.uid.clone().unwrap_or_default(),
        node: spec.node_name.clone(),
        ip: status.pod_ip.clone(),
        phase: status.phase.clone().unwrap_or_else(|| "Unknown".into()),
        reason: status.reason.clone(),
        message: status.message.clone(),
        deleting_grace_s: p
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|_| p.metadata.deletion_grace_period_seconds.unwrap_or(0)),
        disruption,
        oom_kills,
    })
}

fn finished(t: &ContainerStateTerminated) -> String {
    t.finished_at
        .as_ref()
        .map(|f| f.0.to_string())
        .unwrap_or_default()
}

/// The node as the model keeps it; `drain_taints` are taint keys (or prefixes ending in `/`) that announce a
/// termination.
pub fn node(n: &Node, drain_taints: &[String]) -> Option<NodeView> {
    let name = n.metadata.name.clone()?;
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let spec = n.spec.clone().unwrap_or_default();
    let matches = |key: &str| {
        drain_taints.iter().any(|t| {
            if t.ends_with('/') {
                key.starts_with(t.as_str())
            } else {
                key == t
            }
        })
    };
    let taints = spec
        .taints
        .iter()
        .flatten()
        .filter(|t| matches(&t.key))
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    Some(NodeView {
        name,
        ready: ready.map(|c| c.status.clone()),
        ready_reason: ready.and_then(|c| c.reason.clone()),
        ready_message: ready.and_then(|c| c.message.clone()),
        ready_since: ready
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string()),
        unschedulable: spec.unschedulable.unwrap_or(false),
        drain_taints: taints,
    })
}

/// A core/v1 Event about a pod: the pod's name and the event.
pub fn pod_event(e: &Event) -> Option<(String, KubeEventView)> {
    if e.involved_object.kind.as_deref() != Some("Pod") {
        return None;
    }
    let ts_ms = e
        .last_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_millisecond()))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.as_millisecond()))
        .unwrap_or(0);
    Some((
        e.involved_object.name.clone()?,
        KubeEventView {
            ts_ms,
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_evicted_oom_killed_and_being_deleted() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "orders-taskmanager-1-1", "uid": "u1",
                         "deletionTimestamp": "2026-12-07T10:00:00Z", "deletionGracePeriodSeconds": 30},
            "spec": {"nodeName": "n1", "containers": [{"name": "flink-main-container",
                     "resources": {"limits": {"memory": "2Gi"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7",
                "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                                "message": "Eviction API: evicting"}],
                "containerStatuses": [{"name": "flink-main-container", "ready": true, "restartCount": 1, "image": "flink", "imageID": "",
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-12-07T09:59:00Z"}}}]}
        }))
        .unwrap();
        let v = pod(&p).unwrap();
        assert_eq!(v.deleting_grace_s, Some(30));
        assert_eq!(v.node.as_deref(), Some("n1"));
        assert_eq!(v.disruption.as_ref().unwrap().0, "EvictionByEvictionAPI");
        assert_eq!(v.oom_kills.len(), 1);
        assert_eq!(v.oom_kills[0].memory_limit.as_deref(), Some("2Gi"));
        assert_eq!(v.oom_kills[0].exit_code, 137);
        let bare: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        let v = pod(&bare).unwrap();
        assert_eq!((v.phase.as_str(), v.deleting_grace_s), ("Unknown", None));
        assert!(pod(&Pod::default()).is_none());
    }

    #[test]
    fn a_node_not_ready_and_tainted_for_termination() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {"taints": [
                {"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"},
                {"key": "dedicated", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                                       "lastTransitionTime": "2026-12-07T10:00:00Z"}]}
        }))
        .unwrap();
        let taints: Vec<String> = crate::coordinator::config::DEFAULT_DRAIN_TAINTS
            .split(',')
            .map(str::to_string)
            .collect();
        let v = node(&n, &taints).unwrap();
        assert!(v.not_ready() && v.draining());
        assert_eq!(
            v.drain_taints,
            ["aws-node-termination-handler/spot-itn:NoSchedule"]
        );
        assert_eq!(v.ready_reason.as_deref(), Some("NodeStatusUnknown"));
        let v = node(&n, &[]).unwrap();
        assert!(!v.draining());
    }
}
