//! `streamshield drill`: injects a real fault into a real local cluster, round after round, alternating between
//! arms (stock, tuned, shield), and measures what a user feels: how long output stops, when the job runs again,
//! when latency is back, what was lost or repeated. Every round brings up a fresh cluster for its arm, runs the
//! generator and the live verifier throughout, injects, watches, heals and takes everything down again, also on
//! failure and Ctrl-C.

pub mod cli;
pub mod jvm;
pub mod measure;
pub mod phases;
pub mod report;
pub mod scenario;

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
use measure::{Observation, Round, Signal};
pub use scenario::Scenario;

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
        job_args: scenario_job_args(scenario, gc_ballast_mb),
        flink_overrides: OBSERVATION_OVERRIDES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(scenario_overrides(scenario, dir))
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
        if recovered_at.is_none() && heal_at.is_none() && stop_done && watcher.fully_running {
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
                watcher.job_state,
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

/// What became of the TaskManager cut off in `tm-partition`, said before the partition heals: alive or gone, and
/// whether the agent inside the partition fenced it (its log's self-fence line, with the time since the cut).
fn partition_outcome(agent_log: &str, alive: bool, inject_ms: i64) -> String {
    let fenced = agent_log
        .lines()
        .find(|l| l.contains("Cut off from the coordinator and the JobManager"))
        .map(|l| {
            let plain = strip_ansi(l);
            let at = plain
                .split_whitespace()
                .next()
                .and_then(|ts| humantime::parse_rfc3339_weak(ts).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| format!(" at +{} ms", d.as_millis() as i64 - inject_ms))
                .unwrap_or_default();
            format!("its agent fenced it from inside the partition{at}")
        });
    match (alive, fenced) {
        (false, Some(f)) => format!("the cut-off TaskManager was gone when the partition healed: {f}"),
        (false, None) => {
            "the cut-off TaskManager was gone when the partition healed (no self-fence in its agent's log)".into()
        }
        (true, Some(f)) => format!("the cut-off TaskManager was still running when the partition healed, although {f}"),
        (true, None) => "the cut-off TaskManager was still running when the partition healed".into(),
    }
}

/// A log line without its terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The failures Flink recorded since the fault (its exception history, oldest first): when, where, and the first
/// line of each cause, so that a report says why a job restarted, not only that it did.
fn failure_causes(entries: &[flink::ExceptionEntry], inject_ms: i64) -> Option<String> {
    const SHOWN: usize = 3;
    if entries.is_empty() {
        return None;
    }
    let mut sorted: Vec<&flink::ExceptionEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.timestamp);
    let mut parts: Vec<String> = sorted
        .iter()
        .take(SHOWN)
        .map(|e| {
            let first = e
                .stacktrace
                .lines()
                .next()
                .filter(|l| !l.trim().is_empty())
                .unwrap_or(&e.exception_name);
            let first: String = first.trim().chars().take(240).collect();
            let on = e
                .task_manager_id
                .as_deref()
                .map(|t| format!(" on {t}"))
                .unwrap_or_default();
            format!("+{} ms{on}: {first}", e.timestamp - inject_ms)
        })
        .collect();
    if sorted.len() > SHOWN {
        parts.push(format!("and {} more", sorted.len() - SHOWN));
    }
    Some(format!(
        "failures in Flink's exception history since the fault: {}",
        parts.join("; ")
    ))
}

/// Copies the logs that explain a round (JobManager, the target TaskManager, and in the shield arm the coordinator
/// and the target's agent) to `<report>/logs/<arm>-r<round>/`, since the round's run directory is removed.
fn keep_logs(
    opts: &DrillOptions,
    arm: &str,
    round: u32,
    dir: &Path,
    target: Option<&Recorded>,
) -> String {
    let keep = opts.report_dir.join("logs").join(format!("{arm}-r{round}"));
    if let Err(e) = std::fs::create_dir_all(&keep) {
        return format!("could not keep the round's logs in {}: {e}", keep.display());
    }
    let logs = dir.join("logs");
    let mut names = vec!["jobmanager.log".to_string(), "coordinator.out".to_string()];
    if let Some(t) = target {
        names.push(format!("{}.log", t.name));
        names.push(format!("{}.out", t.name));
        names.push(format!("agent-{}.out", t.name));
    }
    let copied: Vec<String> = names
        .into_iter()
        .filter(|n| std::fs::copy(logs.join(n), keep.join(n)).is_ok())
        .collect();
    format!(
        "unexpected failure: logs kept in {} ({})",
        keep.display(),
        copied.join(", ")
    )
}

/// The ballast of the next `tm-gc-pause` round and, when it was sized, a note saying how, from `pauses`: (ballast
/// MB, pause ms) of earlier rounds, oldest first. Without a target (or before any pause was measured) it is
/// `first_mb`. With one, the pause is taken as proportional to the ballast (a full collection marks and moves every
/// node, see GcBallast.java) at a rate that follows the host: the median milliseconds per megabyte of the last three
/// measured rounds (a pause that was fenced before it ended counts with the time it had lasted, a lower bound, so
/// the next one is smaller). One round's rate can differ from the next by 4x on this kind of host (docs/drills.md),
/// so a step is at most 2x up or down from the last round's ballast; the result is rounded to 10 MB and kept within
/// the option's range. The target should sit well inside the band the pause must hit.
pub fn next_ballast(
    first_mb: u32,
    target: Option<Duration>,
    pauses: &[(u32, u64)],
) -> (u32, Option<String>) {
    let Some(target) = target else {
        return (first_mb, None);
    };
    // The last three measured rounds, newest first.
    let recent: Vec<&(u32, u64)> = pauses
        .iter()
        .rev()
        .filter(|(mb, ms)| *mb > 0 && *ms > 0)
        .take(3)
        .collect();
    let Some(&&(last_mb, _)) = recent.first() else {
        return (first_mb, None);
    };
    let last = f64::from(last_mb);
    let mut rates: Vec<f64> = recent
        .iter()
        .map(|(mb, ms)| *ms as f64 / f64::from(*mb))
        .collect();
    rates.sort_by(f64::total_cmp);
    let rate = rates[rates.len() / 2];
    let raw = (target.as_millis() as f64 / rate).clamp(last / 2.0, last * 2.0);
    let mb = ((raw / 10.0).round() * 10.0)
        .clamp(f64::from(MIN_GC_BALLAST_MB), f64::from(MAX_GC_BALLAST_MB));
    let mb = mb as u32;
    (
        mb,
        Some(format!(
            "GC ballast {mb} MB: sized for a {:.0} s pause at {rate:.1} ms/MB (median of the last {} measured pauses)",
            target.as_secs_f64(),
            recent.len()
        )),
    )
}

/// Megabytes of randomly linked live heap per TaskManager in `tm-gc-pause` (see GcBallast.java), chosen so that a
/// serial full collection of it takes at least 10 s on the reference machine under the drill's load (a bare JVM with
/// the same flags took 8.3-9.6 s for 640 MB; in the drill 800 MB took 26-29 s, too close to the shield's 30 s GC
/// tolerance to test it; the GC logs of every round are kept with the report and each round notes its pause).
/// The pause also depends on the host's memory latency: on a busier day 500 MB took 40-57 s, so `--gc-ballast-mb`
/// sets it per run (recorded in the report).
pub const GC_BALLAST_MB: u32 = 500;
const MIN_GC_BALLAST_MB: u32 = 50;
const MAX_GC_BALLAST_MB: u32 = 1200;

fn scenario_job_args(s: Scenario, ballast_mb: u32) -> Vec<String> {
    match s {
        Scenario::TmGcPause => vec!["--gc-ballast-mb".into(), ballast_mb.to_string()],
        _ => vec![],
    }
}

/// Flink settings a scenario needs in every arm: for `tm-gc-pause`, TaskManagers large enough for the ballast, the
/// serial collector (a full collection is one long stop-the-world pause), a small young generation (building the
/// ballast then costs young pauses of < 100 ms instead of multi-second ones that would fail over the tuned arm
/// before the fault) and a GC log per TaskManager.
fn scenario_overrides(s: Scenario, dir: &Path) -> Vec<(String, String)> {
    match s {
        Scenario::TmGcPause => vec![
            ("taskmanager.memory.process.size".into(), "3g".into()),
            (
                "env.java.opts.taskmanager".into(),
                format!(
                    "-XX:+UseSerialGC -Xmn64m -Xlog:gc:file={}/logs/gc-%p.log:timemillis,uptime",
                    dir.display()
                ),
            ),
        ],
        _ => vec![],
    }
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

/// Decisions the coordinator acted on (not observe-only) since the injection.
async fn failovers(state: &RunState, since_ms: i64) -> (u64, Vec<String>) {
    let Some(c) = &state.coordinator else {
        return (0, Vec::new());
    };
    let Ok(token) = std::fs::read_to_string(&c.api_token_file) else {
        return (0, Vec::new());
    };
    let url = format!("{}/v1/decisions", c.api.trim_end_matches('/'));
    let http = reqwest::Client::new();
    let Ok(resp) = http
        .get(&url)
        .bearer_auth(token.trim())
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        return (0, Vec::new());
    };
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    let acted: Vec<&serde_json::Value> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["ts_ms"].as_i64().unwrap_or(0) >= since_ms)
                .filter(|d| d["mode"].as_str().unwrap_or("observe-only") != "observe-only")
                .collect()
        })
        .unwrap_or_default();
    // When each order went out, so a round's report shows the coordinator's part of the timeline.
    let notes = acted
        .iter()
        .map(|d| {
            format!(
                "coordinator: {} {} at +{} ms ({})",
                d["command"]
                    .as_str()
                    .or(d["action"].as_str())
                    .unwrap_or("?"),
                d["resource_id"].as_str().unwrap_or("?"),
                d["ts_ms"].as_i64().unwrap_or(0) - since_ms,
                d["trigger"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    (acted.len() as u64, notes)
}

/// Polls Flink's REST API (and the coordinator's event log, in the shield arm) for signs of the fault and for
/// the job running again.
struct Watcher<'a> {
    client: &'a flink::Client,
    job: &'a str,
    target: Option<String>,
    coordinator: Option<(String, String)>,
    http: reqwest::Client,
    fully_running: bool,
    job_state: String,
    seen_signals: std::collections::BTreeSet<String>,
    last_exceptions_ms: i64,
    last_events_ms: i64,
    last_event_id: u64,
    tm_gone_seen: bool,
    rest_down_seen: bool,
}

impl<'a> Watcher<'a> {
    fn new(
        client: &'a flink::Client,
        job: &'a str,
        state: &RunState,
        target: Option<String>,
    ) -> Self {
        let coordinator = state.coordinator.as_ref().and_then(|c| {
            std::fs::read_to_string(&c.api_token_file).ok().map(|t| {
                (
                    c.api.trim_end_matches('/').to_string(),
                    t.trim().to_string(),
                )
            })
        });
        Watcher {
            client,
            job,
            target,
            coordinator,
            http: reqwest::Client::new(),
            fully_running: true,
            job_state: "RUNNING".into(),
            seen_signals: Default::default(),
            last_exceptions_ms: 0,
            last_events_ms: 0,
            last_event_id: 0,
            tm_gone_seen: false,
            rest_down_seen: false,
        }
    }

    fn add(&mut self, obs: &mut Observation, ts_ms: i64, source: &str, what: String) {
        if ts_ms < obs.inject_ms {
            return;
        }
        if self.seen_signals.insert(format!("{source}:{what}")) {
            obs.signals.push(Signal {
                ts_ms,
                source: source.into(),
                what,
            });
        }
    }

    async fn poll(&mut self, obs: &mut Observation) {
        let now = now_ms();
        match self.client.job(self.job).await {
            Ok(j) => {
                self.fully_running = j.fully_running();
                self.job_state = if self.fully_running || j.state != "RUNNING" {
                    j.state.clone()
                } else {
                    "RUNNING (not every subtask)".into()
                };
                for (st, ts) in &j.timestamps {
                    if *ts > 0
                        && matches!(
                            st.as_str(),
                            "FAILING" | "RESTARTING" | "CANCELLING" | "SUSPENDED" | "FAILED"
                        )
                    {
                        self.add(obs, *ts, "flink", format!("job {st}"));
                    }
                }
            }
            Err(e) => {
                self.fully_running = false;
                self.job_state = format!("unknown ({})", short(&e.to_string()));
                if !self.rest_down_seen && !matches!(e, flink::Error::Status { status: 404, .. }) {
                    self.rest_down_seen = true;
                    self.add(obs, now, "flink", "REST API not answering".into());
                }
            }
        }
        if now - self.last_exceptions_ms >= 500 {
            self.last_exceptions_ms = now;
            if let Ok(list) = self.client.exceptions(self.job).await {
                for e in list {
                    let what = format!(
                        "exception {}{}",
                        e.exception_name.rsplit('.').next().unwrap_or(""),
                        e.task_manager_id
                            .as_deref()
                            .map(|t| format!(" on {t}"))
                            .unwrap_or_default()
                    );
                    self.add(obs, e.timestamp, "flink", what);
                }
            }
            if let Some(t) = self.target.clone() {
                if !self.tm_gone_seen {
                    if let Ok(tms) = self.client.taskmanagers().await {
                        if !tms.iter().any(|x| x.id == t) {
                            self.tm_gone_seen = true;
                            self.add(obs, now, "flink", format!("{t} no longer registered"));
                        }
                    }
                }
            }
        }
        if now - self.last_events_ms >= 200 {
            self.last_events_ms = now;
            self.poll_agent_events(obs).await;
        }
    }

    async fn poll_agent_events(&mut self, obs: &mut Observation) {
        let Some((api, token)) = self.coordinator.clone() else {
            return;
        };
        let url = format!("{api}/v1/events?since={}", self.last_event_id);
        let Ok(resp) = self
            .http
            .get(&url)
            .bearer_auth(&token)
            .timeout(Duration::from_millis(800))
            .send()
            .await
        else {
            return;
        };
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        for e in v.as_array().into_iter().flatten() {
            self.last_event_id = self.last_event_id.max(e["id"].as_u64().unwrap_or(0));
            let rid = e["resource_id"].as_str().unwrap_or("");
            let kind = e["kind"].as_str().unwrap_or("");
            let ts = e["source_ts_ms"]
                .as_i64()
                .filter(|t| *t > 0)
                .or(e["ts_ms"].as_i64())
                .unwrap_or(0);
            let relevant = match &self.target {
                Some(t) => rid == t || rid == "jobmanager",
                None => true,
            };
            if !relevant {
                continue;
            }
            if kind == "liveness" {
                let to = e["detail"]["to"].as_str().unwrap_or("");
                if to != "alive" {
                    self.add(obs, ts, "agent", format!("{rid} {to}"));
                }
            } else if kind == "failure" {
                self.add(obs, ts, "agent", format!("{rid} reported a failure"));
            }
        }
    }

    /// The final look: whether (and when, by Flink's own timestamps) every subtask runs again.
    async fn finish(&mut self, obs: &mut Observation) {
        self.poll(obs).await;
        match self.client.job(self.job).await {
            Ok(j) if j.fully_running() => match self.client.subtask_running_times(self.job).await {
                Ok(times) => {
                    let latest = times.iter().copied().max().unwrap_or(0);
                    obs.redeployed = latest > obs.inject_ms;
                    obs.running_at_ms = obs.redeployed.then_some(latest);
                }
                Err(_) => obs.not_running_at_end = true,
            },
            _ => obs.not_running_at_end = true,
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(60).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_outcome_says_who_fenced_and_when() {
        // 2026-11-25T05:00:03.500Z is 3,500 ms after the cut at 05:00:00.000Z.
        let inject = 1_795_582_800_000; // 2026-11-25T05:00:00Z
        let log = "\u{1b}[2m2026-11-25T05:00:01.000000Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m uplink lost\n\
                   \u{1b}[2m2026-11-25T05:00:03.500123Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m streamshield::agent::command: \
                   Cut off from the coordinator and the JobManager: fencing the TaskManager outcome=SIGKILL sent to pid 7\n";
        assert_eq!(
            partition_outcome(log, false, inject),
            "the cut-off TaskManager was gone when the partition healed: its agent fenced it from inside the partition at +3500 ms"
        );
        assert!(partition_outcome("", false, inject).contains("no self-fence"));
        assert_eq!(
            partition_outcome("", true, inject),
            "the cut-off TaskManager was still running when the partition healed"
        );
        // A line without a readable time still counts.
        assert!(partition_outcome(
            "Cut off from the coordinator and the JobManager",
            true,
            inject
        )
        .ends_with("although its agent fenced it from inside the partition"));
    }

    #[test]
    fn ballast_is_fixed_without_a_target_or_a_measured_pause() {
        assert_eq!(next_ballast(500, None, &[(500, 40_000)]), (500, None));
        assert_eq!(
            next_ballast(300, Some(Duration::from_secs(18)), &[]),
            (300, None)
        );
    }

    #[test]
    fn ballast_follows_the_median_rate_of_the_last_three_pauses() {
        let target = Some(Duration::from_secs(18));
        // 300 MB took 9 s: 30 ms/MB, so 18 s wants 600 MB.
        let (mb, note) = next_ballast(300, target, &[(300, 9_000)]);
        assert_eq!(mb, 600);
        assert!(
            note.unwrap().contains("30.0 ms/MB"),
            "the note names the rate"
        );
        // 300 MB took 4.2 s (seen: a quiet minute): 1,290 MB would be the estimate, but one step is at most 2x.
        assert_eq!(next_ballast(300, target, &[(300, 4_158)]).0, 600);
        // Only the last three count (the 10 ms/MB round is older); their median is 60 ms/MB -> 300 MB.
        let history = [(500, 5_000), (600, 30_000), (300, 24_000), (300, 18_000)];
        assert_eq!(next_ballast(300, target, &history).0, 300);
        // One outlier among three does not move it: median of 40, 40, 200 ms/MB.
        let history = [(400, 16_000), (400, 80_000), (400, 16_000)];
        assert_eq!(next_ballast(300, target, &history).0, 450);
    }

    #[test]
    fn ballast_stays_in_range_and_a_fenced_pause_shrinks_it() {
        let target = Some(Duration::from_secs(18));
        // A very slow host: 500 MB lasted at least 30 s (fenced) -> 60 ms/MB -> 300 MB.
        assert_eq!(next_ballast(500, target, &[(500, 30_017)]).0, 300);
        // Absurd rates move it by at most 2x per round, and never out of the option's range.
        assert_eq!(next_ballast(500, target, &[(500, 1_000_000)]).0, 250);
        assert_eq!(next_ballast(500, target, &[(500, 10)]).0, 1000);
        assert_eq!(
            next_ballast(60, target, &[(60, 1_000_000)]).0,
            MIN_GC_BALLAST_MB
        );
        assert_eq!(
            next_ballast(1000, target, &[(1000, 10)]).0,
            MAX_GC_BALLAST_MB
        );
        // Rounds without a ballast or a pause are skipped, not divided by.
        assert_eq!(next_ballast(500, target, &[(0, 9_000), (300, 0)]).0, 500);
    }

    fn entry(ts: i64, tm: Option<&str>, trace: &str) -> flink::ExceptionEntry {
        flink::ExceptionEntry {
            exception_name: "java.util.concurrent.TimeoutException".into(),
            stacktrace: trace.into(),
            timestamp: ts,
            task_manager_id: tm.map(str::to_string),
        }
    }

    #[test]
    fn failure_causes_name_when_where_and_why_oldest_first() {
        assert_eq!(failure_causes(&[], 1_000), None);
        let e = [
            entry(
                3_500,
                None,
                "org.apache.flink.util.FlinkException: Second\n\tat x.y(Z.java:1)",
            ),
            entry(
                1_930,
                Some("tm-2"),
                "java.util.concurrent.TimeoutException: Heartbeat of TaskManager with id tm-2 timed out.\n\tat a.b(C.java:2)",
            ),
        ];
        assert_eq!(
            failure_causes(&e, 1_000).unwrap(),
            "failures in Flink's exception history since the fault: +930 ms on tm-2: \
             java.util.concurrent.TimeoutException: Heartbeat of TaskManager with id tm-2 timed out.; \
             +2500 ms: org.apache.flink.util.FlinkException: Second"
        );
    }

    #[test]
    fn failure_causes_fall_back_to_the_name_and_cap_the_list() {
        let e: Vec<_> = (0..5).map(|i| entry(100 + i, None, "")).collect();
        let note = failure_causes(&e, 100).unwrap();
        assert!(
            note.contains("+0 ms: java.util.concurrent.TimeoutException"),
            "{note}"
        );
        assert!(note.ends_with("; and 2 more"), "{note}");
    }
}
