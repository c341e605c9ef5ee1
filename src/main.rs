//! The `streamshield` binary: argument parsing, signals and exit codes. Each command's arguments live with its
//! module; the work is in the library and what is printed for people in `print`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use streamshield::agent::spill::cli::SpillCommand;
use streamshield::agent::{config::AgentArgs, BoundAgent};
use streamshield::coordinator::{config::CoordinatorArgs, BoundCoordinator};
use streamshield::kube::{config::WebhookArgs, webhook::BoundWebhook};
use streamshield::local::{self, cli::LocalCommand, UpOptions};
use streamshield::workload::cli::WorkloadCommand;
use streamshield::workload::live::{LiveVerifier, VerifyConfig};
use streamshield::workload::produce::{self, ProduceConfig};
use streamshield::{demo, drill, install, print, status};

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
    Demo(demo::DemoArgs),
    /// Injects a real fault into a real local cluster, round after round, and measures stock, tuned and shielded
    /// recovery side by side (report.json, report.md, timeline.svg).
    Drill(drill::cli::DrillArgs),
    /// The agent beside Flink processes (every JVM of a host, or a pod's TaskManager): plugin link, liveness,
    /// fencing and restart in place, /metrics, uplink to the coordinator.
    Agent(AgentArgs),
    /// The coordinator: merges agents and Flink REST, applies each job's policy, orders and logs decisions, serves
    /// the API.
    Coordinator(CoordinatorArgs),
    /// A live table of the cluster from the coordinator.
    Status(status::StatusArgs),
    /// Installs StreamShield's plugin and keys into an existing Flink distribution and writes starter configs.
    Install(install::InstallArgs),
    /// Removes what `install` added to a Flink distribution.
    Uninstall(install::UninstallArgs),
    /// The Kubernetes admission webhook: injects the agent and the plugin into opted-in Flink pods and the plugin's
    /// keys into opted-in FlinkDeployments; never blocks a pod.
    Webhook(WebhookArgs),
    /// The agent's spill log on disk: inspect a spill directory, or run its crash-test workload.
    Spill {
        #[command(subcommand)]
        command: SpillCommand,
    },
    /// Copies the plugin jar into a directory (what the injected init container runs).
    PluginJar {
        /// The jar [default: the image's].
        #[arg(long, default_value = "/opt/streamshield/streamshield-plugin.jar")]
        from: std::path::PathBuf,
        /// The directory (Flink's `plugins/streamshield/` through a shared volume).
        #[arg(long)]
        to: std::path::PathBuf,
    },
}

/// sysexits EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;
/// The result did not hold (verify --check, a drill round that failed, the demo).
const EXIT_CHECK: u8 = 3;

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
        Command::Install(a) => Ok(exit(install::install(&a).await)),
        Command::Uninstall(a) => Ok(exit(install::uninstall(&a))),
        Command::Webhook(a) => run_webhook(a).await,
        Command::Spill { command } => Ok(run_spill(command)),
        Command::PluginJar { from, to } => match streamshield::kube::copy_plugin_jar(&from, &to) {
            Ok(p) => {
                println!("{}", p.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

fn run_spill(cmd: SpillCommand) -> ExitCode {
    use streamshield::agent::spill;
    let r = match cmd {
        SpillCommand::Inspect(a) => spill::inspect(&a.dir, a.config()).map(|i| {
            println!(
                "{}",
                serde_json::to_string_pretty(&i).expect("plain data serializes")
            )
        }),
        SpillCommand::Exercise { spill: a, seed } => spill::exercise::run(&a.dir, a.config(), seed),
        SpillCommand::Bench {
            spill: a,
            records,
            payload_bytes,
            batch,
            read_batch,
        } => spill::bench::run(
            &a.dir,
            a.config(),
            records,
            payload_bytes,
            batch,
            read_batch,
        )
        .map(|r| {
            println!(
                "{}",
                serde_json::to_string(&r).expect("plain data serializes")
            )
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A configuration error (exit 64) or success.
fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// Install's outcome: its errors say what is wrong and that nothing changed; bad input exits 64.
fn exit(r: Result<(), install::Error>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_bad_input() => config_error(e),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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
                    print::local_status(&local::status(&state.run_dir).await?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(local::Error::AlreadyUp { dir, alive }) => {
                    println!("already up at {} ({alive})", dir.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ local::Error::Invalid(_)) => Ok(config_error(e)),
                Err(e) => Err(e.into()),
            }
        }
        LocalCommand::Status { dir, json } => match local::status(&dir.dir).await {
            Ok(s) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    print::local_status(&s);
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
                bootstrap: kafka.bootstrap().map_err(anyhow::Error::msg)?,
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
                bootstrap: kafka.bootstrap().map_err(anyhow::Error::msg)?,
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
                print::verify_report(&report);
            }
            let clean = report.records_lost == 0
                && report.records_duplicated == 0
                && report.state_errors == 0;
            Ok(if check && !(clean && report.complete) {
                ExitCode::from(EXIT_CHECK)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
async fn run_demo(a: demo::DemoArgs) -> Result<ExitCode> {
    let opts = demo::DemoOptions {
        dir: a.dir.clone(),
        warmup: a.warmup,
        rate: a.rate,
        keys: a.keys,
        port_offset: a.port_offset,
    };
    // demo::run checks its settings before it starts anything.
    let rep = match demo::run(&opts, shutdown_token()).await {
        Err(e @ drill::Error::Invalid(_)) => return Ok(config_error(e)),
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
        ExitCode::from(EXIT_CHECK)
    })
}

async fn run_drill(a: drill::cli::DrillArgs) -> Result<ExitCode> {
    use streamshield::drill::Scenario;
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
        return Ok(config_error(e));
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
        ExitCode::from(EXIT_CHECK)
    })
}

/// Writes `info` (JSON) to `path` atomically, once a daemon serves (for whoever started it).
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
    let cfg = match a.settings() {
        Ok(c) => c,
        Err(e) => return Ok(config_error(e)),
    };
    let info = cfg.info_file.clone();
    let agent = match BoundAgent::bind(cfg).await {
        Ok(b) => b,
        Err(e) => return Ok(config_error(e)),
    };
    write_info(
        &info,
        serde_json::json!({"pid": std::process::id(), "plugin": agent.plugin_endpoint().to_string(),
                           "http": agent.http_addr().to_string()}),
    )?;
    let drained = agent.run(shutdown_token()).await?;
    eprintln!("agent stopped ({drained:?})");
    Ok(ExitCode::SUCCESS)
}

async fn run_coordinator(a: CoordinatorArgs) -> Result<ExitCode> {
    let cfg = match a.settings() {
        Ok(c) => c,
        Err(e) => return Ok(config_error(e)),
    };
    let info = cfg.info_file.clone();
    let c = match BoundCoordinator::bind(cfg).await {
        Ok(c) => c,
        Err(e) => return Ok(config_error(e)),
    };
    write_info(
        &info,
        serde_json::json!({"pid": std::process::id(), "agents": c.agents_addr().to_string(),
                           "api": format!("http://{}", c.api_addr())}),
    )?;
    let drained = c.run(shutdown_token()).await?;
    eprintln!("coordinator stopped ({drained:?})");
    Ok(ExitCode::SUCCESS)
}

async fn run_webhook(a: WebhookArgs) -> Result<ExitCode> {
    let cfg = match a.settings() {
        Ok(c) => c,
        Err(e) => return Ok(config_error(e)),
    };
    let info = cfg.info_file.clone();
    let w = match BoundWebhook::bind(cfg).await {
        Ok(w) => w,
        Err(e) => return Ok(config_error(e)),
    };
    write_info(
        &info,
        serde_json::json!({"pid": std::process::id(), "admission": format!("https://{}", w.addr()),
                           "http": format!("http://{}", w.http_addr())}),
    )?;
    let drained = w.run(shutdown_token()).await?;
    eprintln!("webhook stopped ({drained:?})");
    Ok(ExitCode::SUCCESS)
}

async fn run_status(a: status::StatusArgs) -> Result<ExitCode> {
    let client = a.client().map_err(anyhow::Error::msg)?;
    let cancel = shutdown_token();
    loop {
        let cluster = client.cluster().await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&cluster)?);
        } else {
            print::cluster(&cluster);
        }
        let Some(every) = a.watch else { break };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(every) => println!(),
        }
    }
    Ok(ExitCode::SUCCESS)
}
