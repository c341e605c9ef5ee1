//! `streamshield drill`: injects a real fault into a real local cluster, round after round, alternating between
//! arms (stock, tuned, shield), and measures what a user feels: how long output stops, when the job runs again,
//! when latency is back, what was lost or repeated. Every round brings up a fresh cluster for its arm, runs the
//! generator and the live verifier throughout, injects, watches, heals and takes everything down again, also on
//! failure and Ctrl-C.

mod ballast;
mod causes;
pub mod jvm;
pub mod measure;
pub mod phases;
pub mod report;
pub mod scenario;
mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal as Sig;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::flink;
use crate::host::clock::now_ms;
use crate::host::process::Recorded;
use crate::local::{self, dist::say, Delivery, RunState, UpOptions};
use crate::workload::live::{LiveVerifier, VerifyConfig};
use crate::workload::produce::{self, ProduceConfig};
pub use ballast::{next_ballast, GC_BALLAST_MB};
use ballast::{MAX_GC_BALLAST_MB, MIN_GC_BALLAST_MB};
use causes::{failure_causes, keep_logs, partition_outcome};
use measure::{Observation, Round};
pub use scenario::Scenario;
use watch::{failovers, Watcher};

/// The arms a drill can compare; each is a profile of `local up`.
pub const ARMS: [&str; 3] = ["stock", "tuned", "shield"];

/// Settings every arm gets so that the drill can watch Flink closely: the REST execution-graph cache is
/// refreshed every 100 ms instead of every 3 s, and the REST metric fetcher every 500 ms instead of every 10 s (so
/// `numRestarts` is current). They change what the REST API shows, not how Flink detects or recovers.
pub const OBSERVATION_OVERRIDES: [(&str, &str); 2] = [
    ("web.refresh-interval", "100 ms"),
    ("metrics.fetcher.update-interval", "500 ms"),
];

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub scenario: Scenario,
    pub rounds: u32,
    pub arms: Vec<String>,
    pub report_dir: PathBuf,
    /// Run directories of the rounds' clusters go below this (removed afterwards unless `keep_work`).
    pub work_dir: PathBuf,
    pub keep_work: bool,
    pub port_offset: u16,
    /// Generator rate, records/s.
    pub rate: u32,
    pub keys: u32,
    pub delivery: Delivery,
    /// Time between the generator's start and the injection (the latency baseline is the last 10 s of it).
    pub warmup: Duration,
    pub taskmanagers: u32,
    pub slots: u32,
    /// Every arm's spare TaskManager starts before the job (`local up --warm-spares`).
    pub warm_spares: bool,
    /// The job's checkpoint interval (1 s unless a drill measures what longer ones cost).
    pub checkpoint_interval: Duration,
    /// Live heap per TaskManager that `tm-gc-pause` collects ([`GC_BALLAST_MB`] unless set); with
    /// `gc_pause_target`, the first round's.
    pub gc_ballast_mb: u32,
    /// `tm-gc-pause`: size every round's ballast from the pauses measured so far so that the pause lasts about this
    /// long (see [`next_ballast`]). None: every round uses `gc_ballast_mb`.
    pub gc_pause_target: Option<Duration>,
    /// Flink settings laid over every arm's profile (to measure what one key is worth: run the drill with and
    /// without it); recorded in the report.
    pub flink_conf: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid drill settings: {0}")]
    Invalid(String),
    #[error("interrupted")]
    Cancelled,
    #[error("could not write the report to {path}: {source}")]
    Report {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One arm's rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    pub name: String,
    pub profile: serde_json::Value,
    pub rounds: Vec<Round>,
}

/// Checks the options before anything starts.
pub fn validate(opts: &DrillOptions) -> Result<(), Error> {
    if opts.rounds == 0 {
        return Err(Error::Invalid("--rounds must be at least 1".into()));
    }
    if opts.arms.is_empty() {
        return Err(Error::Invalid("--arms names no arm".into()));
    }
    for a in &opts.arms {
        if !ARMS.contains(&a.as_str()) {
            return Err(Error::Invalid(format!(
                "unknown arm {a:?}; arms are {}",
                ARMS.join(", ")
            )));
        }
    }
    let mut seen = opts.arms.clone();
    seen.sort();
    seen.dedup();
    if seen.len() != opts.arms.len() {
        return Err(Error::Invalid("--arms names an arm twice".into()));
    }
    if opts.checkpoint_interval < Duration::from_millis(100) {
        return Err(Error::Invalid(
            "--checkpoint-interval must be at least 100ms".into(),
        ));
    }
    if !(MIN_GC_BALLAST_MB..=MAX_GC_BALLAST_MB).contains(&opts.gc_ballast_mb) {
        return Err(Error::Invalid(format!(
            "--gc-ballast-mb must be between {MIN_GC_BALLAST_MB} and {MAX_GC_BALLAST_MB} (the TaskManagers of \
             tm-gc-pause have a 1.9 GB heap)"
        )));
    }
    if let Some(t) = opts.gc_pause_target {
        if t < Duration::from_secs(1) || t > Duration::from_secs(90) {
            return Err(Error::Invalid(
                "--gc-pause-target must be between 1s and 90s (the scenario's deadline is 120 s; the shield \
                 profile's GC tolerance is 30 s)"
                    .into(),
            ));
        }
    }
    if opts.rate == 0 || opts.keys == 0 {
        return Err(Error::Invalid(
            "--rate and --keys must be at least 1".into(),
        ));
    }
    if opts.warmup < Duration::from_secs(12) {
        return Err(Error::Invalid(
            "--warmup must be at least 12 s (the latency baseline is the 10 s before the fault)"
                .into(),
        ));
    }
    if opts.taskmanagers < 2 {
        return Err(Error::Invalid(
            "the drill needs at least 2 active TaskManagers (one is the target)".into(),
        ));
    }
    Ok(())
}

/// Runs the drill: rounds alternate between arms (A B C A B C ...). Writes the report after every round, so an
/// interrupted drill still leaves what it measured.
pub async fn run(opts: &DrillOptions, cancel: CancellationToken) -> Result<report::Report, Error> {
    validate(opts)?;
    std::fs::create_dir_all(&opts.report_dir).map_err(|source| Error::Report {
        path: opts.report_dir.clone(),
        source,
    })?;
    let mut arms: Vec<ArmResult> = opts
        .arms
        .iter()
        .map(|a| ArmResult {
            name: a.clone(),
            profile: profile_json(a),
            rounds: Vec::new(),
        })
        .collect();
    let started = now_ms();
    let total = opts.rounds as usize * arms.len();
    let mut done = 0;
    // tm-gc-pause: (ballast MB, pause ms) of each arm's rounds so far, in the order they ran.
    let mut pauses: Vec<Vec<(u32, u64)>> = vec![Vec::new(); arms.len()];
    for round in 1..=opts.rounds {
        for i in 0..arms.len() {
            if cancel.is_cancelled() {
                break;
            }
            done += 1;
            let name = arms[i].name.clone();
            say(format!(
                "drill {}: round {round}/{} of arm {name} ({done}/{total})",
                opts.scenario.name(),
                opts.rounds,
            ));
            // An arm's own pauses size its ballast: the tuned arm fails over during the collection and the
            // restart's load lengthens the pause (700 MB: 41.5 s there, while 1,200 MB had lasted 30.8 s in a shield
            // round). Until an arm has measured one, the other arms' pauses do.
            let own = &pauses[i];
            let history: Vec<(u32, u64)> = if own.is_empty() {
                pauses.iter().flatten().copied().collect()
            } else {
                own.clone()
            };
            let (ballast, sized) = next_ballast(opts.gc_ballast_mb, opts.gc_pause_target, &history);
            let mut r = run_round(opts, &name, round, ballast, cancel.clone()).await;
            if opts.scenario == Scenario::TmGcPause {
                r.gc_ballast_mb = Some(ballast);
                r.notes.extend(sized);
                if let Some(p) = r.fault_ms {
                    pauses[i].push((ballast, p));
                }
            }
            say(format!("  -> {}", report::round_line(&name, &r)));
            arms[i].rounds.push(r);
            let rep = report::build(opts, &arms, started);
            report::write(&opts.report_dir, &rep)?;
        }
    }
    let rep = report::build(opts, &arms, started);
    report::write(&opts.report_dir, &rep)?;
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(rep)
}

fn profile_json(arm: &str) -> serde_json::Value {
    let keys: serde_json::Map<String, serde_json::Value> = local::config::profile_keys(arm)
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    serde_json::json!({
        "name": arm,
        "flink": keys,
        "streamshield": local::config::runs_streamshield(arm),
        "drill_overrides": OBSERVATION_OVERRIDES.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>(),
    })
}

/// What a round injected and must undo.
#[derive(Default)]
struct Injected {
    /// A process left stopped (SIGSTOP): continued on heal.
    stopped: Option<Recorded>,
    /// iptables rules that cut a TaskManager off: removed on heal.
    cut: Vec<Vec<String>>,
    /// An injected pause that ended with its process (fenced): how long it had lasted.
    pause_at_least_ms: Option<u64>,
    /// A round that failed after the coordinator acted: its orders (count and notes), so the report counts them.
    failovers: Option<(u64, Vec<String>)>,
}

impl Injected {
    fn heal(&mut self) {
        local::isolate::heal(&std::mem::take(&mut self.cut));
        if let Some(p) = self.stopped.take() {
            if p.alive() {
                p.signal(Sig::SIGCONT);
            }
        }
    }
}

/// One round: fresh cluster, load, fault, watch, heal, verify, down. Never fails: whatever went wrong is the
/// round's failure in the report.
async fn run_round(
    opts: &DrillOptions,
    arm: &str,
    round: u32,
    gc_ballast_mb: u32,
    cancel: CancellationToken,
) -> Round {
    let dir = opts.work_dir.join(format!("{arm}-r{round}"));
    let mut injected = Injected::default();
    let body = round_body(
        opts,
        arm,
        round,
        gc_ballast_mb,
        &dir,
        &mut injected,
        cancel.clone(),
    );
    let result = tokio::select! {
        r = body => r,
        _ = cancel.cancelled() => Err("interrupted".to_string()),
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
            r.failure = Some(why);
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
    opts: &DrillOptions,
    arm: &str,
    round: u32,
    gc_ballast_mb: u32,
    dir: &Path,
    injected: &mut Injected,
    cancel: CancellationToken,
) -> Result<Round, String> {
    let scenario = opts.scenario;
    let up = UpOptions {
        dir: dir.to_path_buf(),
        taskmanagers: opts.taskmanagers,
        standby: 1,
        slots: opts.slots,
        profile: arm.to_string(),
        port_offset: opts.port_offset,
        delivery: opts.delivery,
        checkpoint_interval: opts.checkpoint_interval,
        state_bytes: 64,
        job_args: scenario.job_args(gc_ballast_mb),
        flink_overrides: OBSERVATION_OVERRIDES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(scenario.flink_overrides(dir))
            .chain(opts.flink_conf.iter().cloned())
            .collect(),
        isolate: scenario == Scenario::TmPartition,
        warm_spares: opts.warm_spares,
    };
    let mut state = local::up(&up, cancel.clone())
        .await
        .map_err(|e| format!("the {arm} cluster did not come up: {e}"))?;
    let job = state
        .workload
        .as_ref()
        .map(|w| w.job_id.clone())
        .ok_or("the cluster has no job")?;
    let client = flink::Client::with_timeout(state.rest_url(), Duration::from_millis(1500));
    let run_id = format!("drill{}", now_ms());
    let verifier = LiveVerifier::start(&VerifyConfig {
        bootstrap: state.bootstrap(),
        input_topic: crate::workload::INPUT_TOPIC.into(),
        output_topic: crate::workload::OUTPUT_TOPIC.into(),
        run: Some(run_id.clone()),
    })
    .map_err(|e| format!("verifier: {e}"))?;
    let gen_cancel = cancel.child_token();
    let gen_cfg = ProduceConfig {
        bootstrap: state.bootstrap(),
        topic: crate::workload::INPUT_TOPIC.into(),
        rate: opts.rate,
        keys: opts.keys,
        duration: None,
        max_records: None,
        run: Some(run_id),
    };
    let gen_token = gen_cancel.clone();
    let generator =
        tokio::spawn(async move { produce::produce(&gen_cfg, gen_token, |_| {}).await });
    verifier.ledger().start_trace();
    verifier.ledger().attribute_duplicates();

    tokio::time::sleep(opts.warmup).await;
    let mut hosts_note = None;
    let target = if scenario.targets_taskmanager() {
        let (t, hosts) = pick_target(&client, &job, &state).await?;
        hosts_note = Some(format!("subtasks ran on {} at injection", hosts.join(", ")));
        Some(t)
    } else {
        None
    };
    if scenario == Scenario::TmGcPause {
        let t = target.as_ref().ok_or("no target TaskManager")?;
        wait_ballast(t, &cancel).await?;
        // A clean latency baseline after the ballast was built.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let pid = t.pid;
        tokio::task::spawn_blocking(move || jvm::ensure_listener(pid, Duration::from_secs(10)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let restarts_before = client.job_metric(&job, "numRestarts").await.ok();
    match client.job(&job).await {
        Ok(j) if j.fully_running() && restarts_before == Some(0) => {}
        Ok(j) => {
            return Err(format!(
                "the job was not steady before the fault (state {}, {} restarts so far): nothing to measure",
                j.state,
                restarts_before.map(|r| r.to_string()).unwrap_or_else(|| "?".into())
            ))
        }
        Err(e) => return Err(format!("the job could not be read before the fault: {e}")),
    }
    let mut samples = verifier.ledger().take_trace();

    // Inject.
    let inject_ms = verifier.set_marker();
    let mut heal_at: Option<(i64, &'static str)> = None;
    let mut gc_call = None;
    match scenario {
        Scenario::TmKill => {
            signal(target.as_ref(), Sig::SIGKILL)?;
        }
        Scenario::TmTerm => {
            signal(target.as_ref(), Sig::SIGTERM)?;
        }
        Scenario::TmHang => {
            signal(target.as_ref(), Sig::SIGSTOP)?;
            injected.stopped = target.clone();
        }
        Scenario::TmPauseShort => {
            signal(target.as_ref(), Sig::SIGSTOP)?;
            injected.stopped = target.clone();
            heal_at = Some((
                inject_ms + scenario::shield_hang_tolerance().as_millis() as i64 / 2,
                "SIGCONT",
            ));
        }
        Scenario::JmKill => {
            let jm = state.jobmanager.clone().ok_or("no JobManager recorded")?;
            jm.signal(Sig::SIGKILL);
            // Restart it at once, but after one look at REST (the restart blocks until the new JobManager answers).
            heal_at = Some((inject_ms + 300, "restart-jm"));
        }
        Scenario::KafkaBrokerOutage => {
            let k = state.kafka.clone().ok_or("no Kafka broker recorded")?;
            k.signal(Sig::SIGKILL);
            heal_at = Some((
                inject_ms + scenario::KAFKA_OUTAGE.as_millis() as i64,
                "restart-kafka",
            ));
        }
        Scenario::TmGcPause => {
            let pid = target.as_ref().ok_or("no target TaskManager")?.pid;
            gc_call = Some(tokio::task::spawn_blocking(move || {
                let r = jvm::jcmd_retrying(pid, "GC.run", 3);
                (r, now_ms())
            }));
        }
        Scenario::TmPartition => {
            let t = target.as_ref().ok_or("no target TaskManager")?;
            let group = state
                .isolation
                .clone()
                .ok_or("the cluster was not started isolated")?;
            injected.cut = local::isolate::cut(&group, &t.name).map_err(|e| e.to_string())?;
        }
    }
    say(format!(
        "  injected {} at {}{}",
        scenario.name(),
        inject_ms,
        target
            .as_ref()
            .map(|t| format!(" on {} (pid {})", t.name, t.pid))
            .unwrap_or_default()
    ));

    // Watch.
    let deadline = inject_ms + scenario.deadline().as_millis() as i64;
    let mut obs = Observation {
        inject_ms,
        ..Observation::default()
    };
    let mut watcher = Watcher::new(
        &client,
        &job,
        &state,
        target.as_ref().map(|t| t.name.clone()),
    );
    let mut recovered_at: Option<i64> = None;
    let tail_ms = if scenario.is_failure() { 3_000 } else { 8_000 };
    let mut last_print = inject_ms;
    loop {
        let now = now_ms();
        if let Some((at, what)) = heal_at {
            if now >= at {
                heal_at = None;
                match what {
                    "SIGCONT" => {
                        injected.heal();
                        obs.fault_ms = Some((now_ms() - inject_ms) as u64);
                    }
                    "restart-jm" => {
                        wait_dead(state.jobmanager.as_ref()).await;
                        local::restart_jobmanager(&mut state)
                            .await
                            .map_err(|e| format!("restarting the JobManager: {e}"))?;
                        say(format!(
                            "  JobManager restarted (+{} ms)",
                            now_ms() - inject_ms
                        ));
                    }
                    "restart-kafka" => {
                        wait_dead(state.kafka.as_ref()).await;
                        local::restart_kafka(&mut state)
                            .await
                            .map_err(|e| format!("restarting Kafka: {e}"))?;
                        say(format!("  Kafka restarted (+{} ms)", now_ms() - inject_ms));
                    }
                    _ => {}
                }
            }
        }
        watcher.poll(&mut obs).await;
        samples.extend(verifier.ledger().take_trace());
        {
            let l = verifier.ledger();
            obs.progressed_at_ms = l.progressed_at();
            obs.first_progress_at_ms = l.first_progress_at();
        }
        // A SIGTERM may be held (a planned stop checkpoints first): the job runs on and output flows until the
        // TaskManager really goes. Recovery counts only once it is gone and Flink has redeployed its subtasks.
        let stop_done = scenario != Scenario::TmTerm
            || (target.as_ref().is_none_or(|t| !t.alive()) && obs.redeployed);
        if recovered_at.is_none() && heal_at.is_none() && stop_done && watcher.fully_running() {
            if let Some(p) = obs.progressed_at_ms {
                let base = measure::baseline(&samples, inject_ms);
                if let Some(b) = base {
                    if measure::caught_up_at(&samples, p, b).is_some() {
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
    let mut job_note = None;
    if obs.not_running_at_end {
        if let Err(flink::Error::Status { status: 404, .. }) = client.job(&job).await {
            job_note = Some(
                "the JobManager no longer knows the job: without high availability a restarted JobManager starts empty and the job has to be submitted again (records it had not written count as lost for this round; they remain in the input topic)".to_string(),
            );
        }
    }
    let mut gc_note = None;
    let mut restart_note = None;
    if let Some(call) = gc_call {
        let t = target.as_ref().ok_or("no target TaskManager")?;
        match call.await {
            Ok((Ok(_), done_ms)) => {
                let log = dir.join("logs").join(format!("gc-{}.log", t.pid));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                match jvm::longest_full_pause(&text) {
                    Some((ms, line)) => {
                        obs.fault_ms = Some(ms.round() as u64);
                        let short = if ms < 10_000.0 {
                            "; SHORTER than the scenario's 10 s: this round does not test a long pause"
                        } else {
                            ""
                        };
                        gc_note = Some(format!(
                            "GC.run returned after {} ms; GC log: {line}{short}",
                            done_ms - inject_ms
                        ));
                        let keep = opts.report_dir.join("gc-logs");
                        if std::fs::create_dir_all(&keep).is_ok() {
                            let _ = std::fs::copy(
                                &log,
                                keep.join(format!("{arm}-r{round}-{}.log", t.name)),
                            );
                        }
                    }
                    None => gc_note = Some(format!("no full GC pause in {}", log.display())),
                }
            }
            // The JVM died before the collection ended (GC.run never answered): a pause past the shield arm's GC
            // tolerance is fenced by its coordinator. Not a ridden-out pause: the round fails, and says why.
            Ok((Err(e), done_ms)) if !t.alive() => {
                injected.pause_at_least_ms = Some((done_ms - inject_ms).max(0) as u64);
                injected.failovers = Some(failovers(&state, inject_ms).await);
                return Err(format!(
                    "{} (pid {}) died during the injected collection, which had not ended (GC.run: {e}): a pause past \
                     the GC tolerance is fenced in the shield arm",
                    t.name, t.pid
                ));
            }
            Ok((Err(e), _)) => return Err(format!("GC.run on {}: {e}", t.name)),
            Err(e) => return Err(format!("GC.run on {}: {e}", t.name)),
        }
    }
    samples.extend(verifier.ledger().take_trace());
    obs.samples = samples
        .into_iter()
        .filter(|(t, _)| *t >= inject_ms - measure::BASELINE_WINDOW_MS && *t < obs.end_ms)
        .collect();
    // Flink's metric fetcher answers from a cache it refreshes in the background, and in some rounds it kept
    // answering the pre-fault value for seconds. The exception history says whether the job failed at all: if it
    // did, ask until numRestarts moves (up to 20 s); if not, a few answers suffice. Keep the highest (it only grows).
    let since_fault: Vec<flink::ExceptionEntry> = client
        .exceptions(&job)
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
        if let Ok(v) = client.job_metric(&job, "numRestarts").await {
            after = Some(after.map_or(v, |a: u64| a.max(v)));
        }
        let moved = after.is_some_and(|a| a > before);
        let enough = if failures > 0 { moved } else { i >= 3 };
        if enough || asked.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    obs.restarts = match (restarts_before, after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    if failures > 0 && obs.restarts.unwrap_or(0) == 0 {
        // Seen with the tuned and shield profiles: the REST metric fetcher kept serving the pre-fault value. Each
        // exception-history entry is one failure Flink handled with one restart: count those instead, and say so.
        obs.restarts = Some(failures as u64);
        restart_note = Some(format!(
            "restarts counted from Flink's exception history ({failures} failure(s) since the fault): its numRestarts metric did not move within 20 s"
        ));
    }
    let (acted, decision_notes) = failovers(&state, inject_ms).await;
    obs.failovers = acted;
    // Whether the cut-off TaskManager was still there when the partition healed, and whether its own agent fenced it.
    let partition_note = match (scenario, target.as_ref()) {
        (Scenario::TmPartition, Some(t)) => {
            let agent_log =
                std::fs::read_to_string(dir.join("logs").join(format!("agent-{}.out", t.name)))
                    .unwrap_or_default();
            Some(partition_outcome(&agent_log, t.alive(), inject_ms))
        }
        _ => None,
    };

    // Heal, stop the load, and let the verifier account for every record.
    injected.heal();
    if heal_at.is_some() {
        // The round ended before a planned restart (deadline): bring the component back so the verifier can finish.
        if scenario == Scenario::KafkaBrokerOutage {
            let _ = local::restart_kafka(&mut state).await;
        }
    }
    gen_cancel.cancel();
    let produced = generator.await.map_err(|e| format!("generator: {e}"))?;
    if let Err(e) = &produced {
        say(format!("  generator: {e}"));
    }
    let settle = Duration::from_secs(if recovered_at.is_some() { 15 } else { 5 });
    let rep = verifier.finish(settle, Duration::from_secs(90)).await;
    obs.records_lost = rep.records_lost;
    obs.records_duplicated = rep.records_duplicated;
    obs.state_errors = rep.state_errors;
    obs.verifier_complete = rep.complete;
    let mut r = measure::evaluate(round, &obs);
    if scenario.is_failure() || obs.redeployed {
        let log =
            std::fs::read_to_string(dir.join("logs").join("jobmanager.log")).unwrap_or_default();
        let p = phases::from_log(&log, &job, inject_ms);
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
    r.notes.extend(restart_note);
    r.notes.extend(failure_note);
    r.notes.extend(partition_note);
    if arm == "shield" && !scenario.is_failure() && (failures > 0 || r.restarts.unwrap_or(0) > 0) {
        // The shield arm should have ridden the pause out and did not: keep what explains it with the report.
        r.notes
            .push(keep_logs(opts, arm, round, dir, target.as_ref()));
    }
    if let Ok(p) = &produced {
        r.notes.push(format!(
            "generator: {} acked, {} failed, {:.0} records/s",
            p.acked, p.failed, p.rate_achieved
        ));
    }
    Ok(r)
}

/// Waits until the target TaskManager's log says its GC ballast is built.
async fn wait_ballast(t: &Recorded, cancel: &CancellationToken) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(&t.log).unwrap_or_default();
        if log.contains("streamshield gc ballast ready") {
            return Ok(());
        }
        if !t.alive() {
            return Err(format!("{} exited while building its GC ballast", t.name));
        }
        if start.elapsed() > Duration::from_secs(240) || cancel.is_cancelled() {
            return Err(format!(
                "{} did not report its GC ballast ready within 240 s (see {})",
                t.name,
                t.log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn signal(target: Option<&Recorded>, sig: Sig) -> Result<(), String> {
    let t = target.ok_or("no target TaskManager")?;
    if t.signal(sig) {
        Ok(())
    } else {
        Err(format!(
            "could not signal {} (pid {}): it is gone",
            t.name, t.pid
        ))
    }
}

async fn wait_dead(p: Option<&Recorded>) {
    let Some(p) = p else { return };
    for _ in 0..100 {
        if !p.alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The TaskManager to hit: the first one (by name) that runs subtasks of the job; and every one that does.
async fn pick_target(
    client: &flink::Client,
    job: &str,
    state: &RunState,
) -> Result<(Recorded, Vec<String>), String> {
    let hosts = client
        .subtask_hosts(job)
        .await
        .map_err(|e| format!("finding the TaskManagers that run the job: {e}"))?;
    let mut names: Vec<String> = hosts.to_vec();
    names.sort();
    for n in &names {
        if let Some(t) = state.taskmanagers.iter().find(|t| &t.resource_id == n) {
            if t.process.alive() {
                return Ok((t.process.clone(), names));
            }
        }
    }
    Err(format!(
        "no running TaskManager hosts subtasks of job {job} (hosts: {hosts:?})"
    ))
}

/// Machine facts for the report.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let java = std::process::Command::new("java")
        .arg("-version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpu": model,
        "cores": cores,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
        "java": java,
    })
}
