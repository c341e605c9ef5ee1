//! The coordinator against a fake Flink REST API (wiremock: 5xx, time-outs, malformed JSON, recovery), its API's
//! authentication, and a real agent (fed by a fake plugin) whose liveness events become observe-only decisions.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
mod common;

use common::{announce_stop, fake_plugin};
use streamshield::agent::command::RestartSpec;
use streamshield::agent::{AgentConfig, BoundAgent};
use streamshield::coordinator::policy::PolicyConfig;
use streamshield::coordinator::{BoundCoordinator, CoordinatorConfig};
use streamshield::host::endpoint::Endpoint;
use streamshield::protocol::{Heartbeat, Message, Role};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Coord {
    api: String,
    agents: String,
    token: String,
    agent_token_file: std::path::PathBuf,
    stop: CancellationToken,
}

impl Drop for Coord {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn coordinator(dir: &Path, flink: &str) -> Coord {
    coordinator_with(dir, flink, PolicyConfig::default()).await
}

async fn coordinator_with(dir: &Path, flink: &str, policy: PolicyConfig) -> Coord {
    let cfg = CoordinatorConfig {
        agents_listen: "127.0.0.1:0".into(),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        agent_token_file: dir.join("agent.token"),
        api_token_file: dir.join("api.token"),
        flink_rest: flink.to_string(),
        poll_interval: Duration::from_millis(200),
        policy,
        epoch_file: Some(dir.join("epoch")),
    };
    let c = BoundCoordinator::bind(cfg).await.unwrap();
    let api = format!("http://{}", c.api_addr());
    let agents = c.agents_addr().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(c.run(stop.clone()));
    Coord {
        api,
        agents,
        token: std::fs::read_to_string(dir.join("api.token")).unwrap(),
        agent_token_file: dir.join("agent.token"),
        stop,
    }
}

/// An authenticated GET of the coordinator's API path `p`.
async fn request(c: &Coord, p: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{p}", c.api))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap()
}

async fn get(c: &Coord, p: &str) -> serde_json::Value {
    request(c, p).await.json().await.unwrap()
}

/// The coordinator's /metrics page.
async fn metrics_page(c: &Coord) -> String {
    request(c, "/metrics").await.text().await.unwrap()
}

async fn eventually<F: Fn(&serde_json::Value) -> bool>(
    c: &Coord,
    p: &str,
    within: Duration,
    f: F,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = get(c, p).await;
        if f(&v) {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "condition on {p} not met within {within:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether one of the coordinator's recent Flink poll errors mentions `needle`.
fn recent_error(v: &serde_json::Value, needle: &str) -> bool {
    v["flink"]["recent_errors"].as_array().is_some_and(|a| {
        a.iter()
            .any(|e| e[1].as_str().is_some_and(|t| t.contains(needle)))
    })
}

/// The agent of TaskManager `tm-1`, listening under `dir/<sock_dir>/plugin.sock` and reporting to `c` with its token.
fn tm_agent(dir: &Path, sock_dir: &str, c: &Coord) -> AgentConfig {
    AgentConfig {
        listen: Endpoint::Unix(dir.join(sock_dir).join("plugin.sock")),
        secret_file: None,
        resource_id: "tm-1".into(),
        watches: Role::Tm,
        pid: None,
        http: "127.0.0.1:0".parse().unwrap(),
        coordinator: Some(c.agents.clone()),
        token_file: Some(c.agent_token_file.clone()),
        suspect_after: Duration::from_millis(300),
        status_interval: Duration::from_millis(100),
        heartbeat_interval: Duration::from_millis(100),
        stall_timeout: Duration::from_secs(10),
        restart_spec: None,
        jobmanager: None,
        partition_tolerance: Duration::from_secs(3),
    }
}

fn healthy_flink() -> Vec<Mock> {
    vec![
        Mock::given(method("GET")).and(path("/jobs/overview")).respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"jobs": [{"jid": "j1", "name": "seq", "state": "RUNNING"}]})),
        ),
        Mock::given(method("GET")).and(path("/jobs/j1")).respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"jid": "j1", "name": "seq", "state": "RUNNING", "timestamps": {"RUNNING": 5},
                               "vertices": [{"id": "v", "name": "src", "status": "RUNNING", "parallelism": 2}]}),
        )),
        Mock::given(method("GET"))
            .and(path("/jobs/j1/checkpoints"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "counts": {"restored": 0, "total": 3, "in_progress": 0, "completed": 3, "failed": 0},
                "latest": {"completed": {"id": 3, "latest_ack_timestamp": 1000, "end_to_end_duration": 40}}
            }))),
        Mock::given(method("GET"))
            .and(path("/jobs/j1/exceptions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"exceptionHistory": {"entries": []}}))),
        Mock::given(method("GET")).and(path("/taskmanagers")).respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"taskmanagers": [
                {"id": "tm-1", "slotsNumber": 2, "freeSlots": 0, "timeSinceLastHeartbeat": 1},
                {"id": "tm-2", "slotsNumber": 2, "freeSlots": 2, "timeSinceLastHeartbeat": 1}]}),
        )),
    ]
}

#[tokio::test]
async fn flink_failures_are_recorded_and_polling_recovers() {
    let flink = MockServer::start().await;
    let d = tempfile::tempdir().unwrap();
    // First: 5xx.
    Mock::given(method("GET"))
        .and(path("/jobs/overview"))
        .respond_with(ResponseTemplate::new(503).set_body_string("busy"))
        .up_to_n_times(3)
        .mount(&flink)
        .await;
    let c = coordinator(d.path(), &flink.uri()).await;
    let v = eventually(&c, "/v1/cluster", Duration::from_secs(5), |v| {
        v["flink"]["polls_failed"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(v["flink"]["reachable"], false);
    assert!(
        v["flink"]["last_error"].as_str().unwrap().contains("503"),
        "{v}"
    );

    // Then malformed JSON.
    Mock::given(method("GET"))
        .and(path("/jobs/overview"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"jobs\": [ {oops"))
        .up_to_n_times(2)
        .mount(&flink)
        .await;
    eventually(&c, "/v1/cluster", Duration::from_secs(5), |v| {
        recent_error(v, "JSON")
    })
    .await;

    // Then a time-out (the poller gives up after 2 s).
    Mock::given(method("GET"))
        .and(path("/jobs/overview"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(4))
                .set_body_json(serde_json::json!({"jobs": []})),
        )
        .up_to_n_times(1)
        .mount(&flink)
        .await;
    eventually(&c, "/v1/cluster", Duration::from_secs(8), |v| {
        recent_error(v, "timed out")
    })
    .await;

    // Then healthy: the model fills in.
    for m in healthy_flink() {
        m.mount(&flink).await;
    }
    let v = eventually(&c, "/v1/cluster", Duration::from_secs(10), |v| {
        v["flink"]["reachable"] == true
    })
    .await;
    assert_eq!(v["flink"]["jobs"][0]["state"], "RUNNING");
    assert_eq!(v["flink"]["jobs"][0]["checkpoints"]["completed"], 3);
    assert_eq!(
        v["flink"]["jobs"][0]["checkpoints"]["latest_duration_ms"],
        40
    );
    let tms = get(&c, "/v1/taskmanagers").await;
    let roles: Vec<(&str, &str)> = tms
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["resource_id"].as_str().unwrap(),
                t["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(roles, vec![("tm-1", "active"), ("tm-2", "standby")]);
    let events = get(&c, "/v1/events").await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"rest-unreachable")
            && kinds.contains(&"rest-reachable")
            && kinds.contains(&"job-state"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn the_api_refuses_requests_without_the_token() {
    let flink = MockServer::start().await;
    let d = tempfile::tempdir().unwrap();
    let c = coordinator(d.path(), &flink.uri()).await;
    let http = reqwest::Client::new();
    for p in [
        "/v1/cluster",
        "/v1/jobs",
        "/v1/taskmanagers",
        "/v1/events",
        "/v1/decisions",
        "/metrics",
    ] {
        let none = http.get(format!("{}{p}", c.api)).send().await.unwrap();
        assert_eq!(none.status(), 401, "{p} without a token");
        let wrong = http
            .get(format!("{}{p}", c.api))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{p} with a wrong token");
        let ok = http
            .get(format!("{}{p}", c.api))
            .bearer_auth(&c.token)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{p} with the token");
    }
    let health = http.get(format!("{}/healthz", c.api)).send().await.unwrap();
    assert_eq!(health.status(), 200, "health is open");
}

#[tokio::test]
async fn an_agents_liveness_becomes_an_observe_only_decision() {
    let flink = MockServer::start().await;
    for m in healthy_flink() {
        m.mount(&flink).await;
    }
    let d = tempfile::tempdir().unwrap();
    let c = coordinator(d.path(), &flink.uri()).await;

    // An agent with the wrong token is refused.
    let bad_token = d.path().join("bad.token");
    std::fs::write(&bad_token, "not-the-token").unwrap();
    let mut cfg = tm_agent(d.path(), "a", &c);
    cfg.token_file = Some(bad_token);
    let impostor = BoundAgent::bind(cfg.clone()).await.unwrap();
    let stop_impostor = CancellationToken::new();
    tokio::spawn(impostor.run(stop_impostor.clone()));
    let m = eventually(&c, "/v1/cluster", Duration::from_secs(5), |_| true).await;
    assert!(m["agents"].as_array().unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = metrics_page(&c).await;
    assert!(
        metrics.contains(
            "streamshield_coordinator_agent_connections_total{result=\"unauthenticated\"}"
        ),
        "{metrics}"
    );
    stop_impostor.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The real one.
    cfg.token_file = Some(c.agent_token_file.clone());
    cfg.listen = Endpoint::Unix(d.path().join("b/plugin.sock"));
    let agent = BoundAgent::bind(cfg).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(agent.run(stop.clone()));
    eventually(&c, "/v1/cluster", Duration::from_secs(5), |v| {
        v["agents"][0]["connected"] == true
    })
    .await;

    // A fake plugin connects, beats, and goes away: the agent reports dead, the coordinator decides.
    let mut p = fake_plugin(&d.path().join("b/plugin.sock"), std::process::id()).await;
    p.send(Message::Heartbeat(Heartbeat { seq: 1, ts_ms: 0 }).to_frame())
        .await
        .unwrap();
    eventually(&c, "/v1/cluster", Duration::from_secs(5), |v| {
        v["agents"][0]["status"]["liveness"] == "alive"
    })
    .await;
    let killed = Instant::now();
    drop(p);
    let decisions = eventually(&c, "/v1/decisions", Duration::from_secs(5), |v| {
        !v.as_array().unwrap().is_empty()
    })
    .await;
    let took = killed.elapsed();
    let d0 = &decisions[0];
    assert_eq!(d0["trigger"], "tm-dead");
    assert_eq!(d0["mode"], "observe-only");
    assert!(
        d0["action"].as_str().unwrap().contains("standby tm-2"),
        "{d0}"
    );
    assert!(took < Duration::from_secs(2), "decision after {took:?}");

    // Losing the agent itself is an event too (its process was already dead: no second decision).
    stop.cancel();
    eventually(&c, "/v1/cluster", Duration::from_secs(5), |v| {
        v["agents"][0]["connected"] == false
    })
    .await;
    let events = get(&c, "/v1/events").await;
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "agent-lost"));
    assert_eq!(get(&c, "/v1/decisions").await.as_array().unwrap().len(), 1);
}

/// A process to watch: `sleep 600`, killed when the guard drops.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pid_alive(pid: u32) -> bool {
    streamshield::host::procfs::stat(pid).is_some_and(|s| !s.gone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_fences_a_stopped_process_and_restarts_it_once_with_its_token() {
    let flink = MockServer::start().await;
    for m in healthy_flink() {
        m.mount(&flink).await;
    }
    let d = tempfile::tempdir().unwrap();
    let policy = PolicyConfig {
        failover: true,
        hang_tolerance: Duration::from_millis(1000),
        gc_tolerance: Duration::from_secs(10),
        ..PolicyConfig::default()
    };
    let c = coordinator_with(d.path(), &flink.uri(), policy.clone()).await;
    let target = Sleeper(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap(),
    );
    let pid = target.0.id();
    let spec = RestartSpec {
        name: "tm-1".into(),
        program: "sleep".into(),
        args: vec!["601".into()],
        cwd: d.path().to_path_buf(),
        env: vec![],
        log: d.path().join("tm-1.log"),
        out: d.path().join("tm-1.out"),
        cgroup: None,
        exact: None,
    };
    std::fs::write(
        d.path().join("restart.json"),
        serde_json::to_string(&spec).unwrap(),
    )
    .unwrap();
    let mut cfg = tm_agent(d.path(), "a", &c);
    cfg.restart_spec = Some(d.path().join("restart.json"));
    let agent = BoundAgent::bind(cfg).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(agent.run(stop.clone()));
    let mut p = fake_plugin(&d.path().join("a/plugin.sock"), pid).await;
    for seq in 1..=5 {
        p.send(Message::Heartbeat(Heartbeat { seq, ts_ms: 0 }).to_frame())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(&c, "/v1/cluster", Duration::from_secs(5), |v| {
        v["agents"][0]["status"]["liveness"] == "alive"
    })
    .await;
    assert!(get(&c, "/v1/decisions")
        .await
        .as_array()
        .unwrap()
        .is_empty());

    // SIGSTOP and no more heartbeats: paused; fenced after the 1 s hang tolerance; then restarted once.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let stopped = Instant::now();
    let decisions = eventually(&c, "/v1/decisions", Duration::from_secs(15), |v| {
        let a = v.as_array().unwrap();
        a.len() >= 2 && a.iter().all(|d| d["outcome"]["outcome"] == "done")
    })
    .await;
    let took = stopped.elapsed();
    let a = decisions.as_array().unwrap();
    assert_eq!(a.len(), 2, "one fence, one restart: {decisions:#}");
    assert_eq!(
        (
            a[0]["trigger"].as_str(),
            a[0]["command"].as_str(),
            a[0]["mode"].as_str()
        ),
        (Some("tm-paused"), Some("fence"), Some("acted"))
    );
    assert_eq!(a[0]["fencing_token"], 1);
    assert!(a[0]["outcome"]["detail"]
        .as_str()
        .unwrap()
        .contains(&pid.to_string()));
    assert_eq!(
        (a[1]["trigger"].as_str(), a[1]["command"].as_str()),
        (Some("tm-dead"), Some("restart"))
    );
    assert!(
        took >= Duration::from_millis(1000),
        "not before the tolerance: {took:?}"
    );
    // The restart waits until Flink runs every job again; the fake Flink shows its job running throughout, so the
    // policy gives Flink 5 s to notice before refilling.
    assert!(
        took < Duration::from_secs(10),
        "fenced and restarted in {took:?}"
    );
    assert!(!pid_alive(pid), "the stopped process was killed");
    let detail = a[1]["outcome"]["detail"].as_str().unwrap().to_string();
    let new_pid: u32 = detail.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(pid_alive(new_pid), "{detail}");
    // Statuses keep arriving for a while: still exactly two decisions (no repeated action).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&c, "/v1/decisions").await.as_array().unwrap().len(), 2);
    let metrics = metrics_page(&c).await;
    assert!(
        metrics
            .contains("streamshield_failover_decisions_total{kind=\"tm-paused\",mode=\"acted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("streamshield_coordinator_epoch 1"),
        "{metrics}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );

    // A second coordinator start takes the next epoch.
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c2 = coordinator_with(d.path(), &flink.uri(), policy).await;
    let m = metrics_page(&c2).await;
    assert!(m.contains("streamshield_coordinator_epoch 2"), "{m}");
    stop.cancel();
}

/// A plugin that holds a SIGTERM: with failover on, the coordinator checkpoints the running job through Flink's REST
/// API and only then releases the stop; the decision records the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_stop_is_released_after_the_running_jobs_checkpointed() {
    use futures_util::StreamExt;
    let flink = MockServer::start().await;
    for m in healthy_flink() {
        m.mount(&flink).await;
    }
    Mock::given(method("POST"))
        .and(path("/jobs/j1/checkpoints"))
        .respond_with(
            ResponseTemplate::new(202).set_body_json(serde_json::json!({"request-id": "t1"})),
        )
        .expect(1)
        .mount(&flink)
        .await;
    // In progress for the first two looks, then completed as checkpoint 42.
    Mock::given(method("GET"))
        .and(path("/jobs/j1/checkpoints/t1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"status": {"id": "IN_PROGRESS"}})),
        )
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&flink)
        .await;
    Mock::given(method("GET"))
        .and(path("/jobs/j1/checkpoints/t1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"status": {"id": "COMPLETED"}, "operation": {"checkpointId": 42}}),
        ))
        .with_priority(2)
        .mount(&flink)
        .await;
    let d = tempfile::tempdir().unwrap();
    let policy = PolicyConfig {
        failover: true,
        ..PolicyConfig::default()
    };
    let c = coordinator_with(d.path(), &flink.uri(), policy).await;
    // The job must be known as running before the stop is announced.
    eventually(&c, "/v1/cluster", Duration::from_secs(5), |v| {
        v["flink"]["jobs"][0]["state"] == "RUNNING"
    })
    .await;
    let cfg = tm_agent(d.path(), "a", &c);
    let agent = BoundAgent::bind(cfg).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(agent.run(stop.clone()));
    let mut p = fake_plugin(&d.path().join("a/plugin.sock"), std::process::id()).await;
    eventually(&c, "/v1/cluster", Duration::from_secs(5), |v| {
        v["agents"][0]["connected"] == true
    })
    .await;
    let announced = Instant::now();
    announce_stop(&mut p).await;
    let ready = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            // The plugin keeps its heartbeats going while it holds the stop.
            tokio::select! {
                f = p.next() => match Message::from_frame(&f.unwrap().unwrap()).unwrap() {
                    Some(Message::StopReady(r)) => break r,
                    _ => continue,
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    p.send(Message::Heartbeat(Heartbeat { seq: 1, ts_ms: 0 }).to_frame()).await.unwrap();
                }
            }
        }
    })
    .await
    .expect("the stop is released");
    assert_eq!(ready.outcome, "checkpointed", "{ready:?}");
    assert!(ready.detail.contains("42"), "{ready:?}");
    // Two status looks of 50 ms each at least: the release waited for the checkpoint.
    assert!(announced.elapsed() >= Duration::from_millis(100));
    let decisions = get(&c, "/v1/decisions").await;
    let a = decisions.as_array().unwrap();
    let d0 = a
        .iter()
        .find(|d| d["trigger"] == "tm-stopping")
        .unwrap_or_else(|| panic!("{decisions:#}"));
    assert_eq!(d0["command"], "checkpoint");
    assert_eq!(d0["mode"], "acted");
    assert_eq!(d0["outcome"]["outcome"], "checkpointed");
    assert_eq!(d0["outcome"]["detail"]["jobs"]["j1"]["checkpoint"], 42);
    stop.cancel();
}
