//! A single ZooKeeper server for Flink's ZooKeeper high availability (profiles that set
//! `high-availability.type: zookeeper`, the shield profile among them).
//!
//! The server is the ZooKeeper that Flink's distribution ships (shaded into `flink-dist`, the same code its
//! `bin/start-zookeeper-quorum.sh` runs), so no separate download is needed and its version matches Flink's client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::{io, write, Error, Launch, Result, RunState};
use crate::host::process::Recorded;

/// The server's main class inside `flink-dist`.
const MAIN: &str =
    "org.apache.flink.shaded.zookeeper3.org.apache.zookeeper.server.ZooKeeperServerMain";

/// `zoo.cfg` for a loopback server. A 500 ms tick lets clients ask for sessions from 1 s (2 ticks) to 60 s
/// (120 ticks): the JobManager takes a short one so that a new JobManager is elected soon after one dies, the
/// TaskManagers keep Flink's GC-safe 60 s.
pub fn config_text(port: u16, data_dir: &Path) -> String {
    format!(
        "tickTime=500\n\
         minSessionTimeout=1000\n\
         maxSessionTimeout=60000\n\
         dataDir={}\n\
         clientPort={port}\n\
         clientPortAddress=127.0.0.1\n\
         maxClientCnxns=0\n\
         admin.enableServer=false\n\
         4lw.commands.whitelist=ruok,srvr,mntr\n",
        data_dir.display()
    )
}

/// Writes the server's configuration, starts it and waits until it answers `ruok`.
pub async fn start(state: &mut RunState, classpath: &str) -> Result<()> {
    let dir = state.run_dir.join("zookeeper");
    let port = state.ports.zookeeper;
    let args = prepare(
        &dir,
        port,
        classpath,
        &state.run_dir.join("logs").join("zookeeper.log"),
        &state.run_dir.join("flink/conf"),
    )?;
    super::say(format!(
        "starting ZooKeeper (Flink's own, for high availability) on 127.0.0.1:{port}"
    ));
    state.zookeeper_launch = Some(Launch {
        java_args: args,
        main_args: Vec::new(),
    });
    let rec = spawn(state)?;
    wait_serving(&rec, port).await
}

/// Writes a loopback server's `zoo.cfg` (and its data directory) into `dir`; returns the Java command line that
/// runs it, logging to `log` with the log4j configuration of the Flink configuration directory `conf`.
pub(super) fn prepare(
    dir: &Path,
    port: u16,
    classpath: &str,
    log: &Path,
    conf: &Path,
) -> Result<Vec<String>> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(io(&data))?;
    let cfg = dir.join("zoo.cfg");
    write(&cfg, &config_text(port, &data))?;
    let mut args: Vec<String> = vec![
        "-Xms64m".into(),
        "-Xmx128m".into(),
        "-XX:+UseSerialGC".into(),
    ];
    args.extend(super::log_args(log, conf));
    args.extend([
        "-cp".into(),
        classpath.to_string(),
        MAIN.into(),
        cfg.display().to_string(),
    ]);
    Ok(args)
}

/// Waits until the server `rec` started answers `ruok` on `port` (or has exited).
pub(super) async fn wait_serving(rec: &Recorded, port: u16) -> Result<()> {
    super::wait_ready(
        rec,
        "ZooKeeper answering `ruok`",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async move {
            tokio::task::spawn_blocking(move || ruok(port))
                .await
                .unwrap_or(false)
        },
    )
    .await
}

fn spawn(state: &mut RunState) -> Result<Recorded> {
    let launch = state.zookeeper_launch.clone().ok_or_else(|| {
        Error::Invalid("this run has no ZooKeeper launch line (was `up` interrupted?)".into())
    })?;
    let rec = super::spawn_java(
        state,
        "zookeeper",
        launch,
        &state.run_dir.join("zookeeper"),
        vec![],
    )?;
    state.zookeeper = Some(rec.clone());
    state.save()?;
    Ok(rec)
}

/// Whether the server at `port` answers the `ruok` four-letter word with `imok`.
pub fn ruok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"ruok").is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"imok"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_binds_loopback_and_allows_short_and_long_sessions() {
        let c = config_text(12181, Path::new("/tmp/x/data"));
        assert!(c.contains("clientPort=12181\n"));
        assert!(c.contains("clientPortAddress=127.0.0.1\n"));
        assert!(c.contains("dataDir=/tmp/x/data\n"));
        // 2 ticks (the shortest session) <= the JobManager's 2 s, 60 s (the TaskManagers') <= 120 ticks.
        assert!(c.contains("tickTime=500\n") && c.contains("maxSessionTimeout=60000\n"));
        assert!(c.contains("admin.enableServer=false"));
    }

    #[test]
    fn nothing_listening_is_not_ok() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(!ruok(port));
    }
}
