//! The agent's connector watchdogs against real systems started on loopback (issue 17): a 3-broker KRaft Kafka
//! cluster, Redis, ZooKeeper and an HTTP server. Faults are real signals to processes the test started: SIGSTOP (a
//! hung system: connections accepted, no answers), SIGKILL (refused). Each test checks the state, the evidence, the
//! members, the `watchdog` events queued for the coordinator and the metrics.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use streamshield::agent::watchdog::Status;
use streamshield::agent::{BoundAgent, Shared};
use streamshield::local::sinks::{self, Sinks};
use streamshield::protocol::watchdog::{TargetState, WatchdogChange};
use streamshield::protocol::EventKind;

use common::standalone::free_port;

struct Agent {
    shared: Arc<Shared>,
    http: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn agent(targets: &[&str]) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::agent_config(dir.path());
    cfg.watchdog_targets = Some(targets.iter().map(|t| t.parse().unwrap()).collect());
    cfg.watchdog_interval = Some(Duration::from_millis(200));
    cfg.watchdog_timeout = Some(Duration::from_millis(1000));
    let bound = BoundAgent::bind_with(cfg.resolve(None).unwrap(), common::TEST_IDENTITY)
        .await
        .expect("agent binds");
    let http = format!("http://{}", bound.http_addr());
    let shared = bound.shared();
    let stop = CancellationToken::new();
    tokio::spawn(bound.run(stop.clone()));
    Agent {
        shared,
        http,
        stop,
        _dir: dir,
    }
}

/// Waits until `target`'s status satisfies `ok`; returns it and how long it took.
async fn wait(
    a: &Agent,
    target: &str,
    what: &str,
    ok: impl Fn(&Status) -> bool,
) -> (Status, Duration) {
    let start = Instant::now();
    loop {
        let s = a.shared.lock().watchdogs.get(target).cloned();
        if let Some(s) = s.filter(|s| ok(s)) {
            eprintln!(
                "{target}: {what} after {:?}: {} ({})",
                start.elapsed(),
                s.state,
                s.evidence
            );
            return (s, start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(30) {
            panic!(
                "{target}: not {what} within 30 s: {:?}",
                a.shared.lock().watchdogs.get(target)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_is(s: TargetState) -> impl Fn(&Status) -> bool {
    move |st| st.state == s
}

/// The `watchdog` events queued for the coordinator about `target`, as (from, to).
fn events(a: &Agent, target: &str) -> Vec<(TargetState, TargetState)> {
    a.shared
        .lock()
        .pending_events
        .iter()
        .filter(|(_, e)| e.kind == EventKind::Watchdog)
        .filter_map(|(_, e)| e.detail_as::<WatchdogChange>())
        .filter(|c| c.target == target)
        .map(|c| (c.from, c.to))
        .collect()
}

async fn metrics(a: &Agent) -> String {
    reqwest::get(format!("{}/metrics", a.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_watchdog_tells_a_hung_broker_from_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut sinks = Sinks::default();
    let ports = [free_port(), free_port(), free_port()];
    let cports = [free_port(), free_port(), free_port()];
    let cluster = sinks::start_kafka(&mut sinks, dir.path(), &ports, &cports)
        .await
        .expect("sink Kafka starts");
    streamshield::kafka::ensure_topic_replicated(&cluster.bootstrap(), "guarded-out", 6, 3)
        .await
        .unwrap();
    // Only the first broker as bootstrap: the watchdog learns the others from the metadata.
    let a = agent(&[&format!("sink=kafka://127.0.0.1:{}", ports[0])]).await;
    let (s, _) = wait(&a, "sink", "healthy with 3 brokers", |s| {
        s.state == TargetState::Healthy && s.members.iter().filter(|m| m.up).count() == 3
    })
    .await;
    assert!(
        s.members
            .iter()
            .any(|m| m.name == format!("2@127.0.0.1:{}", ports[1])),
        "{:?}",
        s.members
    );

    assert!(cluster.brokers[1].signal(Signal::SIGSTOP));
    let (s, took) = wait(&a, "sink", "degraded with broker 2 hung", |s| {
        s.state == TargetState::Degraded
            && s.members.iter().any(|m| m.name.starts_with("2@") && !m.up)
    })
    .await;
    let b2 = s.members.iter().find(|m| m.name.starts_with("2@")).unwrap();
    assert!(b2.evidence.contains("hung: no answer within 1s"), "{b2:?}");
    assert!(
        s.evidence.contains("1 of 3 brokers not answering"),
        "{}",
        s.evidence
    );
    assert!(
        took < Duration::from_secs(5),
        "a hung broker took {took:?} to show"
    );
    let page = metrics(&a).await;
    assert!(
        page.contains(&format!(
            r#"streamshield_watchdog_member_up{{member="2@127.0.0.1:{}",target="sink"}} 0"#,
            ports[1]
        )),
        "{page}"
    );
    assert!(page
        .contains(r#"streamshield_watchdog_state{kind="kafka",state="degraded",target="sink"} 1"#));

    assert!(cluster.brokers[1].signal(Signal::SIGCONT));
    wait(&a, "sink", "healthy again", |s| {
        s.state == TargetState::Healthy && s.members.iter().all(|m| m.up)
    })
    .await;

    assert!(cluster.brokers[2].signal(Signal::SIGKILL));
    let (s, _) = wait(&a, "sink", "degraded with broker 3 refusing", |s| {
        s.members.iter().any(|m| m.name.starts_with("3@") && !m.up)
    })
    .await;
    let b3 = s.members.iter().find(|m| m.name.starts_with("3@")).unwrap();
    assert!(b3.evidence.contains("refused"), "{b3:?}");
    assert_eq!(s.state, TargetState::Degraded);
    // Once the controller has fenced broker 3 it leaves the metadata's broker list, and its partitions' ISRs: the
    // cluster is still degraded, now by its under-replicated partitions.
    let (s, _) = wait(&a, "sink", "degraded by under-replication", |s| {
        s.evidence.contains("of 6 partitions under-replicated")
    })
    .await;
    assert_eq!(s.state, TargetState::Degraded);

    sinks.stop(Duration::from_secs(5)).await;
    let (s, _) = wait(&a, "sink", "down", state_is(TargetState::Down)).await;
    assert!(
        s.evidence.starts_with("no broker answered"),
        "{}",
        s.evidence
    );
    let ev = events(&a, "sink");
    use TargetState::*;
    assert_eq!(ev.first(), Some(&(Unknown, Healthy)), "{ev:?}");
    assert!(
        ev.contains(&(Healthy, Degraded)) && ev.contains(&(Degraded, Healthy)),
        "{ev:?}"
    );
    assert_eq!(ev.last(), Some(&(Degraded, Down)), "{ev:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_watchdog_sees_a_stopped_and_a_killed_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut sinks = Sinks::default();
    let redis = sinks::start_redis(&mut sinks, dir.path(), free_port())
        .await
        .expect("redis starts");
    let a = agent(&[&format!("cache={}", redis.url())]).await;
    wait(&a, "cache", "healthy", state_is(TargetState::Healthy)).await;

    assert!(redis.proc.signal(Signal::SIGSTOP));
    let stopped = Instant::now();
    let (s, _) = wait(&a, "cache", "down", state_is(TargetState::Down)).await;
    assert!(s.evidence.contains("hung"), "{}", s.evidence);
    // Two failed probes of 1 s each, 200 ms apart, plus the probe in flight.
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopped.elapsed()
    );

    assert!(redis.proc.signal(Signal::SIGCONT));
    wait(&a, "cache", "healthy again", state_is(TargetState::Healthy)).await;

    assert!(redis.proc.signal(Signal::SIGKILL));
    let (s, _) = wait(&a, "cache", "down", state_is(TargetState::Down)).await;
    assert!(s.evidence.contains("refused"), "{}", s.evidence);
    let page = metrics(&a).await;
    assert!(
        page.contains(r#"streamshield_watchdog_state{kind="redis",state="down",target="cache"} 1"#),
        "{page}"
    );
    assert!(page.contains(r#"streamshield_watchdog_probe_seconds_count{target="cache"}"#));
    use TargetState::*;
    assert_eq!(
        events(&a, "cache"),
        [
            (Unknown, Healthy),
            (Healthy, Degraded),
            (Degraded, Down),
            (Down, Healthy),
            (Healthy, Degraded),
            (Degraded, Down)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_watchdog_reads_status_and_time() {
    // 0: 200, 1: 503, 2: answers after 3 s.
    let mode = Arc::new(AtomicU8::new(0));
    let m = mode.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let m = m.clone();
            async move {
                match m.load(Ordering::SeqCst) {
                    0 => (axum::http::StatusCode::OK, "ok"),
                    1 => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy"),
                    _ => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        (axum::http::StatusCode::OK, "late")
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let a = agent(&[&format!("api=http://127.0.0.1:{port}/health")]).await;
    wait(&a, "api", "healthy", state_is(TargetState::Healthy)).await;
    mode.store(1, Ordering::SeqCst);
    let (s, _) = wait(&a, "api", "down", state_is(TargetState::Down)).await;
    assert!(s.evidence.starts_with("HTTP 503 in"), "{}", s.evidence);
    mode.store(0, Ordering::SeqCst);
    wait(&a, "api", "healthy", state_is(TargetState::Healthy)).await;
    mode.store(2, Ordering::SeqCst);
    let (s, _) = wait(&a, "api", "down", state_is(TargetState::Down)).await;
    assert!(
        s.evidence.contains("hung: no answer within 1s"),
        "{}",
        s.evidence
    );
    mode.store(0, Ordering::SeqCst);
    wait(&a, "api", "healthy", state_is(TargetState::Healthy)).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_watchdog_counts_a_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut sinks = Sinks::default();
    let port = free_port();
    let zk = sinks::start_zookeeper(&mut sinks, dir.path(), port)
        .await
        .expect("zookeeper starts");
    // The same server alone, and as one of three where the other two do not exist: no majority.
    let a = agent(&[
        &format!("zk=zookeeper://127.0.0.1:{port}"),
        &format!(
            "ensemble=zk://127.0.0.1:{port},127.0.0.1:{},127.0.0.1:{}",
            free_port(),
            free_port()
        ),
    ])
    .await;
    let (s, _) = wait(&a, "zk", "healthy", state_is(TargetState::Healthy)).await;
    assert!(
        s.members[0].evidence.starts_with("standalone"),
        "{:?}",
        s.members
    );
    let (s, _) = wait(&a, "ensemble", "down", state_is(TargetState::Down)).await;
    assert!(
        s.evidence.starts_with("1 of 3 servers serving, 2 needed"),
        "{}",
        s.evidence
    );

    assert!(zk.signal(Signal::SIGSTOP));
    let (s, _) = wait(&a, "zk", "down", state_is(TargetState::Down)).await;
    assert!(s.evidence.contains("hung"), "{}", s.evidence);
    assert!(zk.signal(Signal::SIGCONT));
    wait(&a, "zk", "healthy again", state_is(TargetState::Healthy)).await;
}
