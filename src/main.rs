//! The `streamshield` binary: argument parsing, signals and exit codes. The work is in the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use streamshield::demo;
use streamshield::local::{self, Delivery, UpOptions};
use streamshield::workload::live::{LiveVerifier, VerifyConfig};
use streamshield::workload::produce::{self, ProduceConfig};
use streamshield::workload::{ledger::Report, INPUT_TOPIC, OUTPUT_TOPIC};

/// StreamShield: a resiliency layer for stock Apache Flink.
#[derive(Parser)]
#[command(name = "streamshield", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The embedded local environment: real Flink 1.20 + real Kafka on 127.0.0.1.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// The sequence workload's generator and verifier.
    Workload {
        #[command(subcommand)]
        command: WorkloadCommand,
    },
    /// Runs the main job on the embedded default: local up, produce + verify, summary, local down.
    Demo(DemoArgs),
    /// Injects a real fault into a real local cluster, round after round, and measures stock, tuned and shielded
    /// recovery side by side (report.json, report.md, timeline.svg).
    Drill(DrillArgs),
    /// The sidecar beside one Flink process: plugin link, liveness, /metrics, uplink to the coordinator.
    Agent(AgentArgs),
    /// The coordinator: merges agents and Flink REST, logs events and (observe-only) decisions, serves the API.
    Coordinator(CoordinatorArgs),
    /// A live table of the cluster from the coordinator.
    Status(StatusArgs),
}

#[derive(Args)]
struct AgentArgs {
    /// Where the plugin connects: unix:/path (owner-only socket) or tcp:127.0.0.1:PORT (needs --secret-file).
    #[arg(long, env = "STREAMSHIELD_AGENT_LISTEN")]
    listen: streamshield::host::endpoint::Endpoint,
    /// The secret a plugin must present; created (0600) when missing. Required for tcp:.
    #[arg(long, env = "STREAMSHIELD_AGENT_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Resource id of the watched process (the TaskManager's taskmanager.resource-id, or jobmanager).
    #[arg(long, env = "STREAMSHIELD_RESOURCE_ID")]
    resource_id: String,
    /// What the agent watches: tm or jm.
    #[arg(long, default_value = "tm", value_parser = parse_role)]
    watches: streamshield::protocol::Role,
    /// Pid of the watched process, when known before its plugin connects.
    #[arg(long)]
    pid: Option<u32>,
    /// Address of /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:0", env = "STREAMSHIELD_AGENT_HTTP")]
    http: std::net::SocketAddr,
    /// The coordinator's agent address (host:port).
    #[arg(long, env = "STREAMSHIELD_COORDINATOR")]
    coordinator: Option<String>,
    /// The coordinator's agent token.
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// No heartbeat for this long makes the process suspect (then paused, hung or busy-gc by /proc).
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    suspect_after: Duration,
    /// How often status goes to the coordinator.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    status_interval: Duration,
    /// The heartbeat interval plugins are asked to keep.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Close a connection that holds half a frame without progress for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    stall_timeout: Duration,
    /// Write the bound addresses and pid here (JSON) once serving.
    #[arg(long)]
    info_file: Option<PathBuf>,
    /// How to start the watched process again on the coordinator's `restart` order (JSON written by `local`).
    #[arg(long, env = "STREAMSHIELD_AGENT_RESTART_SPEC")]
    restart_spec: Option<PathBuf>,
    /// The JobManager's RPC host:port. A TaskManager's agent that has lost the coordinator for
    /// --partition-tolerance and cannot reach this either fences its TaskManager.
    #[arg(long, env = "STREAMSHIELD_JOBMANAGER")]
    jobmanager: Option<String>,
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    partition_tolerance: Duration,
}

fn parse_role(s: &str) -> Result<streamshield::protocol::Role, String> {
    match s {
        "tm" => Ok(streamshield::protocol::Role::Tm),
        "jm" => Ok(streamshield::protocol::Role::Jm),
        _ => Err(format!("expected tm or jm, got {s:?}")),
    }
}

#[derive(Args)]
struct CoordinatorArgs {
    /// Where agents connect.
    #[arg(
        long,
        default_value = "127.0.0.1:9250",
        env = "STREAMSHIELD_COORDINATOR_AGENTS"
    )]
    agents_listen: String,
    /// Where the HTTP API listens.
    #[arg(
        long,
        default_value = "127.0.0.1:9251",
        env = "STREAMSHIELD_COORDINATOR_API"
    )]
    api: std::net::SocketAddr,
    /// Token agents must present; created (0600) when missing.
    #[arg(long, env = "STREAMSHIELD_COORDINATOR_TOKEN_FILE")]
    agent_token_file: PathBuf,
    /// Bearer token of the API; created (0600) when missing.
    #[arg(long, env = "STREAMSHIELD_API_TOKEN_FILE")]
    api_token_file: PathBuf,
    /// Flink's REST endpoint.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8081",
        env = "STREAMSHIELD_FLINK_REST"
    )]
    flink_rest: String,
    /// How often Flink's REST API is polled.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Act on failures (fence, restart) instead of only logging what would be done. `local` turns it on when the
    /// profile's Flink configuration says `streamshield.failover: true`.
    #[arg(long, env = "STREAMSHIELD_FAILOVER")]
    failover: bool,
    /// A stopped or hung TaskManager is fenced after this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    hang_tolerance: Duration,
    /// A TaskManager busy without heartbeats (garbage collection) is fenced only after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    gc_tolerance: Duration,
    /// A dead TaskManager is restarted in place once Flink runs every job again, or after this long at the latest.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    refill_max_wait: Duration,
    /// Where the coordinator's epoch (the fencing token of its orders) is kept; each start takes the next one.
    #[arg(long, env = "STREAMSHIELD_EPOCH_FILE")]
    epoch_file: Option<PathBuf>,
    /// Write the bound addresses and pid here (JSON) once serving.
    #[arg(long)]
    info_file: Option<PathBuf>,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The coordinator API (default: the local run's).
    #[arg(long)]
    api: Option<String>,
    /// The API's bearer token file (default: the local run's).
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// Print the coordinator's /v1/cluster JSON.
    #[arg(long)]
    json: bool,
    /// Refresh every N seconds until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    watch: Option<Duration>,
}

#[derive(Args, Clone)]
struct DirArg {
    /// Run directory of the local cluster (state, configs, logs, data).
    #[arg(long, env = "STREAMSHIELD_RUN_DIR", default_value_os_t = local::default_run_dir())]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Fetches what is missing, starts Kafka, a JobManager and N+K TaskManagers, and submits the workload.
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// TaskManagers that run the job.
        #[arg(long, default_value_t = 2, env = "STREAMSHIELD_TASKMANAGERS")]
        taskmanagers: u32,
        /// Spare TaskManagers started after the job, so their slots stay free.
        #[arg(long, default_value_t = 1, env = "STREAMSHIELD_STANDBY")]
        standby: u32,
        /// Slots per TaskManager. The job's parallelism is taskmanagers x slots.
        #[arg(long, default_value_t = 2, env = "STREAMSHIELD_SLOTS")]
        slots: u32,
        /// Flink settings profile (deploy/local/profiles/).
        #[arg(long, default_value = "stock", env = "STREAMSHIELD_PROFILE")]
        profile: String,
        /// Added to every port (REST 8081, JobManager RPC 6123, blob 6124, Kafka 9092/9093).
        #[arg(long, default_value_t = 0, env = "STREAMSHIELD_PORT_OFFSET")]
        port_offset: u16,
        /// Delivery guarantee of the workload's Kafka sink.
        #[arg(long, value_enum, default_value = "exactly-once")]
        delivery: Delivery,
        /// Checkpoint interval of the workload.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        checkpoint_interval: Duration,
        /// A Flink setting laid over the profile, repeatable (e.g. --flink-conf heartbeat.timeout=20s).
        #[arg(long = "flink-conf", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        flink_conf: Vec<(String, String)>,
        /// Start each TaskManager (and its agent) in its own cgroup so that `drill --scenario tm-partition` can cut
        /// its network with iptables (root, cgroup v2 and iptables needed).
        #[arg(long)]
        isolate: bool,
        /// Start the standby TaskManagers before the job and spread its slots over every TaskManager, so that the
        /// spare slots are on TaskManagers that already run the job.
        #[arg(long)]
        warm_spares: bool,
        /// Extra keyed-state bytes per key (varies checkpoint and restore size).
        #[arg(long, default_value_t = 0)]
        state_bytes: u32,
        /// An extra argument for the workload job, repeatable (e.g. --job-arg=--job-name --job-arg=mine).
        #[arg(long = "job-arg", allow_hyphen_values = true)]
        job_args: Vec<String>,
    },
    /// Shows the cluster: processes, TaskManager roles, jobs.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stops every process the run started.
    Down {
        #[command(flatten)]
        dir: DirArg,
        /// Also delete the run directory (logs, Kafka data, checkpoints).
        #[arg(long)]
        purge: bool,
    },
    /// Prints a component's log (kafka, jobmanager, tm-1, ...).
    Logs {
        component: String,
        #[command(flatten)]
        dir: DirArg,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// The process's stdout/stderr instead of its log file.
        #[arg(long)]
        out: bool,
        /// Print the file's path only.
        #[arg(long)]
        path: bool,
    },
}

#[derive(Args, Clone)]
struct KafkaArgs {
    /// Kafka bootstrap servers; default: the local cluster's (see --dir).
    #[arg(long, env = "STREAMSHIELD_BOOTSTRAP")]
    bootstrap: Option<String>,
    #[command(flatten)]
    dir: DirArg,
}

impl KafkaArgs {
    fn bootstrap(&self) -> Result<String> {
        if let Some(b) = &self.bootstrap {
            return Ok(b.clone());
        }
        match local::RunState::load(&self.dir.dir)? {
            Some(s) => Ok(s.bootstrap()),
            None => bail!(
                "no --bootstrap given and no local cluster at {}; run `streamshield local up` or pass --bootstrap",
                self.dir.dir.display()
            ),
        }
    }
}

#[derive(Subcommand)]
enum WorkloadCommand {
    /// Writes per-key strictly increasing sequence numbers at a fixed rate.
    Produce {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Records per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Distinct keys.
        #[arg(long, default_value_t = 100)]
        keys: u32,
        /// How long to produce (default: until Ctrl-C or --records).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Stop after this many records.
        #[arg(long)]
        records: Option<u64>,
        /// Run id (a new one from the clock by default).
        #[arg(long)]
        run: Option<String>,
        #[arg(long, default_value = INPUT_TOPIC)]
        topic: String,
        /// Print the final statistics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reads input and output topics and reports lost and duplicated records, latency and throughput.
    Verify {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Only this generator run (default: every run in the topics).
        #[arg(long)]
        run: Option<String>,
        /// Keep consuming for this long before settling (live mode); progress every 5 s.
        #[arg(long, value_parser = humantime::parse_duration)]
        follow: Option<Duration>,
        /// After input is read, how long the output may stay still before missing records count as lost.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// Give up waiting after this long overall (the report then says complete: false).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(long, default_value = INPUT_TOPIC)]
        input_topic: String,
        #[arg(long, default_value = OUTPUT_TOPIC)]
        output_topic: String,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
        /// Exit with code 3 unless the result is exactly-once (nothing lost or duplicated, no state error).
        #[arg(long)]
        check: bool,
    },
}

#[derive(Args)]
struct DemoArgs {
    /// Load before the TaskManager is killed (each arm).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Records per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    #[arg(long, default_value_t = 100)]
    keys: u32,
    /// Where the demo's clusters run and its drill report (report.json/md, timeline.svg) goes.
    #[arg(long, env = "STREAMSHIELD_DEMO_DIR", default_value_os_t = local::default_run_dir().with_file_name("demo"))]
    dir: PathBuf,
    #[arg(long, default_value_t = 0, env = "STREAMSHIELD_PORT_OFFSET")]
    port_offset: u16,
}

#[derive(Args)]
struct DrillArgs {
    /// tm-kill, tm-hang, tm-term, tm-partition, tm-pause-short, tm-gc-pause, jm-kill, kafka-broker-outage.
    #[arg(long, required_unless_present_any = ["quick", "render"], value_parser = parse_scenario)]
    scenario: Option<streamshield::drill::Scenario>,
    /// Rounds per arm.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Arms, in the order their rounds alternate.
    #[arg(long, value_delimiter = ',', default_value = "stock,tuned,shield")]
    arms: Vec<String>,
    /// Where report.json, report.md and timeline.svg go (default: drill-reports/<scenario>-<time>).
    #[arg(long)]
    report: Option<PathBuf>,
    /// One round of tm-kill per arm (what CI runs).
    #[arg(long)]
    quick: bool,
    /// Print report.json on stdout at the end (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Generator rate, records/s.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    #[arg(long, default_value_t = 100)]
    keys: u32,
    #[arg(long, value_enum, default_value = "exactly-once")]
    delivery: Delivery,
    /// Load before the fault (the latency baseline is its last 10 s).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Where the rounds' clusters run (removed afterwards).
    #[arg(long, env = "STREAMSHIELD_DRILL_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the rounds' run directories (logs) even when they succeed.
    #[arg(long)]
    keep_work: bool,
    /// Every arm: the spare TaskManager starts before the job, whose slots are spread over every TaskManager, so
    /// that recovery lands on TaskManagers that already run the job (see `local up --warm-spares`).
    #[arg(long)]
    warm_spares: bool,
    /// The job's checkpoint interval (with exactly-once output, the restarted job's records become visible at the
    /// first checkpoint after the restart).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    checkpoint_interval: Duration,
    /// tm-gc-pause: megabytes of live, randomly linked heap per TaskManager whose full collection is the pause
    /// (its length depends on the machine: check each round's note and keep it between 10 s and the GC tolerance).
    #[arg(long, default_value_t = streamshield::drill::GC_BALLAST_MB)]
    gc_ballast_mb: u32,
    /// tm-gc-pause: size each round's ballast from the pauses its arm measured so far (the other arms' until it has
    /// one) for a pause of about this long; --gc-ballast-mb is then the first round's. Keep it well between 10 s and
    /// the GC tolerance (30 s): one round's pause can differ from the last by 2x or more on a busy 2-core host.
    #[arg(long, value_parser = humantime::parse_duration)]
    gc_pause_target: Option<Duration>,
    /// A Flink setting laid over every arm's profile, repeatable (e.g. --flink-conf
    /// state.backend.local-recovery=false to measure what the key is worth); recorded in the report.
    #[arg(long = "flink-conf", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    flink_conf: Vec<(String, String)>,
    #[arg(long, default_value_t = 0, env = "STREAMSHIELD_PORT_OFFSET")]
    port_offset: u16,
    /// Render report.md and timeline.svg again from DIR/report.json (no drill runs).
    #[arg(long, value_name = "DIR")]
    render: Option<PathBuf>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !k.contains(' ') => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_scenario(s: &str) -> Result<streamshield::drill::Scenario, String> {
    streamshield::drill::Scenario::parse(s)
}

/// A token cancelled on Ctrl-C or SIGTERM: long commands stop what they started and exit.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        eprintln!("==> interrupted; cleaning up");
        t.cancel();
    });
    token
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STREAMSHIELD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Local { command } => run_local(command).await,
        Command::Workload { command } => run_workload(command).await,
        Command::Demo(a) => run_demo(a).await,
        Command::Drill(a) => run_drill(a).await,
        Command::Agent(a) => run_agent(a).await,
        Command::Coordinator(a) => run_coordinator(a).await,
        Command::Status(a) => run_status(a).await,
    }
}

async fn run_local(cmd: LocalCommand) -> Result<ExitCode> {
    match cmd {
        LocalCommand::Up {
            dir,
            taskmanagers,
            standby,
            slots,
            profile,
            port_offset,
            delivery,
            checkpoint_interval,
            state_bytes,
            job_args,
            isolate,
            warm_spares,
            flink_conf,
        } => {
            let opts = UpOptions {
                dir: dir.dir,
                taskmanagers,
                standby,
                slots,
                profile,
                port_offset,
                delivery,
                checkpoint_interval,
                state_bytes,
                job_args,
                flink_overrides: flink_conf,
                isolate,
                warm_spares,
            };
            match local::up(&opts, shutdown_token()).await {
                Ok(state) => {
                    print_status(&local::status(&state.run_dir).await?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(local::Error::AlreadyUp { dir, alive }) => {
                    println!("already up at {} ({alive})", dir.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e.into()),
            }
        }
        LocalCommand::Status { dir, json } => match local::status(&dir.dir).await {
            Ok(s) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    print_status(&s);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(local::Error::NotUp(d)) => {
                if json {
                    println!("{}", serde_json::json!({"up": false, "run_dir": d}));
                } else {
                    println!("no local cluster is up at {}", d.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e.into()),
        },
        LocalCommand::Down { dir, purge } => {
            match local::down(&dir.dir, purge).await? {
                None => println!("nothing is up at {}", dir.dir.display()),
                Some(stopped) => {
                    for (name, how) in stopped {
                        println!(
                            "{name:<12} {}",
                            serde_json::to_value(how)?.as_str().unwrap_or("")
                        );
                    }
                    if purge {
                        println!("removed {}", dir.dir.display());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LocalCommand::Logs {
            component,
            dir,
            tail,
            out,
            path,
        } => {
            let p = local::log_path(&dir.dir, &component, out)?;
            if path {
                println!("{}", p.display());
            } else {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?;
                match tail {
                    Some(n) => println!("{}", local::tail(&p, n)),
                    None => print!("{text}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_status(s: &local::Status) {
    println!("run dir   {}", s.run_dir.display());
    println!("profile   {}", s.profile);
    println!("flink     {} at {}", s.flink.version, s.flink.rest);
    println!(
        "kafka     {} at {} ({})",
        s.kafka.version,
        s.kafka.bootstrap,
        if s.kafka.alive {
            "running"
        } else {
            "not running"
        }
    );
    if let Some(jm) = &s.jobmanager {
        println!(
            "jobmgr    pid {} ({})",
            jm.pid,
            if jm.alive { "running" } else { "not running" }
        );
    }
    for t in &s.taskmanagers {
        println!(
            "{:<9} pid {:<8} {:<8} {}{}",
            t.resource_id,
            t.pid,
            t.role,
            if !t.alive {
                "not running"
            } else if t.stopped {
                "STOPPED (SIGSTOP)"
            } else if t.registered {
                "registered"
            } else {
                "not registered"
            },
            match (t.slots, t.free_slots) {
                (Some(n), Some(f)) => format!(", {f}/{n} slots free"),
                _ => String::new(),
            }
        );
    }
    for j in &s.jobs {
        println!("job       {} {} {}", j.id, j.name, j.state);
    }
    if let Some(c) = &s.coordinator {
        println!(
            "coord     pid {} ({}) API {}",
            c.pid,
            if c.alive { "running" } else { "not running" },
            c.api
        );
    }
    for a in &s.agents {
        println!(
            "agent     {:<10} pid {:<8} {} liveness {} {}",
            a.resource_id,
            a.pid,
            if a.alive { "running" } else { "NOT RUNNING" },
            a.liveness.as_deref().unwrap_or("?"),
            a.metrics_url
        );
    }
    for p in &s.problems {
        println!("problem   {p}");
    }
}

async fn run_workload(cmd: WorkloadCommand) -> Result<ExitCode> {
    match cmd {
        WorkloadCommand::Produce {
            kafka,
            rate,
            keys,
            duration,
            records,
            run,
            topic,
            json,
        } => {
            let cfg = ProduceConfig {
                bootstrap: kafka.bootstrap()?,
                topic,
                rate,
                keys,
                duration,
                max_records: records,
                run,
            };
            let stats = produce::produce(&cfg, shutdown_token(), |p| {
                eprintln!(
                    "run {} {:>6.1} s: sent {} acked {} failed {} ({:.0}/s)",
                    p.run, p.elapsed_s, p.sent, p.acked, p.failed, p.rate_achieved
                );
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!(
                    "run {}: sent {} acked {} failed {} in {:.1} s ({:.0} records/s)",
                    stats.run,
                    stats.sent,
                    stats.acked,
                    stats.failed,
                    stats.elapsed_s,
                    stats.rate_achieved
                );
            }
            Ok(if stats.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        WorkloadCommand::Verify {
            kafka,
            run,
            follow,
            settle,
            timeout,
            input_topic,
            output_topic,
            json,
            check,
        } => {
            let verifier = LiveVerifier::start(&VerifyConfig {
                bootstrap: kafka.bootstrap()?,
                input_topic,
                output_topic,
                run,
            })?;
            if let Some(d) = follow {
                let cancel = shutdown_token();
                let start = tokio::time::Instant::now();
                while start.elapsed() < d && !cancel.is_cancelled() {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = cancel.cancelled() => {}
                    }
                    let r = verifier.report();
                    eprintln!(
                        "{:>5} s: in {} out {} pending {} duplicated {} | latency p50 {} ms p99 {} ms",
                        start.elapsed().as_secs(),
                        r.records_in,
                        r.records_out,
                        r.records_pending,
                        r.records_duplicated,
                        r.latency_ms.p50,
                        r.latency_ms.p99
                    );
                }
            }
            let report = verifier.finish(settle, timeout).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            let clean = report.records_lost == 0
                && report.records_duplicated == 0
                && report.state_errors == 0;
            Ok(if check && !(clean && report.complete) {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn print_report(r: &Report) {
    println!("runs               {}", r.runs.join(", "));
    println!("complete           {}", r.complete);
    println!("records in / out   {} / {}", r.records_in, r.records_out);
    println!("lost               {}", r.records_lost);
    println!("duplicated         {}", r.records_duplicated);
    println!("state errors       {}", r.state_errors);
    println!("input gaps         {}", r.input_gaps);
    println!("unexpected output  {}", r.records_unexpected);
    println!(
        "latency ms         p50 {} p90 {} p99 {} max {}",
        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
    );
    println!(
        "throughput         {:.0} records/s (output, seconds with output)",
        r.throughput_out_per_s
    );
    for k in r.lost_per_key.iter().take(20) {
        println!(
            "lost in            run {} key {}: {} records from seq {}",
            k.run, k.key, k.lost, k.first_seq
        );
    }
}

async fn run_demo(a: DemoArgs) -> Result<ExitCode> {
    let opts = demo::DemoOptions {
        dir: a.dir.clone(),
        warmup: a.warmup,
        rate: a.rate,
        keys: a.keys,
        port_offset: a.port_offset,
    };
    // demo::run checks its settings before it starts anything.
    let rep = match demo::run(&opts, shutdown_token()).await {
        Err(e @ streamshield::drill::Error::Invalid(_)) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        r => r?,
    };
    println!(
        "\nStreamShield demo: kill -9 of a TaskManager running the job — Flink {} + Kafka {}, {} records/s, \
         exactly-once, verified record by record\n",
        local::dist::FLINK_VERSION,
        local::dist::KAFKA_VERSION,
        a.rate
    );
    print!("{}", demo::table(&rep));
    println!(
        "\nreport: {} (timeline.svg: output and latency around the kill)",
        a.dir.join("report").display()
    );
    let clean = rep.arms.iter().all(|x| {
        x.summary.failed_rounds == 0
            && x.summary.records_lost == 0
            && x.summary.records_duplicated == 0
    });
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

async fn run_drill(a: DrillArgs) -> Result<ExitCode> {
    use streamshield::drill::{self, Scenario};
    if let Some(dir) = &a.render {
        let rep = drill::report::read(dir)?;
        drill::report::write(dir, &rep)?;
        println!("rendered {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let scenario = if a.quick {
        Scenario::TmKill
    } else {
        a.scenario.unwrap_or(Scenario::TmKill)
    };
    let rounds = if a.quick { 1 } else { a.rounds };
    let report_dir = a.report.unwrap_or_else(|| {
        PathBuf::from("drill-reports").join(format!(
            "{}-{}",
            scenario.name(),
            streamshield::host::clock::now_ms() / 1000
        ))
    });
    let work_dir = a.work_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("streamshield-drill-{}", std::process::id()))
    });
    let opts = drill::DrillOptions {
        scenario,
        rounds,
        arms: a.arms,
        report_dir: report_dir.clone(),
        work_dir: work_dir.clone(),
        keep_work: a.keep_work,
        port_offset: a.port_offset,
        rate: a.rate,
        keys: a.keys,
        delivery: a.delivery,
        warmup: a.warmup,
        taskmanagers: 2,
        slots: 2,
        warm_spares: a.warm_spares,
        checkpoint_interval: a.checkpoint_interval,
        gc_ballast_mb: a.gc_ballast_mb,
        gc_pause_target: a.gc_pause_target,
        flink_conf: a.flink_conf,
    };
    if let Err(e) = drill::validate(&opts) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    let result = drill::run(&opts, shutdown_token()).await;
    // Only what this drill created: its work dir, if no round left logs worth keeping.
    if !a.keep_work {
        let _ = std::fs::remove_dir(&work_dir);
    }
    let rep = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        println!("{}", drill::report::markdown(&rep));
        println!("report: {}", report_dir.display());
    }
    let failed: usize = rep.arms.iter().map(|x| x.summary.failed_rounds).sum();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// sysexits EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

fn write_info(path: &Option<PathBuf>, info: serde_json::Value) -> Result<()> {
    if let Some(p) = path {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&info)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, p).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

async fn run_agent(a: AgentArgs) -> Result<ExitCode> {
    use streamshield::agent::{AgentConfig, BoundAgent, Error as AgentError};
    let cfg = AgentConfig {
        listen: a.listen,
        secret_file: a.secret_file,
        resource_id: a.resource_id,
        watches: a.watches,
        pid: a.pid,
        http: a.http,
        coordinator: a.coordinator,
        token_file: a.token_file,
        suspect_after: a.suspect_after,
        status_interval: a.status_interval,
        heartbeat_interval: a.heartbeat_interval,
        stall_timeout: a.stall_timeout,
        restart_spec: a.restart_spec,
        jobmanager: a.jobmanager,
        partition_tolerance: a.partition_tolerance,
    };
    let agent = match BoundAgent::bind(cfg).await {
        Ok(b) => b,
        Err(e @ AgentError::Invalid(_)) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        Err(e) => return Err(e.into()),
    };
    write_info(
        &a.info_file,
        serde_json::json!({"pid": std::process::id(), "plugin": agent.plugin_endpoint().to_string(),
                           "http": agent.http_addr().to_string()}),
    )?;
    let shutdown = shutdown_token();
    agent.run(shutdown).await?;
    eprintln!("agent stopped");
    Ok(ExitCode::SUCCESS)
}

async fn run_coordinator(a: CoordinatorArgs) -> Result<ExitCode> {
    use streamshield::coordinator::{BoundCoordinator, CoordinatorConfig, Error as CoordError};
    let cfg = CoordinatorConfig {
        agents_listen: a.agents_listen,
        api_listen: a.api,
        agent_token_file: a.agent_token_file,
        api_token_file: a.api_token_file,
        flink_rest: a.flink_rest,
        poll_interval: a.poll_interval,
        policy: streamshield::coordinator::policy::PolicyConfig {
            failover: a.failover,
            hang_tolerance: a.hang_tolerance,
            gc_tolerance: a.gc_tolerance,
            refill_max_wait: a.refill_max_wait,
        },
        epoch_file: a.epoch_file,
    };
    if a.hang_tolerance >= a.gc_tolerance {
        eprintln!("error: --hang-tolerance must be shorter than --gc-tolerance");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    let c = match BoundCoordinator::bind(cfg).await {
        Ok(c) => c,
        Err(e @ CoordError::Invalid(_)) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        Err(e) => return Err(e.into()),
    };
    write_info(
        &a.info_file,
        serde_json::json!({"pid": std::process::id(), "agents": c.agents_addr().to_string(),
                           "api": format!("http://{}", c.api_addr())}),
    )?;
    c.run(shutdown_token()).await?;
    eprintln!("coordinator stopped");
    Ok(ExitCode::SUCCESS)
}

async fn run_status(a: StatusArgs) -> Result<ExitCode> {
    let (api, token_file) = match (a.api, a.api_token_file) {
        (Some(api), Some(t)) => (api, t),
        (api, token) => {
            let state = local::RunState::load(&a.dir.dir)?;
            let Some(c) = state.as_ref().and_then(|s| s.coordinator.clone()) else {
                bail!(
                    "no coordinator known: pass --api and --api-token-file, or run `streamshield local up --profile shield` (looked in {})",
                    a.dir.dir.display()
                );
            };
            (api.unwrap_or(c.api), token.unwrap_or(c.api_token_file))
        }
    };
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading the API token {}", token_file.display()))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let cancel = shutdown_token();
    loop {
        let resp = client
            .get(format!("{api}/v1/cluster"))
            .bearer_auth(token.trim())
            .send()
            .await
            .with_context(|| format!("asking the coordinator at {api}"))?;
        if !resp.status().is_success() {
            bail!(
                "the coordinator answered {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let cluster: serde_json::Value = resp.json().await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&cluster)?);
        } else {
            print_cluster(&cluster);
        }
        let Some(every) = a.watch else { break };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(every) => println!(),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_cluster(c: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let f = &c["flink"];
    println!(
        "coordinator  {}   flink {} ({})",
        s(&c["mode"]),
        s(&f["rest"]),
        if f["reachable"] == true {
            "reachable"
        } else {
            "UNREACHABLE"
        }
    );
    for j in f["jobs"].as_array().into_iter().flatten() {
        println!(
            "job          {} {} {} ({}/{} vertices running)",
            s(&j["id"]),
            s(&j["name"]),
            s(&j["state"]),
            j["vertices_running"],
            j["vertices"]
        );
    }
    println!(
        "{:<12} {:<8} {:<10} {:<9} {:<10} PID",
        "RESOURCE", "ROLE", "SLOTS", "AGENT", "LIVENESS"
    );
    for t in c["taskmanagers"].as_array().into_iter().flatten() {
        let slots = match (&t["flink"]["free_slots"], &t["flink"]["slots"]) {
            (serde_json::Value::Number(fr), serde_json::Value::Number(n)) => {
                format!("{fr}/{n} free")
            }
            _ => "-".into(),
        };
        let agent = &t["agent"];
        println!(
            "{:<12} {:<8} {:<10} {:<9} {:<10} {}",
            s(&t["resource_id"]),
            s(&t["role"]),
            slots,
            if agent["connected"] == true {
                "connected"
            } else if agent.is_null() {
                "none"
            } else {
                "LOST"
            },
            s(&agent["status"]["liveness"]),
            agent["status"]["pid"]
        );
    }
    for a in c["agents"].as_array().into_iter().flatten() {
        if a["status"]["watches"] == "jm" {
            println!(
                "jobmanager   agent {}  liveness {}  pid {}",
                if a["connected"] == true {
                    "connected"
                } else {
                    "LOST"
                },
                s(&a["status"]["liveness"]),
                a["status"]["pid"]
            );
        }
    }
    for d in c["decisions"].as_array().into_iter().flatten().take(5) {
        println!(
            "decision     #{} {} {}: {} [{}]",
            d["id"],
            s(&d["trigger"]),
            s(&d["resource_id"]),
            s(&d["action"]),
            s(&d["mode"])
        );
    }
}
