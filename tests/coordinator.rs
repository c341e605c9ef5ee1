//! The coordinator against a fake Flink REST API (wiremock: 5xx, time-outs, malformed JSON, recovery), its API's
//! authentication (read through the typed client), and real agents (fed by fake plugins) whose liveness events
//! become decisions: observe-only, acted, per job.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
mod common;

use common::{agent_config, announce_stop, fake_plugin, fake_plugin_as, TEST_IDENTITY};
use streamshield::agent::{AgentConfig, BoundAgent};
use streamshield::coordinator::api::Cluster;
use streamshield::coordinator::client::Client;
use streamshield::coordinator::model::Decision;
use streamshield::coordinator::policy::{Mode, Trigger};
use streamshield::coordinator::{BoundCoordinator, CoordinatorConfig};
use streamshield::host::endpoint::Endpoint;
use streamshield::protocol::{Heartbeat, Liveness, Message, Role, StopOutcome};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Coord {
    client: Client,
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

/// The coordinator's keys for a test (over the defaults): everything on free ports in `dir`.
fn coord_config(dir: &Path, flink: &str) -> CoordinatorConfig {
    CoordinatorConfig {
        agents_listen: Some("127.0.0.1:0".into()),
        api_listen: Some("127.0.0.1:0".parse().unwrap()),
        agent_token_file: Some(dir.join("agent.token")),
        api_token_file: Some(dir.join("api.token")),
        flink_rest: Some(flink.to_string()),
        poll_interval: Some(Duration::from_millis(200)),
        epoch_file: Some(dir.join("epoch")),
        ..Default::default()
    }
}

async fn coordinator(dir: &Path, flink: &str) -> Coord {
    start_coordinator(dir, coord_config(dir, flink)).await
}

async fn start_coordinator(dir: &Path, cfg: CoordinatorConfig) -> Coord {
    let c = BoundCoordinator::bind(cfg.resolve(None).unwrap())
        .await
        .unwrap();
    let api = format!("http://{}", c.api_addr());
    let agents = c.agents_addr().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(c.run(stop.clone()));
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    Coord {
        client: Client::new(&api, &token),
        api,
        agents,
        token,
        agent_token_file: dir.join("agent.token"),
        stop,
    }
}

/// The coordinator's /metrics page.
async fn metrics_page(c: &Coord) -> String {
    c.client.metrics().await.unwrap()
}

/// The cluster view once `f` holds.
async fn eventually<F: Fn(&Cluster) -> bool>(c: &Coord, within: Duration, f: F) -> Cluster {
    let start = Instant::now();
    loop {
        let v = c.client.cluster().await.unwrap();
        if f(&v) {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "condition not met within {within:?}: {v:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The decisions once `f` holds.
async fn decisions_when<F: Fn(&[Decision]) -> bool>(
    c: &Coord,
    within: Duration,
    f: F,
) -> Vec<Decision> {
    let start = Instant::now();
    loop {
        let v = c.client.decisions().await.unwrap();
        if f(&v) {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "decisions not as wanted within {within:?}: {v:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The kinds of the coordinator's events once `f` holds for them.
async fn event_kinds_when<F: Fn(&[String]) -> bool>(
    c: &Coord,
    within: Duration,
    f: F,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let kinds: Vec<String> = c
            .client
            .events(0, 500)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        if f(&kinds) {
            return kinds;
        }
        assert!(
            start.elapsed() < within,
            "events not as wanted within {within:?}: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether one of the coordinator's recent Flink poll errors mentions `needle`.
fn recent_error(v: &Cluster, needle: &str) -> bool {
    v.flink
        .recent_errors
        .iter()
        .any(|(_, e)| e.contains(needle))
}

fn liveness(v: &Cluster, rid: &str) -> Option<Liveness> {
    v.process(rid)
        .and_then(|p| p.status.as_ref())
        .map(|s| s.liveness)
}

/// An agent listening under `dir/<sock_dir>/plugin.sock` and reporting to `c` with its token.
fn agent(dir: &Path, sock_dir: &str, c: &Coord) -> AgentConfig {
    AgentConfig {
        id: Some(format!("agent-{sock_dir}")),
        listen: Some(Endpoint::Unix(dir.join(sock_dir).join("plugin.sock"))),
        coordinator: Some(c.agents.clone()),
        token_file: Some(c.agent_token_file.clone()),
        status_interval: Some(Duration::from_millis(100)),
        stall_timeout: Some(Duration::from_secs(10)),
        ..agent_config(dir)
    }
}

async fn start_agent(cfg: AgentConfig) -> CancellationToken {
    let a = BoundAgent::bind_with(cfg.resolve(None).unwrap(), TEST_IDENTITY)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(a.run(stop.clone()));
    stop
}

fn json(v: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(v)
}

/// A job `id` named `name`, running on TaskManager `on`, with `params` as its global job parameters.
fn job_mocks(id: &str, name: &str, on: &str, params: serde_json::Value) -> Vec<Mock> {
    vec![
        Mock::given(method("GET")).and(path(format!("/jobs/{id}"))).respond_with(json(
            serde_json::json!({"jid": id, "name": name, "state": "RUNNING", "timestamps": {"RUNNING": 5},
                               "vertices": [{"id": format!("v-{id}"), "name": "src", "status": "RUNNING", "parallelism": 1}]}),
        )),
        Mock::given(method("GET"))
            .and(path(format!("/jobs/{id}/vertices/v-{id}")))
            .respond_with(json(serde_json::json!({"subtasks": [{"subtask": 0, "taskmanager-id": on}]}))),
        Mock::given(method("GET")).and(path(format!("/jobs/{id}/config"))).respond_with(json(
            serde_json::json!({"jid": id, "name": name, "execution-config": {"user-config": params}}),
        )),
        Mock::given(method("GET"))
            .and(path(format!("/jobs/{id}/checkpoints")))
            .respond_with(json(serde_json::json!({
                "counts": {"restored": 0, "total": 3, "in_progress": 0, "completed": 3, "failed": 0},
                "latest": {"completed": {"id": 3, "latest_ack_timestamp": 1000, "end_to_end_duration": 40}}
            }))),
        Mock::given(method("GET"))
            .and(path(format!("/jobs/{id}/exceptions")))
            .respond_with(json(serde_json::json!({"exceptionHistory": {"entries": []}}))),
    ]
}

/// One job (j1, on tm-1), two TaskManagers (tm-2 a standby), the cluster's configuration `cluster`.
fn healthy_flink_with(cluster: &[(&str, &str)]) -> Vec<Mock> {
    let mut mocks = vec![
        Mock::given(method("GET"))
            .and(path("/jobs/overview"))
            .respond_with(json(
                serde_json::json!({"jobs": [{"jid": "j1", "name": "seq", "state": "RUNNING"}]}),
            )),
        Mock::given(method("GET"))
            .and(path("/taskmanagers"))
            .respond_with(json(serde_json::json!({"taskmanagers": [
            {"id": "tm-1", "slotsNumber": 2, "freeSlots": 0, "timeSinceLastHeartbeat": 1},
            {"id": "tm-2", "slotsNumber": 2, "freeSlots": 2, "timeSinceLastHeartbeat": 1}]}))),
        Mock::given(method("GET"))
            .and(path("/jobmanager/config"))
            .respond_with(json(serde_json::Value::Array(
                cluster
                    .iter()
                    .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                    .collect(),
            ))),
    ];
    mocks.extend(job_mocks("j1", "seq", "tm-1", serde_json::json!({})));
    mocks
}

fn healthy_flink() -> Vec<Mock> {
    healthy_flink_with(&[])
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
    let v = eventually(&c, Duration::from_secs(5), |v| v.flink.polls_failed >= 2).await;
    assert!(!v.flink.reachable);
    assert!(
        v.flink.last_error.as_deref().unwrap().contains("503"),
        "{v:?}"
    );
    // Then malformed JSON.
    Mock::given(method("GET"))
        .and(path("/jobs/overview"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"jobs\": [ {oops"))
        .up_to_n_times(2)
        .mount(&flink)
        .await;
    eventually(&c, Duration::from_secs(5), |v| recent_error(v, "JSON")).await;
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
    eventually(&c, Duration::from_secs(8), |v| recent_error(v, "timed out")).await;
    // Then healthy: the model fills in, with the job's placement and policy.
    for m in healthy_flink() {
        m.mount(&flink).await;
    }
    let v = eventually(&c, Duration::from_secs(10), |v| {
        v.flink.reachable && !v.flink.jobs.is_empty()
    })
    .await;
    let j = &v.flink.jobs[0];
    assert_eq!(j.state, "RUNNING");
    assert_eq!(j.checkpoints.as_ref().unwrap().completed, 3);
    assert_eq!(j.checkpoints.as_ref().unwrap().latest_duration_ms, Some(40));
    assert_eq!(j.taskmanagers, vec!["tm-1".to_string()]);
    assert!(!j.policy.as_ref().unwrap().config.failover);
    let roles: Vec<(String, String)> = v
        .taskmanagers
        .iter()
        .map(|t| (t.resource_id.clone(), t.role.clone()))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("tm-1".into(), "active".into()),
            ("tm-2".into(), "standby".into())
        ]
    );
    // The cluster's configuration is read before each poll that needs it; when the healthy mocks were mounted
    // between the two reads of one poll, the job shows before the cluster's policy does: wait for the events.
    let wanted = [
        "rest-unreachable",
        "rest-reachable",
        "job-state",
        "job-policy",
        "cluster-policy",
    ];
    event_kinds_when(&c, Duration::from_secs(5), |kinds| {
        wanted.iter().all(|k| kinds.iter().any(|x| x == k))
    })
    .await;
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
    let e = Client::new(&c.api, "nope").cluster().await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
}

/// A process to watch: `sleep 600`, killed when the guard drops.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn signal(&self, s: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), s).unwrap();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pid_alive(pid: u32) -> bool {
    streamshield::host::procfs::stat(pid).is_some_and(|s| !s.gone())
}

async fn beat(p: &mut common::Plugin, seq: u64) {
    p.send(Message::Heartbeat(Heartbeat { seq, ts_ms: 0 }).to_frame())
        .await
        .unwrap();
}

#[tokio::test]
async fn observe_only_decisions_say_what_would_be_done_and_when() {
    let flink = MockServer::start().await;
    for m in healthy_flink() {
        m.mount(&flink).await;
    }
    let d = tempfile::tempdir().unwrap();
    let c = coordinator(d.path(), &flink.uri()).await;

    // An agent with the wrong token is refused.
    let bad_token = d.path().join("bad.token");
    std::fs::write(&bad_token, "not-the-token").unwrap();
    let mut cfg = agent(d.path(), "a", &c);
    cfg.token_file = Some(bad_token);
    let stop_impostor = start_agent(cfg.clone()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(c.client.cluster().await.unwrap().agents.is_empty());
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
    let mut cfg = agent(d.path(), "b", &c);
    cfg.token_file = Some(c.agent_token_file.clone());
    let stop = start_agent(cfg).await;
    let target = Sleeper::start();
    let mut p = fake_plugin(&d.path().join("b/plugin.sock"), target.pid()).await;
    beat(&mut p, 1).await;
    let v = eventually(&c, Duration::from_secs(5), |v| {
        liveness(v, "tm-1") == Some(Liveness::Alive)
    })
    .await;
    assert_eq!(v.agents[0].id, "agent-b");
    assert_eq!(v.agents[0].processes, vec!["tm-1".to_string()]);
    assert_eq!(v.mode, "observe-only");

    // Stopped: after the 1 s hang tolerance, a decision that says it would fence, and orders nothing.
    target.signal(nix::sys::signal::Signal::SIGSTOP);
    let stopped = Instant::now();
    let ds = decisions_when(&c, Duration::from_secs(5), |d| !d.is_empty()).await;
    let took = stopped.elapsed();
    let d0 = &ds[0];
    assert_eq!(
        (d0.trigger, d0.mode),
        (Trigger::TmPaused, Mode::ObserveOnly)
    );
    assert!(d0.action.starts_with("would fence"), "{}", d0.action);
    assert!(d0.fencing_token.is_none());
    let policy = d0.policy.as_ref().unwrap();
    assert!(
        policy.basis.contains("observe-only") && policy.basis.contains("seq"),
        "{}",
        policy.basis
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pid_alive(target.pid()), "observe-only never fences");
    target.signal(nix::sys::signal::Signal::SIGCONT);

    // Losing the agent is an event, and a record-only decision (the process was alive).
    beat(&mut p, 2).await;
    eventually(&c, Duration::from_secs(5), |v| {
        liveness(v, "tm-1") == Some(Liveness::Alive)
    })
    .await;
    stop.cancel();
    eventually(&c, Duration::from_secs(5), |v| {
        v.process("tm-1").is_some_and(|p| !p.connected)
    })
    .await;
    let events = c.client.events(0, 500).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "agent-lost"));
    let ds = decisions_when(&c, Duration::from_secs(3), |d| {
        d.iter().any(|x| x.trigger == Trigger::AgentLost)
    })
    .await;
    assert_eq!(
        ds.iter()
            .filter(|x| x.trigger == Trigger::AgentLost)
            .count(),
        1
    );
}

/// Failover on at the cluster level (`streamshield.failover: true` in Flink's configuration, read over REST): a
/// stopped TaskManager is fenced after the hang tolerance and restarted in place, once, by its agent, as /proc says
/// it was started; every order carries the epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_fences_a_stopped_process_and_restarts_it_once_with_its_token() {
    let flink = MockServer::start().await;
    for m in healthy_flink_with(&[("streamshield.failover", "true")]) {
        m.mount(&flink).await;
    }
    let d = tempfile::tempdir().unwrap();
    let c = coordinator(d.path(), &flink.uri()).await;
    let target = Sleeper::start();
    let pid = target.pid();
    let stop = start_agent(agent(d.path(), "a", &c)).await;
    let mut p = fake_plugin(&d.path().join("a/plugin.sock"), pid).await;
    for seq in 1..=5 {
        beat(&mut p, seq).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = eventually(&c, Duration::from_secs(5), |v| {
        liveness(v, "tm-1") == Some(Liveness::Alive)
            && v.flink
                .cluster_policy
                .as_ref()
                .is_some_and(|p| p.config.failover)
    })
    .await;
    assert_eq!(v.mode, "acting");
    assert!(c.client.decisions().await.unwrap().is_empty());

    // SIGSTOP and no more heartbeats: paused; fenced after the 1 s hang tolerance; then restarted once.
    target.signal(nix::sys::signal::Signal::SIGSTOP);
    let stopped = Instant::now();
    let ds = decisions_when(&c, Duration::from_secs(15), |d| {
        d.len() >= 2
            && d.iter()
                .all(|x| x.outcome.as_ref().is_some_and(|o| o["outcome"] == "done"))
    })
    .await;
    let took = stopped.elapsed();
    assert_eq!(ds.len(), 2, "one fence, one restart: {ds:#?}");
    assert_eq!(
        (ds[0].trigger, ds[0].command.as_deref(), ds[0].mode),
        (Trigger::TmPaused, Some("fence"), Mode::Acted)
    );
    assert_eq!(ds[0].fencing_token, Some(1));
    assert!(
        ds[0]
            .policy
            .as_ref()
            .unwrap()
            .basis
            .contains("cluster configuration"),
        "{:?}",
        ds[0].policy
    );
    assert!(ds[0].outcome.as_ref().unwrap()["detail"]
        .as_str()
        .unwrap()
        .contains(&pid.to_string()));
    assert_eq!(
        (ds[1].trigger, ds[1].command.as_deref()),
        (Trigger::TmDead, Some("restart"))
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
    let detail = ds[1].outcome.as_ref().unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    let new_pid: u32 = detail
        .split("as pid ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{detail}"));
    assert!(pid_alive(new_pid), "{detail}");
    assert_eq!(
        streamshield::host::procfs::cmdline(new_pid).unwrap(),
        vec!["sleep", "600"],
        "started as it was"
    );
    // Statuses keep arriving for a while: still exactly two decisions (no repeated action).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.client.decisions().await.unwrap().len(), 2);
    let metrics = metrics_page(&c).await;
    assert!(
        metrics.contains(
            "streamshield_coordinator_decisions_total{kind=\"tm-paused\",mode=\"acted\"} 1"
        ),
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
    let c2 = coordinator(d.path(), &flink.uri()).await;
    let m = metrics_page(&c2).await;
    assert!(m.contains("streamshield_coordinator_epoch 2"), "{m}");
    stop.cancel();
}

/// Two jobs on one cluster whose configuration says failover: job `reports` opts out with a global job parameter.
/// One agent watches both TaskManagers; both are stopped: the one running `payments` is fenced, the one running
/// `reports` only gets an observe-only record; each decision names the policy it followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_s_policy_applies_to_the_taskmanagers_it_runs_on() {
    let flink = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jobs/overview"))
        .respond_with(json(serde_json::json!({"jobs": [
        {"jid": "a1", "name": "payments", "state": "RUNNING"},
        {"jid": "b2", "name": "reports", "state": "RUNNING"}]})))
        .mount(&flink)
        .await;
    Mock::given(method("GET"))
        .and(path("/taskmanagers"))
        .respond_with(json(serde_json::json!({"taskmanagers": [
        {"id": "tm-1", "slotsNumber": 1, "freeSlots": 0, "timeSinceLastHeartbeat": 1},
        {"id": "tm-2", "slotsNumber": 1, "freeSlots": 0, "timeSinceLastHeartbeat": 1},
        {"id": "tm-3", "slotsNumber": 1, "freeSlots": 1, "timeSinceLastHeartbeat": 1}]})))
        .mount(&flink)
        .await;
    Mock::given(method("GET"))
        .and(path("/jobmanager/config"))
        .respond_with(json(
            serde_json::json!([{"key": "streamshield.failover", "value": "true"}]),
        ))
        .mount(&flink)
        .await;
    for m in job_mocks("a1", "payments", "tm-1", serde_json::json!({}))
        .into_iter()
        .chain(job_mocks(
            "b2",
            "reports",
            "tm-2",
            serde_json::json!({"streamshield.failover": "false"}),
        ))
    {
        m.mount(&flink).await;
    }
    let d = tempfile::tempdir().unwrap();
    let c = coordinator(d.path(), &flink.uri()).await;
    let stop = start_agent(agent(d.path(), "host", &c)).await;
    let sock = d.path().join("host/plugin.sock");
    let (t1, t2) = (Sleeper::start(), Sleeper::start());
    let mut p1 = fake_plugin_as(&sock, "tm-1", Role::Tm, t1.pid())
        .await
        .unwrap();
    let mut p2 = fake_plugin_as(&sock, "tm-2", Role::Tm, t2.pid())
        .await
        .unwrap();
    beat(&mut p1, 1).await;
    beat(&mut p2, 1).await;
    let v = eventually(&c, Duration::from_secs(5), |v| {
        liveness(v, "tm-1") == Some(Liveness::Alive)
            && liveness(v, "tm-2") == Some(Liveness::Alive)
            && v.flink.jobs.len() == 2
            && v.flink.jobs.iter().all(|j| j.policy.is_some())
    })
    .await;
    assert_eq!(v.agents.len(), 1, "one agent for both");
    let reports = v.flink.jobs.iter().find(|j| j.name == "reports").unwrap();
    assert!(!reports.failover());
    assert_eq!(
        reports.policy.as_ref().unwrap().failover_source(),
        streamshield::coordinator::policy::Source::Job
    );
    let payments = v.flink.jobs.iter().find(|j| j.name == "payments").unwrap();
    assert!(payments.failover());
    t1.signal(nix::sys::signal::Signal::SIGSTOP);
    t2.signal(nix::sys::signal::Signal::SIGSTOP);
    let ds = decisions_when(&c, Duration::from_secs(8), |d| {
        d.iter()
            .any(|x| x.resource_id == "tm-1" && x.trigger == Trigger::TmPaused)
            && d.iter()
                .any(|x| x.resource_id == "tm-2" && x.trigger == Trigger::TmPaused)
    })
    .await;
    let d1 = ds
        .iter()
        .find(|x| x.resource_id == "tm-1" && x.trigger == Trigger::TmPaused)
        .unwrap();
    let d2 = ds
        .iter()
        .find(|x| x.resource_id == "tm-2" && x.trigger == Trigger::TmPaused)
        .unwrap();
    assert_eq!(d1.mode, Mode::Acted);
    assert!(
        d1.policy.as_ref().unwrap().basis.contains("payments"),
        "{:?}",
        d1.policy
    );
    assert_eq!(d2.mode, Mode::ObserveOnly);
    let b2 = d2.policy.as_ref().unwrap();
    assert!(
        b2.basis.contains("reports") && b2.basis.contains("job configuration"),
        "{}",
        b2.basis
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pid_alive(t1.pid()), "tm-1 fenced");
    assert!(pid_alive(t2.pid()), "tm-2 left alone");
    t2.signal(nix::sys::signal::Signal::SIGCONT);
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
    let mut cfg = coord_config(d.path(), &flink.uri());
    cfg.failover = Some(true);
    let c = start_coordinator(d.path(), cfg).await;
    // The job must be known as running (with its policy) before the stop is announced.
    eventually(&c, Duration::from_secs(5), |v| {
        v.flink
            .jobs
            .first()
            .is_some_and(|j| j.state == "RUNNING" && j.failover())
    })
    .await;
    let stop = start_agent(agent(d.path(), "a", &c)).await;
    let mut p = fake_plugin(&d.path().join("a/plugin.sock"), std::process::id()).await;
    eventually(&c, Duration::from_secs(5), |v| {
        v.agents
            .first()
            .is_some_and(|a| a.connected && !a.processes.is_empty())
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
                _ = tokio::time::sleep(Duration::from_millis(100)) => beat(&mut p, 1).await,
            }
        }
    })
    .await
    .expect("the stop is released");
    assert_eq!(ready.outcome, StopOutcome::Checkpointed, "{ready:?}");
    assert!(ready.detail.contains("42"), "{ready:?}");
    // Two status looks of 50 ms each at least: the release waited for the checkpoint.
    assert!(announced.elapsed() >= Duration::from_millis(100));
    let ds = c.client.decisions().await.unwrap();
    let d0 = ds
        .iter()
        .find(|d| d.trigger == Trigger::TmStopping)
        .unwrap_or_else(|| panic!("{ds:#?}"));
    assert_eq!(d0.command.as_deref(), Some("checkpoint"));
    assert_eq!(d0.mode, Mode::Acted);
    let outcome = d0.outcome.as_ref().unwrap();
    assert_eq!(outcome["outcome"], "checkpointed");
    assert_eq!(outcome["detail"]["jobs"]["j1"]["checkpoint"], 42);
    stop.cancel();
}

/// The state of a watchdog target as the coordinator shows it for agent `agent-a`.
fn watchdog_state(
    v: &Cluster,
    target: &str,
) -> Option<streamshield::protocol::watchdog::WatchdogChange> {
    v.agents
        .iter()
        .find(|a| a.id == "agent-a")
        .and_then(|a| a.watchdogs.get(target).cloned())
}

/// A coordinator that starts after a target's last transition (a restart, a new leader) still learns its state:
/// the agent sends every target's current state when it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_coordinator_learns_the_watchdog_states_when_the_agent_connects() {
    use streamshield::protocol::watchdog::TargetState;
    let flink = MockServer::start().await;
    for m in healthy_flink() {
        m.mount(&flink).await;
    }
    let d = tempfile::tempdir().unwrap();
    let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let c1 = coordinator(d.path(), &flink.uri()).await;
    let mut cfg = agent(d.path(), "a", &c1);
    cfg.watchdog_targets = Some(vec![format!("api=http://127.0.0.1:{port}/health")
        .parse()
        .unwrap()]);
    cfg.watchdog_interval = Some(Duration::from_millis(100));
    let stop = start_agent(cfg).await;
    eventually(&c1, Duration::from_secs(10), |v| {
        watchdog_state(v, "api").is_some_and(|w| w.to == TargetState::Healthy)
    })
    .await;

    // The coordinator is replaced by a new one on the same address; the target does not change.
    let agents_addr = c1.agents.clone();
    drop(c1);
    let mut cfg2 = coord_config(d.path(), &flink.uri());
    cfg2.agents_listen = Some(agents_addr);
    let start = Instant::now();
    let bound = loop {
        match BoundCoordinator::bind(cfg2.clone().resolve(None).unwrap()).await {
            Ok(b) => break b,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                eprintln!("waiting for the old coordinator's port: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the new coordinator cannot bind: {e}"),
        }
    };
    let api = format!("http://{}", bound.api_addr());
    let stop2 = CancellationToken::new();
    tokio::spawn(bound.run(stop2.clone()));
    let token = std::fs::read_to_string(d.path().join("api.token")).unwrap();
    let client = Client::new(&api, &token);
    let start = Instant::now();
    let w = loop {
        let v = client.cluster().await.unwrap();
        if let Some(w) = watchdog_state(&v, "api") {
            break w;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the new coordinator never learned the target: {v:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((w.from, w.to), (TargetState::Healthy, TargetState::Healthy));
    assert!(w.evidence.starts_with("HTTP 200"), "{}", w.evidence);
    stop.cancel();
    stop2.cancel();
    server.abort();
}
