//! The systems guarded sinks write to, started on loopback for drills and tests (issue 17): a Kafka cluster of N
//! KRaft brokers separate from the job's source cluster (replication 3 and min ISR 2 with three brokers), and a
//! Redis server (Debian's `redis-server`). Each process is recorded by pid and start time; [`Sinks::stop`] stops
//! them, and dropping a [`Sinks`] kills what is still running, so a failed test leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{config, dist, io, write, Error, Result};
use crate::agent::watchdog::{kafka::Kafka, redis::Redis};
use crate::host::process::{self, Recorded};
use crate::protocol::watchdog::TargetState;

const KAFKA_SERVER: &str = include_str!("../../deploy/local/sinks/kafka-server.properties");

/// Processes started here; killed when dropped.
#[derive(Default)]
pub struct Sinks {
    pub procs: Vec<Recorded>,
}

impl Drop for Sinks {
    fn drop(&mut self) {
        for p in &self.procs {
            let _ = p.signal(Signal::SIGCONT);
            let _ = p.signal(Signal::SIGKILL);
        }
    }
}

impl Sinks {
    /// Stops everything started here (SIGTERM, then SIGKILL after `grace`).
    pub async fn stop(&mut self, grace: Duration) {
        process::stop_all(&self.procs, grace).await;
        self.procs.clear();
    }
}

/// A Kafka cluster started by [`start_kafka`].
pub struct KafkaCluster {
    /// Broker `i` (node id i + 1) listens on `ports[i]`.
    pub ports: Vec<u16>,
    /// Its brokers, in node id order (also in the `Sinks` they were started into).
    pub brokers: Vec<Recorded>,
}

impl KafkaCluster {
    pub fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Formats and starts `ports.len()` KRaft brokers (each also a controller; `controller_ports` as many) under
/// `dir`, and waits until every broker answers and knows the others. With three or more, topics get three replicas
/// and a write needs two in sync.
pub async fn start_kafka(
    sinks: &mut Sinks,
    dir: &Path,
    ports: &[u16],
    controller_ports: &[u16],
) -> Result<KafkaCluster> {
    if ports.is_empty() || ports.len() != controller_ports.len() {
        return Err(Error::Invalid(
            "a sink Kafka cluster needs as many controller ports as broker ports".into(),
        ));
    }
    let home = dist::ensure_kafka(&dist::cache_dir()).await?;
    let cp = format!("{}/libs/*", home.display());
    let n = ports.len();
    let voters = controller_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let replication = n.min(3);
    let min_isr = if replication >= 3 { 2 } else { 1 };
    let cluster_id = super::broker::cluster_id();
    let mut brokers = Vec::new();
    for (i, (port, cport)) in ports.iter().zip(controller_ports).enumerate() {
        let node = dir.join(format!("kafka-{}", i + 1));
        let data = node.join("data");
        std::fs::create_dir_all(&data).map_err(io(&data))?;
        let vars: BTreeMap<&str, String> = [
            ("NODE_ID", (i + 1).to_string()),
            ("VOTERS", voters.clone()),
            ("PORT", port.to_string()),
            ("CONTROLLER_PORT", cport.to_string()),
            ("DATA_DIR", data.display().to_string()),
            ("PARTITIONS", "6".to_string()),
            ("REPLICATION", replication.to_string()),
            ("MIN_ISR", min_isr.to_string()),
        ]
        .into_iter()
        .collect();
        let props = node.join("server.properties");
        write(
            &props,
            &config::render("sinks/kafka-server.properties", KAFKA_SERVER, &vars)?,
        )?;
        let log4j = node.join("log4j2.yaml");
        write(&log4j, config::KAFKA_LOG4J2)?;
        super::broker::format_storage(
            &cp,
            &log4j,
            &node.join("format.log"),
            &props,
            &cluster_id,
            &node.join("format.out"),
            &format!("sink kafka-{} storage format", i + 1),
        )
        .await?;
        let rec = process::spawn(process::Spec {
            name: &format!("sink-kafka-{}", i + 1),
            program: Path::new("java"),
            args: vec![
                "-Xms256m".into(),
                "-Xmx256m".into(),
                "-XX:+UseG1GC".into(),
                "-Djava.awt.headless=true".into(),
                format!("-Dlog4j2.configurationFile=file:{}", log4j.display()),
                format!("-Dkafka.log.file={}", node.join("kafka.log").display()),
                "-cp".into(),
                cp.clone(),
                "kafka.Kafka".into(),
                props.display().to_string(),
            ],
            cwd: &node,
            log: node.join("kafka.log"),
            out: node.join("kafka.out"),
            env: Vec::new(),
            cgroup: None,
            exact: None,
        })?;
        sinks.procs.push(rec.clone());
        brokers.push(rec);
    }
    let cluster = KafkaCluster {
        ports: ports.to_vec(),
        brokers,
    };
    // Ready when the watchdog's own probe finds every broker answering and the metadata naming them all.
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut probe = Kafka::new(&hosts);
    let waited = Duration::from_secs(120);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        let obs = probe.probe(Duration::from_secs(2)).await;
        if obs.state == TargetState::Healthy && obs.members.iter().filter(|m| m.up).count() >= n {
            return Ok(cluster);
        }
        if let Some(dead) = cluster.brokers.iter().find(|b| !b.alive()) {
            return Err(Error::Exited {
                component: dead.name.clone(),
                log: dead.log.clone(),
                tail: super::logs::tail(&dead.log, 20),
            });
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("the sink Kafka cluster ({n} brokers) answering"),
                waited,
                detail: format!(": {}", obs.evidence),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Starts a single ZooKeeper server (the one Flink's distribution ships, as `local` runs it) on 127.0.0.1:`port`
/// with its data in `dir`, `srvr` allowed, and waits until it answers `ruok`.
pub async fn start_zookeeper(sinks: &mut Sinks, dir: &Path, port: u16) -> Result<Recorded> {
    let flink = dist::ensure_flink(&dist::cache_dir()).await?;
    let classpath = super::flink_classpath(&flink)?;
    let args = super::zookeeper::prepare(
        dir,
        port,
        &classpath,
        &dir.join("zookeeper.log"),
        &flink.join("conf"),
    )?;
    let rec = process::spawn(process::Spec {
        name: "zookeeper",
        program: Path::new("java"),
        args,
        cwd: dir,
        log: dir.join("zookeeper.log"),
        out: dir.join("zookeeper.out"),
        env: Vec::new(),
        cgroup: None,
        exact: None,
    })?;
    sinks.procs.push(rec.clone());
    super::zookeeper::wait_serving(&rec, port).await?;
    Ok(rec)
}

/// A Redis server started by [`start_redis`].
pub struct RedisServer {
    pub port: u16,
    pub proc: Recorded,
    pub dir: PathBuf,
}

impl RedisServer {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Starts Debian's `redis-server` on 127.0.0.1:`port` with its data in `dir` (no snapshots: the drill's verifier
/// reads what was written while it ran), and waits until it answers PING.
pub async fn start_redis(sinks: &mut Sinks, dir: &Path, port: u16) -> Result<RedisServer> {
    let program = ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::Invalid(
                "redis-server is not installed: run ./scripts/prereqs (Debian's redis-server package)".into(),
            )
        })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--dir",
        &dir.display().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proc = process::spawn(process::Spec {
        name: "sink-redis",
        program,
        args,
        cwd: dir,
        log: dir.join("redis.log"),
        out: dir.join("redis.out"),
        env: Vec::new(),
        cgroup: None,
        exact: None,
    })?;
    sinks.procs.push(proc.clone());
    let server = RedisServer {
        port,
        proc,
        dir: dir.to_path_buf(),
    };
    let addr = format!("127.0.0.1:{port}");
    let mut probe = Redis::new(&server.url(), &addr);
    let waited = Duration::from_secs(20);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        let obs = probe.probe(Duration::from_secs(1)).await;
        if obs.state == TargetState::Healthy {
            return Ok(server);
        }
        if !server.proc.alive() {
            return Err(Error::Exited {
                component: "sink-redis".into(),
                log: server.dir.join("redis.out"),
                tail: super::logs::tail(&server.dir.join("redis.out"), 20),
            });
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Timeout {
                what: "the sink Redis answering PING".into(),
                waited,
                detail: format!(": {}", obs.evidence),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
