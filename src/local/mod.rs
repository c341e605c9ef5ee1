//! `streamshield local`: the embedded default. A real Flink 1.20 session cluster (1 JobManager, N active + K standby
//! TaskManagers), a real Kafka broker (KRaft) and the sequence workload, all on 127.0.0.1, started as plain
//! processes that this module records (pid + start time) in `<run dir>/state.json` so that `down`, `status`,
//! the drill and the tests can find exactly them again.

pub mod cli;
pub mod config;
pub mod dist;
pub mod isolate;
pub mod zookeeper;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::flink;
use crate::host::process::{self, Recorded};
use crate::host::sockets;
use crate::kafka;
use crate::workload::live::{LiveVerifier, VerifyConfig};
use crate::workload::produce::{self, ProduceConfig};
use crate::workload::{INPUT_TOPIC, OUTPUT_TOPIC};
use dist::say;

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

/// The run directory used when none is given (`STREAMSHIELD_RUN_DIR`, else `~/.local/share/streamshield/local`).
pub fn default_run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STREAMSHIELD_RUN_DIR") {
        return PathBuf::from(d);
    }
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("streamshield")
        .join("local")
}

/// Loopback ports of a local cluster. `--port-offset` shifts all of them, so two clusters can run side by side.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ports {
    pub rest: u16,
    pub jm_rpc: u16,
    pub blob: u16,
    pub kafka: u16,
    pub kafka_controller: u16,
    /// Where agents reach the coordinator (shield profile).
    pub coordinator_agents: u16,
    /// The coordinator's HTTP API (shield profile).
    pub coordinator_api: u16,
    /// ZooKeeper, for profiles with ZooKeeper high availability (the shield profile).
    #[serde(default)]
    pub zookeeper: u16,
}

impl Ports {
    pub fn with_offset(offset: u16) -> Result<Self> {
        let add = |p: u16| {
            p.checked_add(offset).ok_or_else(|| {
                Error::Invalid(format!("--port-offset {offset} pushes port {p} past 65535"))
            })
        };
        Ok(Ports {
            rest: add(8081)?,
            jm_rpc: add(6123)?,
            blob: add(6124)?,
            kafka: add(9092)?,
            kafka_controller: add(9093)?,
            coordinator_agents: add(9250)?,
            coordinator_api: add(9251)?,
            zookeeper: add(2181)?,
        })
    }

    /// Every port with its name, in the order `up` checks them (Flink REST first).
    fn all(&self) -> [(&'static str, u16); 8] {
        [
            ("Flink REST", self.rest),
            ("JobManager RPC", self.jm_rpc),
            ("Flink blob server", self.blob),
            ("Kafka", self.kafka),
            ("Kafka controller", self.kafka_controller),
            ("StreamShield coordinator (agents)", self.coordinator_agents),
            ("StreamShield coordinator API", self.coordinator_api),
            ("ZooKeeper", self.zookeeper),
        ]
    }
}

/// Delivery guarantee of the workload's Kafka sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    ExactlyOnce,
    AtLeastOnce,
}

impl Delivery {
    pub fn as_arg(&self) -> &'static str {
        match self {
            Delivery::ExactlyOnce => "exactly-once",
            Delivery::AtLeastOnce => "at-least-once",
        }
    }
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

/// The workload as submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub job_id: String,
    pub job_name: String,
    pub parallelism: u32,
    pub delivery: Delivery,
    pub checkpoint_interval_ms: u64,
    pub state_bytes: u32,
    pub input_topic: String,
    pub output_topic: String,
    pub partitions: u32,
}

/// An agent of the run (shield profile).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub resource_id: String,
    /// Where its plugin connects (`unix:...`).
    pub plugin: String,
    /// Its /metrics and /healthz base URL.
    pub http: String,
    pub process: Recorded,
}

/// The run's coordinator (shield profile).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoordinatorInfo {
    /// API base URL.
    pub api: String,
    /// Where agents connect (host:port).
    pub agents: String,
    pub api_token_file: PathBuf,
    pub agent_token_file: PathBuf,
    pub process: Recorded,
}

/// A TaskManager of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TmInfo {
    pub resource_id: String,
    /// `active` (started before the job: its slots run tasks), `standby` (started after: free slots) or `spare`
    /// (warm spares: started before the job, which spreads its slots over every TaskManager).
    pub role: String,
    pub process: Recorded,
}

/// `<run dir>/state.json`: what `up` started. Written after every step, so an interrupted `up` can be undone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub schema: String,
    pub run_dir: PathBuf,
    pub profile: String,
    pub flink_version: String,
    pub kafka_version: String,
    pub ports: Ports,
    pub slots: u32,
    pub kafka: Option<Recorded>,
    pub jobmanager: Option<Recorded>,
    pub taskmanagers: Vec<TmInfo>,
    /// Agents (shield profile), one per Flink process.
    #[serde(default)]
    pub agents: Vec<AgentInfo>,
    #[serde(default)]
    pub coordinator: Option<CoordinatorInfo>,
    /// The plugin directory handed to Flink (shield profile).
    #[serde(default)]
    pub plugins_dir: Option<PathBuf>,
    pub workload: Option<WorkloadInfo>,
    /// Unix ms when `up` finished (None while it runs).
    pub up_at_ms: Option<i64>,
    /// How long each step of `up` took (ms), in order: where the start-up time goes.
    #[serde(default)]
    pub up_steps_ms: Vec<(String, u64)>,
    /// Paths the drill and tests reuse to start more TaskManagers the same way.
    pub flink_home: PathBuf,
    pub tm_launch: Option<Launch>,
    /// The JobManager's command line, so the drill can start it again after killing it.
    #[serde(default)]
    pub jm_launch: Option<Launch>,
    /// Kafka's command line (storage already formatted), so the drill can start the broker again.
    #[serde(default)]
    pub kafka_launch: Option<Launch>,
    /// The run's cgroup (relative to the cgroup v2 root) when TaskManagers are isolated (`UpOptions::isolate`).
    #[serde(default)]
    pub isolation: Option<String>,
    /// ZooKeeper (profiles with ZooKeeper high availability).
    #[serde(default)]
    pub zookeeper: Option<Recorded>,
    #[serde(default)]
    pub zookeeper_launch: Option<Launch>,
}

/// A Java command line, kept so a TaskManager can be started again exactly like the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub java_args: Vec<String>,
    pub main_args: Vec<String>,
}

const STATE_SCHEMA: &str = "streamshield.local/v1";

impl RunState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<Option<RunState>> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let state: RunState = serde_json::from_str(&text).map_err(|e| Error::BadState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.schema != STATE_SCHEMA {
            return Err(Error::BadState {
                path,
                reason: format!("schema {} (this build reads {STATE_SCHEMA})", state.schema),
            });
        }
        Ok(Some(state))
    }

    /// Atomically replaces the state file.
    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.run_dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Every process of the run.
    pub fn processes(&self) -> Vec<&Recorded> {
        let mut v: Vec<&Recorded> = self.taskmanagers.iter().map(|t| &t.process).collect();
        v.extend(self.jobmanager.iter());
        v.extend(self.agents.iter().map(|a| &a.process));
        v.extend(self.coordinator.iter().map(|c| &c.process));
        v.extend(self.kafka.iter());
        v.extend(self.zookeeper.iter());
        v
    }

    pub fn shielded(&self) -> bool {
        config::runs_streamshield(&self.profile)
    }

    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.rest)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports.kafka)
    }

    fn logs_dir(&self) -> PathBuf {
        self.run_dir.join("logs")
    }

    fn conf_dir(&self) -> PathBuf {
        self.run_dir.join("flink/conf")
    }
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

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(path))
}

/// `lib/*.jar` sorted, flink-dist last: the classpath Flink's own scripts build.
fn flink_classpath(flink_home: &Path) -> Result<String> {
    let lib = flink_home.join("lib");
    let mut jars: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map_err(io(&lib))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jar"))
        .collect();
    jars.sort();
    let (dist, rest): (Vec<PathBuf>, Vec<PathBuf>) = jars.into_iter().partition(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("flink-dist"))
    });
    Ok(rest
        .iter()
        .chain(dist.iter())
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":"))
}

/// The last lines of a file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn exited(p: &Recorded) -> Error {
    let mut t = tail(&p.out, 20);
    if t.trim().is_empty() {
        t = tail(&p.log, 20);
    }
    Error::Exited {
        component: p.name.clone(),
        log: p.log.clone(),
        tail: t,
    }
}

async fn start_kafka(
    state: &mut RunState,
    kafka_home: &Path,
    vars: &BTreeMap<&str, String>,
) -> Result<()> {
    let dir = state.run_dir.join("kafka");
    std::fs::create_dir_all(dir.join("data")).map_err(io(&dir))?;
    let props = dir.join("server.properties");
    write(
        &props,
        &config::render("kafka/server.properties", config::KAFKA_SERVER, vars)?,
    )?;
    let log4j = dir.join("log4j2.yaml");
    write(&log4j, config::KAFKA_LOG4J2)?;
    let cp = format!("{}/libs/*", kafka_home.display());
    let logs = state.logs_dir();
    say(format!(
        "starting Kafka {} on 127.0.0.1:{}",
        dist::KAFKA_VERSION,
        state.ports.kafka
    ));
    let format_out = logs.join("kafka-format.out");
    let out = std::fs::File::create(&format_out).map_err(io(&format_out))?;
    let status = tokio::process::Command::new("java")
        .args(["-Xmx256m", "-cp", &cp])
        .arg(format!(
            "-Dlog4j2.configurationFile=file:{}",
            log4j.display()
        ))
        .arg(format!(
            "-Dkafka.log.file={}",
            logs.join("kafka-format.log").display()
        ))
        .args(["kafka.tools.StorageTool", "format"])
        .arg(format!("--cluster-id={}", cluster_id()))
        .arg("--config")
        .arg(&props)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().map_err(io(&format_out))?)
        .stderr(out)
        .status()
        .await
        .map_err(io(&format_out))?;
    if !status.success() {
        return Err(Error::Exited {
            component: "kafka storage format".into(),
            log: format_out.clone(),
            tail: tail(&format_out, 20),
        });
    }
    state.kafka_launch = Some(Launch {
        java_args: vec![
            "-Xms512m".into(),
            "-Xmx512m".into(),
            "-XX:+UseG1GC".into(),
            "-Djava.awt.headless=true".into(),
            format!("-Dlog4j2.configurationFile=file:{}", log4j.display()),
            format!("-Dkafka.log.file={}", logs.join("kafka.log").display()),
            "-cp".into(),
            cp,
            "kafka.Kafka".into(),
            props.display().to_string(),
        ],
        main_args: Vec::new(),
    });
    let rec = spawn_kafka(state)?;
    wait_kafka(state, &rec).await
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what `kafka-storage random-uuid` prints).
/// Like Kafka's own `Uuid.randomUuid`, never one starting with '-', which a command line would take for an option.
fn cluster_id() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    if bytes == [0u8; 16] {
        let t = crate::host::clock::now_ms() as u128 ^ ((std::process::id() as u128) << 64);
        bytes = t.to_le_bytes();
    }
    // The first character encodes the top 6 bits of the first byte; with the top bit clear it is one of A..f.
    bytes[0] &= 0x7f;
    base64_url(&bytes)
}

fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Runs Flink's BashJavaUtils (what the launch scripts do) to turn the memory configuration into JVM flags and
/// dynamic properties. Returns (jvm args, dynamic args).
async fn bash_java_utils(
    state: &RunState,
    flink_home: &Path,
    classpath: &str,
    command: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let cp = format!(
        "{classpath}:{}",
        flink_home.join("bin/bash-java-utils.jar").display()
    );
    let out = tokio::process::Command::new("java")
        .args([
            "-Xmx128m",
            "-cp",
            &cp,
            "org.apache.flink.runtime.util.bash.BashJavaUtils",
            command,
            "--configDir",
        ])
        .arg(state.conf_dir())
        .output()
        .await
        .map_err(io(flink_home))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("BASH_JAVA_UTILS_EXEC_RESULT:"))
        .collect();
    if !out.status.success() || results.len() < 2 {
        return Err(Error::Exited {
            component: format!("BashJavaUtils {command}"),
            log: state.conf_dir().join("config.yaml"),
            tail: format!(
                "{}\n{}",
                text.lines().rev().take(10).collect::<Vec<_>>().join("\n"),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    let split = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    Ok((
        split(results[results.len() - 2]),
        split(results[results.len() - 1]),
    ))
}

fn log_args(log: &Path, conf: &Path) -> Vec<String> {
    vec![
        format!("-Dlog.file={}", log.display()),
        format!(
            "-Dlog4j.configuration=file:{}/log4j.properties",
            conf.display()
        ),
        format!(
            "-Dlog4j.configurationFile=file:{}/log4j.properties",
            conf.display()
        ),
    ]
}

/// StreamShield key: the JobManager's ZooKeeper session time-out (see `start_jobmanager`).
pub const JM_ZK_SESSION_KEY: &str = "streamshield.jobmanager.zookeeper-session-timeout";

async fn start_jobmanager(
    state: &mut RunState,
    flink_home: &Path,
    classpath: &str,
    java_opts: &[String],
    flink_conf: &str,
) -> Result<()> {
    let (jvm, dynamic) =
        bash_java_utils(state, flink_home, classpath, "GET_JM_RESOURCE_PARAMS").await?;
    let conf = state.conf_dir();
    let log = state.logs_dir().join("jobmanager.log");
    let mut args = jvm;
    args.extend(java_opts.iter().cloned());
    args.extend(log_args(&log, &conf));
    args.extend(["-classpath".into(), classpath.to_string()]);
    args.push("org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint".into());
    args.extend(["--configDir".into(), conf.display().to_string()]);
    args.extend(dynamic);
    // With ZooKeeper high availability a new JobManager becomes leader only once the dead one's ZooKeeper session
    // has expired; the profile can give the JobManager alone a shorter session than the TaskManagers' GC-safe one.
    if let Some(t) = config::lookup(flink_conf, JM_ZK_SESSION_KEY) {
        args.extend([
            "-D".into(),
            format!("high-availability.zookeeper.client.session-timeout={t}"),
        ]);
    }
    say(format!(
        "starting the Flink {} JobManager (REST http://127.0.0.1:{})",
        dist::FLINK_VERSION,
        state.ports.rest
    ));
    state.jm_launch = Some(Launch {
        java_args: args,
        main_args: Vec::new(),
    });
    run_jobmanager(
        state,
        "the JobManager's REST endpoint answering",
        Duration::from_millis(250),
    )
    .await
}

/// Polls `ready` every `every` until it says yes; fails when `rec` exits first (with its log's tail) or after
/// `waited`.
async fn wait_ready<F, Fut>(
    rec: &Recorded,
    what: &str,
    waited: Duration,
    every: Duration,
    mut ready: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + waited;
    while !ready().await {
        if !rec.alive() {
            return Err(exited(rec));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                waited,
                detail: format!("; see {}", rec.log.display()),
            });
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// Starts the JobManager with the run's recorded command line, records it (its log is appended to) and waits up to
/// 120 s, asking every `every`, until its REST endpoint answers (`what` names that wait in a time-out).
async fn run_jobmanager(state: &mut RunState, what: &str, every: Duration) -> Result<()> {
    let launch = state.jm_launch.clone().ok_or_else(|| {
        Error::Invalid("this run has no JobManager launch line (was `up` interrupted?)".into())
    })?;
    let env = plugin_env(state, "jobmanager", "jm");
    let rec = spawn_java(state, "jobmanager", launch, &state.run_dir, env)?;
    state.jobmanager = Some(rec.clone());
    state.save()?;
    let client = flink::Client::new(state.rest_url());
    wait_ready(&rec, what, Duration::from_secs(120), every, || {
        client.ready()
    })
    .await
}

/// Starts the JobManager again after it died (the drill's `jm-kill`); returns once its REST endpoint answers.
/// Whether the job comes back depends on the profile's high-availability settings.
pub async fn restart_jobmanager(state: &mut RunState) -> Result<()> {
    if state.jobmanager.as_ref().is_some_and(|p| p.alive()) {
        return Err(Error::Invalid("the JobManager is still running".into()));
    }
    run_jobmanager(
        state,
        "the restarted JobManager's REST endpoint answering",
        Duration::from_millis(100),
    )
    .await
}

/// Starts the Kafka broker again on its existing storage (the drill's `kafka-broker-outage`) and waits until it
/// answers metadata requests.
pub async fn restart_kafka(state: &mut RunState) -> Result<()> {
    if state.kafka.as_ref().is_some_and(|p| p.alive()) {
        return Err(Error::Invalid("the Kafka broker is still running".into()));
    }
    let rec = spawn_kafka(state)?;
    wait_kafka(state, &rec).await
}

/// Starts a recorded Java command line as `name` (logs in `<run>/logs/<name>.log` and `.out`).
fn spawn_java(
    state: &RunState,
    name: &str,
    launch: Launch,
    cwd: &Path,
    env: Vec<(String, String)>,
) -> Result<Recorded> {
    let logs = state.logs_dir();
    Ok(process::spawn(process::Spec {
        name,
        program: Path::new("java"),
        args: launch.java_args,
        cwd,
        log: logs.join(format!("{name}.log")),
        out: logs.join(format!("{name}.out")),
        env,
        cgroup: None,
        exact: None,
    })?)
}

fn spawn_kafka(state: &mut RunState) -> Result<Recorded> {
    let launch = state.kafka_launch.clone().ok_or_else(|| {
        Error::Invalid("this run has no Kafka launch line (was `up` interrupted?)".into())
    })?;
    let rec = spawn_java(state, "kafka", launch, &state.run_dir.join("kafka"), vec![])?;
    state.kafka = Some(rec.clone());
    state.save()?;
    Ok(rec)
}

async fn wait_kafka(state: &RunState, rec: &Recorded) -> Result<()> {
    let bootstrap = state.bootstrap();
    let ready = kafka::wait_ready(&bootstrap, Duration::from_secs(90));
    tokio::pin!(ready);
    loop {
        tokio::select! {
            r = &mut ready => return r.map_err(Error::from),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if !rec.alive() {
                    return Err(exited(rec));
                }
            }
        }
    }
}

async fn tm_launch(
    state: &RunState,
    flink_home: &Path,
    classpath: &str,
    java_opts: &[String],
) -> Result<Launch> {
    let (jvm, dynamic) =
        bash_java_utils(state, flink_home, classpath, "GET_TM_RESOURCE_PARAMS").await?;
    let mut java_args = jvm;
    java_args.extend(java_opts.iter().cloned());
    java_args.extend([
        format!(
            "-Dlog4j.configuration=file:{}/log4j.properties",
            state.conf_dir().display()
        ),
        format!(
            "-Dlog4j.configurationFile=file:{}/log4j.properties",
            state.conf_dir().display()
        ),
        "-classpath".into(),
        classpath.to_string(),
    ]);
    let mut main_args = vec![
        "org.apache.flink.runtime.taskexecutor.TaskManagerRunner".to_string(),
        "--configDir".into(),
        state.conf_dir().display().to_string(),
    ];
    main_args.extend(dynamic);
    Ok(Launch {
        java_args,
        main_args,
    })
}

/// Environment that points a Flink process at its plugin directory and its agent (shield profile).
fn plugin_env(state: &RunState, resource_id: &str, role: &str) -> Vec<(String, String)> {
    let Some(plugins) = &state.plugins_dir else {
        return Vec::new();
    };
    let mut env = vec![(
        "FLINK_PLUGINS_DIR".to_string(),
        plugins.display().to_string(),
    )];
    if let Some(a) = state.agents.iter().find(|a| a.resource_id == resource_id) {
        env.push(("STREAMSHIELD_AGENT_ADDRESS".into(), a.plugin.clone()));
        env.push(("STREAMSHIELD_RESOURCE_ID".into(), resource_id.into()));
        env.push(("STREAMSHIELD_ROLE".into(), role.into()));
    }
    env
}

/// Reads the JSON info file a starting component writes once it serves; fails if the process exits first.
async fn wait_info(rec: &Recorded, path: &Path, what: &str) -> Result<serde_json::Value> {
    let waited = Duration::from_secs(30);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str(&text) {
                return Ok(v);
            }
        }
        if !rec.alive() {
            return Err(exited(rec));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{what} serving"),
                waited,
                detail: format!("; see {}", rec.out.display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The kernel's range of ephemeral (outgoing connection) ports, if readable.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// This very binary: agents and the coordinator are `streamshield` subcommands.
fn streamshield_binary() -> Result<PathBuf> {
    std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))
}

async fn start_coordinator(state: &mut RunState) -> Result<()> {
    let dir = state.run_dir.join("coordinator");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let info = dir.join("info.json");
    let _ = std::fs::remove_file(&info);
    let api_token_file = dir.join("api.token");
    let agent_token_file = dir.join("agent.token");
    say(format!(
        "starting the StreamShield coordinator (API http://127.0.0.1:{})",
        state.ports.coordinator_api
    ));
    // The policy comes from the Flink configuration (profile + overrides): `streamshield.failover`,
    // `streamshield.hang-tolerance`, `streamshield.gc-tolerance`.
    let conf = std::fs::read_to_string(state.conf_dir().join("config.yaml")).unwrap_or_default();
    let mut policy = vec![
        "coordinator".to_string(),
        "--epoch-file".to_string(),
        dir.join("epoch").display().to_string(),
    ];
    if config::lookup(&conf, "streamshield.failover") == Some("true") {
        policy.push("--failover".into());
    }
    for (key, flag) in [
        ("streamshield.hang-tolerance", "--hang-tolerance"),
        ("streamshield.gc-tolerance", "--gc-tolerance"),
    ] {
        if let Some(v) = config::lookup(&conf, key) {
            policy.extend([flag.to_string(), v.replace(' ', "")]);
        }
    }
    let rec = process::spawn(process::Spec {
        name: "coordinator",
        program: &streamshield_binary()?,
        args: policy
            .into_iter()
            .chain([
                "--agents-listen".into(),
                format!("127.0.0.1:{}", state.ports.coordinator_agents),
                "--api".into(),
                format!("127.0.0.1:{}", state.ports.coordinator_api),
                "--agent-token-file".into(),
                agent_token_file.display().to_string(),
                "--api-token-file".into(),
                api_token_file.display().to_string(),
                "--flink-rest".into(),
                state.rest_url(),
                "--info-file".into(),
                info.display().to_string(),
            ])
            .collect(),
        cwd: &dir,
        log: state.logs_dir().join("coordinator.out"),
        out: state.logs_dir().join("coordinator.out"),
        env: vec![("STREAMSHIELD_LOG".into(), "info".into())],
        cgroup: None,
        exact: None,
    })?;
    state.coordinator = Some(CoordinatorInfo {
        api: format!("http://127.0.0.1:{}", state.ports.coordinator_api),
        agents: format!("127.0.0.1:{}", state.ports.coordinator_agents),
        api_token_file,
        agent_token_file,
        process: rec.clone(),
    });
    state.save()?;
    wait_info(&rec, &info, "the coordinator").await?;
    Ok(())
}

/// Starts the agent for `resource_id` (before its Flink process, so the plugin finds it at once) and records it.
async fn start_agent(
    state: &mut RunState,
    resource_id: &str,
    watches: &str,
    cgroup: Option<PathBuf>,
) -> Result<()> {
    let Some(coord) = state.coordinator.clone() else {
        return Ok(());
    };
    let dir = state.run_dir.join("agents").join(resource_id);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let info = dir.join("info.json");
    let _ = std::fs::remove_file(&info);
    let name = format!("agent-{resource_id}");
    let sock = dir.join("plugin.sock");
    let rec = process::spawn(process::Spec {
        name: &name,
        program: &streamshield_binary()?,
        args: vec![
            "agent".into(),
            "--listen".into(),
            format!("unix:{}", sock.display()),
            "--resource-id".into(),
            resource_id.into(),
            "--watches".into(),
            watches.into(),
            "--coordinator".into(),
            coord.agents.clone(),
            "--token-file".into(),
            coord.agent_token_file.display().to_string(),
            "--info-file".into(),
            info.display().to_string(),
            "--restart-spec".into(),
            dir.join("restart.json").display().to_string(),
            "--jobmanager".into(),
            format!("127.0.0.1:{}", state.ports.jm_rpc),
        ],
        cwd: &dir,
        log: state.logs_dir().join(format!("{name}.out")),
        out: state.logs_dir().join(format!("{name}.out")),
        env: vec![("STREAMSHIELD_LOG".into(), "info".into())],
        cgroup,
        exact: None,
    })?;
    state.agents.retain(|a| a.resource_id != resource_id);
    state.agents.push(AgentInfo {
        resource_id: resource_id.into(),
        plugin: format!("unix:{}", sock.display()),
        http: String::new(),
        process: rec.clone(),
    });
    state.save()?;
    let v = wait_info(&rec, &info, &name).await?;
    if let Some(a) = state
        .agents
        .iter_mut()
        .find(|a| a.resource_id == resource_id)
    {
        a.http = format!("http://{}", v["http"].as_str().unwrap_or("127.0.0.1:0"));
    }
    state.save()
}

/// An agent's `/healthz` (its view of its process), or None when it does not answer.
async fn agent_health(http: &reqwest::Client, agent: &AgentInfo) -> Option<serde_json::Value> {
    let r = http
        .get(format!("{}/healthz", agent.http))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Waits until every agent reports its plugin connected (the plugin loaded in Flink and linked).
async fn wait_plugins_linked(state: &RunState) -> Result<()> {
    say("waiting for every plugin to link to its agent");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("static client settings");
    let waited = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        let mut missing = Vec::new();
        for a in &state.agents {
            let ok = agent_health(&http, a)
                .await
                .is_some_and(|v| v["plugin_connected"] == true);
            if !ok {
                missing.push(a.resource_id.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "the plugins of {} linking to their agents",
                    missing.join(", ")
                ),
                waited,
                detail: format!(
                    "; see the agent and Flink logs in {}",
                    state.logs_dir().display()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts TaskManager `name` (also its resource id) with the run's recorded launch line, and records it. With the
/// shield profile its agent is started first.
pub async fn start_taskmanager(state: &mut RunState, name: &str, role: &str) -> Result<()> {
    let cgroup = match &state.isolation {
        Some(group) => Some(isolate::member(group, name)?),
        None => None,
    };
    if state.shielded() {
        start_agent(state, name, "tm", cgroup.clone()).await?;
    }

    let launch = state.tm_launch.clone().ok_or_else(|| {
        Error::Invalid("this run has no TaskManager launch line (was `up` interrupted?)".into())
    })?;
    let log = state.logs_dir().join(format!("{name}.log"));
    let workdir = state.run_dir.join("flink").join(name);
    std::fs::create_dir_all(&workdir).map_err(io(&workdir))?;
    let mut args = launch.java_args.clone();
    args.push(format!("-Dlog.file={}", log.display()));
    args.extend(launch.main_args.iter().cloned());
    args.extend([
        "-D".into(),
        format!("taskmanager.resource-id={name}"),
        "-D".into(),
        format!("process.taskmanager.working-dir={}", workdir.display()),
    ]);
    say(format!(
        "starting TaskManager {name} ({role}, {} slots)",
        state.slots
    ));
    let out = state.logs_dir().join(format!("{name}.out"));
    let env = plugin_env(state, name, "tm");
    let rec = process::spawn(process::Spec {
        name,
        program: Path::new("java"),
        args,
        cwd: &state.run_dir,
        log,
        out,
        env,
        cgroup,
        exact: None,
    })?;
    state.taskmanagers.retain(|t| t.resource_id != name);
    state.taskmanagers.push(TmInfo {
        resource_id: name.to_string(),
        role: role.to_string(),
        process: rec,
    });
    state.save()
}

async fn wait_registered(state: &RunState, client: &flink::Client, want: usize) -> Result<()> {
    let waited = Duration::from_secs(120);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        let n = client.taskmanagers().await.map(|t| t.len()).unwrap_or(0);
        if n >= want {
            return Ok(());
        }
        for t in &state.taskmanagers {
            if !t.process.alive() {
                return Err(exited(&t.process));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{want} TaskManagers registering with the JobManager ({n} did)"),
                waited,
                detail: format!("; see the logs in {}", state.logs_dir().display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_job_running(
    state: &RunState,
    client: &flink::Client,
    job: &str,
    waited: Duration,
) -> Result<()> {
    say("waiting for the job to run (every subtask RUNNING)");
    let deadline = tokio::time::Instant::now() + waited;
    let mut last_state: String;
    loop {
        match client.job(job).await {
            Ok(j) if j.fully_running() => return Ok(()),
            Ok(j) if crate::flink::is_terminal(&j.state) => {
                return Err(Error::JobFailed(format!(
                    "job {job} is {}: {}",
                    j.state,
                    job_exception(client, job).await
                )));
            }
            Ok(j) => last_state = j.state,
            Err(e) => last_state = format!("unknown ({e})"),
        }
        if let Some(jm) = &state.jobmanager {
            if !jm.alive() {
                return Err(exited(jm));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::JobFailed(format!(
                "job {job} still {last_state} after {waited:?}; last exception: {}",
                job_exception(client, job).await
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The newest exception of a job, summarised, or a note that there is none.
async fn job_exception(client: &flink::Client, job: &str) -> String {
    match client.exceptions(job).await {
        Ok(list) => list
            .first()
            .map(|e| flink::summarize_stacktrace(&e.stacktrace))
            .unwrap_or_else(|| "Flink recorded no exception".into()),
        Err(e) => format!("(could not read the exception history: {e})"),
    }
}

/// Writes a small probe run through the pipeline and waits until all of it comes out the other end.
async fn probe_output(state: &RunState) -> Result<()> {
    let bootstrap = state.bootstrap();
    let run = format!("probe{}", crate::host::clock::now_ms());
    say("checking that records flow end to end (probe records through the job)");
    let verifier = LiveVerifier::start(&VerifyConfig {
        bootstrap: bootstrap.clone(),
        input_topic: INPUT_TOPIC.into(),
        output_topic: OUTPUT_TOPIC.into(),
        run: Some(run.clone()),
    })?;
    const PROBES: u64 = 100;
    let cfg = ProduceConfig {
        bootstrap,
        topic: INPUT_TOPIC.into(),
        rate: 1000,
        keys: 10,
        duration: None,
        max_records: Some(PROBES),
        run: Some(run),
    };
    produce::produce(&cfg, CancellationToken::new(), |_| {}).await?;
    let waited = Duration::from_secs(120);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        let out = verifier.ledger().records_out();
        if out >= PROBES {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{PROBES} probe records reaching the output topic ({out} did)"),
                waited,
                detail: format!(
                    "; see the TaskManager logs in {}",
                    state.logs_dir().display()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops every process of a run (TaskManagers and JobManager first, then Kafka) and sweeps up any process whose
/// command line still names the run directory.
pub async fn stop_processes(state: &RunState) -> Vec<(String, process::Stopped)> {
    let grace = Duration::from_secs(20);
    // The coordinator first: a teardown is no incident to act on (no restart of a TaskManager being stopped), and
    // without it the agents release a TaskManager's held SIGTERM at once instead of checkpointing first.
    let coordinator: Vec<Recorded> = state
        .coordinator
        .iter()
        .map(|c| c.process.clone())
        .collect();
    let mut out = process::stop_all(&coordinator, grace).await;
    let flink: Vec<Recorded> = state
        .taskmanagers
        .iter()
        .map(|t| t.process.clone())
        .chain(state.jobmanager.clone())
        .collect();
    out.extend(process::stop_all(&flink, grace).await);
    let streamshield: Vec<Recorded> = state.agents.iter().map(|a| a.process.clone()).collect();
    out.extend(process::stop_all(&streamshield, grace).await);
    let brokers: Vec<Recorded> = state
        .kafka
        .iter()
        .chain(state.zookeeper.iter())
        .cloned()
        .collect();
    out.extend(process::stop_all(&brokers, grace).await);
    let strays = processes_naming(&state.run_dir);
    if !strays.is_empty() {
        let recs: Vec<Recorded> = strays
            .into_iter()
            .map(|(pid, start)| Recorded {
                name: format!("stray pid {pid}"),
                pid,
                start_ticks: start,
                log: PathBuf::new(),
                out: PathBuf::new(),
            })
            .collect();
        out.extend(process::stop_all(&recs, Duration::from_secs(5)).await);
    }
    if let Some(group) = &state.isolation {
        isolate::sweep(group);
    }
    let agent_pids: Vec<i32> = state.agents.iter().map(|a| a.process.pid).collect();
    if !agent_pids.is_empty() {
        isolate::sweep_agent_rules(&agent_pids);
    }
    out
}

/// Processes (pid, start ticks) whose command line contains `dir/`; never this process.
pub fn processes_naming(dir: &Path) -> Vec<(i32, u64)> {
    let needle = format!("{}/", dir.display());
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            if let Some((start, state)) =
                crate::host::procfs::stat(pid as u32).map(|s| (s.start_ticks, s.state))
            {
                if state != 'Z' {
                    out.push((pid, start));
                }
            }
        }
    }
    out
}

/// Stops the run at `dir`. Returns what was stopped; `Ok(None)` when nothing was up.
pub async fn down(dir: &Path, purge: bool) -> Result<Option<Vec<(String, process::Stopped)>>> {
    let Some(state) = RunState::load(dir)? else {
        let strays = processes_naming(dir);
        if purge && dir.exists() && strays.is_empty() {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        return Ok(None);
    };
    let stopped = stop_processes(&state).await;
    let _ = std::fs::remove_file(RunState::path(dir));
    if purge {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    Ok(Some(stopped))
}

/// `status --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub up: bool,
    pub run_dir: PathBuf,
    pub profile: String,
    pub flink: FlinkStatus,
    pub kafka: KafkaStatus,
    pub jobmanager: Option<ProcStatus>,
    pub taskmanagers: Vec<TmStatus>,
    pub jobs: Vec<JobStatus>,
    pub workload: Option<WorkloadInfo>,
    /// Agents (shield profile): their process and what they report of theirs.
    pub agents: Vec<AgentStatusLine>,
    pub coordinator: Option<CoordinatorStatus>,
    /// What could not be read (REST down, ...).
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct AgentStatusLine {
    pub resource_id: String,
    /// The agent's own pid.
    pub pid: i32,
    pub alive: bool,
    pub metrics_url: String,
    /// The agent's view of its Flink process (None when the agent does not answer).
    pub liveness: Option<String>,
    pub plugin_connected: Option<bool>,
    /// The watched Flink process's pid, as its plugin reported it.
    pub watched_pid: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct CoordinatorStatus {
    pub api: String,
    pub pid: i32,
    pub alive: bool,
    pub api_token_file: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct FlinkStatus {
    pub version: String,
    pub rest: String,
}

#[derive(Debug, Serialize)]
pub struct KafkaStatus {
    pub version: String,
    pub bootstrap: String,
    pub pid: Option<i32>,
    pub alive: bool,
}

#[derive(Debug, Serialize)]
pub struct ProcStatus {
    pub pid: i32,
    pub alive: bool,
    pub log: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct TmStatus {
    pub resource_id: String,
    pub pid: i32,
    /// `active` when its slots run tasks, `standby` when all its slots are free (as Flink reports them now;
    /// the role it was started in when Flink does not answer).
    pub role: String,
    pub alive: bool,
    pub stopped: bool,
    pub registered: bool,
    pub slots: Option<i64>,
    pub free_slots: Option<i64>,
    pub log: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct JobStatus {
    pub id: String,
    pub name: String,
    pub state: String,
}

pub async fn status(dir: &Path) -> Result<Status> {
    let state = RunState::load(dir)?.ok_or_else(|| Error::NotUp(dir.to_path_buf()))?;
    // Short time-outs: a stopped JobManager must not make `status` hang.
    let client = flink::Client::with_timeout(state.rest_url(), Duration::from_secs(3));
    let mut problems = Vec::new();
    let tms = match client.taskmanagers().await {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(format!("taskmanagers: {e}"));
            None
        }
    };
    let jobs = match client.jobs().await {
        Ok(j) => j
            .into_iter()
            .map(|j| JobStatus {
                id: j.jid,
                name: j.name,
                state: j.state,
            })
            .collect(),
        Err(e) => {
            problems.push(format!("jobs: {e}"));
            Vec::new()
        }
    };
    let taskmanagers = state
        .taskmanagers
        .iter()
        .map(|t| {
            let reg = tms
                .as_ref()
                .and_then(|l| l.iter().find(|x| x.id == t.resource_id));
            let role = match reg {
                Some(r) if r.free_slots < r.slots => "active".to_string(),
                Some(_) => "standby".to_string(),
                None => t.role.clone(),
            };
            TmStatus {
                resource_id: t.resource_id.clone(),
                pid: t.process.pid,
                role,
                alive: t.process.alive(),
                stopped: t.process.stopped(),
                registered: reg.is_some(),
                slots: reg.map(|r| r.slots),
                free_slots: reg.map(|r| r.free_slots),
                log: t.process.log.clone(),
            }
        })
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("static client settings");
    let mut agents = Vec::new();
    for a in &state.agents {
        let health = agent_health(&http, a).await;
        agents.push(AgentStatusLine {
            resource_id: a.resource_id.clone(),
            pid: a.process.pid,
            alive: a.process.alive(),
            metrics_url: format!("{}/metrics", a.http),
            liveness: health
                .as_ref()
                .and_then(|h| h["liveness"].as_str().map(str::to_string)),
            plugin_connected: health
                .as_ref()
                .and_then(|h| h["plugin_connected"].as_bool()),
            watched_pid: health.as_ref().and_then(|h| h["pid"].as_u64()),
        });
    }
    let coordinator = state.coordinator.as_ref().map(|c| CoordinatorStatus {
        api: c.api.clone(),
        pid: c.process.pid,
        alive: c.process.alive(),
        api_token_file: c.api_token_file.clone(),
    });
    let up = state.processes().iter().any(|p| p.alive());
    Ok(Status {
        up,
        run_dir: state.run_dir.clone(),
        profile: state.profile.clone(),
        flink: FlinkStatus {
            version: state.flink_version.clone(),
            rest: state.rest_url(),
        },
        kafka: KafkaStatus {
            version: state.kafka_version.clone(),
            bootstrap: state.bootstrap(),
            pid: state.kafka.as_ref().map(|k| k.pid),
            alive: state.kafka.as_ref().is_some_and(|k| k.alive()),
        },
        jobmanager: state.jobmanager.as_ref().map(|j| ProcStatus {
            pid: j.pid,
            alive: j.alive(),
            log: j.log.clone(),
        }),
        taskmanagers,
        jobs,
        workload: state.workload.clone(),
        agents,
        coordinator,
        problems,
    })
}

/// The log file of `component` (`kafka`, `jobmanager`, `tm-1`, ...).
pub fn log_path(dir: &Path, component: &str, stdout: bool) -> Result<PathBuf> {
    let state = RunState::load(dir)?.ok_or_else(|| Error::NotUp(dir.to_path_buf()))?;
    let procs = state.processes();
    match procs.iter().find(|p| p.name == component) {
        Some(p) => Ok(if stdout { p.out.clone() } else { p.log.clone() }),
        None => Err(Error::UnknownComponent {
            name: component.to_string(),
            known: procs
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_shift_and_overflow() {
        let p = Ports::with_offset(100).unwrap();
        assert_eq!((p.rest, p.kafka), (8181, 9192));
        assert!(Ports::with_offset(60000).is_err());
    }

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(base64_url(b"\xfb\xff"), "-_8");
        assert_ne!(cluster_id(), cluster_id());
        for _ in 0..2000 {
            assert!(
                !cluster_id().starts_with('-'),
                "a leading '-' reads as an option"
            );
        }
    }

    fn test_state(dir: &Path) -> RunState {
        RunState {
            schema: STATE_SCHEMA.into(),
            run_dir: dir.to_path_buf(),
            profile: "stock".into(),
            flink_version: "1.20.5".into(),
            kafka_version: "4.1.1".into(),
            ports: Ports::with_offset(0).unwrap(),
            slots: 2,
            kafka: None,
            jobmanager: None,
            taskmanagers: vec![],
            agents: vec![],
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
        }
    }

    #[test]
    fn state_round_trip_and_schema_check() {
        let d = tempfile::tempdir().unwrap();
        let s = test_state(d.path());
        s.save().unwrap();
        let back = RunState::load(d.path()).unwrap().unwrap();
        assert_eq!(back.bootstrap(), "127.0.0.1:9092");
        std::fs::write(RunState::path(d.path()), "{\"schema\": 1}").unwrap();
        assert!(matches!(
            RunState::load(d.path()),
            Err(Error::BadState { .. })
        ));
    }

    #[tokio::test]
    async fn down_with_nothing_up_says_so() {
        let d = tempfile::tempdir().unwrap();
        assert!(down(d.path(), false).await.unwrap().is_none());
        assert!(matches!(status(d.path()).await, Err(Error::NotUp(_))));
    }

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

    async fn fake_flink(job_state: &str) -> wiremock::MockServer {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, ResponseTemplate};
        let server = wiremock::MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jobs/j1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "jid": "j1", "name": "n", "state": job_state,
                "vertices": [{"id": "v", "name": "src", "status": "CREATED", "parallelism": 1}]
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jobs/j1/exceptions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "exceptionHistory": {"entries": [{
                    "exceptionName": "org.apache.flink.runtime.JobException",
                    "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat x\nCaused by: org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node assignment\n\tat y",
                    "timestamp": 1
                }]}
            })))
            .mount(&server)
            .await;
        server
    }

    #[tokio::test]
    async fn a_failed_job_fails_up_with_flinks_exception() {
        let server = fake_flink("FAILED").await;
        let d = tempfile::tempdir().unwrap();
        let client = flink::Client::new(server.uri());
        let e = wait_job_running(
            &test_state(d.path()),
            &client,
            "j1",
            Duration::from_secs(30),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("is FAILED"), "{e}");
        assert!(
            e.contains("TimeoutException: Timed out waiting for a node assignment"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_job_that_never_runs_times_out_with_its_last_exception() {
        let server = fake_flink("RESTARTING").await;
        let d = tempfile::tempdir().unwrap();
        let client = flink::Client::new(server.uri());
        let start = std::time::Instant::now();
        let e = wait_job_running(
            &test_state(d.path()),
            &client,
            "j1",
            Duration::from_millis(800),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(start.elapsed() < Duration::from_secs(10), "no hang");
        assert!(e.contains("still RESTARTING"), "{e}");
        assert!(e.contains("TimeoutException"), "{e}");
    }
}
