use super::super::tests::{acting, job, status, tm};
use super::*;
use crate::coordinator::policy::PolicyConfig;
use crate::protocol::message::AgentStatus;
use crate::protocol::Liveness;

/// A model watching namespace `flink`, cluster `orders`, whose TaskManager `pod` runs job `j1` and has a sidecar
/// agent (named after the pod, as the webhook names it).
fn model(policy: PolicyConfig, pod_name: &str) -> Model {
    let mut m = Model::new("http://x", policy, 3);
    m.kube_enable(KubeView::new("flink", "orders", true));
    m.agent_connected(pod_name, "peer");
    m.agent_status(pod_name, status(pod_name, Liveness::Alive, Role::Tm));
    m.flink_polled(Ok((
        vec![job("j1", &[pod_name], &[])],
        vec![tm(pod_name, 2, 0)],
        vec![],
    )));
    m
}

fn pod(name: &str, node: &str) -> PodView {
    PodView {
        name: name.into(),
        uid: format!("uid-{name}"),
        node: Some(node.into()),
        phase: "Running".into(),
        ..PodView::default()
    }
}

fn node(name: &str, ready: &str) -> NodeView {
    NodeView {
        name: name.into(),
        ready: Some(ready.into()),
        ..NodeView::default()
    }
}

fn last(m: &Model) -> &Decision {
    m.decisions.back().expect("a decision")
}

#[test]
fn a_node_not_ready_fences_by_deletion_only_when_the_agent_is_unreachable_too() {
    let mut m = model(acting(), "tm-a");
    m.kube_pod(pod("tm-a", "n1"));
    m.kube_node(node("n1", "True"));
    assert!(m.decisions.is_empty());
    // The node is NotReady, but the agent still answers: a record, no order.
    m.kube_node(node("n1", "Unknown"));
    let d = last(&m);
    assert_eq!(
        (d.trigger, d.mode),
        (Trigger::NodeNotReady, Mode::ObserveOnly)
    );
    assert!(d.action.contains("still answers"), "{}", d.action);
    assert!(m.take_kube_orders().is_empty());
    // Ready again, then NotReady with the agent gone: the pod is deleted, once.
    m.kube_node(node("n1", "True"));
    let conn = m.agents["tm-a"].connection;
    m.agent_disconnected("tm-a", conn, "reset");
    m.kube_node(node("n1", "False"));
    let d = last(&m);
    assert_eq!((d.trigger, d.mode), (Trigger::NodeNotReady, Mode::Acted));
    assert_eq!(d.fencing_token, Some(3));
    assert_eq!(d.command.as_deref(), Some("delete-pod"));
    assert_eq!(d.resource_id, "tm-a");
    assert!(d.evidence.iter().any(|e| e.signal == "kubernetes node"));
    let id = d.id;
    assert_eq!(
        m.take_kube_orders(),
        vec![KubeOrder::DeletePod {
            decision: id,
            pod: "tm-a".into(),
            uid: "uid-tm-a".into()
        }]
    );
    let n = m.decisions.len();
    m.kube_node(NodeView {
        ready_reason: Some("still".into()),
        ..node("n1", "False")
    });
    assert_eq!(m.decisions.len(), n, "one decision per NotReady spell");
    // Every decision becomes an Event: a warning for the fence, with its epoch.
    let notices = m.take_kube_notices();
    let fence = notices.iter().find(|n| n.action == "DeletePod").unwrap();
    assert!(fence.warning && fence.reason == "NodeNotReady");
    assert!(fence.note.contains("epoch 3"), "{}", fence.note);
    m.kube_order_done(id, serde_json::json!({"outcome": "deleted"}));
    assert_eq!(
        m.decisions
            .iter()
            .find(|d| d.id == id)
            .unwrap()
            .outcome
            .as_ref()
            .unwrap()["outcome"],
        "deleted"
    );
}

#[test]
fn observe_only_says_what_it_would_delete_and_orders_nothing() {
    let mut m = model(PolicyConfig::default(), "tm-a");
    m.kube_pod(pod("tm-a", "n1"));
    let conn = m.agents["tm-a"].connection;
    m.agent_disconnected("tm-a", conn, "reset");
    m.kube_node(node("n1", "False"));
    let d = last(&m);
    assert_eq!(
        (d.trigger, d.mode),
        (Trigger::NodeNotReady, Mode::ObserveOnly)
    );
    assert!(d.action.starts_with("would delete-pod"), "{}", d.action);
    assert!(m.take_kube_orders().is_empty());
}

#[test]
fn a_fence_of_an_unreachable_agent_deletes_the_pod_too() {
    let mut m = model(acting(), "tm-a");
    m.kube_pod(pod("tm-a", "n1"));
    // A hang reported, then the agent lost: the fence waits in the outbox for an agent that may not come back.
    m.agent_status(
        "tm-a",
        AgentStatus {
            since_ms: now_ms(),
            ..status("tm-a", Liveness::Hung, Role::Tm)
        },
    );
    assert!(m.take_kube_orders().is_empty());
    let conn = m.agents["tm-a"].connection;
    m.agent_disconnected("tm-a", conn, "reset");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    m.tick();
    let fence = m
        .decisions
        .iter()
        .find(|d| d.command.as_deref() == Some("fence"))
        .expect("a fence");
    let id = fence.id;
    assert!(m.take_kube_orders().contains(&KubeOrder::DeletePod {
        decision: id,
        pod: "tm-a".into(),
        uid: "uid-tm-a".into()
    }));
}

#[test]
fn a_deleted_pod_evicted_oom_killed_and_gone() {
    let mut m = model(acting(), "tm-a");
    m.kube_pod(pod("tm-a", "n1"));
    m.kube_pod_event(
        "tm-a",
        KubeEventView {
            ts_ms: 1,
            type_: "Normal".into(),
            reason: "Killing".into(),
            message: "Stopping container".into(),
        },
    );
    m.kube_pod(PodView {
        deleting_grace_s: Some(30),
        disruption: Some((
            "EvictionByEvictionAPI".into(),
            "Eviction API: evicting".into(),
        )),
        ..pod("tm-a", "n1")
    });
    let d = last(&m);
    assert_eq!(
        (d.trigger, d.mode),
        (Trigger::PodDeleted, Mode::ObserveOnly)
    );
    assert!(
        d.action.contains("EvictionByEvictionAPI") && d.action.contains("planned stop"),
        "{}",
        d.action
    );
    assert!(d
        .evidence
        .iter()
        .any(|e| e.signal == "kubernetes events of the pod"));
    m.kube_pod_gone("tm-a");
    assert_eq!(
        m.decisions.len(),
        1,
        "gone after a deletion already decided is not a second decision"
    );

    // Without its agent, the coordinator checkpoints the job itself within the grace period (no stop to release).
    let mut m = model(acting(), "tm-b");
    let conn = m.agents["tm-b"].connection;
    m.agent_disconnected("tm-b", conn, "reset");
    m.kube_pod(PodView {
        deleting_grace_s: Some(30),
        ..pod("tm-b", "n1")
    });
    let d = last(&m);
    assert_eq!(
        (d.trigger, d.mode, d.command.as_deref()),
        (Trigger::PodDeleted, Mode::Acted, Some("checkpoint"))
    );
    let reqs = m.take_stop_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].jobs, ["j1"]);
    assert!(!reqs[0].release);

    let mut m = model(acting(), "tm-c");
    let kill = OomKill {
        container: "flink-main-container".into(),
        finished_at: "t1".into(),
        exit_code: 137,
        memory_limit: Some("2Gi".into()),
    };
    m.kube_pod(PodView {
        oom_kills: vec![kill.clone()],
        ..pod("tm-c", "n1")
    });
    m.kube_pod(PodView {
        oom_kills: vec![kill.clone()],
        phase: "Pending".into(),
        ..pod("tm-c", "n1")
    });
    let ooms: Vec<&Decision> = m
        .decisions
        .iter()
        .filter(|d| d.trigger == Trigger::PodOomKilled)
        .collect();
    assert_eq!(ooms.len(), 1, "one kill, one decision");
    assert!(ooms[0].action.contains("2Gi"));
    m.kube_pod(PodView {
        phase: "Failed".into(),
        reason: Some("Evicted".into()),
        message: Some("The node was low on resource: memory.".into()),
        ..pod("tm-c", "n1")
    });
    assert_eq!(last(&m).trigger, Trigger::PodEvicted);
    m.kube_pod_gone("tm-c");
    assert_eq!(last(&m).trigger, Trigger::PodDeleted);
    assert!(last(&m).action.contains("is gone"));
}

#[test]
fn a_drain_checkpoints_the_jobs_on_the_node_first() {
    let mut m = model(acting(), "tm-a");
    m.kube_pod(pod("tm-a", "n1"));
    m.kube_node(node("n1", "True"));
    m.kube_node(NodeView {
        unschedulable: true,
        ..node("n1", "True")
    });
    let d = last(&m);
    assert_eq!((d.trigger, d.mode), (Trigger::NodeDraining, Mode::Acted));
    assert!(d.action.contains("cordoned"), "{}", d.action);
    let reqs = m.take_stop_requests();
    assert_eq!((reqs.len(), reqs[0].release), (1, false));
    // The checkpoint's outcome goes into the decision; no stop-ready is sent to an agent that holds no stop.
    m.stop_checkpointed(
        &reqs[0],
        crate::protocol::StopOutcome::Checkpointed,
        serde_json::json!({}),
    );
    assert!(m.queued_for("tm-a").is_empty());
    assert!(last(&m).outcome.is_some());
    let n = m.decisions.len();
    m.kube_node(NodeView {
        unschedulable: true,
        drain_taints: vec!["karpenter.sh/disrupted:NoSchedule".into()],
        ..node("n1", "True")
    });
    assert_eq!(m.decisions.len(), n, "still the same drain");
    let notice = m
        .take_kube_notices()
        .into_iter()
        .find(|n| n.reason == "NodeDraining")
        .unwrap();
    assert!(!notice.warning && notice.action == "Checkpoint");
}

#[test]
fn annotations_are_a_live_policy_level_and_bad_ones_are_said() {
    let mut m = model(PolicyConfig::default(), "tm-a");
    assert!(!m.flink.jobs[0].failover());
    let ann = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    m.kube_deployment(
        Some(Regarding {
            api_version: "flink.apache.org/v1beta1".into(),
            kind: "FlinkDeployment".into(),
            name: "orders".into(),
            uid: Some("u".into()),
        }),
        &ann(&[
            ("streamshield.io/failover", "true"),
            ("streamshield.io/enabled", "true"),
            ("other.io/x", "y"),
        ]),
    );
    let j = &m.flink.jobs[0];
    assert!(
        j.failover(),
        "the annotation applies at once, without a poll or a restart"
    );
    assert_eq!(
        j.policy.as_ref().unwrap().failover_source(),
        Source::Annotation
    );
    assert!(m.cluster_policy().config.failover);
    // It survives the next poll, and the job's own key is below it.
    m.flink_polled(Ok((
        vec![job("j1", &["tm-a"], &[("streamshield.failover", "false")])],
        vec![tm("tm-a", 2, 0)],
        vec![],
    )));
    assert!(m.flink.jobs[0].failover());
    // Taken away: the job's own key applies again.
    m.kube_deployment(None, &ann(&[]));
    assert!(!m.flink.jobs[0].failover());
    assert_eq!(
        m.kube
            .as_ref()
            .unwrap()
            .regarding
            .as_ref()
            .unwrap()
            .uid
            .as_deref(),
        Some("u")
    );
    // A typo and a bad value: warning Events that name the problem and the valid keys.
    m.take_kube_notices();
    m.kube_deployment(
        None,
        &ann(&[
            ("streamshield.io/failovr", "true"),
            ("streamshield.io/hang-tolerance", "soon"),
        ]),
    );
    let notices = m.take_kube_notices();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices
        .iter()
        .all(|n| n.warning && n.reason == "InvalidAnnotation"));
    assert!(notices
        .iter()
        .any(|n| n.note.contains("streamshield.io/failovr")
            && n.note.contains("known: failover, hang-tolerance")));
}

#[test]
fn pods_map_to_taskmanagers_by_agent_name_and_ip() {
    let mut m = Model::new("http://x", acting(), 1);
    m.kube_enable(KubeView::new("flink", "orders", true));
    // The operator's standalone mode: Flink names the TaskManager by its address.
    m.flink_polled(Ok((vec![], vec![tm("10.0.0.7:6122-a1b2c3", 2, 2)], vec![])));
    let p = PodView {
        ip: Some("10.0.0.7".into()),
        ..pod("orders-tm-xyz", "n1")
    };
    assert_eq!(m.rid_of_pod(&p), "10.0.0.7:6122-a1b2c3");
    // A sidecar agent named after the pod reports the TaskManager it watches.
    m.agent_connected("orders-tm-xyz", "peer");
    m.agent_status(
        "orders-tm-xyz",
        status("rid-from-handshake", Liveness::Alive, Role::Tm),
    );
    assert_eq!(m.rid_of_pod(&p), "rid-from-handshake");
    assert_eq!(m.rid_of_pod(&pod("unknown", "n1")), "unknown");
}

#[test]
fn without_kubernetes_nothing_is_kept() {
    let mut m = Model::new("http://x", acting(), 1);
    m.kube_pod(pod("tm-a", "n1"));
    m.kube_node(node("n1", "False"));
    assert!(
        m.decisions.is_empty()
            && m.take_kube_orders().is_empty()
            && m.take_kube_notices().is_empty()
    );
}
