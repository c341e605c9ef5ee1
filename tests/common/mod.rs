//! Helpers shared by the test crates: running the binary, a guard that takes a local cluster down even when
//! an assertion fails, waiting for a run's processes to be gone, and a fake TaskManager plugin.
// Each test crate uses a different subset of these.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod chart;
pub mod control_plane;
pub mod coordinator;
pub mod standalone;
pub mod webhook;

pub const BIN: &str = env!("CARGO_BIN_EXE_streamshield");

/// Runs `streamshield ARGS`, echoing its output into the test log.
pub fn streamshield(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run streamshield");
    eprintln!(
        "$ streamshield {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Takes the run at its directory down when dropped, whether the test passed or panicked.
pub struct Cluster(pub PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["local", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

/// True once no process names `dir` in its command line (within `within`).
pub fn wait_no_process_naming(dir: &Path, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        let left = streamshield::local::processes_naming(dir);
        if left.is_empty() {
            return true;
        }
        if start.elapsed() > within {
            eprintln!("left behind: {left:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub type Plugin =
    tokio_util::codec::Framed<tokio::net::UnixStream, streamshield::protocol::FrameCodec>;

/// A fake TaskManager plugin for `tm-1` with process `pid`, connected to the agent at `sock` and past the handshake.
pub async fn fake_plugin(sock: &Path, pid: u32) -> Plugin {
    fake_plugin_as(sock, "tm-1", streamshield::protocol::Role::Tm, pid)
        .await
        .expect("handshake")
}

/// A fake plugin of process `pid` claiming to be `rid` in `role`; the handshake's result.
pub async fn fake_plugin_as(
    sock: &Path,
    rid: &str,
    role: streamshield::protocol::Role,
    pid: u32,
) -> Result<Plugin, streamshield::protocol::handshake::HandshakeError> {
    use streamshield::protocol::{handshake, FrameCodec, Hello};
    let s = tokio::net::UnixStream::connect(sock).await.unwrap();
    let mut f = tokio_util::codec::Framed::new(s, FrameCodec::default());
    handshake::connect(
        &mut f,
        Hello {
            protocol: 1,
            role,
            resource_id: rid.into(),
            pid,
            flink_version: "1.20.5".into(),
            secret: None,
        },
        Duration::from_secs(2),
    )
    .await?;
    Ok(f)
}

/// The agent's settings for a test: a socket in `dir`, HTTP on a free port, fast stall detection.
pub fn agent_settings(dir: &Path) -> streamshield::agent::AgentSettings {
    agent_config(dir)
        .resolve(None)
        .expect("valid test settings")
}

/// The agent's configuration keys for a test (see [`agent_settings`]).
pub fn agent_config(dir: &Path) -> streamshield::agent::AgentConfig {
    streamshield::agent::AgentConfig {
        id: Some("test-agent".into()),
        listen: Some(streamshield::host::endpoint::Endpoint::Unix(
            dir.join("plugin.sock"),
        )),
        http: Some("127.0.0.1:0".parse().unwrap()),
        stall_timeout: Some(Duration::from_millis(400)),
        ..Default::default()
    }
}

/// Checks that let the test process's own fake plugin speak for the processes the tests start (the binary checks
/// the real claims; tests/agent.rs checks that it does).
pub const TEST_IDENTITY: streamshield::agent::IdentityChecks =
    streamshield::agent::IdentityChecks {
        peer_is_claimed_pid: false,
        claimed_pid_is_jvm: false,
    };

/// The fake plugin announces that its process was asked to stop (SIGTERM) and holds the stop for up to 10 s.
pub async fn announce_stop(
    p: &mut tokio_util::codec::Framed<tokio::net::UnixStream, streamshield::protocol::FrameCodec>,
) {
    use futures_util::SinkExt;
    use streamshield::protocol::message::Stopping;
    p.send(
        streamshield::protocol::Message::Stopping(Stopping {
            signal: "SIGTERM".into(),
            ts_ms: 0,
            max_wait_ms: 10_000,
        })
        .to_frame(),
    )
    .await
    .unwrap();
}

/// Fails unless `promtool check metrics` finds nothing to say about the metrics page `page` (of `what`).
pub fn promtool_check(page: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/prereqs installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics on the {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
