//! The agent against a hand-written fake plugin over real sockets: handshake, liveness from heartbeats, sockets
//! and /proc (with real stopped, idle and busy processes), metrics, and hostile connections that must not disturb
//! a legitimate plugin connected at the same time.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
mod common;

use common::{announce_stop, fake_plugin};
use streamshield::agent::{AgentConfig, BoundAgent};
use streamshield::host::endpoint::Endpoint;
use streamshield::protocol::handshake;
use streamshield::protocol::{FrameCodec, Heartbeat, Hello, Message, Metric, MetricsBatch, Role};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

fn config(dir: &Path) -> AgentConfig {
    AgentConfig {
        listen: Endpoint::Unix(dir.join("plugin.sock")),
        secret_file: None,
        resource_id: "tm-1".into(),
        watches: Role::Tm,
        pid: None,
        http: "127.0.0.1:0".parse().unwrap(),
        coordinator: None,
        token_file: None,
        suspect_after: Duration::from_millis(300),
        status_interval: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(100),
        stall_timeout: Duration::from_millis(400),
        restart_spec: None,
        jobmanager: None,
        partition_tolerance: Duration::from_secs(3),
    }
}

struct Running {
    http: String,
    shared: std::sync::Arc<streamshield::agent::Shared>,
    sock: std::path::PathBuf,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(cfg: AgentConfig) -> Running {
    let sock = match &cfg.listen {
        Endpoint::Unix(p) => p.clone(),
        Endpoint::Tcp(_) => unreachable!(),
    };
    let agent = BoundAgent::bind(cfg).await.expect("agent binds");
    let http = format!("http://{}", agent.http_addr());
    let shared = agent.shared();
    let stop = CancellationToken::new();
    tokio::spawn(agent.run(stop.clone()));
    Running {
        http,
        shared,
        sock,
        stop,
    }
}

fn hello(protocol: u32, role: Role, pid: u32, secret: Option<String>) -> Hello {
    Hello {
        protocol,
        role,
        resource_id: "tm-1".into(),
        pid,
        flink_version: "1.20.5".into(),
        secret,
    }
}

async fn beat(f: &mut Framed<UnixStream, FrameCodec>, seq: u64) {
    f.send(Message::Heartbeat(Heartbeat { seq, ts_ms: 0 }).to_frame())
        .await
        .unwrap();
}

async fn health(http: &str) -> serde_json::Value {
    reqwest::get(format!("{http}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_liveness(http: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let h = health(http).await;
        if h["liveness"] == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "liveness {} not {want} after {within:?}",
            h["liveness"]
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn metrics(http: &str) -> String {
    reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A process to watch; killed on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn heartbeats_metrics_and_a_closed_socket() {
    let d = tempfile::tempdir().unwrap();
    let a = start(config(d.path())).await;
    assert_eq!(health(&a.http).await["liveness"], "unknown");
    let mut p = fake_plugin(&a.sock, std::process::id()).await;
    beat(&mut p, 1).await;
    wait_liveness(&a.http, "alive", Duration::from_secs(2)).await;
    p.send(
        Message::Metrics(MetricsBatch {
            ts_ms: 1,
            dropped: 7,
            metrics: vec![Metric {
                name: "numRestarts".into(),
                value: 2.0,
                labels: BTreeMap::from([("job_id".into(), "j1".into())]),
            }],
        })
        .to_frame(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = metrics(&a.http).await;
    assert!(
        m.contains("streamshield_flink_num_restarts{resource_id=\"tm-1\",job_id=\"j1\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("streamshield_agent_plugin_dropped_messages{resource_id=\"tm-1\"} 7"),
        "{m}"
    );
    assert!(
        m.contains("streamshield_agent_liveness{resource_id=\"tm-1\",state=\"alive\"} 1"),
        "{m}"
    );

    drop(p); // the process's end, as the agent sees it
    let took = wait_liveness(&a.http, "dead", Duration::from_secs(2)).await;
    assert!(
        took < Duration::from_millis(500),
        "dead reported after {took:?}"
    );

    // A restarted process's plugin connects again: alive, and the coordinator is told (that closes its incident).
    let mut p = fake_plugin(&a.sock, std::process::id()).await;
    beat(&mut p, 1).await;
    wait_liveness(&a.http, "alive", Duration::from_secs(2)).await;
    let pairs: Vec<(String, String)> = a
        .shared
        .lock()
        .pending_events
        .iter()
        .filter(|(_, e)| e.kind == "liveness")
        .map(|(_, e)| (e.detail["from"].to_string(), e.detail["to"].to_string()))
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("\"unknown\"", "\"alive\""),
            ("\"alive\"", "\"dead\""),
            ("\"dead\"", "\"alive\"")
        ]
    );
}

#[tokio::test]
async fn stopped_idle_and_busy_processes() {
    let d = tempfile::tempdir().unwrap();
    let a = start(config(d.path())).await;

    // Stopped (SIGSTOP): paused.
    let sleeper = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    let mut p = fake_plugin(&a.sock, sleeper.0.id()).await;
    beat(&mut p, 1).await;
    wait_liveness(&a.http, "alive", Duration::from_secs(2)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleeper.0.id() as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    wait_liveness(&a.http, "paused", Duration::from_secs(2)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleeper.0.id() as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    // Running but silent and idle: hung.
    wait_liveness(&a.http, "hung", Duration::from_secs(2)).await;
    beat(&mut p, 2).await;
    wait_liveness(&a.http, "alive", Duration::from_secs(2)).await;
    drop(p);
    wait_liveness(&a.http, "dead", Duration::from_secs(2)).await;

    // Silent but burning CPU (what a stop-the-world collection looks like from outside): busy-gc.
    let spinner = Proc(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap(),
    );
    let mut p = fake_plugin(&a.sock, spinner.0.id()).await;
    beat(&mut p, 1).await;
    wait_liveness(&a.http, "alive", Duration::from_secs(2)).await;
    wait_liveness(&a.http, "busy-gc", Duration::from_secs(3)).await;

    // The process exits while its plugin socket is still open: dead from /proc.
    drop(spinner);
    wait_liveness(&a.http, "dead", Duration::from_secs(2)).await;
    drop(p);
}

#[tokio::test]
async fn hostile_connections_are_closed_and_counted_while_the_plugin_keeps_streaming() {
    let d = tempfile::tempdir().unwrap();
    let a = start(config(d.path())).await;
    let mut good = fake_plugin(&a.sock, std::process::id()).await;
    let good_beats = tokio::spawn(async move {
        for seq in 1..=40 {
            beat(&mut good, seq).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        good
    });

    // Random bytes instead of a HELLO (read as an enormous length).
    let mut s = UnixStream::connect(&a.sock).await.unwrap();
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .await
        .unwrap();
    // An oversized frame before the handshake.
    let mut s2 = UnixStream::connect(&a.sock).await.unwrap();
    s2.write_all(&(100_000u32).to_be_bytes()).await.unwrap();
    // A HELLO of another protocol version.
    let s3 = UnixStream::connect(&a.sock).await.unwrap();
    let mut f3 = Framed::new(s3, FrameCodec::default());
    let r = handshake::connect(
        &mut f3,
        hello(99, Role::Tm, 1, None),
        Duration::from_secs(2),
    )
    .await;
    assert!(r.unwrap_err().to_string().contains("protocol version 99"));
    // A JobManager plugin at a TaskManager's agent.
    let s4 = UnixStream::connect(&a.sock).await.unwrap();
    let mut f4 = Framed::new(s4, FrameCodec::default());
    let r = handshake::connect(&mut f4, hello(1, Role::Jm, 1, None), Duration::from_secs(2)).await;
    assert!(r.is_err());
    // A half-written frame, then silence (after a proper handshake).
    let mut half = fake_plugin(&a.sock, std::process::id()).await;
    half.get_mut()
        .write_all(&[0, 0, 0, 50, 10, b'{'])
        .await
        .unwrap();

    let good = good_beats.await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m = metrics(&a.http).await;
    for needle in [
        "result=\"oversized_frame\"",
        "result=\"version_mismatch\"",
        "result=\"rejected\"",
        "reason=\"stalled_frame\"",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    let beats: f64 = m
        .lines()
        .find(|l| {
            l.starts_with(
                "streamshield_agent_frames_total{resource_id=\"tm-1\",kind=\"heartbeat\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        beats >= 40.0,
        "the legitimate plugin's heartbeats all arrived ({beats})"
    );
    drop(good);
    drop((s, s2, f3, f4));
}

#[tokio::test]
async fn tcp_listeners_need_the_secret() {
    let d = tempfile::tempdir().unwrap();
    for bad in [
        AgentConfig {
            stall_timeout: Duration::ZERO,
            restart_spec: None,
            jobmanager: None,
            partition_tolerance: Duration::from_secs(3),
            ..config(d.path())
        },
        AgentConfig {
            status_interval: Duration::ZERO,
            ..config(d.path())
        },
        AgentConfig {
            suspect_after: Duration::from_millis(1),
            ..config(d.path())
        },
        AgentConfig {
            resource_id: String::new(),
            ..config(d.path())
        },
    ] {
        let e = BoundAgent::bind(bad)
            .await
            .err()
            .expect("invalid configuration is refused");
        assert!(
            e.to_string().starts_with("invalid agent configuration"),
            "{e}"
        );
    }
    let mut cfg = config(d.path());
    cfg.listen = Endpoint::Tcp("127.0.0.1:0".into());
    assert!(
        BoundAgent::bind(cfg.clone()).await.is_err(),
        "tcp without a secret file is refused"
    );
    cfg.secret_file = Some(d.path().join("secret"));
    let agent = BoundAgent::bind(cfg).await.unwrap();
    let secret = std::fs::read_to_string(d.path().join("secret")).unwrap();
    assert_eq!(secret.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(d.path().join("secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let Endpoint::Tcp(addr) = agent.plugin_endpoint() else {
        panic!()
    };
    let stop = CancellationToken::new();
    tokio::spawn(agent.run(stop.clone()));
    for (secret, ok) in [
        (None, false),
        (Some("nope".to_string()), false),
        (Some(secret.clone()), true),
    ] {
        let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut f = Framed::new(s, FrameCodec::default());
        let r = handshake::connect(
            &mut f,
            hello(1, Role::Tm, std::process::id(), secret),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(r.is_ok(), ok, "{r:?}");
        if !ok {
            // A refused connection is closed by the agent.
            let end = tokio::time::timeout(Duration::from_secs(2), f.next())
                .await
                .expect("closed promptly");
            assert!(end.is_none() || end.unwrap().is_err());
        }
    }
    stop.cancel();
}

#[tokio::test]
async fn orders_carry_a_fencing_token_and_stale_or_foreign_orders_are_refused() {
    use streamshield::agent::command::{handle, Outcome};
    use streamshield::protocol::message::AgentCommand;
    let d = tempfile::tempdir().unwrap();
    let a = start(config(d.path())).await;
    let order = |epoch: u64, action: &str, rid: &str| AgentCommand {
        id: epoch,
        epoch,
        action: action.into(),
        resource_id: rid.into(),
        pid: None,
        reason: "test".into(),
        ts_ms: 0,
        address: None,
        ports: vec![],
        outcome: None,
    };
    // No process known yet: a fence has nothing to do (done), and raises the epoch seen to 5.
    assert!(matches!(
        handle(&a.shared, &order(5, "fence", "tm-1")),
        Outcome::Done(_)
    ));
    // A replaced coordinator (epoch 3) can no longer act.
    match handle(&a.shared, &order(3, "fence", "tm-1")) {
        Outcome::Refused(why) => assert!(why.contains("stale fencing token"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Orders for another process, unknown actions, and restarts without a restart spec are refused.
    assert!(matches!(
        handle(&a.shared, &order(6, "fence", "tm-2")),
        Outcome::Refused(_)
    ));
    assert!(matches!(
        handle(&a.shared, &order(6, "explode", "tm-1")),
        Outcome::Refused(_)
    ));
    match handle(&a.shared, &order(6, "restart", "tm-1")) {
        Outcome::Refused(why) => assert!(why.contains("restart spec"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Every answer is an event for the coordinator.
    let answered = a
        .shared
        .lock()
        .pending_events
        .iter()
        .filter(|(_, e)| e.kind == "command")
        .count();
    assert_eq!(answered, 5);
}

/// A plugin holding a stop is released at once by an agent that has no coordinator to checkpoint for it, and a
/// `stop-ready` order reaches every open plugin connection.
#[tokio::test]
async fn a_held_stop_is_released_without_a_coordinator_and_on_order() {
    use futures_util::StreamExt;
    use streamshield::agent::command::{handle, Outcome};
    use streamshield::protocol::message::AgentCommand;
    let d = tempfile::tempdir().unwrap();
    let a = start(config(d.path())).await;
    let mut p = fake_plugin(&a.sock, std::process::id()).await;
    announce_stop(&mut p).await;
    async fn next(
        p: &mut Framed<UnixStream, FrameCodec>,
    ) -> streamshield::protocol::message::StopReady {
        let f = tokio::time::timeout(Duration::from_secs(3), p.next())
            .await
            .expect("an answer");
        match Message::from_frame(&f.unwrap().unwrap()).unwrap() {
            Some(Message::StopReady(r)) => r,
            other => panic!("{other:?}"),
        }
    }
    let r = next(&mut p).await;
    assert_eq!(r.outcome, "skipped");
    assert!(r.detail.contains("no link to the coordinator"), "{r:?}");
    let order = AgentCommand {
        id: 1,
        epoch: 1,
        action: "stop-ready".into(),
        resource_id: "tm-1".into(),
        pid: None,
        reason: "checkpoint 9".into(),
        ts_ms: 0,
        address: None,
        ports: vec![],
        outcome: Some("checkpointed".into()),
    };
    // A second link of the same process (opened later): the order reaches both, whichever holds the stop.
    let mut second = fake_plugin(&a.sock, std::process::id()).await;
    assert!(matches!(handle(&a.shared, &order), Outcome::Done(_)));
    for link in [&mut p, &mut second] {
        let r = next(link).await;
        assert_eq!(
            (r.outcome.as_str(), r.detail.as_str()),
            ("checkpointed", "checkpoint 9")
        );
    }
    // No plugin connected: the order says it could not be delivered.
    drop(p);
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(handle(&a.shared, &order), Outcome::Failed(_)));
}
