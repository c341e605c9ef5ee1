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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::Api;
use serde_json::{json, Value};
use streamshield::agent::{AgentConfig, BoundAgent, RestartMode};
use streamshield::coordinator::client::Client;
use streamshield::host::endpoint::Endpoint;
use streamshield::protocol::handshake::{self, AcceptPolicy};
use streamshield::protocol::{FrameCodec, Heartbeat, Liveness, Message, Role};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

mod common;

use common::control_plane::{
    apply_rbac, coordinator_rbac, create, create_cluster, kubeconfig_for, ControlPlane, Proc,
};
use common::{agent_config, fake_plugin, BIN, TEST_IDENTITY};

const NS: &str = "flink";
const LEASE: &str = "streamshield-coordinator-orders";
/// The incident's tolerance: long enough that the first leader is killed while the incident is open.
const HANG_TOLERANCE: &str = "6s";

/// A `streamshield coordinator` taking part in the election as `identity`.
struct Coordinator {
    proc: Proc,
    identity: &'static str,
    api: String,
    agents: String,
    client: Client,
    token: String,
    log: PathBuf,
}

impl Coordinator {
    fn start(dir: &Path, identity: &'static str, kubeconfig: &Path) -> Coordinator {
        let info = dir.join(format!("{identity}.json"));
        let log = dir.join(format!("{identity}.log"));
        let proc = Proc::spawn(
            "streamshield coordinator",
            Command::new(BIN)
                .arg("coordinator")
                .args([
                    "--agents-listen",
                    "127.0.0.1:0",
                    "--api-listen",
                    "127.0.0.1:0",
                ])
                // The replicas share the tokens (in the chart: one Secret).
                .arg("--agent-token-file")
                .arg(dir.join("agent.token"))
                .arg("--api-token-file")
                .arg(dir.join("api.token"))
                // No Flink here: the cluster-level policy is the configuration's.
                .args([
                    "--flink-rest",
                    &format!("http://127.0.0.1:{}", common::control_plane::free_port()),
                ])
                .args(["--failover", "true", "--hang-tolerance", HANG_TOLERANCE])
                .args([
                    "--kubernetes",
                    "true",
                    "--kubernetes-namespace",
                    NS,
                    "--kubernetes-cluster-id",
                    "orders",
                ])
                .args(["--ha-lease", "true", "--ha-identity", identity])
                .arg("--info-file")
                .arg(&info)
                .env("KUBECONFIG", kubeconfig)
                .env("RUST_LOG", "streamshield=info"),
            &log,
        );
        let start = Instant::now();
        let v: Value = loop {
            if let Some(v) = std::fs::read(&info)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                break v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{identity} did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let api = v["api"].as_str().unwrap().to_string();
        let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
        Coordinator {
            proc,
            identity,
            client: Client::new(&api, token.trim()),
            token: token.trim().to_string(),
            agents: v["agents"].as_str().unwrap().to_string(),
            api,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/readyz`'s status code (open, no token).
    async fn ready(&self) -> u16 {
        reqwest::get(format!("{}/readyz", self.api))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    async fn leader(&self) -> Value {
        reqwest::Client::new()
            .get(format!("{}/v1/leader", self.api))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until `/readyz` answers `code`; how long that took.
    async fn until_ready_is(&self, code: u16, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.ready().await == code {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{}: /readyz not {code} within {within:?}\n{}",
                self.identity,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.proc.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = self.proc.child.wait();
    }
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
    let mut a = tokio::task::block_in_place(|| Coordinator::start(&dir, "coord-a", &kubeconfig));
    a.until_ready_is(200, Duration::from_secs(10)).await;
    let mut b = tokio::task::block_in_place(|| Coordinator::start(&dir, "coord-b", &kubeconfig));
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
    loop {
        seq += 1;
        futures_util::SinkExt::send(
            &mut plugin,
            Message::Heartbeat(Heartbeat { seq, ts_ms: 0 }).to_frame(),
        )
        .await
        .unwrap();
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
    let fences: Vec<_> = ds
        .iter()
        .filter(|d| d.command.as_deref() == Some("fence"))
        .collect();
    assert_eq!(fences.len(), 1, "{ds:#?}");
    assert_eq!(fences[0].fencing_token, Some(2));
    assert!(
        fenced_after_stop >= Duration::from_secs(6),
        "not before the tolerance: {fenced_after_stop:?}"
    );
    assert!(
        streamshield::host::procfs::stat(pid).is_none_or(|s| s.gone()),
        "the stopped process was fenced"
    );
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
        "HA: leader SIGKILLed; follower leading after {to_lead:.2?}, fence after {fenced_after_kill:.2?} (tolerance {HANG_TOLERANCE} from the stop: {fenced_after_stop:.2?})"
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
