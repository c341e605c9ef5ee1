//! The coordinator on Kubernetes, against a real kube-apiserver and etcd with kwok simulating a node (no kubelet
//! can run containers here): under a service account with only the permissions docs/install-kubernetes.md lists,
//! it watches the TaskManager pods of a FlinkDeployment, answers a pod deletion and a node turning NotReady with a
//! logged decision and a Kubernetes Event on the FlinkDeployment, fences a pod whose agent is unreachable by
//! deleting it with no grace period, applies a changed `streamshield.io/<key>` annotation at once and says which
//! one is wrong; under an account that lacks permissions it names each one and the feature that is off. Every
//! process is stopped by pid when the test ends, also after a failure.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{json, Value};

mod common;

use common::control_plane::{
    apply_rbac, coordinator_rbac, create, create_cluster, flink_deployment, flink_pod,
    kubeconfig_for, ControlPlane, Proc,
};
use common::coordinator::Coordinator;
use common::BIN;

const NS: &str = "flink";
const NODE: &str = "kwok-node-1";

/// A `streamshield coordinator` named `name` watching the `orders` FlinkDeployment under `kubeconfig`.
fn start_coordinator(dir: &Path, name: &str, kubeconfig: &Path) -> Coordinator {
    let flink = format!("http://127.0.0.1:{}", common::control_plane::free_port());
    let args: Vec<String> = [
        "--agents-listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--agent-token-file",
        &dir.join(format!("{name}-agent.token"))
            .display()
            .to_string(),
        "--api-token-file",
        &dir.join(format!("{name}-api.token")).display().to_string(),
        // No Flink here: its REST polls fail, which the Kubernetes side does not need.
        "--flink-rest",
        &flink,
        "--kubernetes",
        "true",
        "--kubernetes-namespace",
        NS,
        "--kubernetes-cluster-id",
        "orders",
    ]
    .map(String::from)
    .to_vec();
    Coordinator::start(
        dir,
        name,
        kubeconfig,
        &args,
        &dir.join(format!("{name}-api.token")),
        &[],
    )
}

/// Waits for a Kubernetes Event with `reason` on the FlinkDeployment `orders`.
async fn event_on_deployment(client: &kube::Client, reason: &str, within: Duration) -> Event {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    let start = Instant::now();
    loop {
        let list = api.list(&Default::default()).await.unwrap();
        if let Some(e) = list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("FlinkDeployment")
                        && r.name.as_deref() == Some("orders")
                })
        }) {
            return e;
        }
        assert!(
            start.elapsed() < within,
            "no {reason} Event on the FlinkDeployment within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TaskManager pod of `orders` on the kwok node.
fn tm_pod(name: &str) -> Value {
    let mut p = flink_pod(name, "taskmanager");
    p["spec"]["nodeName"] = json!(NODE);
    p
}

async fn wait_pod_phase(pods: &Api<Pod>, name: &str, phase: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let p = pods.get(name).await.unwrap();
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{name} not {phase} within {within:?}: {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_pod_gone(pods: &Api<Pod>, name: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if pods.get_opt(name).await.unwrap().is_none() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{name} not gone within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_decides_on_pods_and_nodes_and_writes_events() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start)
        .await
        .unwrap();
    let client = cp.client().await;
    cp.install_flink_crd(&client).await;
    let dir = cp.dir.path().to_path_buf();
    create_cluster::<Namespace>(&client, json!({"metadata": {"name": NS}})).await;
    // No controller manager makes a namespace's default service account here.
    create::<ServiceAccount>(&client, Some(NS), json!({"metadata": {"name": "default"}})).await;
    apply_rbac(&client, &coordinator_rbac(NS, "streamshield-coordinator")).await;
    let kubeconfig = kubeconfig_for(&cp, &client, NS, "streamshield-coordinator").await;

    // kwok keeps a fake node Ready and runs the pods bound to it (phase Running; a deleted pod is removed).
    // kwok's own stages, cached by scripts/kube-tools.
    let kwok_config = std::fs::read_dir(common::control_plane::kube_tools().join("kwok"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "yaml"))
        .expect("scripts/kube-tools caches kwok's stages");
    let mut kwok = Proc::spawn(
        "kwok",
        Command::new(common::control_plane::kube_tools().join("bin/kwok"))
            .arg("--kubeconfig")
            .arg(&cp.kubeconfig)
            .arg("--config")
            .arg(&kwok_config)
            .args([
                "--manage-nodes-with-annotation-selector",
                "kwok.x-k8s.io/node=fake",
            ])
            .args([
                "--server-address",
                &format!("127.0.0.1:{}", common::control_plane::free_port()),
            ]),
        &dir.join("kwok.log"),
    );
    create_cluster::<Node>(
        &client,
        json!({"metadata": {"name": NODE, "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": {"type": "kwok"}}}),
    )
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let n = nodes.get(NODE).await.unwrap();
        let ready = n
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "kwok did not make the node Ready:\n{}",
            cp.log_tail("kwok.log")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let fds: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "flink.apache.org",
            "v1beta1",
            "FlinkDeployment",
        )),
    );
    let fd: DynamicObject = serde_json::from_value(flink_deployment(
        "orders",
        json!({"streamshield.io/failover": "true"}),
    ))
    .unwrap();
    let fd = fds.create(&PostParams::default(), &fd).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for name in ["orders-taskmanager-1-1", "orders-taskmanager-1-2"] {
        create::<Pod>(&client, Some(NS), tm_pod(name)).await;
    }
    // A pod of another cluster is not watched.
    let mut other = tm_pod("payments-taskmanager-1-1");
    other["metadata"]["labels"]["app"] = json!("payments");
    create::<Pod>(&client, Some(NS), other).await;
    for name in ["orders-taskmanager-1-1", "orders-taskmanager-1-2"] {
        wait_pod_phase(&pods, name, "Running", Duration::from_secs(30)).await;
    }

    let c = tokio::task::block_in_place(|| start_coordinator(&dir, "coordinator", &kubeconfig));
    // It has every permission it needs: nothing is off.
    let start = Instant::now();
    loop {
        let k = c.get("/v1/kubernetes").await;
        let filled = k["pods"].as_object().is_some_and(|p| p.len() == 2)
            && k["nodes"].get(NODE).is_some()
            && !k["regarding"].is_null();
        if filled {
            assert_eq!(k["missing"], json!([]), "{k:#}");
            assert_eq!(k["regarding"]["uid"], json!(fd.metadata.uid), "{k:#}");
            assert_eq!(k["annotations"], json!({"streamshield.failover": "true"}));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the watches did not fill the model: {k:#}\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A pod deleted (grace 30 s; kwok then removes it as a kubelet would): a decision with the pod as evidence, and
    // an Event on the FlinkDeployment.
    pods.delete("orders-taskmanager-1-1", &Default::default())
        .await
        .unwrap();
    let d = c
        .decision(
            "pod-deleted",
            "orders-taskmanager-1-1",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        d["action"]
            .as_str()
            .unwrap()
            .contains("being deleted (grace 30 s"),
        "{d:#}"
    );
    assert!(
        d["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["signal"] == "kubernetes pod"),
        "{d:#}"
    );
    let e = event_on_deployment(&client, "PodDeleted", Duration::from_secs(10)).await;
    assert_eq!(
        e.reporting_controller.as_deref(),
        Some("streamshield-coordinator")
    );
    assert!(
        e.note
            .as_deref()
            .unwrap()
            .contains("orders-taskmanager-1-1"),
        "{e:?}"
    );
    wait_pod_gone(&pods, "orders-taskmanager-1-1", Duration::from_secs(30)).await;

    // The node stops reporting (kwok stopped) and turns NotReady, as the node lifecycle controller marks it (no
    // controller manager runs here). The remaining pod has no agent that answers: the coordinator deletes it with
    // no grace period, and says so.
    kwok.stop();
    let mut n = nodes.get_status(NODE).await.unwrap();
    for cond in n
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .iter_mut()
    {
        if cond.type_ == "Ready" {
            cond.status = "Unknown".into();
            cond.reason = Some("NodeStatusUnknown".into());
            cond.message = Some("Kubelet stopped posting node status.".into());
        }
    }
    let marked = Instant::now();
    nodes
        .patch_status(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": n.status.unwrap().conditions}})),
        )
        .await
        .unwrap();
    let gone = wait_pod_gone(&pods, "orders-taskmanager-1-2", Duration::from_secs(10)).await;
    eprintln!(
        "node NotReady -> pod deleted by the coordinator: {:.3} s",
        gone.as_secs_f64()
    );
    let d = c
        .decision(
            "node-not-ready",
            "orders-taskmanager-1-2",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(d["mode"], "acted", "{d:#}");
    assert_eq!(d["command"], "delete-pod");
    assert_eq!(d["fencing_token"], 1);
    assert!(
        d["policy"]["basis"]
            .as_str()
            .unwrap()
            .contains("FlinkDeployment annotation"),
        "{d:#}"
    );
    let start = Instant::now();
    let outcome = loop {
        let d = c
            .decision(
                "node-not-ready",
                "orders-taskmanager-1-2",
                Duration::from_secs(5),
            )
            .await;
        if !d["outcome"].is_null() {
            break d["outcome"].clone();
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(outcome["outcome"], "deleted", "{outcome:#}");
    let e = event_on_deployment(&client, "NodeNotReady", Duration::from_secs(10)).await;
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.action.as_deref(), Some("DeletePod"));
    assert!(marked.elapsed() < Duration::from_secs(15));
    assert!(
        pods.get_opt("payments-taskmanager-1-1")
            .await
            .unwrap()
            .is_some(),
        "another cluster's pod is left alone"
    );

    // An annotation changed: applied at once; a wrong one is ignored and named in a Warning Event.
    fds.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"streamshield.io/failover": "false", "streamshield.io/hang-tolerance": "soon"}}})),
    )
    .await
    .unwrap();
    let start = Instant::now();
    loop {
        let k = c.get("/v1/kubernetes").await;
        if k["annotations"]["streamshield.failover"] == "false" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{k:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = event_on_deployment(&client, "InvalidAnnotation", Duration::from_secs(10)).await;
    let note = e.note.unwrap();
    assert!(
        note.contains("streamshield.io/hang-tolerance") && note.contains("soon"),
        "{note}"
    );
    let page = reqwest::Client::new()
        .get(format!("{}/metrics", c.api))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("streamshield_coordinator_kubernetes_events_total{result=\"written\"}"),
        "{page}"
    );
    assert!(
        page.contains("streamshield_coordinator_kubernetes_permissions_missing 0"),
        "{page}"
    );
    common::promtool_check(&page, "the coordinator's metrics with Kubernetes on");
    drop(c);

    // An account with fewer permissions: each missing one is named with the feature that is off; the rest runs.
    let limited = kubeconfig_for(&cp, &client, NS, "limited").await;
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "limited", "namespace": NS},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "limited", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "limited"},
        "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": NS}]
    });
    apply_rbac(&client, &[role, binding]).await;
    let c = tokio::task::block_in_place(|| start_coordinator(&dir, "limited", &limited));
    let start = Instant::now();
    let k = loop {
        let k = c.get("/v1/kubernetes").await;
        if k["missing"].as_array().is_some_and(|m| !m.is_empty()) {
            break k;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{k:#}\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let missing: Vec<&str> = k["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        missing
            .iter()
            .any(|m| m.starts_with("list core/nodes (cluster-wide): node incidents")),
        "{missing:#?}"
    );
    assert!(
        missing
            .iter()
            .any(|m| m.starts_with("delete core/pods in namespace flink: fencing")),
        "{missing:#?}"
    );
    assert!(
        missing
            .iter()
            .any(|m| m.starts_with("create events.k8s.io/events")),
        "{missing:#?}"
    );
    assert!(
        !missing
            .iter()
            .any(|m| m.contains("core/pods in namespace flink: pod incidents")),
        "{missing:#?}"
    );
    let log = c.log();
    assert!(
        log.contains("Kubernetes permission missing") && log.contains("list core/nodes"),
        "{log}"
    );
    assert_eq!(
        k["watch_errors"],
        json!({}),
        "a feature that is off does not retry a watch it may not do: {k:#}"
    );
}

#[test]
fn kubernetes_without_an_api_server_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("coordinator")
        .arg("--agent-token-file")
        .arg(dir.path().join("a"))
        .arg("--api-token-file")
        .arg(dir.path().join("b"))
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--agents-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--kubernetes",
            "true",
            "--kubernetes-namespace",
            NS,
            "--kubernetes-cluster-id",
            "orders",
        ])
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("kubernetes: no API server to talk to"),
        "{err}"
    );
    let out = Command::new(BIN)
        .arg("coordinator")
        .args([
            "--agent-token-file",
            "a",
            "--api-token-file",
            "b",
            "--kubernetes",
            "true",
            "--kubernetes-namespace",
            NS,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubernetes-cluster-id is required"));
}
