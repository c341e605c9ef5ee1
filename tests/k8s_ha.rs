//! Two coordinators elect a leader through a `coordination.k8s.io` Lease of a real kube-apiserver (etcd behind it),
//! under a service account with only the permissions docs/install-kubernetes.md lists:
//!
//! - the first to start leads (epoch 1 = the Lease's transitions) and is ready (`/readyz` 200); the other follows,
//!   serves the read API, answers 503 on `/readyz` and sends agents away;
//! - a real agent (fed by a fake plugin for a `sleep` process) knows both addresses and links to the leader; the
//!   process is stopped (SIGSTOP, no heartbeats): an incident opens at the leader, which is SIGKILLed before the
//!   hang tolerance runs out, so it never acts;
//! - the follower takes the Lease once the dead leader's has run out (epoch 2), the agent links to it, and it
//!   fences the process exactly once, with fencing token 2 (taken over, not acted twice); the time from the kill to
//!   the new leader and to the fence is measured and printed;
//! - a deposed leader that comes back on its old address with its old epoch is left by the agent at the handshake.
//!
//! Every process is stopped by pid when the test ends, also after a failure.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{json, Value};
use streamshield::agent::{AgentConfig, BoundAgent, RestartMode};
use streamshield::host::endpoint::Endpoint;
use streamshield::protocol::handshake::{self, AcceptPolicy};
use streamshield::protocol::{FrameCodec, Heartbeat, Liveness, Message, Role};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

mod common;

use common::chart::{helm, named, of_kind, render};
use common::control_plane::{
    apply_rbac, coordinator_rbac, create, create_cluster, kubeconfig_for, ControlPlane,
};
use common::coordinator::Coordinator;
use common::{agent_config, fake_plugin, TEST_IDENTITY};

const NS: &str = "flink";
const LEASE: &str = "streamshield-coordinator-orders";
/// The incident's tolerance: long enough that the first leader is killed while the incident is open.
const HANG_TOLERANCE: &str = "6s";

/// A coordinator taking part in the election as `identity`, the way the first test runs them: flags, the tokens
/// shared in `dir` (in the chart: one Secret), failover on.
fn replica(dir: &Path, identity: &str, kubeconfig: &Path) -> Coordinator {
    let flink = format!("http://127.0.0.1:{}", common::control_plane::free_port());
    let args: Vec<String> = [
        "--agents-listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--agent-token-file",
        &dir.join("agent.token").display().to_string(),
        "--api-token-file",
        &dir.join("api.token").display().to_string(),
        // No Flink here: the cluster-level policy is the configuration's.
        "--flink-rest",
        &flink,
        "--failover",
        "true",
        "--hang-tolerance",
        HANG_TOLERANCE,
        "--kubernetes",
        "true",
        "--kubernetes-namespace",
        NS,
        "--kubernetes-cluster-id",
        "orders",
        "--ha-lease",
        "true",
        "--ha-identity",
        identity,
    ]
    .map(String::from)
    .to_vec();
    Coordinator::start(
        dir,
        identity,
        kubeconfig,
        &args,
        &dir.join("api.token"),
        &[],
    )
}

struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn agent_page(http: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_an_open_incident_and_a_deposed_leader_is_refused() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start)
        .await
        .unwrap();
    let client = cp.client().await;
    cp.install_flink_crd(&client).await;
    let dir = cp.dir.path().to_path_buf();
    create_cluster::<Namespace>(&client, json!({"metadata": {"name": NS}})).await;
    create::<ServiceAccount>(&client, Some(NS), json!({"metadata": {"name": "default"}})).await;
    apply_rbac(&client, &coordinator_rbac(NS, "streamshield-coordinator")).await;
    let kubeconfig = kubeconfig_for(&cp, &client, NS, "streamshield-coordinator").await;

    // A starts first and leads; B follows.
    let mut a = tokio::task::block_in_place(|| replica(&dir, "coord-a", &kubeconfig));
    a.until_ready_is(200, Duration::from_secs(10)).await;
    let mut b = tokio::task::block_in_place(|| replica(&dir, "coord-b", &kubeconfig));
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(
        (lease.holder_identity.as_deref(), lease.lease_transitions),
        (Some("coord-a"), Some(1))
    );
    let start = Instant::now();
    while b.leader().await["holder"] != "coord-a" {
        assert!(start.elapsed() < Duration::from_secs(5), "{}", b.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.ready().await, 503, "the follower is not ready");
    assert_eq!(a.leader().await["epoch"], 1);
    let page = b.client.metrics().await.unwrap();
    assert_eq!(
        metric(&page, "streamshield_coordinator_leader"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        metric(
            &a.client.metrics().await.unwrap(),
            "streamshield_coordinator_leader"
        ),
        Some(1.0)
    );

    // A real agent knowing both addresses (the follower first: it sends the agent on), restart never (fence only).
    let target = Sleeper(Command::new("sleep").arg("600").spawn().unwrap());
    let pid = target.0.id();
    let cfg = AgentConfig {
        id: Some("agent-1".into()),
        listen: Some(Endpoint::Unix(dir.join("plugin.sock"))),
        coordinator: Some(format!("{},{}", b.agents, a.agents)),
        token_file: Some(dir.join("agent.token")),
        status_interval: Some(Duration::from_millis(100)),
        stall_timeout: Some(Duration::from_secs(30)),
        restart: Some(RestartMode::Never),
        ..agent_config(&dir)
    };
    let agent = BoundAgent::bind_with(cfg.resolve(None).unwrap(), TEST_IDENTITY)
        .await
        .unwrap();
    let agent_http = agent.http_addr();
    let agent_stop = CancellationToken::new();
    let _agent_guard = agent_stop.clone().drop_guard();
    tokio::spawn(agent.run(agent_stop.clone()));
    let mut plugin = fake_plugin(&dir.join("plugin.sock"), pid).await;
    let start = Instant::now();
    let mut seq = 0;
    let mut last_beat;
    loop {
        seq += 1;
        futures_util::SinkExt::send(
            &mut plugin,
            Message::Heartbeat(Heartbeat { seq, ts_ms: 0 }).to_frame(),
        )
        .await
        .unwrap();
        last_beat = Instant::now();
        let v = a.client.cluster().await.unwrap();
        if v.process("tm-1")
            .and_then(|p| p.status.as_ref())
            .map(|s| s.liveness)
            == Some(Liveness::Alive)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tm-1 not alive at the leader: {v:#?}\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        b.client.cluster().await.unwrap().process("tm-1").is_none(),
        "the follower has no agents"
    );
    let page = agent_page(agent_http).await;
    assert_eq!(
        metric(&page, "streamshield_agent_coordinator_epoch"),
        Some(1.0),
        "{page}"
    );

    // The process stops: an incident opens at A (paused), with no decision before the tolerance.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let stopped = Instant::now();
    loop {
        let v = a.client.cluster().await.unwrap();
        let l = v
            .process("tm-1")
            .and_then(|p| p.status.as_ref())
            .map(|s| s.liveness);
        if matches!(l, Some(Liveness::Paused | Liveness::Hung)) {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "no incident at the leader: {v:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        a.client.decisions().await.unwrap().is_empty(),
        "A has not acted yet"
    );

    // A dies without giving the Lease up.
    a.kill();
    let killed = Instant::now();
    let to_lead = b.until_ready_is(200, Duration::from_secs(15)).await;
    let l = b.leader().await;
    assert_eq!(
        (l["leading"].as_bool(), l["epoch"].as_u64()),
        (Some(true), Some(2)),
        "{l}"
    );
    let lease = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(
        (lease.holder_identity.as_deref(), lease.lease_transitions),
        (Some("coord-b"), Some(2))
    );

    // B takes the open incident over: one fence, token 2, once the tolerance (counted from the stop) has passed.
    let ds = loop {
        let ds = b.client.decisions().await.unwrap();
        if ds
            .iter()
            .any(|d| d.outcome.as_ref().is_some_and(|o| o["outcome"] == "done"))
        {
            break ds;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "B did not fence: {ds:#?}\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fenced_after_kill = killed.elapsed();
    let fenced_after_stop = stopped.elapsed();
    // The tolerance runs from the last sign of life (the last heartbeat), which came just before the stop.
    let fenced_after_beat = last_beat.elapsed();
    let fences: Vec<_> = ds
        .iter()
        .filter(|d| d.command.as_deref() == Some("fence"))
        .collect();
    assert_eq!(fences.len(), 1, "{ds:#?}");
    assert_eq!(fences[0].fencing_token, Some(2));
    assert!(
        fenced_after_beat >= Duration::from_secs(6),
        "not before the tolerance: {fenced_after_beat:?} after the last heartbeat"
    );
    // SIGKILL is sent; the process is gone a moment later (a zombie of this test until reaped).
    let start = Instant::now();
    while !streamshield::host::procfs::stat(pid).is_none_or(|s| s.gone()) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the stopped process was not fenced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Statuses keep arriving: still one fence; the agent carried out exactly one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ds = b.client.decisions().await.unwrap();
    assert_eq!(
        ds.iter()
            .filter(|d| d.command.as_deref() == Some("fence"))
            .count(),
        1,
        "{ds:#?}"
    );
    let page = agent_page(agent_http).await;
    assert!(
        page.contains("streamshield_agent_commands_total{action=\"fence\",outcome=\"done\"} 1"),
        "{page}"
    );
    assert_eq!(
        metric(&page, "streamshield_agent_coordinator_epoch"),
        Some(2.0)
    );
    eprintln!(
        "HA: leader SIGKILLed; follower leading after {to_lead:.2?}, fence after {fenced_after_kill:.2?} (tolerance {HANG_TOLERANCE}: {fenced_after_beat:.2?} after the last heartbeat, {fenced_after_stop:.2?} after the stop)"
    );
    assert!(
        to_lead < Duration::from_secs(5),
        "the follower leads within the lease duration (3 s) + a retry: {to_lead:?}"
    );

    // B dies too, and a deposed leader answers on A's old address with epoch 1: the agent leaves it.
    b.kill();
    let deposed = tokio::net::TcpListener::bind(&a.agents).await.unwrap();
    let token = std::fs::read_to_string(dir.join("agent.token")).unwrap();
    let policy = AcceptPolicy {
        secret: Some(token.trim().to_string()),
        roles: vec![Role::Agent],
        server: "a deposed coordinator".into(),
        heartbeat_interval_ms: 200,
        epoch: Some(1),
    };
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), deposed.accept())
        .await
        .expect("the agent tries the old address")
        .unwrap();
    let mut framed = Framed::new(stream, FrameCodec::default());
    handshake::accept(&mut framed, &policy, Duration::from_secs(5))
        .await
        .expect("the agent says hello");
    // The agent closes the link at once.
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut framed),
    )
    .await;
    assert!(
        matches!(closed, Ok(None) | Ok(Some(Err(_)))),
        "the agent left: {closed:?}"
    );
    let page = agent_page(agent_http).await;
    assert_eq!(
        metric(&page, "streamshield_agent_coordinator_deposed_total"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "streamshield_agent_coordinator_epoch"),
        Some(2.0)
    );
    assert_eq!(
        metric(&page, "streamshield_agent_coordinator_connected"),
        Some(0.0)
    );
    drop(target);
}

/// Creates every object of a rendering that lives in `ns` or is cluster-scoped RBAC: the API server validates them.
async fn create_rendered(client: &kube::Client, objects: &[Value], ns: &str) -> Vec<String> {
    let mut made = vec![];
    for o in objects {
        let kind = o["kind"].as_str().unwrap();
        let cluster_scoped = matches!(kind, "ClusterRole" | "ClusterRoleBinding");
        if !cluster_scoped && o["metadata"]["namespace"] != ns {
            continue;
        }
        let (group, version) = match o["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", o["apiVersion"].as_str().unwrap()),
        };
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = if cluster_scoped {
            Api::all_with(client.clone(), &ar)
        } else {
            Api::namespaced_with(client.clone(), ns, &ar)
        };
        api.create(
            &PostParams::default(),
            &serde_json::from_value(o.clone()).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server refuses the chart's {kind}: {e}\n{o:#}"));
        made.push(format!(
            "{kind}/{}",
            o["metadata"]["name"].as_str().unwrap()
        ));
    }
    made
}

/// The chart's coordinator for one FlinkDeployment: its objects are accepted by a real API server, and two
/// coordinators started with exactly the chart's configuration, under the chart's service account and RBAC, elect a
/// leader (the pod name the chart passes is the identity), watch the FlinkDeployment with no permission missing, and
/// hand over at once when the leader stops cleanly (it gives the Lease up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_s_coordinator_runs_under_its_own_rbac_and_hands_over() {
    let objects = render(&[
        "coordinator.clusters[0].name=orders",
        "coordinator.clusters[0].namespace=flink",
        "coordinator.config.failover=true",
    ]);
    let deployment = named(&objects, "Deployment", "streamshield-coordinator-orders");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
    assert_eq!(pod["containers"][0]["env"][0]["name"], "POD_NAME");
    let webhook = named(&objects, "Deployment", "t-streamshield-webhook");
    let env = webhook["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        value("STREAMSHIELD_WEBHOOK_COORDINATOR"),
        Some(json!("streamshield-coordinator-{cluster-id}:9250")),
        "each injected agent reaches its own cluster's coordinator"
    );
    assert_eq!(
        value("STREAMSHIELD_WEBHOOK_TOKEN_SECRET"),
        Some(json!("streamshield-agent-token"))
    );
    // Bad values are named.
    for (set, expect) in [
        ("coordinator.clusters[0].namespace=flink", "name"),
        (
            "coordinator.clusters[0].name=Orders_1",
            "is not a FlinkDeployment name",
        ),
        ("coordinator.leaseDuration=1500ms", "leaseDuration"),
    ] {
        let (ok, _, err) = helm(&["template", "t", "helm/streamshield", "--set", set]);
        assert!(!ok && err.contains(expect), "--set {set}: {err}");
    }

    // Scraping what the dashboards read: the agents (a PodMonitor on the sidecar's port) and the leader (the
    // Service's only ready endpoint), with the coordinator's API token.
    let monitored = render(&[
        "coordinator.clusters[0].name=orders",
        "coordinator.clusters[0].namespace=flink",
        "serviceMonitor.enabled=true",
    ]);
    let pm = of_kind(&monitored, "PodMonitor");
    assert_eq!(pm.len(), 1);
    assert_eq!(
        pm[0]["spec"]["podMetricsEndpoints"][0]["port"],
        "ss-metrics"
    );
    let sm = named(
        &monitored,
        "ServiceMonitor",
        "streamshield-coordinator-orders",
    );
    assert_eq!(sm["metadata"]["namespace"], NS);
    assert_eq!(
        sm["spec"]["endpoints"][0]["bearerTokenSecret"]["name"],
        "streamshield-coordinator-orders-api-token"
    );
    let service = named(&monitored, "Service", "streamshield-coordinator-orders");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service by {k}"
        );
    }

    let cp = tokio::task::spawn_blocking(ControlPlane::start)
        .await
        .unwrap();
    let client = cp.client().await;
    cp.install_flink_crd(&client).await;
    let dir = cp.dir.path().to_path_buf();
    create_cluster::<Namespace>(&client, json!({"metadata": {"name": NS}})).await;
    let made = create_rendered(&client, &objects, NS).await;
    for want in [
        "Role/streamshield-coordinator-orders",
        "PodDisruptionBudget/streamshield-coordinator-orders",
        "Service/streamshield-coordinator-orders",
        "Secret/streamshield-agent-token",
        "ClusterRoleBinding/t-streamshield-coordinator-nodes",
    ] {
        assert!(made.iter().any(|m| m == want), "{want} not in {made:?}");
    }
    let fd: Value = json!({
        "apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment",
        "metadata": {"name": "orders", "namespace": NS},
        "spec": {"flinkVersion": "v1_20", "image": "flink:1.20"}
    });
    let fds: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "flink.apache.org",
            "v1beta1",
            "FlinkDeployment",
        )),
    );
    fds.create(&PostParams::default(), &serde_json::from_value(fd).unwrap())
        .await
        .unwrap();

    // The chart's configuration, with only the paths and addresses of this machine changed.
    let cm = named(&objects, "ConfigMap", "streamshield-coordinator-orders");
    let mut config: serde_json::Map<String, Value> =
        serde_yaml_ng::from_str(cm["data"]["coordinator.yaml"].as_str().unwrap()).unwrap();
    let secret = |name: &str| -> String {
        let s = named(&objects, "Secret", name);
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s["data"]["token"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    common::control_plane::write(
        &dir.join("chart-agent.token"),
        &secret("streamshield-agent-token"),
    );
    common::control_plane::write(
        &dir.join("chart-api.token"),
        &secret("streamshield-coordinator-orders-api-token"),
    );
    for (k, v) in [
        ("agents-listen", "127.0.0.1:0".to_string()),
        ("api-listen", "127.0.0.1:0".to_string()),
        (
            "agent-token-file",
            dir.join("chart-agent.token").display().to_string(),
        ),
        (
            "api-token-file",
            dir.join("chart-api.token").display().to_string(),
        ),
        (
            "flink-rest",
            format!("http://127.0.0.1:{}", common::control_plane::free_port()),
        ),
    ] {
        assert!(config.contains_key(k), "the chart sets {k}");
        config.insert(k.into(), json!(v));
    }
    let file = dir.join("coordinator.yaml");
    common::control_plane::write(&file, &serde_yaml_ng::to_string(&config).unwrap());
    let kubeconfig = kubeconfig_for(&cp, &client, NS, "streamshield-coordinator-orders").await;
    let args = ["--config".to_string(), file.display().to_string()];
    let token = dir.join("chart-api.token");
    let mut first = tokio::task::block_in_place(|| {
        Coordinator::start(
            &dir,
            "pod-a",
            &kubeconfig,
            &args,
            &token,
            &[("POD_NAME", "orders-coord-a")],
        )
    });
    first.until_ready_is(200, Duration::from_secs(10)).await;
    let second = tokio::task::block_in_place(|| {
        Coordinator::start(
            &dir,
            "pod-b",
            &kubeconfig,
            &args,
            &token,
            &[("POD_NAME", "orders-coord-b")],
        )
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(
        lease.holder_identity.as_deref(),
        Some("orders-coord-a"),
        "the pod's name is its identity"
    );
    let start = Instant::now();
    let k = loop {
        let k = first.get("/v1/kubernetes").await;
        if !k["regarding"].is_null() {
            break k;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the FlinkDeployment is not seen: {k:#}\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        k["missing"],
        json!([]),
        "the chart's RBAC is all the coordinator uses: {k:#}"
    );
    assert!(
        !first.log().contains("permission missing"),
        "{}",
        first.log()
    );
    second.until_ready_is(503, Duration::from_secs(5)).await;

    // A clean stop (a rollout, a drain) gives the Lease up: the other replica leads within about a retry period.
    first.proc.stop();
    let stopped = Instant::now();
    let took = second.until_ready_is(200, Duration::from_secs(10)).await;
    eprintln!(
        "HA: clean hand-over in {:.2} s (stop to ready)",
        stopped.elapsed().as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(2),
        "a clean hand-over waits for no expiry: {took:?}"
    );
    let lease = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(
        (lease.holder_identity.as_deref(), lease.lease_transitions),
        (Some("orders-coord-b"), Some(2))
    );
}
