//! The agent against hand-written fake plugins over real sockets: handshake and the checks of what a HELLO claims,
//! several processes behind one agent, liveness from heartbeats, sockets and /proc (with real stopped, idle and busy
//! processes), metrics, orders with fencing tokens, restart in place from /proc, and hostile connections that must
//! not disturb a legitimate plugin connected at the same time.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
mod common;

use common::{
    agent_config, agent_settings, announce_stop, fake_plugin, fake_plugin_as, TEST_IDENTITY,
};
use streamshield::agent::http::Health;
use streamshield::agent::{AgentSettings, BoundAgent, IdentityChecks};
use streamshield::host::endpoint::Endpoint;
use streamshield::protocol::handshake;
use streamshield::protocol::message::AgentCommand;
use streamshield::protocol::{
    Action, EventKind, FrameCodec, Heartbeat, Hello, Liveness, Message, Metric, MetricsBatch, Role,
    StopOutcome,
};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

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

async fn start_with(cfg: AgentSettings, identity: IdentityChecks) -> Running {
    let Endpoint::Unix(sock) = cfg.listen.clone() else {
        unreachable!()
    };
    let agent = BoundAgent::bind_with(cfg, identity)
        .await
        .expect("agent binds");
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

async fn start(dir: &Path) -> Running {
    start_with(agent_settings(dir), TEST_IDENTITY).await
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

async fn health(http: &str) -> Health {
    reqwest::get(format!("{http}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn liveness_of(h: &Health, rid: &str) -> Liveness {
    h.process(rid).map_or(Liveness::Unknown, |p| p.liveness)
}

async fn wait_liveness_of(http: &str, rid: &str, want: Liveness, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let h = health(http).await;
        if liveness_of(&h, rid) == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{rid}: liveness {} not {want} after {within:?}",
            liveness_of(&h, rid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_liveness(http: &str, want: Liveness, within: Duration) -> Duration {
    wait_liveness_of(http, "tm-1", want, within).await
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

fn order(epoch: u64, action: Action, rid: &str) -> AgentCommand {
    AgentCommand {
        id: epoch,
        epoch,
        action,
        resource_id: rid.into(),
        pid: None,
        reason: "test".into(),
        ts_ms: 0,
        address: None,
        ports: vec![],
        outcome: None,
    }
}

#[tokio::test]
async fn heartbeats_metrics_and_a_closed_socket() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path()).await;
    assert!(
        health(&a.http).await.processes.is_empty(),
        "nothing is watched before a plugin links"
    );
    let mut p = fake_plugin(&a.sock, std::process::id()).await;
    beat(&mut p, 1).await;
    wait_liveness(&a.http, Liveness::Alive, Duration::from_secs(2)).await;
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
    for needle in [
        "streamshield_flink_num_restarts{job_id=\"j1\",resource_id=\"tm-1\"} 2",
        "streamshield_agent_plugin_dropped_messages{resource_id=\"tm-1\"} 7",
        "streamshield_agent_liveness{resource_id=\"tm-1\",state=\"alive\"} 1",
        "streamshield_agent_processes 1",
    ] {
        assert!(m.contains(needle), "{needle} in {m}");
    }

    drop(p); // the process's end, as the agent sees it
    let took = wait_liveness(&a.http, Liveness::Dead, Duration::from_secs(2)).await;
    assert!(
        took < Duration::from_millis(500),
        "dead reported after {took:?}"
    );

    // A restarted process's plugin connects again: alive, and the coordinator is told (that closes its incident).
    let mut p = fake_plugin(&a.sock, std::process::id()).await;
    beat(&mut p, 1).await;
    wait_liveness(&a.http, Liveness::Alive, Duration::from_secs(2)).await;
    let pairs: Vec<(Liveness, Liveness)> = a
        .shared
        .lock()
        .pending_events
        .iter()
        .filter(|(_, e)| e.kind == EventKind::Liveness)
        .filter_map(|(_, e)| e.detail_as::<streamshield::protocol::vocab::LivenessChange>())
        .map(|c| (c.from, c.to))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (Liveness::Unknown, Liveness::Alive),
            (Liveness::Alive, Liveness::Dead),
            (Liveness::Dead, Liveness::Alive)
        ]
    );
}

/// One agent watches every Flink process of its host: each plugin is its own process, with its own liveness.
#[tokio::test]
async fn one_agent_watches_several_processes() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path()).await;
    let tm2 = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    let mut p1 = fake_plugin(&a.sock, std::process::id()).await;
    let mut p2 = fake_plugin_as(&a.sock, "127.0.0.1:40123-a1b2c3", Role::Tm, tm2.0.id())
        .await
        .unwrap();
    let mut jm = fake_plugin_as(&a.sock, "jobmanager", Role::Jm, std::process::id())
        .await
        .unwrap();
    for p in [&mut p1, &mut p2, &mut jm] {
        beat(p, 1).await;
    }
    for rid in ["tm-1", "127.0.0.1:40123-a1b2c3", "jobmanager"] {
        wait_liveness_of(&a.http, rid, Liveness::Alive, Duration::from_secs(2)).await;
    }
    let h = health(&a.http).await;
    assert_eq!(h.processes.len(), 3);
    assert_eq!(h.process("jobmanager").unwrap().watches, Role::Jm);
    // The second TaskManager stops beating and its process is stopped: only it is paused.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tm2.0.id() as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    for p in [&mut p1, &mut jm] {
        for seq in 2..8 {
            beat(p, seq).await;
        }
    }
    let keep = tokio::spawn(async move {
        for seq in 8..30 {
            beat(&mut p1, seq).await;
            beat(&mut jm, seq).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (p1, jm)
    });
    wait_liveness_of(
        &a.http,
        "127.0.0.1:40123-a1b2c3",
        Liveness::Paused,
        Duration::from_secs(2),
    )
    .await;
    let h = health(&a.http).await;
    assert_eq!(liveness_of(&h, "tm-1"), Liveness::Alive);
    assert_eq!(liveness_of(&h, "jobmanager"), Liveness::Alive);
    let _ = keep.await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tm2.0.id() as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    drop(p2);
}

/// What a HELLO claims is checked against the kernel: the claimed pid must be a Java process and the one that
/// connected; a resource id held by another live process is refused; each refusal is counted and reported.
#[tokio::test]
async fn a_plugin_s_claims_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let a = start_with(agent_settings(d.path()), IdentityChecks::default()).await;
    // Not a JVM: this test process, and a sleep.
    let sleeper = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    for pid in [std::process::id(), sleeper.0.id()] {
        let e = fake_plugin_as(&a.sock, "tm-1", Role::Tm, pid)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("pid {pid} is not a Java process")),
            "{e}"
        );
    }
    // A real JVM, but the connection comes from this process.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Sleep.java");
    std::fs::write(&src, "public class Sleep { public static void main(String[] a) throws Exception { Thread.sleep(60000); } }").unwrap();
    let jvm = Proc(
        Command::new("java")
            .arg(&src)
            .spawn()
            .expect("java on PATH"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = fake_plugin_as(&a.sock, "tm-1", Role::Tm, jvm.0.id())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "the connection comes from pid {}, not from pid {}",
            std::process::id(),
            jvm.0.id()
        )),
        "{e}"
    );
    assert!(fake_plugin_as(&a.sock, "tm-1", Role::Tm, 0).await.is_err());
    let m = metrics(&a.http).await;
    assert!(
        m.contains("streamshield_agent_plugin_connections_total{result=\"identity\"} 4"),
        "{m}"
    );
    let refused = a
        .shared
        .lock()
        .pending_events
        .iter()
        .filter(|(_, e)| e.kind == EventKind::PluginRefused)
        .count();
    assert_eq!(refused, 4);

    // With the pid checks relaxed (a test's fake plugin), a resource id already held by a live process is refused.
    let bdir = tempfile::tempdir().unwrap();
    let b = start_with(agent_settings(bdir.path()), TEST_IDENTITY).await;
    let _first = fake_plugin_as(&b.sock, "tm-9", Role::Tm, sleeper.0.id())
        .await
        .unwrap();
    let e = fake_plugin_as(&b.sock, "tm-9", Role::Tm, std::process::id())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already used by pid"), "{e}");
    // ...but the same process reconnecting is welcome.
    fake_plugin_as(&b.sock, "tm-9", Role::Tm, sleeper.0.id())
        .await
        .unwrap();
}

#[tokio::test]
async fn stopped_idle_and_busy_processes() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path()).await;

    // Stopped (SIGSTOP): paused.
    let sleeper = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    let mut p = fake_plugin(&a.sock, sleeper.0.id()).await;
    beat(&mut p, 1).await;
    wait_liveness(&a.http, Liveness::Alive, Duration::from_secs(2)).await;
    let pid = nix::unistd::Pid::from_raw(sleeper.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    wait_liveness(&a.http, Liveness::Paused, Duration::from_secs(2)).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    // Running but silent and idle: hung.
    wait_liveness(&a.http, Liveness::Hung, Duration::from_secs(2)).await;
    beat(&mut p, 2).await;
    wait_liveness(&a.http, Liveness::Alive, Duration::from_secs(2)).await;
    drop(p);
    wait_liveness(&a.http, Liveness::Dead, Duration::from_secs(2)).await;
    // Its process is gone too (a second process may then take its resource id).
    drop(sleeper);

    // Silent but burning CPU (what a stop-the-world collection looks like from outside): busy-gc.
    let spinner = Proc(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap(),
    );
    let mut p = fake_plugin(&a.sock, spinner.0.id()).await;
    beat(&mut p, 1).await;
    wait_liveness(&a.http, Liveness::Alive, Duration::from_secs(2)).await;
    wait_liveness(&a.http, Liveness::BusyGc, Duration::from_secs(3)).await;

    // The process exits while its plugin socket is still open: dead from /proc.
    drop(spinner);
    wait_liveness(&a.http, Liveness::Dead, Duration::from_secs(2)).await;
    drop(p);
}

#[tokio::test]
async fn hostile_connections_are_closed_and_counted_while_the_plugin_keeps_streaming() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = agent_config(d.path());
    cfg.roles = Some(vec![Role::Tm]);
    let a = start_with(cfg.resolve(None).unwrap(), TEST_IDENTITY).await;
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
    // A JobManager plugin at an agent configured for TaskManagers only.
    let s4 = UnixStream::connect(&a.sock).await.unwrap();
    let mut f4 = Framed::new(s4, FrameCodec::default());
    let r = handshake::connect(&mut f4, hello(1, Role::Jm, 1, None), Duration::from_secs(2)).await;
    assert!(r.is_err());
    // A half-written frame, then silence (after a proper handshake).
    let mut half = fake_plugin_as(&a.sock, "tm-2", Role::Tm, std::process::id())
        .await
        .unwrap();
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
        .find(|l| l.starts_with("streamshield_agent_frames_total{kind=\"heartbeat\"}"))
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
    let mut cfg = agent_config(d.path());
    cfg.listen = Some(Endpoint::Tcp("127.0.0.1:0".into()));
    let e = cfg.clone().resolve(None).unwrap_err();
    assert!(
        e.to_string().contains("secret-file"),
        "tcp without a secret file is refused: {e}"
    );
    cfg.secret_file = Some(d.path().join("secret"));
    let agent = BoundAgent::bind_with(cfg.resolve(None).unwrap(), TEST_IDENTITY)
        .await
        .unwrap();
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

/// On TCP the agent finds the connecting process through /proc: a HELLO claiming another pid is refused.
#[tokio::test]
async fn a_tcp_plugin_is_the_process_that_connected() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = agent_config(d.path());
    cfg.listen = Some(Endpoint::Tcp("127.0.0.1:0".into()));
    cfg.secret_file = Some(d.path().join("secret"));
    let identity = IdentityChecks {
        claimed_pid_is_jvm: false,
        ..IdentityChecks::default()
    };
    let agent = BoundAgent::bind_with(cfg.resolve(None).unwrap(), identity)
        .await
        .unwrap();
    let secret = std::fs::read_to_string(d.path().join("secret")).unwrap();
    let Endpoint::Tcp(addr) = agent.plugin_endpoint() else {
        panic!()
    };
    let stop = CancellationToken::new();
    tokio::spawn(agent.run(stop.clone()));
    let sleeper = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    for (pid, ok) in [(sleeper.0.id(), false), (std::process::id(), true)] {
        let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut f = Framed::new(s, FrameCodec::default());
        let r = handshake::connect(
            &mut f,
            hello(1, Role::Tm, pid, Some(secret.clone())),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(r.is_ok(), ok, "{pid}: {r:?}");
        if !ok {
            assert!(r
                .unwrap_err()
                .to_string()
                .contains("the connection comes from pid"));
        }
    }
    stop.cancel();
}

#[tokio::test]
async fn orders_carry_a_fencing_token_and_stale_or_foreign_orders_are_refused() {
    use streamshield::agent::command::{handle, Outcome};
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path()).await;
    // Nothing watched yet: refused, without raising the epoch seen.
    match handle(&a.shared, &order(9, Action::Fence, "tm-1")) {
        Outcome::Refused(why) => assert!(why.contains("does not watch tm-1"), "{why}"),
        other => panic!("{other:?}"),
    }
    let sleeper = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    let _p = fake_plugin(&a.sock, sleeper.0.id()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fence for another pid than the one watched is refused; epoch 5 is seen.
    let mut wrong = order(5, Action::Fence, "tm-1");
    wrong.pid = Some(1);
    assert!(matches!(handle(&a.shared, &wrong), Outcome::Refused(_)));
    // A replaced coordinator (epoch 3) can no longer act.
    match handle(&a.shared, &order(3, Action::Fence, "tm-1")) {
        Outcome::Refused(why) => assert!(why.contains("stale fencing token"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Orders for another process are refused; a restart of a running process too.
    assert!(matches!(
        handle(&a.shared, &order(6, Action::Fence, "tm-2")),
        Outcome::Refused(_)
    ));
    match handle(&a.shared, &order(6, Action::Restart, "tm-1")) {
        Outcome::Refused(why) => assert!(why.contains("still runs"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The fence itself, with the current token.
    assert!(matches!(
        handle(&a.shared, &order(6, Action::Fence, "tm-1")),
        Outcome::Done(_)
    ));
    let answered = a
        .shared
        .lock()
        .pending_events
        .iter()
        .filter(|(_, e)| e.kind == EventKind::Command)
        .count();
    assert_eq!(answered, 6);
    let m = metrics(&a.http).await;
    assert!(
        m.contains("streamshield_agent_commands_total{action=\"fence\",outcome=\"refused\"} 4"),
        "{m}"
    );
}

/// Restart in place without whoever started the process: the agent starts it again from what /proc said about it
/// (command line, environment, working directory, output file), and a second restart while it runs is refused.
/// With `restart: never` the agent only fences.
#[tokio::test]
async fn a_dead_process_is_restarted_as_it_was_started() {
    use streamshield::agent::command::{handle, Outcome};
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path()).await;
    let out = d.path().join("child.out");
    let mut cmd = Command::new("bash");
    let log = std::fs::File::create(d.path().join("child.log")).unwrap();
    cmd.args(["-c", "echo started $MARK >> child.out; exec sleep 30"])
        .current_dir(d.path())
        .env("MARK", "by-hand")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = Proc(cmd.spawn().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = fake_plugin(&a.sock, child.0.id()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(health(&a.http).await.process("tm-1").unwrap().restartable);
    assert!(matches!(
        handle(&a.shared, &order(1, Action::Fence, "tm-1")),
        Outcome::Done(_)
    ));
    drop(p);
    wait_liveness(&a.http, Liveness::Dead, Duration::from_secs(2)).await;
    let outcome = handle(&a.shared, &order(1, Action::Restart, "tm-1"));
    let Outcome::Done(text) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(text.contains("started tm-1 again as pid"), "{text}");
    let new_pid = a.shared.lock().processes["tm-1"].pid;

    assert_ne!(new_pid, child.0.id());
    let argv = streamshield::host::procfs::cmdline(new_pid).unwrap();
    assert_eq!(argv[0], "sleep");
    let env = streamshield::host::procfs::environ(new_pid).unwrap();
    assert!(env.iter().any(|(k, v)| k == "MARK" && v == "by-hand"));
    assert_eq!(
        streamshield::host::procfs::cwd(new_pid).unwrap(),
        d.path().canonicalize().unwrap()
    );
    assert_eq!(
        liveness_of(&health(&a.http).await, "tm-1"),
        Liveness::Unknown
    );
    match handle(&a.shared, &order(1, Action::Restart, "tm-1")) {
        Outcome::Refused(why) => assert!(why.contains("still runs"), "{why}"),
        other => panic!("{other:?}"),
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(std::fs::read_to_string(out)
        .unwrap()
        .contains("started by-hand"));

    let bdir = tempfile::tempdir().unwrap();
    let mut cfg = agent_config(bdir.path());
    cfg.restart = Some(streamshield::agent::RestartMode::Never);
    let b = start_with(cfg.resolve(None).unwrap(), TEST_IDENTITY).await;
    let sleeper = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    let p = fake_plugin(&b.sock, sleeper.0.id()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!health(&b.http).await.process("tm-1").unwrap().restartable);
    drop(sleeper);
    drop(p);
    wait_liveness_of(&b.http, "tm-1", Liveness::Dead, Duration::from_secs(2)).await;
    match handle(&b.shared, &order(1, Action::Restart, "tm-1")) {
        Outcome::Refused(why) => assert!(why.contains("restart: never"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// A plugin holding a stop is released at once by an agent that has no coordinator to checkpoint for it, and a
/// `stop-ready` order reaches every open plugin connection of that process.
#[tokio::test]
async fn a_held_stop_is_released_without_a_coordinator_and_on_order() {
    use streamshield::agent::command::{handle, Outcome};
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path()).await;
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
    assert_eq!(r.outcome, StopOutcome::Skipped);
    assert!(r.detail.contains("no link to the coordinator"), "{r:?}");
    let mut ready = order(1, Action::StopReady, "tm-1");
    ready.reason = "checkpoint 9".into();
    ready.outcome = Some(StopOutcome::Checkpointed);
    // A second link of the same process (opened later): the order reaches both, whichever holds the stop.
    let mut second = fake_plugin(&a.sock, std::process::id()).await;
    // A link of another process does not hear it.
    let mut other = fake_plugin_as(&a.sock, "tm-2", Role::Tm, std::process::id())
        .await
        .unwrap();
    assert!(matches!(handle(&a.shared, &ready), Outcome::Done(_)));
    for link in [&mut p, &mut second] {
        let r = next(link).await;
        assert_eq!(
            (r.outcome, r.detail.as_str()),
            (StopOutcome::Checkpointed, "checkpoint 9")
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other.next())
            .await
            .is_err()
    );
    drop(p);
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(handle(&a.shared, &ready), Outcome::Failed(_)));
}

/// A socket path the agent may not create is named with the permission problem.
#[tokio::test]
async fn a_socket_it_cannot_create_is_named() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = agent_config(d.path());
    cfg.listen = Some(Endpoint::Unix("/proc/streamshield/agent.sock".into()));
    let e = BoundAgent::bind(cfg.resolve(None).unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("/proc/streamshield") && e.contains("cannot create the directory"),
        "{e}"
    );
    // A socket shared with a group: mode 0660 and that group.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let gid = std::fs::metadata(d.path()).unwrap().gid();
    let mut cfg = agent_config(d.path());
    cfg.socket_mode = Some("0660".into());
    cfg.socket_group = Some(gid.to_string());
    let a = start_with(cfg.resolve(None).unwrap(), TEST_IDENTITY).await;
    let meta = std::fs::metadata(&a.sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
}

#[tokio::test]
async fn an_agent_with_a_spill_dir_recovers_it_at_start_and_exports_it() {
    use streamshield::agent::spill::{SpillConfig, SpillLog};
    let d = tempfile::tempdir().unwrap();
    let spill = d.path().join("spill");
    {
        let (mut log, _) = SpillLog::open(&spill, SpillConfig::default()).unwrap();
        log.append(&[b"one", b"two", b"three"]).unwrap();
    }
    // A torn write at the end: the agent truncates it when it opens the log.
    let seg = std::fs::read_dir(&spill)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "spill"))
        .unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, b"SSP1\x10\x00\x00\x00half").unwrap();
    drop(f);
    let mut cfg = agent_config(d.path());
    cfg.spill_dir = Some(spill.clone());
    let settings = cfg.clone().resolve(None).unwrap();
    let agent = BoundAgent::bind_with(settings.clone(), TEST_IDENTITY)
        .await
        .expect("agent binds with its spill log");
    // A second agent on the same directory is refused, naming why.
    let mut other = agent_config(&d.path().join("other"));
    std::fs::create_dir_all(d.path().join("other")).unwrap();
    other.spill_dir = Some(spill.clone());
    let err = BoundAgent::bind_with(other.resolve(None).unwrap(), TEST_IDENTITY)
        .await
        .err()
        .expect("the directory is locked")
        .to_string();
    assert!(err.contains("in use by another process"), "{err}");
    let http = format!("http://{}", agent.http_addr());
    let stop = CancellationToken::new();
    tokio::spawn(agent.run(stop.clone()));
    let page = reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop.cancel();
    assert!(
        page.contains("streamshield_spill_pending_records 3"),
        "{page}"
    );
    assert!(
        page.contains("streamshield_spill_recovered_torn_bytes 12"),
        "{page}"
    );
    assert!(
        page.contains("streamshield_spill_max_bytes 1073741824"),
        "{page}"
    );
}
