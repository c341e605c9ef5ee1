//! One round of a drill, step by step: bring up the arm's cluster with the load and the live verifier (`prepare`),
//! wait out the warm-up until the job is steady before the fault (`warm_up`), inject the scenario's fault
//! (`inject::inject`), watch the recovery (`watch`), then collect what the round measured, why the job failed over
//! and the logs that explain it (`collect`). `run_round` heals and takes the cluster down whatever happened; a round
//! that did not get to measure is recorded with its [`RoundError`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use super::causes::{failure_causes, keep_logs, partition_outcome};
use super::inject::{self, Fault, Injected};
use super::measure::{self, Observation, Round};
use super::watch::{failovers, Watcher};
use super::{jvm, phases, DrillOptions, Scenario, OBSERVATION_OVERRIDES};
use crate::flink;
use crate::host::clock::now_ms;
use crate::host::process::Recorded;
use crate::kafka;
use crate::local::{self, dist::say, RunState, UpOptions};
use crate::workload::ledger;
use crate::workload::live::{LiveVerifier, VerifyConfig};
use crate::workload::produce::{self, ProduceConfig, ProduceStats};

/// Why a round did not get to measure. Its message is the round's `failure` in the report.
#[derive(Debug, thiserror::Error)]
pub(super) enum RoundError {
    #[error("interrupted")]
    Interrupted,
    #[error("the {arm} cluster did not come up: {source}")]
    ClusterUp {
        arm: String,
        #[source]
        source: Box<local::Error>,
    },
    #[error("the cluster has no job")]
    NoJob,
    #[error("verifier: {0}")]
    Verifier(#[source] kafka::Error),
    #[error("generator: {0}")]
    Generator(#[source] JoinError),
    #[error("finding the TaskManagers that run the job: {0}")]
    FindTarget(#[source] flink::Error),
    #[error("no running TaskManager hosts subtasks of job {job} (hosts: {hosts:?})")]
    NoRunningTarget { job: String, hosts: Vec<String> },
    #[error("no target TaskManager")]
    NoTarget,
    #[error("{name} exited while building its GC ballast")]
    BallastExited { name: String },
    #[error("{name} did not report its GC ballast ready within 240 s (see {})", .log.display())]
    BallastTimeout { name: String, log: PathBuf },
    /// The target JVM's attach listener did not come up.
    #[error(transparent)]
    Attach(jvm::Error),
    #[error(transparent)]
    AttachTask(JoinError),
    #[error(
        "the job was not steady before the fault (state {state}, {} restarts so far): nothing to measure",
        .restarts.map_or_else(|| "?".to_string(), |r| r.to_string())
    )]
    NotSteady {
        state: String,
        restarts: Option<u64>,
    },
    #[error("the job could not be read before the fault: {0}")]
    JobUnreadable(#[source] flink::Error),
    #[error("could not signal {name} (pid {pid}): it is gone")]
    Gone { name: String, pid: i32 },
    #[error("no JobManager recorded")]
    NoJobManager,
    #[error("no Kafka broker recorded")]
    NoKafka,
    #[error("the cluster was not started isolated")]
    NotIsolated,
    /// Cutting the target's network failed.
    #[error(transparent)]
    Cut(local::isolate::Error),
    #[error("restarting the JobManager: {0}")]
    RestartJobManager(#[source] Box<local::Error>),
    #[error("restarting Kafka: {0}")]
    RestartKafka(#[source] Box<local::Error>),
    /// `tm-gc-pause`: the target died while the collection ran (the shield arm fences a pause past its GC
    /// tolerance).
    #[error(
        "{name} (pid {pid}) died during the injected collection, which had not ended (GC.run: {source}): a pause \
         past the GC tolerance is fenced in the shield arm"
    )]
    DiedInCollection {
        name: String,
        pid: i32,
        #[source]
        source: jvm::Error,
    },
    #[error("GC.run on {name}: {source}")]
    GcRun {
        name: String,
        #[source]
        source: jvm::Error,
    },
    #[error("GC.run on {name}: {source}")]
    GcRunTask {
        name: String,
        #[source]
        source: JoinError,
    },
}

/// What every step of a round knows: the drill's options, the arm, the round's number and its run directory.
struct Ctx<'a> {
    opts: &'a DrillOptions,
    arm: &'a str,
    round: u32,
    dir: &'a Path,
}

/// One round: fresh cluster, load, fault, watch, heal, verify, down. Never fails: whatever went wrong is the
/// round's failure in the report.
pub(super) async fn run_round(
    opts: &DrillOptions,
    arm: &str,
    round: u32,
    gc_ballast_mb: u32,
    cancel: CancellationToken,
) -> Round {
    let dir = opts.work_dir.join(format!("{arm}-r{round}"));
    let ctx = Ctx {
        opts,
        arm,
        round,
        dir: &dir,
    };
    let mut injected = Injected::default();
    let body = round_body(&ctx, gc_ballast_mb, &mut injected, &cancel);
    let result = tokio::select! {
        r = body => r,
        _ = cancel.cancelled() => Err(RoundError::Interrupted),
    };
    injected.heal();
    if RunState::load(&dir).ok().flatten().is_some() {
        let _ = local::down(&dir, false).await;
    }
    if !opts.keep_work && result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(r) => r,
        Err(why) => {
            let nothing = Observation {
                not_running_at_end: true,
                ..Observation::default()
            };
            let mut r = measure::evaluate(round, &nothing);
            r.ok = false;
            r.failure = Some(why.to_string());
            r.notes = vec![format!(
                "the round did not get to measure; logs kept in {}",
                dir.join("logs").display()
            )];
            r.timeline.clear();
            r.fault_ms = injected.pause_at_least_ms;
            if let Some((n, notes)) = injected.failovers.take() {
                r.failovers = n;
                r.notes.extend(notes);
            }
            r
        }
    }
}

async fn round_body(
    ctx: &Ctx<'_>,
    gc_ballast_mb: u32,
    injected: &mut Injected,
    cancel: &CancellationToken,
) -> Result<Round, RoundError> {
    let scenario = ctx.opts.scenario;
    let (mut cluster, load) = prepare(ctx, gc_ballast_mb, cancel).await?;
    let mut steady = warm_up(ctx, &cluster, &load, cancel).await?;

    let inject_ms = load.verifier.set_marker();
    let mut fault = inject::inject(
        scenario,
        &cluster.state,
        steady.target.as_ref(),
        injected,
        inject_ms,
    )?;
    say(format!(
        "  injected {} at {}{}",
        scenario.name(),
        inject_ms,
        steady
            .target
            .as_ref()
            .map(|t| format!(" on {} (pid {})", t.name, t.pid))
            .unwrap_or_default()
    ));

    let watched = watch(ctx, &mut cluster, &load, &mut steady, &mut fault, injected).await?;
    collect(ctx, cluster, load, steady, fault, watched, injected).await
}

/// The arm's cluster as a round uses it.
struct Cluster {
    state: RunState,
    job: String,
    /// Flink's REST API, with a short timeout (a round polls it while the JobManager may be gone).
    client: flink::Client,
}

/// The load on the cluster: the generator (until `stop`) and the live verifier reading input and output.
struct Load {
    verifier: LiveVerifier,
    generator: JoinHandle<Result<ProduceStats, produce::Error>>,
    stop: CancellationToken,
}

/// Brings up the arm's cluster for the scenario, starts the live verifier and the generator, and the verifier's
/// trace of the output.
async fn prepare(
    ctx: &Ctx<'_>,
    gc_ballast_mb: u32,
    cancel: &CancellationToken,
) -> Result<(Cluster, Load), RoundError> {
    let (opts, scenario) = (ctx.opts, ctx.opts.scenario);
    let up = UpOptions {
        dir: ctx.dir.to_path_buf(),
        taskmanagers: opts.taskmanagers,
        standby: 1,
        slots: opts.slots,
        profile: ctx.arm.to_string(),
        port_offset: opts.port_offset,
        delivery: opts.delivery,
        checkpoint_interval: opts.checkpoint_interval,
        state_bytes: 64,
        job_args: scenario.job_args(gc_ballast_mb),
        flink_overrides: OBSERVATION_OVERRIDES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(scenario.flink_overrides(ctx.dir))
            .chain(opts.flink_conf.iter().cloned())
            .collect(),
        isolate: scenario == Scenario::TmPartition,
        warm_spares: opts.warm_spares,
    };
    let state = local::up(&up, cancel.clone())
        .await
        .map_err(|e| RoundError::ClusterUp {
            arm: ctx.arm.to_string(),
            source: Box::new(e),
        })?;
    let job = state
        .workload
        .as_ref()
        .map(|w| w.job_id.clone())
        .ok_or(RoundError::NoJob)?;
    let client = flink::Client::with_timeout(state.rest_url(), Duration::from_millis(1500));
    let run_id = format!("drill{}", now_ms());
    let verifier = LiveVerifier::start(&VerifyConfig {
        bootstrap: state.bootstrap(),
        input_topic: crate::workload::INPUT_TOPIC.into(),
        output_topic: crate::workload::OUTPUT_TOPIC.into(),
        run: Some(run_id.clone()),
    })
    .map_err(RoundError::Verifier)?;
    let stop = cancel.child_token();
    let gen_cfg = ProduceConfig {
        bootstrap: state.bootstrap(),
        topic: crate::workload::INPUT_TOPIC.into(),
        rate: opts.rate,
        keys: opts.keys,
        duration: None,
        max_records: None,
        run: Some(run_id),
    };
    let gen_token = stop.clone();
    let generator =
        tokio::spawn(async move { produce::produce(&gen_cfg, gen_token, |_| {}).await });
    verifier.ledger().start_trace();
    verifier.ledger().attribute_duplicates();
    Ok((
        Cluster { state, job, client },
        Load {
            verifier,
            generator,
            stop,
        },
    ))
}

/// The job just before the fault.
struct Steady {
    /// The TaskManager to hit (scenarios that target one).
    target: Option<Recorded>,
    /// Which TaskManagers ran subtasks at injection.
    hosts_note: Option<String>,
    /// Flink's numRestarts before the fault.
    restarts_before: Option<u64>,
    /// The output seen so far, (ms, latency ms): the warm-up's give the latency baseline; the watch adds to them.
    samples: Vec<(i64, u32)>,
}

/// Waits out the warm-up, picks the target (and gets a `tm-gc-pause` target ready), and checks that the job runs
/// steadily: every subtask running and no restart so far.
async fn warm_up(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    load: &Load,
    cancel: &CancellationToken,
) -> Result<Steady, RoundError> {
    let scenario = ctx.opts.scenario;
    tokio::time::sleep(ctx.opts.warmup).await;
    let mut hosts_note = None;
    let target = if scenario.targets_taskmanager() {
        let (t, hosts) = inject::pick_target(&cluster.client, &cluster.job, &cluster.state).await?;
        hosts_note = Some(format!("subtasks ran on {} at injection", hosts.join(", ")));
        Some(t)
    } else {
        None
    };
    if scenario == Scenario::TmGcPause {
        let t = target.as_ref().ok_or(RoundError::NoTarget)?;
        inject::prepare_gc_pause(t, cancel).await?;
    }
    let restarts_before = cluster
        .client
        .job_metric(&cluster.job, "numRestarts")
        .await
        .ok();
    match cluster.client.job(&cluster.job).await {
        Ok(j) if j.fully_running() && restarts_before == Some(0) => {}
        Ok(j) => {
            return Err(RoundError::NotSteady {
                state: j.state,
                restarts: restarts_before,
            })
        }
        Err(e) => return Err(RoundError::JobUnreadable(e)),
    }
    let samples = load.verifier.ledger().take_trace();
    Ok(Steady {
        target,
        hosts_note,
        restarts_before,
        samples,
    })
}

/// What the watch saw.
struct Watched {
    obs: Observation,
    /// When output had resumed and latency was back (ms since the epoch).
    recovered_at: Option<i64>,
}

/// Watches the recovery until the job has been recovered for a while (or the scenario's deadline), doing the
/// scenario's planned heal when its time comes and printing a progress line every second.
async fn watch(
    ctx: &Ctx<'_>,
    cluster: &mut Cluster,
    load: &Load,
    steady: &mut Steady,
    fault: &mut Fault,
    injected: &mut Injected,
) -> Result<Watched, RoundError> {
    let scenario = ctx.opts.scenario;
    let inject_ms = fault.at_ms;
    let samples = &mut steady.samples;
    let target = steady.target.as_ref();
    let deadline = inject_ms + scenario.deadline().as_millis() as i64;
    let mut obs = Observation {
        inject_ms,
        ..Observation::default()
    };
    let mut watcher = Watcher::new(
        &cluster.client,
        &cluster.job,
        &cluster.state,
        target.map(|t| t.name.clone()),
    );
    let mut recovered_at: Option<i64> = None;
    let tail_ms = if scenario.is_failure() { 3_000 } else { 8_000 };
    let mut last_print = inject_ms;
    loop {
        let now = now_ms();
        if let Some((at, heal)) = fault.heal_at {
            if now >= at {
                fault.heal_at = None;
                heal.apply(&mut cluster.state, injected, &mut obs, inject_ms)
                    .await?;
            }
        }
        watcher.poll(&mut obs).await;
        samples.extend(load.verifier.ledger().take_trace());
        {
            let l = load.verifier.ledger();
            obs.progressed_at_ms = l.progressed_at();
            obs.first_progress_at_ms = l.first_progress_at();
        }
        // A SIGTERM may be held (a planned stop checkpoints first): the job runs on and output flows until the
        // TaskManager really goes. Recovery counts only once it is gone and Flink has redeployed its subtasks.
        let stop_done =
            scenario != Scenario::TmTerm || (target.is_none_or(|t| !t.alive()) && obs.redeployed);
        if recovered_at.is_none() && fault.heal_at.is_none() && stop_done && watcher.fully_running()
        {
            if let Some(p) = obs.progressed_at_ms {
                let base = measure::baseline(samples, inject_ms);
                if let Some(b) = base {
                    if measure::caught_up_at(samples, p, b).is_some() {
                        recovered_at = Some(now);
                    }
                }
            }
        }
        if now - last_print >= 1_000 {
            last_print = now;
            let out_last_s = samples.iter().filter(|(t, _)| *t > now - 1_000).count();
            say(format!(
                "  +{:>5.1} s  out {:>5}/s  job {}{}{}",
                (now - inject_ms) as f64 / 1000.0,
                out_last_s,
                watcher.job_state(),
                if obs.progressed_at_ms.is_some() {
                    "  output resumed"
                } else {
                    ""
                },
                if recovered_at.is_some() {
                    "  recovered"
                } else {
                    ""
                },
            ));
        }
        if recovered_at.is_some_and(|r| now - r >= tail_ms) || now >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    obs.end_ms = now_ms();
    watcher.finish(&mut obs).await;
    Ok(Watched { obs, recovered_at })
}

/// Collects what the round measured after the watch: the collection's pause (`tm-gc-pause`), the output samples,
/// the restarts and their causes, the coordinator's orders, the partition's outcome; then heals, stops the load,
/// lets the verifier account for every record, and evaluates the round with its notes (keeping the logs of an
/// unexpected failure in the shield arm).
async fn collect(
    ctx: &Ctx<'_>,
    mut cluster: Cluster,
    load: Load,
    steady: Steady,
    fault: Fault,
    watched: Watched,
    injected: &mut Injected,
) -> Result<Round, RoundError> {
    let (scenario, arm) = (ctx.opts.scenario, ctx.arm);
    let inject_ms = fault.at_ms;
    let Watched {
        mut obs,
        recovered_at,
    } = watched;
    let Steady {
        target,
        hosts_note,
        restarts_before,
        mut samples,
    } = steady;
    let mut job_note = None;
    if obs.not_running_at_end {
        if let Err(flink::Error::Status { status: 404, .. }) =
            cluster.client.job(&cluster.job).await
        {
            job_note = Some(
                "the JobManager no longer knows the job: without high availability a restarted JobManager starts empty and the job has to be submitted again (records it had not written count as lost for this round; they remain in the input topic)".to_string(),
            );
        }
    }
    let gc_note = match fault.gc_call {
        Some(call) => {
            let t = target.as_ref().ok_or(RoundError::NoTarget)?;
            Some(gc_outcome(ctx, &cluster.state, t, call, inject_ms, &mut obs, injected).await?)
        }
        None => None,
    };
    samples.extend(load.verifier.ledger().take_trace());
    obs.samples = samples
        .into_iter()
        .filter(|(t, _)| *t >= inject_ms - measure::BASELINE_WINDOW_MS && *t < obs.end_ms)
        .collect();
    let restarts = count_restarts(&cluster, restarts_before, inject_ms).await;
    obs.restarts = restarts.restarts;
    let (acted, decision_notes) = failovers(&cluster.state, inject_ms).await;
    obs.failovers = acted;
    // Whether the cut-off TaskManager was still there when the partition healed, and whether its own agent fenced it.
    let partition_note = match (scenario, target.as_ref()) {
        (Scenario::TmPartition, Some(t)) => {
            let agent_log =
                std::fs::read_to_string(ctx.dir.join("logs").join(format!("agent-{}.out", t.name)))
                    .unwrap_or_default();
            Some(partition_outcome(&agent_log, t.alive(), inject_ms))
        }
        _ => None,
    };

    // Heal, stop the load, and let the verifier account for every record.
    injected.heal();
    if fault.heal_at.is_some() {
        // The round ended before a planned restart (deadline): bring the component back so the verifier can finish.
        if scenario == Scenario::KafkaBrokerOutage {
            let _ = local::restart_kafka(&mut cluster.state).await;
        }
    }
    let (produced, rep) = stop_load(load, recovered_at.is_some()).await?;
    obs.records_lost = rep.records_lost;
    obs.records_duplicated = rep.records_duplicated;
    obs.state_errors = rep.state_errors;
    obs.verifier_complete = rep.complete;

    let mut r = measure::evaluate(ctx.round, &obs);
    if scenario.is_failure() || obs.redeployed {
        let log = std::fs::read_to_string(ctx.dir.join("logs").join("jobmanager.log"))
            .unwrap_or_default();
        let p = phases::from_log(&log, &cluster.job, inject_ms);
        if let Some(cp) = p.restored_checkpoint_ms {
            let cut = inject_ms + cp;
            r.duplicates_before_checkpoint = Some(
                rep.duplicate_first_copy_ms
                    .iter()
                    .filter(|t| **t < cut)
                    .count() as u64,
            );
        }
        r.phases = Some(p);
    }
    r.notes.extend(hosts_note);
    r.notes.extend(decision_notes);
    r.notes.extend(job_note);
    r.notes.extend(gc_note);
    r.notes.extend(restarts.restart_note);
    r.notes.extend(restarts.failure_note);
    r.notes.extend(partition_note);
    if arm == "shield"
        && !scenario.is_failure()
        && (restarts.failures > 0 || r.restarts.unwrap_or(0) > 0)
    {
        // The shield arm should have ridden the pause out and did not: keep what explains it with the report.
        r.notes.push(keep_logs(
            ctx.opts,
            arm,
            ctx.round,
            ctx.dir,
            target.as_ref(),
        ));
    }
    if let Ok(p) = &produced {
        r.notes.push(format!(
            "generator: {} acked, {} failed, {:.0} records/s",
            p.acked, p.failed, p.rate_achieved
        ));
    }
    Ok(r)
}

/// `tm-gc-pause`: waits for the `GC.run` call and takes the pause from the target's GC log (into `obs.fault_ms`,
/// the log kept with the report); says how long it lasted. A target that died before the collection ended was
/// fenced: the round fails, with how long the pause had lasted and the coordinator's orders in `injected`.
async fn gc_outcome(
    ctx: &Ctx<'_>,
    state: &RunState,
    t: &Recorded,
    call: inject::GcCall,
    inject_ms: i64,
    obs: &mut Observation,
    injected: &mut Injected,
) -> Result<String, RoundError> {
    match call.await {
        Ok((Ok(_), done_ms)) => {
            let log = ctx.dir.join("logs").join(format!("gc-{}.log", t.pid));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            match jvm::longest_full_pause(&text) {
                Some((ms, line)) => {
                    obs.fault_ms = Some(ms.round() as u64);
                    let short = if ms < 10_000.0 {
                        "; SHORTER than the scenario's 10 s: this round does not test a long pause"
                    } else {
                        ""
                    };
                    let keep = ctx.opts.report_dir.join("gc-logs");
                    if std::fs::create_dir_all(&keep).is_ok() {
                        let _ = std::fs::copy(
                            &log,
                            keep.join(format!("{}-r{}-{}.log", ctx.arm, ctx.round, t.name)),
                        );
                    }
                    Ok(format!(
                        "GC.run returned after {} ms; GC log: {line}{short}",
                        done_ms - inject_ms
                    ))
                }
                None => Ok(format!("no full GC pause in {}", log.display())),
            }
        }
        // The JVM died before the collection ended (GC.run never answered): a pause past the shield arm's GC
        // tolerance is fenced by its coordinator. Not a ridden-out pause: the round fails, and says why.
        Ok((Err(source), done_ms)) if !t.alive() => {
            injected.pause_at_least_ms = Some((done_ms - inject_ms).max(0) as u64);
            injected.failovers = Some(failovers(state, inject_ms).await);
            Err(RoundError::DiedInCollection {
                name: t.name.clone(),
                pid: t.pid,
                source,
            })
        }
        Ok((Err(source), _)) => Err(RoundError::GcRun {
            name: t.name.clone(),
            source,
        }),
        Err(source) => Err(RoundError::GcRunTask {
            name: t.name.clone(),
            source,
        }),
    }
}

/// How many times Flink restarted the job since the fault, and the notes that explain it.
struct Restarts {
    /// numRestarts since the fault (None: Flink did not say).
    restarts: Option<u64>,
    /// Failures in Flink's exception history since the fault.
    failures: usize,
    /// When, where and why the job failed (from the exception history).
    failure_note: Option<String>,
    /// Set when the restarts were counted from the exception history instead of numRestarts.
    restart_note: Option<String>,
}

async fn count_restarts(
    cluster: &Cluster,
    restarts_before: Option<u64>,
    inject_ms: i64,
) -> Restarts {
    let (client, job) = (&cluster.client, &cluster.job);
    // Flink's metric fetcher answers from a cache it refreshes in the background, and in some rounds it kept
    // answering the pre-fault value for seconds. The exception history says whether the job failed at all: if it
    // did, ask until numRestarts moves (up to 20 s); if not, a few answers suffice. Keep the highest (it only grows).
    let since_fault: Vec<flink::ExceptionEntry> = client
        .exceptions(job)
        .await
        .map(|l| l.into_iter().filter(|e| e.timestamp >= inject_ms).collect())
        .unwrap_or_default();
    let failures = since_fault.len();
    let failure_note = failure_causes(&since_fault, inject_ms);
    let before = restarts_before.unwrap_or(0);
    let mut after = None;
    let asked = std::time::Instant::now();
    for i in 0.. {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        if let Ok(v) = client.job_metric(job, "numRestarts").await {
            after = Some(after.map_or(v, |a: u64| a.max(v)));
        }
        let moved = after.is_some_and(|a| a > before);
        let enough = if failures > 0 { moved } else { i >= 3 };
        if enough || asked.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let mut restarts = match (restarts_before, after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let mut restart_note = None;
    if failures > 0 && restarts.unwrap_or(0) == 0 {
        // Seen with the tuned and shield profiles: the REST metric fetcher kept serving the pre-fault value. Each
        // exception-history entry is one failure Flink handled with one restart: count those instead, and say so.
        restarts = Some(failures as u64);
        restart_note = Some(format!(
            "restarts counted from Flink's exception history ({failures} failure(s) since the fault): its numRestarts metric did not move within 20 s"
        ));
    }
    Restarts {
        restarts,
        failures,
        failure_note,
        restart_note,
    }
}

/// Stops the generator and lets the verifier account for every record (settling longer after a recovery).
async fn stop_load(
    load: Load,
    recovered: bool,
) -> Result<(Result<ProduceStats, produce::Error>, ledger::Report), RoundError> {
    load.stop.cancel();
    let produced = load.generator.await.map_err(RoundError::Generator)?;
    if let Err(e) = &produced {
        say(format!("  generator: {e}"));
    }
    let settle = Duration::from_secs(if recovered { 15 } else { 5 });
    let rep = load.verifier.finish(settle, Duration::from_secs(90)).await;
    Ok((produced, rep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rounds_message_reads_as_before() {
        // The report's `failure` is the error's message: the texts the drill wrote when it was a string.
        assert_eq!(RoundError::Interrupted.to_string(), "interrupted");
        assert_eq!(RoundError::NoTarget.to_string(), "no target TaskManager");
        let not_steady = |restarts| RoundError::NotSteady {
            state: "RESTARTING".into(),
            restarts,
        };
        assert_eq!(
            not_steady(Some(1)).to_string(),
            "the job was not steady before the fault (state RESTARTING, 1 restarts so far): nothing to measure"
        );
        assert!(not_steady(None)
            .to_string()
            .contains("(state RESTARTING, ? restarts so far)"));
        assert_eq!(
            RoundError::BallastTimeout {
                name: "tm-1".into(),
                log: "/tmp/r/logs/tm-1.log".into(),
            }
            .to_string(),
            "tm-1 did not report its GC ballast ready within 240 s (see /tmp/r/logs/tm-1.log)"
        );
        assert_eq!(
            RoundError::Gone {
                name: "tm-2".into(),
                pid: 41,
            }
            .to_string(),
            "could not signal tm-2 (pid 41): it is gone"
        );
        assert_eq!(
            RoundError::NoRunningTarget {
                job: "j1".into(),
                hosts: vec!["tm-1".into()],
            }
            .to_string(),
            "no running TaskManager hosts subtasks of job j1 (hosts: [\"tm-1\"])"
        );
        let attach = |pid| jvm::Error::Io {
            pid,
            source: std::io::Error::from_raw_os_error(3),
        };
        // As committed in docs/drills/tm-gc-pause-10-rounds-interrupted and tm-gc-pause-500mb-slow-host.
        assert_eq!(
            RoundError::GcRun {
                name: "tm-1".into(),
                source: attach(12823),
            }
            .to_string(),
            "GC.run on tm-1: attach to JVM 12823: No such process (os error 3)"
        );
        assert_eq!(
            RoundError::DiedInCollection {
                name: "tm-1".into(),
                pid: 2436,
                source: attach(2436),
            }
            .to_string(),
            "tm-1 (pid 2436) died during the injected collection, which had not ended (GC.run: attach to JVM 2436: \
             No such process (os error 3)): a pause past the GC tolerance is fenced in the shield arm"
        );
        assert_eq!(
            RoundError::Attach(attach(7)).to_string(),
            "attach to JVM 7: No such process (os error 3)",
            "transparent: the JVM's error as it was"
        );
    }
}
