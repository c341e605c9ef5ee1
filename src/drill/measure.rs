//! The drill's measurement: what one round observed, turned into the numbers of the report. Pure functions over
//! timestamps, so every rule here is unit-tested on synthetic timelines (docs/drills.md states the same rules).

use serde::{Deserialize, Serialize};

/// Width of the buckets of the catch-up rule and of the timeline.
pub const BUCKET_MS: i64 = 500;
/// The pre-fault latency baseline is the median over this window before the injection.
pub const BASELINE_WINDOW_MS: i64 = 10_000;
/// Caught up: a bucket's median latency is below this many times the pre-fault median.
pub const CATCHUP_FACTOR: f64 = 2.0;

/// A first sign of the fault, from Flink or from StreamShield.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signal {
    /// Unix ms: the source's own timestamp where it has one (Flink's exception history and job status
    /// timestamps, the agent's event time), else when the drill observed it.
    pub ts_ms: i64,
    /// `flink` or `agent`.
    pub source: String,
    pub what: String,
}

/// Everything one round observed. Times are unix milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub inject_ms: i64,
    /// When the drill stopped watching (recovered + tail, or the deadline).
    pub end_ms: i64,
    /// Every output record received from `inject_ms - BASELINE_WINDOW_MS` on: (receive ms, latency ms).
    pub samples: Vec<(i64, u32)>,
    /// When every key had received a record beyond the highest sequence number the sink had seen for it at
    /// injection: output progress resumed everywhere.
    pub progressed_at_ms: Option<i64>,
    /// When the first key did (keys on healthy subtasks, output already committed before the fault became visible).
    pub first_progress_at_ms: Option<i64>,
    pub signals: Vec<Signal>,
    /// Flink's own time at which every subtask was RUNNING again, if any subtask was deployed after the injection.
    pub running_at_ms: Option<i64>,
    /// Some subtask was (re)deployed after the injection.
    pub redeployed: bool,
    /// Flink still had some subtask not RUNNING when the drill stopped watching.
    pub not_running_at_end: bool,
    pub restarts: Option<u64>,
    pub failovers: u64,
    pub records_lost: u64,
    pub records_duplicated: u64,
    pub state_errors: u64,
    /// The verifier's final report was complete (every input record accounted for).
    pub verifier_complete: bool,
    /// How long the injected pause really lasted (SIGSTOP to SIGCONT; the GC log's pause), for pause scenarios.
    pub fault_ms: Option<u64>,
}

/// One round of the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Round {
    pub round: u32,
    /// Recovered within the deadline: output progressed, every subtask RUNNING, latency caught up.
    pub ok: bool,
    pub detect_ms: Option<u64>,
    pub running_ms: Option<u64>,
    pub gap_ms: Option<u64>,
    /// The longest time after the injection in which the sink received no record at all. Equal to the gap for a
    /// fault that stops output at once; the honest measure where output goes on for a while first (a planned stop
    /// holds the SIGTERM while a checkpoint completes, so every key progresses before the outage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_ms: Option<u64>,
    pub catchup_ms: Option<u64>,
    /// When the first key's output went beyond its marker (some output may continue through a fault).
    pub first_output_ms: Option<u64>,
    pub records_lost: u64,
    pub records_duplicated: u64,
    /// Of those, how many repeat a record whose first copy the sink wrote before the checkpoint the restart restored
    /// (at-least-once output may repeat only what came after it; exactly-once none at all). None: not attributed
    /// (no restore from a checkpoint, or a report from before this existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates_before_checkpoint: Option<u64>,
    pub state_errors: u64,
    pub restarts: Option<u64>,
    pub failovers: u64,
    /// How long the injected pause really lasted (pause scenarios); for a pause that was fenced before it ended, how
    /// long it had lasted by then.
    pub fault_ms: Option<u64>,
    /// `tm-gc-pause`: the live heap the round's TaskManagers collected (it sets the pause's length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_ballast_mb: Option<u32>,
    /// Which signal was first.
    pub detect_source: Option<String>,
    pub baseline_latency_ms: Option<u64>,
    /// Why the round did not recover, in words (None when ok).
    pub failure: Option<String>,
    pub notes: Vec<String>,
    /// Where the seconds went, from the JobManager's log (reports written before this existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<super::phases::Phases>,
    /// Output per bucket around the fault: the raw series the timeline is drawn from.
    pub timeline: Vec<Bucket>,
}

/// Output records received in one bucket, relative to the injection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bucket {
    /// Bucket start, ms relative to the injection.
    pub t_ms: i64,
    pub out: u64,
    pub p50_ms: Option<u32>,
}

fn median(v: &mut [u32]) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

fn since(t: i64, inject: i64) -> u64 {
    (t - inject).max(0) as u64
}

/// The pre-fault median latency: output received in the window before the injection.
pub fn baseline(samples: &[(i64, u32)], inject_ms: i64) -> Option<u32> {
    let mut v: Vec<u32> = samples
        .iter()
        .filter(|(t, _)| *t < inject_ms && *t >= inject_ms - BASELINE_WINDOW_MS)
        .map(|(_, l)| *l)
        .collect();
    median(&mut v)
}

/// Buckets of `BUCKET_MS` from `from_ms` to `to_ms` (relative times in the result).
pub fn buckets(samples: &[(i64, u32)], inject_ms: i64, from_ms: i64, to_ms: i64) -> Vec<Bucket> {
    let n = ((to_ms - from_ms).max(0) + BUCKET_MS - 1) / BUCKET_MS;
    let mut lat: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
    for (t, l) in samples {
        if *t >= from_ms && *t < to_ms {
            lat[((t - from_ms) / BUCKET_MS) as usize].push(*l);
        }
    }
    lat.into_iter()
        .enumerate()
        .map(|(i, mut v)| Bucket {
            t_ms: from_ms - inject_ms + i as i64 * BUCKET_MS,
            out: v.len() as u64,
            p50_ms: median(&mut v),
        })
        .collect()
}

/// When latency is back under `CATCHUP_FACTOR` x the baseline: the end of the first non-empty bucket, from the
/// moment output progressed, whose median is below it.
pub fn caught_up_at(samples: &[(i64, u32)], from_ms: i64, baseline_ms: u32) -> Option<i64> {
    let limit = (baseline_ms as f64 * CATCHUP_FACTOR).max(1.0);
    let last = samples.iter().map(|(t, _)| *t).max()?;
    let mut start = from_ms;
    while start <= last {
        let mut v: Vec<u32> = samples
            .iter()
            .filter(|(t, _)| *t >= start && *t < start + BUCKET_MS)
            .map(|(_, l)| *l)
            .collect();
        if let Some(m) = median(&mut v) {
            if (m as f64) < limit {
                return Some(start + BUCKET_MS);
            }
        }
        start += BUCKET_MS;
    }
    None
}

/// Turns one round's observation into its report entry.
pub fn evaluate(round: u32, o: &Observation) -> Round {
    let inject = o.inject_ms;
    let first = o
        .signals
        .iter()
        .filter(|s| s.ts_ms >= inject)
        .min_by_key(|s| s.ts_ms);
    let base = baseline(&o.samples, inject);
    let gap_ms = o.progressed_at_ms.map(|t| since(t, inject));
    let catchup_at = match (o.progressed_at_ms, base) {
        (Some(p), Some(b)) => caught_up_at(&o.samples, p, b),
        _ => None,
    };
    let running_ms = match (o.redeployed, o.running_at_ms, o.not_running_at_end) {
        (_, _, true) => None,
        (true, Some(t), false) => Some(since(t, inject)),
        (true, None, false) => None,
        (false, _, false) => Some(0),
    };
    let mut notes = Vec::new();
    if !o.redeployed && !o.not_running_at_end {
        notes.push("Flink redeployed no subtask: the job stayed RUNNING in Flink's view".into());
    }
    if base.is_none() {
        notes.push("no output in the 10 s before the fault: no latency baseline".into());
    }
    let failure = if o.progressed_at_ms.is_none() {
        Some(format!(
            "output did not progress within {:.1} s of the fault",
            (o.end_ms - inject) as f64 / 1000.0
        ))
    } else if o.not_running_at_end {
        Some("the job did not run every subtask again before the deadline".into())
    } else if o.redeployed && o.running_at_ms.is_none() {
        Some("subtasks were redeployed but Flink reported no time at which all ran".into())
    } else if catchup_at.is_none() {
        Some(format!(
            "latency did not come back under {CATCHUP_FACTOR}x the pre-fault median ({} ms) before the deadline",
            base.map(|b| b.to_string()).unwrap_or_else(|| "unknown".into())
        ))
    } else {
        None
    };
    if !o.verifier_complete {
        notes
            .push("the verifier did not account for every input record before its time-out".into());
    }
    Round {
        round,
        ok: failure.is_none(),
        detect_ms: first.map(|s| since(s.ts_ms, inject)),
        running_ms,
        gap_ms,
        stall_ms: stall(&o.samples, inject, o.end_ms),
        catchup_ms: catchup_at.map(|t| since(t, inject)),
        first_output_ms: o.first_progress_at_ms.map(|t| since(t, inject)),
        records_lost: o.records_lost,
        records_duplicated: o.records_duplicated,
        duplicates_before_checkpoint: None,
        state_errors: o.state_errors,
        restarts: o.restarts,
        failovers: o.failovers,
        fault_ms: o.fault_ms,
        gc_ballast_mb: None,
        detect_source: first.map(|s| format!("{}: {}", s.source, s.what)),
        baseline_latency_ms: base.map(u64::from),
        failure,
        notes,
        phases: None,
        timeline: buckets(
            &o.samples,
            inject,
            inject - BASELINE_WINDOW_MS,
            o.end_ms.max(inject),
        ),
    }
}

/// The longest interval without any output record in `[inject, end]` (receive times of `samples`).
pub fn stall(samples: &[(i64, u32)], inject: i64, end: i64) -> Option<u64> {
    if end <= inject {
        return None;
    }
    let mut times: Vec<i64> = samples
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= inject && *t <= end)
        .collect();
    times.sort_unstable();
    let mut prev = inject;
    let mut longest = 0;
    for t in times.into_iter().chain(std::iter::once(end)) {
        longest = longest.max(t - prev);
        prev = t;
    }
    Some(longest as u64)
}

/// Min, median and max of a metric over the rounds that measured it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub min: Option<u64>,
    pub median: Option<f64>,
    pub max: Option<u64>,
    /// Rounds that measured it.
    pub n: usize,
}

pub fn spread(values: impl IntoIterator<Item = Option<u64>>) -> Spread {
    let mut v: Vec<u64> = values.into_iter().flatten().collect();
    v.sort_unstable();
    let median = match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2] as f64),
        n => Some((v[n / 2 - 1] + v[n / 2]) as f64 / 2.0),
    };
    Spread {
        min: v.first().copied(),
        median,
        max: v.last().copied(),
        n: v.len(),
    }
}

/// One arm's summary over its rounds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub gap_ms: Spread,
    #[serde(default = "no_spread")]
    pub stall_ms: Spread,
    pub running_ms: Spread,
    pub detect_ms: Spread,
    pub catchup_ms: Spread,
    pub records_lost: u64,
    pub records_duplicated: u64,
    /// The sum of the rounds' `duplicates_before_checkpoint`, where any round has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates_before_checkpoint: Option<u64>,
    pub state_errors: u64,
    pub restarts: u64,
    pub failovers: u64,
    pub failed_rounds: usize,
    pub rounds: usize,
}

fn no_spread() -> Spread {
    spread([])
}

pub fn summarize(rounds: &[Round]) -> Summary {
    Summary {
        gap_ms: spread(rounds.iter().map(|r| r.gap_ms)),
        stall_ms: spread(rounds.iter().map(|r| r.stall_ms)),
        running_ms: spread(rounds.iter().map(|r| r.running_ms)),
        detect_ms: spread(rounds.iter().map(|r| r.detect_ms)),
        catchup_ms: spread(rounds.iter().map(|r| r.catchup_ms)),
        records_lost: rounds.iter().map(|r| r.records_lost).sum(),
        records_duplicated: rounds.iter().map(|r| r.records_duplicated).sum(),
        duplicates_before_checkpoint: rounds
            .iter()
            .filter_map(|r| r.duplicates_before_checkpoint)
            .reduce(|a, b| a + b),
        state_errors: rounds.iter().map(|r| r.state_errors).sum(),
        restarts: rounds.iter().filter_map(|r| r.restarts).sum(),
        failovers: rounds.iter().map(|r| r.failovers).sum(),
        failed_rounds: rounds.iter().filter(|r| !r.ok).count(),
        rounds: rounds.len(),
    }
}

/// The ratio of two medians (`num / den`); None where either is missing or the denominator is 0.
pub fn ratio(num: &Spread, den: &Spread) -> Option<f64> {
    match (num.median, den.median) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000;

    /// Steady output: `per_s` records a second with latency `lat` from `from` to `to` (relative ms).
    fn steady(from: i64, to: i64, per_s: i64, lat: u32) -> Vec<(i64, u32)> {
        let step = 1000 / per_s;
        (0..)
            .map(|i| T0 + from + i * step)
            .take_while(|t| *t < T0 + to)
            .map(|t| (t, lat))
            .collect()
    }

    fn base_obs() -> Observation {
        Observation {
            inject_ms: T0,
            end_ms: T0 + 30_000,
            verifier_complete: true,
            restarts: Some(0),
            ..Observation::default()
        }
    }

    #[test]
    fn a_stop_held_for_a_checkpoint_is_measured_by_its_stall_not_its_gap() {
        let mut o = base_obs();
        o.samples = steady(-10_000, 600, 100, 400);
        // Output goes on for 0.6 s (every key progresses), then nothing until 2.1 s.
        o.samples.extend(steady(2_100, 30_000, 100, 400));
        o.progressed_at_ms = Some(T0 + 70);
        let r = evaluate(1, &o);
        assert_eq!(r.gap_ms, Some(70));
        let stall = r.stall_ms.unwrap();
        assert!((1_500..=1_510).contains(&stall), "{stall}");
        // Nothing at all after the injection: the stall runs to the end of the watch.
        assert_eq!(stall_of(&[], 100), Some(100));
        assert_eq!(super::stall(&[], T0, T0), None);
    }

    fn stall_of(samples: &[(i64, u32)], end_rel: i64) -> Option<u64> {
        super::stall(samples, T0, T0 + end_rel)
    }

    #[test]
    fn a_crash_with_a_gap_a_backlog_and_a_redeploy() {
        let mut o = base_obs();
        o.samples = steady(-10_000, 0, 100, 400);
        // Output stops for 5 s; then the backlog comes with high latency, then back to normal by +8 s.
        o.samples.extend(steady(5_000, 8_000, 100, 3_000));
        o.samples.extend(steady(8_000, 30_000, 100, 420));
        o.progressed_at_ms = Some(T0 + 5_000);
        o.signals = vec![
            Signal {
                ts_ms: T0 + 2_500,
                source: "flink".into(),
                what: "exception".into(),
            },
            Signal {
                ts_ms: T0 + 40,
                source: "agent".into(),
                what: "dead".into(),
            },
            // A sign from before the fault is not a detection of it.
            Signal {
                ts_ms: T0 - 5,
                source: "flink".into(),
                what: "old".into(),
            },
        ];
        o.redeployed = true;
        o.running_at_ms = Some(T0 + 4_200);
        o.restarts = Some(1);
        let r = evaluate(1, &o);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.detect_ms, Some(40));
        assert_eq!(r.detect_source.as_deref(), Some("agent: dead"));
        assert_eq!(r.gap_ms, Some(5_000));
        assert_eq!(
            r.stall_ms,
            Some(5_000),
            "output stopped at once: the stall is the gap"
        );
        assert_eq!(r.running_ms, Some(4_200));
        assert_eq!(r.baseline_latency_ms, Some(400));
        // The buckets from 5.0 to 8.0 s have median 3,000 >= 800; the one starting at 8.0 s is the first under.
        assert_eq!(r.catchup_ms, Some(8_500));
        assert_eq!(r.restarts, Some(1));
        assert_eq!(r.timeline.first().unwrap().t_ms, -10_000);
        assert_eq!(r.timeline.len(), 80);
        let gap_bucket = r.timeline.iter().find(|b| b.t_ms == 2_000).unwrap();
        assert_eq!((gap_bucket.out, gap_bucket.p50_ms), (0, None));
    }

    #[test]
    fn a_fault_that_never_recovers_is_a_failed_round_with_what_was_seen() {
        let mut o = base_obs();
        o.samples = steady(-10_000, 0, 100, 400);
        o.signals = vec![Signal {
            ts_ms: T0 + 50_000,
            source: "flink".into(),
            what: "late".into(),
        }];
        o.end_ms = T0 + 60_000;
        o.not_running_at_end = true;
        o.records_lost = 12_000;
        o.verifier_complete = true;
        let r = evaluate(2, &o);
        assert!(!r.ok);
        assert_eq!(r.gap_ms, None);
        assert_eq!(r.catchup_ms, None);
        assert_eq!(r.running_ms, None);
        assert_eq!(r.detect_ms, Some(50_000));
        assert_eq!(r.records_lost, 12_000);
        assert_eq!(
            r.failure.as_deref(),
            Some("output did not progress within 60.0 s of the fault")
        );
        // The failed round still carries its series.
        assert_eq!(r.timeline.iter().map(|b| b.out).sum::<u64>(), 1_000);
    }

    #[test]
    fn a_pause_without_redeploy_counts_running_as_zero_and_says_why() {
        let mut o = base_obs();
        o.samples = steady(-10_000, 0, 100, 500);
        o.samples.extend(steady(1_200, 30_000, 100, 500));
        o.progressed_at_ms = Some(T0 + 1_200);
        let r = evaluate(3, &o);
        assert!(r.ok);
        assert_eq!(r.running_ms, Some(0));
        assert_eq!(r.gap_ms, Some(1_200));
        assert_eq!(r.catchup_ms, Some(1_700));
        assert_eq!(r.detect_ms, None, "nobody noticed");
        assert!(r.notes[0].contains("stayed RUNNING"));
    }

    #[test]
    fn progress_without_catch_up_is_not_recovered() {
        let mut o = base_obs();
        o.samples = steady(-10_000, 0, 100, 400);
        o.samples.extend(steady(3_000, 30_000, 100, 5_000));
        o.progressed_at_ms = Some(T0 + 3_000);
        o.redeployed = true;
        o.running_at_ms = Some(T0 + 2_000);
        let r = evaluate(4, &o);
        assert!(!r.ok);
        assert_eq!(r.gap_ms, Some(3_000));
        assert!(r
            .failure
            .unwrap()
            .contains("2x the pre-fault median (400 ms)"));
    }

    #[test]
    fn loss_and_duplicates_add_up_over_rounds_and_failed_rounds_are_counted() {
        let mk = |round, ok, gap: Option<u64>, lost, dup| Round {
            round,
            ok,
            detect_ms: Some(10),
            running_ms: gap,
            gap_ms: gap,
            stall_ms: gap,
            catchup_ms: gap,
            first_output_ms: None,
            records_lost: lost,
            records_duplicated: dup,
            duplicates_before_checkpoint: (dup > 0).then_some(0),
            state_errors: 0,
            restarts: Some(1),
            failovers: 0,
            fault_ms: None,
            gc_ballast_mb: None,
            detect_source: None,
            baseline_latency_ms: None,
            failure: None,
            notes: vec![],
            phases: None,
            timeline: vec![],
        };
        let rounds = vec![
            mk(1, true, Some(3_000), 0, 5),
            mk(2, false, None, 700, 0),
            mk(3, true, Some(1_000), 0, 0),
            mk(4, true, Some(2_000), 1, 0),
        ];
        let s = summarize(&rounds);
        assert_eq!(s.records_lost, 701);
        assert_eq!(s.records_duplicated, 5);
        assert_eq!(s.duplicates_before_checkpoint, Some(0));
        assert_eq!(
            summarize(&rounds[1..]).duplicates_before_checkpoint,
            None,
            "not attributed anywhere"
        );
        assert_eq!(s.failed_rounds, 1);
        assert_eq!(s.restarts, 4);
        assert_eq!(
            s.gap_ms,
            Spread {
                min: Some(1_000),
                median: Some(2_000.0),
                max: Some(3_000),
                n: 3
            }
        );
        let other = spread([Some(500), Some(1_000)]);
        assert_eq!(other.median, Some(750.0));
        assert_eq!(ratio(&s.gap_ms, &other), Some(2.67));
        assert_eq!(ratio(&s.gap_ms, &spread([None])), None);
        assert_eq!(ratio(&s.gap_ms, &spread([Some(0)])), None);
    }

    #[test]
    fn baseline_uses_only_the_window_before_the_fault() {
        let mut s = steady(-20_000, -10_000, 10, 9_000);
        s.extend(steady(-10_000, 0, 10, 300));
        s.extend(steady(0, 5_000, 10, 7_000));
        assert_eq!(baseline(&s, T0), Some(300));
        assert_eq!(baseline(&[], T0), None);
    }
}
