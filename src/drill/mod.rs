//! `streamshield drill`: injects a real fault into a real local cluster, round after round, alternating between
//! arms (stock, tuned, shield), and measures what a user feels: how long output stops, when the job runs again,
//! when latency is back, what was lost or repeated. Every round brings up a fresh cluster for its arm, runs the
//! generator and the live verifier throughout, injects, watches, heals and takes everything down again, also on
//! failure and Ctrl-C.
//!
//! This file holds the drill's options, their validation and the run loop over rounds and arms. A round and its
//! steps are in `round`, fault injection and healing in `inject`, the recovery watch in `watch`, what explains a
//! round (failure causes, the partition's outcome, kept logs) in `causes`, and the GC ballast's sizing in
//! `ballast`; `measure` evaluates a round, `phases` reads the JobManager's log, `report` writes the report.

mod ballast;
mod causes;
pub mod cli;
mod inject;
pub mod jvm;
pub mod measure;
pub mod phases;
pub mod report;
mod round;
pub mod scenario;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::host::clock::now_ms;
use crate::local::{self, dist::say, Delivery};
pub use ballast::{next_ballast, GC_BALLAST_MB};
use ballast::{MAX_GC_BALLAST_MB, MIN_GC_BALLAST_MB};
use measure::Round;
use round::run_round;
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
