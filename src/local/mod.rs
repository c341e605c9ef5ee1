//! `streamshield local`: the embedded default. A real Flink 1.20 session cluster (1 JobManager, N active + K standby
//! TaskManagers), a real Kafka broker (KRaft) and the sequence workload, all on 127.0.0.1, started as plain
//! processes that this module records (pid + start time) in `<run dir>/state.json` so that `down`, `status`,
//! the drill and the tests can find exactly them again.
//!
//! - `state`: [`RunState`] (`state.json`, load and save), [`Ports`], [`Delivery`] and the info structs.
//! - `launch`: the Flink JobManager and TaskManagers, and the Java launch plumbing the launchers share.
//! - `broker`: the Kafka broker. `shield`: the coordinator and the agents (shield profile).
//! - `wait`: what `up` waits for (ready, registered, job running, plugins linked, probe records out).
//! - `stop`: [`stop_processes`], [`processes_naming`] and [`down`]. `status`: [`status`]. `logs`: [`log_path`],
//!   [`tail`].
//! - This file: the error type and `up`, which orchestrates the rest.

pub mod cli;
pub mod config;
pub mod dist;
pub mod home;
pub mod isolate;
pub mod sinks;
pub mod zookeeper;

mod broker;
mod launch;
mod logs;
mod shield;
mod state;
mod status;
mod stop;
mod wait;

pub use broker::restart_kafka;
pub use launch::{restart_jobmanager, start_taskmanager, JM_ZK_SESSION_KEY};
pub use logs::{log_path, tail};
pub use state::{
    default_run_dir, AgentInfo, CoordinatorInfo, Delivery, Launch, Ports, RunState, TmInfo,
    WorkloadInfo,
};
pub use status::{
    status, AgentStatusLine, CoordinatorStatus, FlinkStatus, JobStatus, KafkaStatus, ProcStatus,
    Status, TmStatus,
};
pub use stop::{down, processes_naming, stop_processes};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::flink;
use crate::host::process;
use crate::host::sockets;
use crate::kafka;
use crate::workload::produce;
use crate::workload::{INPUT_TOPIC, OUTPUT_TOPIC};
use dist::say;

use broker::start_kafka;
// `log_args`, `spawn_java` and `wait_ready` are also what `zookeeper` starts its server with.
use launch::{flink_classpath, log_args, spawn_java, start_jobmanager, tm_launch};
use shield::{start_agent, start_coordinator};
use state::STATE_SCHEMA;
use wait::{probe_output, wait_job_running, wait_plugins_linked, wait_ready, wait_registered};

#[derive(Debug, Error)]
pub enum Error {
    #[error("a local cluster is already up at {dir} ({alive}); `streamshield local status` shows it, `streamshield local down` stops it")]
    AlreadyUp { dir: PathBuf, alive: String },
    #[error("invalid option: {0}")]
    Invalid(String),
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Dist(#[from] dist::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Flink(#[from] flink::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error(transparent)]
    Isolate(#[from] isolate::Error),
    #[error(transparent)]
    Produce(#[from] produce::Error),
    #[error("{component} exited while starting (see {log}):\n{tail}")]
    Exited {
        component: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} did not happen within {waited:?}{detail}")]
    Timeout {
        what: String,
        waited: Duration,
        detail: String,
    },
    #[error("the job did not reach RUNNING: {0}")]
    JobFailed(String),
    #[error("cancelled; everything started so far was stopped")]
    Cancelled,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is unreadable: {reason}")]
    BadState { path: PathBuf, reason: String },
    #[error("no local cluster is up at {0}")]
    NotUp(PathBuf),
    #[error("unknown component {name:?}; this run has: {known}")]
    UnknownComponent { name: String, known: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(path))
}

/// Everything `up` can be asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub taskmanagers: u32,
    pub standby: u32,
    pub slots: u32,
    pub profile: String,
    pub port_offset: u16,
    pub delivery: Delivery,
    pub checkpoint_interval: Duration,
    pub state_bytes: u32,
    /// Extra arguments appended to the workload job's (later ones win; see SequenceJob's class doc).
    pub job_args: Vec<String>,
    /// Flink settings laid over the profile (the drill's observation settings, a scenario's JVM flags).
    pub flink_overrides: Vec<(String, String)>,
    /// Start every TaskManager and its agent in its own cgroup, so that the drill can cut its network.
    pub isolate: bool,
    /// Start the standby TaskManagers before the job and spread the job's slots over every TaskManager
    /// (`taskmanager.load-balance.mode: SLOTS`): the spare slots are then on TaskManagers that already run the job
    /// (its classes loaded, its code compiled) instead of on an idle one.
    pub warm_spares: bool,
}

/// Starts the local cluster and the workload. On error or cancellation everything started so far is stopped.
pub async fn up(opts: &UpOptions, cancel: CancellationToken) -> Result<RunState> {
    if opts.taskmanagers == 0 || opts.slots == 0 {
        return Err(Error::Invalid(
            "--taskmanagers and --slots must be at least 1".into(),
        ));
    }
    if opts.taskmanagers + opts.standby > 16 {
        return Err(Error::Invalid(format!(
            "{} TaskManagers of ~1.3 GB each do not fit this kind of machine; use at most 16",
            opts.taskmanagers + opts.standby
        )));
    }
    if config::profile_text(&opts.profile).is_none() {
        return Err(
            config::Error::UnknownProfile(opts.profile.clone(), config::profile_names()).into(),
        );
    }
    if opts.checkpoint_interval < Duration::from_millis(10) {
        return Err(Error::Invalid(
            "--checkpoint-interval must be at least 10ms (Flink's floor)".into(),
        ));
    }
    if let Some(prev) = RunState::load(&opts.dir)? {
        let alive: Vec<String> = prev
            .processes()
            .iter()
            .filter(|p| p.alive())
            .map(|p| format!("{} pid {}", p.name, p.pid))
            .collect();
        if !alive.is_empty() {
            return Err(Error::AlreadyUp {
                dir: opts.dir.clone(),
                alive: alive.join(", "),
            });
        }
        say(format!(
            "removing the stale run at {} (none of its processes runs)",
            opts.dir.display()
        ));
    }
    let ports = Ports::with_offset(opts.port_offset)?;
    let ha = config::zookeeper_ha(&opts.profile, &opts.flink_overrides);
    if let Some((lo, hi)) = ephemeral_range() {
        let inside: Vec<String> = ports
            .all()
            .into_iter()
            .filter(|(_, p)| (lo..=hi).contains(p))
            .map(|(what, p)| format!("{what} {p}"))
            .collect();
        if !inside.is_empty() {
            say(format!(
                "warning: ports {} are in this machine's ephemeral range {lo}-{hi}: any outgoing connection may \
                 take one of them and make the next start fail with 'already in use'; prefer a --port-offset \
                 that keeps every port below {lo}",
                inside.join(", ")
            ));
        }
    }
    for (what, port) in ports.all() {
        if what == "ZooKeeper" && !ha {
            continue;
        }
        sockets::check_port_free(port).map_err(|e| match e {
            sockets::Error::PortBusy { port, holder } => Error::Invalid(format!(
                "{what} port {port} on 127.0.0.1 is already in use{}; stop it or move the cluster with --port-offset",
                holder.map(|h| format!(" by {h}")).unwrap_or_default()
            )),
        })?;
    }
    if opts.dir.exists() {
        std::fs::remove_dir_all(&opts.dir).map_err(io(&opts.dir))?;
    }
    std::fs::create_dir_all(opts.dir.join("logs")).map_err(io(&opts.dir))?;
    let dir = std::fs::canonicalize(&opts.dir).map_err(io(&opts.dir))?;

    let mut state = RunState {
        schema: STATE_SCHEMA.into(),
        run_dir: dir.clone(),
        profile: opts.profile.clone(),
        flink_version: dist::FLINK_VERSION.into(),
        kafka_version: dist::KAFKA_VERSION.into(),
        ports,
        slots: opts.slots,
        kafka: None,
        jobmanager: None,
        taskmanagers: Vec::new(),
        agents: Vec::new(),
        coordinator: None,
        plugins_dir: None,
        workload: None,
        up_at_ms: None,
        up_steps_ms: Vec::new(),
        flink_home: PathBuf::new(),
        tm_launch: None,
        jm_launch: None,
        kafka_launch: None,
        isolation: None,
        zookeeper: None,
        zookeeper_launch: None,
    };
    if opts.isolate {
        state.isolation = Some(isolate::prepare(&dir)?);
    }
    state.save()?;

    let result = tokio::select! {
        r = bring_up(opts, &mut state) => r,
        _ = cancel.cancelled() => Err(Error::Cancelled),
    };
    match result {
        Ok(()) => Ok(state),
        Err(e) => {
            say(format!(
                "`local up` failed; stopping what it started (logs stay in {})",
                dir.join("logs").display()
            ));
            // The state file on disk is current: bring_up saves it after every process it starts.
            if let Ok(Some(s)) = RunState::load(&dir) {
                stop_processes(&s).await;
                let _ = std::fs::remove_file(RunState::path(&dir));
            }
            Err(e)
        }
    }
}

/// The kernel's range of ephemeral (outgoing connection) ports, if readable.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

async fn bring_up(opts: &UpOptions, state: &mut RunState) -> Result<()> {
    let started = tokio::time::Instant::now();
    dist::preflight().await?;
    let cache = dist::cache_dir();
    std::fs::create_dir_all(&cache).map_err(io(&cache))?;
    let source = dist::source_dir()?;
    let shield = config::runs_streamshield(&opts.profile);
    let plugin_jar = async {
        if shield {
            dist::ensure_plugin_jar(&cache, &source).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let (flink_home, kafka_home, jar, plugin_jar) = tokio::try_join!(
        dist::ensure_flink(&cache),
        dist::ensure_kafka(&cache),
        dist::ensure_workload_jar(&cache, &source),
        plugin_jar,
    )?;
    state.flink_home = flink_home.clone();
    if let Some(pj) = plugin_jar {
        let dir = state.run_dir.join("flink/plugins/streamshield");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let target = dir.join("streamshield-flink-plugin.jar");
        std::fs::copy(&pj, &target).map_err(io(&target))?;
        state.plugins_dir = Some(state.run_dir.join("flink/plugins"));
    }
    let mut steps = Steps::new(started);
    steps.mark("components");

    let dir = state.run_dir.clone();
    let parallelism = opts.taskmanagers * opts.slots;
    let vars: BTreeMap<&str, String> = [
        ("RUN_DIR", dir.display().to_string()),
        ("REST_PORT", state.ports.rest.to_string()),
        ("JM_RPC_PORT", state.ports.jm_rpc.to_string()),
        ("BLOB_PORT", state.ports.blob.to_string()),
        ("KAFKA_PORT", state.ports.kafka.to_string()),
        (
            "KAFKA_CONTROLLER_PORT",
            state.ports.kafka_controller.to_string(),
        ),
        ("ZK_PORT", state.ports.zookeeper.to_string()),
        ("SLOTS", opts.slots.to_string()),
        ("PARALLELISM", parallelism.to_string()),
        ("PARTITIONS", parallelism.to_string()),
    ]
    .into_iter()
    .collect();

    // Kafka first: the job needs it, and it starts faster than Flink.
    start_kafka(state, &kafka_home, &vars).await?;
    steps.mark("kafka");
    let bootstrap = state.bootstrap();

    let conf = state.conf_dir();
    std::fs::create_dir_all(&conf).map_err(io(&conf))?;
    for sub in ["checkpoints", "savepoints", "tmp", "upload"] {
        let p = dir.join("flink").join(sub);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let mut overrides = opts.flink_overrides.clone();
    if opts.warm_spares {
        overrides.push(("taskmanager.load-balance.mode".into(), "SLOTS".into()));
    }
    let flink_conf = config::flink_config(&opts.profile, &vars, &overrides)?;
    write(&conf.join("config.yaml"), &flink_conf)?;
    write(
        &conf.join("log4j.properties"),
        &config::render("log4j", config::FLINK_LOG4J, &vars)?,
    )?;
    let java_opts: Vec<String> = config::lookup(&flink_conf, "env.java.opts.all")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let classpath = flink_classpath(&flink_home)?;
    if config::lookup(&flink_conf, "high-availability.type") == Some("zookeeper") {
        zookeeper::start(state, &classpath).await?;
        steps.mark("zookeeper");
    }

    if shield {
        start_coordinator(state).await?;
        start_agent(state, "jobmanager", "jm", None).await?;
    }
    let topics = async {
        kafka::ensure_topic(&bootstrap, INPUT_TOPIC, parallelism as i32).await?;
        kafka::ensure_topic(&bootstrap, OUTPUT_TOPIC, parallelism as i32).await
    };
    let jm = start_jobmanager(state, &flink_home, &classpath, &java_opts, &flink_conf);
    let (t, j) = tokio::join!(topics, jm);
    steps.mark("jobmanager");
    t?;
    j?;

    // Flink's scripts add env.java.opts.taskmanager after env.java.opts.all; so do we.
    let tm_java_opts: Vec<String> = java_opts
        .iter()
        .cloned()
        .chain(
            config::lookup(&flink_conf, "env.java.opts.taskmanager")
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string),
        )
        .collect();
    let tm_launch = tm_launch(state, &flink_home, &classpath, &tm_java_opts).await?;
    state.tm_launch = Some(tm_launch);
    for i in 1..=opts.taskmanagers {
        start_taskmanager(state, &format!("tm-{i}"), "active").await?;
    }
    let early_spares = if opts.warm_spares { opts.standby } else { 0 };
    for i in 1..=early_spares {
        start_taskmanager(state, &format!("tm-{}", opts.taskmanagers + i), "spare").await?;
    }
    let client = flink::Client::new(state.rest_url());
    wait_registered(state, &client, (opts.taskmanagers + early_spares) as usize).await?;
    steps.mark("taskmanagers");

    say(format!(
        "submitting the sequence workload (parallelism {parallelism}, {})",
        opts.delivery.as_arg()
    ));
    let jar_id = client.upload_jar(&jar).await?;
    let args: Vec<String> = [
        ("--bootstrap", bootstrap.clone()),
        ("--input-topic", INPUT_TOPIC.into()),
        ("--output-topic", OUTPUT_TOPIC.into()),
        ("--delivery", opts.delivery.as_arg().into()),
        (
            "--checkpoint-interval-ms",
            opts.checkpoint_interval.as_millis().to_string(),
        ),
        ("--state-bytes", opts.state_bytes.to_string()),
        (
            "--transactional-id-prefix",
            format!("streamshield-{}", crate::host::clock::now_ms()),
        ),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .chain(opts.job_args.iter().cloned())
    .collect();
    let job_id = client
        .run_jar(
            &jar_id,
            "io.streamshield.workloads.SequenceJob",
            &args,
            parallelism,
        )
        .await
        .map_err(|e| Error::JobFailed(e.to_string()))?;
    state.workload = Some(WorkloadInfo {
        job_id: job_id.clone(),
        job_name: "streamshield-sequence".into(),
        parallelism,
        delivery: opts.delivery,
        checkpoint_interval_ms: opts.checkpoint_interval.as_millis() as u64,
        state_bytes: opts.state_bytes,
        input_topic: INPUT_TOPIC.into(),
        output_topic: OUTPUT_TOPIC.into(),
        partitions: parallelism,
    });
    state.save()?;
    wait_job_running(state, &client, &job_id, Duration::from_secs(180)).await?;
    steps.mark("job");

    for i in early_spares + 1..=opts.standby {
        start_taskmanager(state, &format!("tm-{}", opts.taskmanagers + i), "standby").await?;
    }
    wait_registered(state, &client, (opts.taskmanagers + opts.standby) as usize).await?;
    steps.mark("standby");
    if shield {
        wait_plugins_linked(state).await?;
        steps.mark("plugins");
    }

    probe_output(state).await?;
    steps.mark("probe");
    state.up_at_ms = Some(crate::host::clock::now_ms());
    state.up_steps_ms = steps.done.clone();
    state.save()?;
    say(format!(
        "local cluster up in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        steps
            .done
            .iter()
            .map(|(k, v)| format!("{k} {:.1} s", *v as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// How long each step of `up` took, in order.
struct Steps {
    last: tokio::time::Instant,
    done: Vec<(String, u64)>,
}

impl Steps {
    fn new(start: tokio::time::Instant) -> Self {
        Steps {
            last: start,
            done: Vec::new(),
        }
    }

    fn mark(&mut self, name: &str) {
        let now = tokio::time::Instant::now();
        self.done
            .push((name.to_string(), (now - self.last).as_millis() as u64));
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn up_rejects_bad_options_before_starting_anything() {
        let d = tempfile::tempdir().unwrap();
        let mut o = UpOptions {
            dir: d.path().join("run"),
            taskmanagers: 0,
            standby: 0,
            slots: 2,
            profile: "stock".into(),
            port_offset: 0,
            delivery: Delivery::ExactlyOnce,
            checkpoint_interval: Duration::from_secs(1),
            state_bytes: 0,
            job_args: vec![],
            flink_overrides: vec![],
            isolate: false,
            warm_spares: false,
        };
        assert!(matches!(
            up(&o, CancellationToken::new()).await,
            Err(Error::Invalid(_))
        ));
        o.taskmanagers = 1;
        o.profile = "turbo".into();
        assert!(matches!(
            up(&o, CancellationToken::new()).await,
            Err(Error::Config(_))
        ));
        assert!(!o.dir.exists(), "nothing was created");
    }

    #[tokio::test]
    async fn up_names_a_busy_port() {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        // Shift the REST port (8081) onto the busy one.
        let Some(offset) = port.checked_sub(8081) else {
            return; // an ephemeral port below 8081 cannot be reached by an offset; nothing to test on this host
        };
        let d = tempfile::tempdir().unwrap();
        let o = UpOptions {
            dir: d.path().join("run"),
            taskmanagers: 1,
            standby: 0,
            slots: 1,
            profile: "stock".into(),
            port_offset: offset,
            delivery: Delivery::ExactlyOnce,
            checkpoint_interval: Duration::from_secs(1),
            state_bytes: 0,
            job_args: vec![],
            flink_overrides: vec![],
            isolate: false,
            warm_spares: false,
        };
        let e = up(&o, CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("Flink REST port {port}")), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    }
}
