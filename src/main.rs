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
    /// How long the generator runs.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Records per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    #[arg(long, default_value_t = 100)]
    keys: u32,
    /// Run directory for the demo's own cluster.
    #[arg(long, env = "STREAMSHIELD_DEMO_DIR", default_value_os_t = local::default_run_dir().with_file_name("demo"))]
    dir: PathBuf,
    #[arg(long, default_value_t = 0, env = "STREAMSHIELD_PORT_OFFSET")]
    port_offset: u16,
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
        dir: a.dir,
        duration: a.duration,
        rate: a.rate,
        keys: a.keys,
        port_offset: a.port_offset,
    };
    let result = demo::run(&opts, shutdown_token()).await?;
    println!(
        "\nStreamShield demo: stock Flink {} + Kafka {}, sequence workload, exactly-once\n",
        local::dist::FLINK_VERSION,
        local::dist::KAFKA_VERSION
    );
    print!("{}", demo::table(&result));
    let r = &result.report;
    Ok(
        if r.records_lost == 0 && r.records_duplicated == 0 && r.state_errors == 0 && r.complete {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        },
    )
}
