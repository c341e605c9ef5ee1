//! The drill's report: `report.json` (schema `streamshield.drill/v1`: raw rounds and summaries), `report.md`
//! (medians, spreads and ratios) and `timeline.svg` (output throughput and latency around the fault, per arm).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::measure::{self, Round, Summary};
use super::{ArmResult, DrillOptions, Error};

pub const SCHEMA: &str = "streamshield.drill/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub scenario: String,
    pub description: String,
    pub flink_version: String,
    pub kafka_version: String,
    pub machine: serde_json::Value,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub workload: serde_json::Value,
    pub arms: Vec<ArmReport>,
    pub ratios: Ratios,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmReport {
    pub name: String,
    pub profile: serde_json::Value,
    pub rounds: Vec<Round>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Ratios {
    pub stock_over_shield: RatioSet,
    pub tuned_over_shield: RatioSet,
    pub stock_over_tuned: RatioSet,
}

/// Ratios of medians; null where an arm is missing or did not measure the metric.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RatioSet {
    pub gap_ms: Option<f64>,
    #[serde(default)]
    pub stall_ms: Option<f64>,
    pub running_ms: Option<f64>,
    pub detect_ms: Option<f64>,
    pub catchup_ms: Option<f64>,
}

pub fn build(opts: &DrillOptions, arms: &[ArmResult], started_ms: i64) -> Report {
    let arms: Vec<ArmReport> = arms
        .iter()
        .map(|a| ArmReport {
            name: a.name.clone(),
            profile: a.profile.clone(),
            summary: measure::summarize(&a.rounds),
            rounds: a.rounds.clone(),
        })
        .collect();
    let find = |n: &str| arms.iter().find(|a| a.name == n).map(|a| &a.summary);
    let set = |num: Option<&Summary>, den: Option<&Summary>| match (num, den) {
        (Some(a), Some(b)) => RatioSet {
            gap_ms: measure::ratio(&a.gap_ms, &b.gap_ms),
            stall_ms: measure::ratio(&a.stall_ms, &b.stall_ms),
            running_ms: measure::ratio(&a.running_ms, &b.running_ms),
            detect_ms: measure::ratio(&a.detect_ms, &b.detect_ms),
            catchup_ms: measure::ratio(&a.catchup_ms, &b.catchup_ms),
        },
        _ => RatioSet::default(),
    };
    let ratios = Ratios {
        stock_over_shield: set(find("stock"), find("shield")),
        tuned_over_shield: set(find("tuned"), find("shield")),
        stock_over_tuned: set(find("stock"), find("tuned")),
    };
    Report {
        schema: SCHEMA.into(),
        scenario: opts.scenario.name().into(),
        description: opts.scenario.description(),
        flink_version: crate::local::dist::FLINK_VERSION.into(),
        kafka_version: crate::local::dist::KAFKA_VERSION.into(),
        machine: super::machine(),
        started_ms,
        finished_ms: crate::host::clock::now_ms(),
        workload: serde_json::json!({
            "rate_per_s": opts.rate,
            "keys": opts.keys,
            "delivery": opts.delivery.as_arg(),
            "checkpoint_interval_ms": opts.checkpoint_interval.as_millis() as u64,
            "taskmanagers": opts.taskmanagers,
            "standby_taskmanagers": 1,
            "warm_spares": opts.warm_spares,
            "slots_per_taskmanager": opts.slots,
            "parallelism": opts.taskmanagers * opts.slots,
            "warmup_ms": opts.warmup.as_millis() as u64,
            "gc_ballast_mb": (opts.scenario == super::Scenario::TmGcPause).then_some(opts.gc_ballast_mb),
            "gc_pause_target_ms": opts
                .gc_pause_target
                .filter(|_| opts.scenario == super::Scenario::TmGcPause)
                .map(|t| t.as_millis() as u64),
            "deadline_ms": opts.scenario.deadline().as_millis() as u64,
            "flink_conf": opts.flink_conf.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>(),
        }),
        arms,
        ratios,
    }
}

/// Reads a report.json back (to render report.md and timeline.svg again).
pub fn read(dir: &Path) -> Result<Report, Error> {
    let p = dir.join("report.json");
    let text = std::fs::read_to_string(&p).map_err(|source| Error::Report {
        path: p.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Report {
        path: p,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Writes report.json, report.md and timeline.svg into `dir`.
pub fn write(dir: &Path, r: &Report) -> Result<(), Error> {
    let put = |name: &str, text: String| {
        let p = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &p))
            .map_err(|source| Error::Report { path: p, source })
    };
    put(
        "report.json",
        serde_json::to_string_pretty(r).expect("the report serializes") + "\n",
    )?;
    put("report.md", markdown(r))?;
    put("timeline.svg", svg(r))?;
    Ok(())
}

fn ms(v: Option<u64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_else(|| "-".into())
}

fn fmed(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn fratio(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into())
}

/// Duplicates, and how many of them repeat a record written before the restored checkpoint, where that is known.
fn dup_cell(dup: u64, before_checkpoint: Option<u64>) -> String {
    match before_checkpoint {
        Some(b) => format!("{dup} ({b} before cp)"),
        None => dup.to_string(),
    }
}

/// One line per round for the live output.
pub fn round_line(arm: &str, r: &Round) -> String {
    format!(
        "{arm} round {}: {} gap {} ms, stall {} ms, running {} ms, detect {} ms, catch-up {} ms, lost {}, dup {}, restarts {}, failovers {}{}",
        r.round,
        if r.ok { "ok" } else { "FAILED" },
        ms(r.gap_ms),
        ms(r.stall_ms),
        ms(r.running_ms),
        ms(r.detect_ms),
        ms(r.catchup_ms),
        r.records_lost,
        dup_cell(r.records_duplicated, r.duplicates_before_checkpoint),
        ms(r.restarts),
        r.failovers,
        r.failure.as_ref().map(|f| format!(" ({f})")).unwrap_or_default()
    )
}

pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Drill report: `{}`\n", r.scenario);
    let _ = writeln!(o, "{}.\n", capitalize(&r.description));
    let m = &r.machine;
    let _ = writeln!(
        o,
        "Flink {}, Kafka {}; machine: {} ({} cores, {} GiB, kernel {}, {}). Workload: {} records/s over {} keys, {}, \
         parallelism {} on {} TaskManagers + 1 {}, {} s checkpoints, fault after {} s of load{}. Rounds alternate \
         between arms.{} \
         Generated by `streamshield drill`; raw rounds in report.json.\n",
        r.flink_version,
        r.kafka_version,
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["java"].as_str().unwrap_or("?"),
        r.workload["rate_per_s"],
        r.workload["keys"],
        r.workload["delivery"].as_str().unwrap_or("?"),
        r.workload["parallelism"],
        r.workload["taskmanagers"],
        if r.workload["warm_spares"].as_bool().unwrap_or(false) {
            "warm spare (started before the job, whose slots are spread over all three)"
        } else {
            "standby"
        },
        r.workload["checkpoint_interval_ms"].as_f64().unwrap_or(1000.0) / 1000.0,
        r.workload["warmup_ms"].as_f64().map_or("?".to_string(), |w| format!("{}", w / 1000.0)),
        gc_ballast_words(&r.workload),
        flink_conf_words(&r.workload),
    );
    let _ = writeln!(
        o,
        "## Summary (milliseconds from injection: median, min-max over measured rounds)\n"
    );
    let _ = writeln!(
        o,
        "| arm | rounds | failed | gap_ms | stall_ms | running_ms | detect_ms | catchup_ms | lost | duplicated | restarts | failovers |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for a in &r.arms {
        let s = &a.summary;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            a.name,
            s.rounds,
            s.failed_rounds,
            spread_cell(&s.gap_ms),
            spread_cell(&s.stall_ms),
            spread_cell(&s.running_ms),
            spread_cell(&s.detect_ms),
            spread_cell(&s.catchup_ms),
            s.records_lost,
            dup_cell(s.records_duplicated, s.duplicates_before_checkpoint),
            s.restarts,
            s.failovers
        );
    }
    let _ = writeln!(o, "\n## Ratios of medians\n");
    let _ = writeln!(
        o,
        "| ratio | gap_ms | stall_ms | running_ms | detect_ms | catchup_ms |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for (name, s) in [
        ("stock / shield", &r.ratios.stock_over_shield),
        ("tuned / shield", &r.ratios.tuned_over_shield),
        ("stock / tuned", &r.ratios.stock_over_tuned),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} |",
            fratio(s.gap_ms),
            fratio(s.stall_ms),
            fratio(s.running_ms),
            fratio(s.detect_ms),
            fratio(s.catchup_ms)
        );
    }
    pauses(&mut o, r);
    where_time_goes(&mut o, r);
    let _ = writeln!(o, "\n## Rounds\n");
    let _ = writeln!(
        o,
        "| arm | round | ok | gap | stall | first key | running | detect (first sign) | catch-up | lost | dup | restarts | failovers | pause | notes |"
    );
    let _ = writeln!(
        o,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for a in &r.arms {
        for x in &a.rounds {
            let mut notes: Vec<String> = x.failure.iter().cloned().collect();
            notes.extend(x.notes.iter().cloned());
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} |",
                a.name,
                x.round,
                if x.ok { "yes" } else { "**no**" },
                ms(x.gap_ms),
                ms(x.stall_ms),
                ms(x.first_output_ms),
                ms(x.running_ms),
                ms(x.detect_ms),
                x.detect_source
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default(),
                ms(x.catchup_ms),
                x.records_lost,
                dup_cell(x.records_duplicated, x.duplicates_before_checkpoint),
                ms(x.restarts),
                x.failovers,
                ms(x.fault_ms),
                notes.join("; ").replace('|', "/")
            );
        }
    }
    let _ = writeln!(
        o,
        "\nDefinitions (docs/drills.md): gap = until every key has received a record beyond the highest sequence number \
         the sink had for it at injection; stall = the longest time after the injection in which the sink received no \
         record at all (the gap, for a fault that stops output at once; the outage, where output goes on for a while \
         first, as in a planned stop); running = Flink's own time at which every subtask ran again (0: Flink redeployed nothing); \
         detect = first sign in Flink (exception history, job status timestamps, REST) or an agent; catch-up = end of \
         the first 500 ms bucket after the gap whose median end-to-end latency is under 2x the pre-fault median; \
         duplicated (N before cp) = output records received twice, N of them records whose first copy the sink wrote \
         before the checkpoint the restart restored (at-least-once output may repeat only what came after it)."
    );
    o
}

/// The header's words on `--flink-conf` (settings laid over every arm's profile), if any.
fn flink_conf_words(w: &serde_json::Value) -> String {
    let keys: Vec<&str> = w["flink_conf"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if keys.is_empty() {
        String::new()
    } else {
        format!(
            " Every arm's profile overridden with `{}`.",
            keys.join("`, `")
        )
    }
}

/// The header's words on the GC ballast (tm-gc-pause only).
fn gc_ballast_words(w: &serde_json::Value) -> String {
    match (w["gc_ballast_mb"].as_u64(), w["gc_pause_target_ms"].as_f64()) {
        (Some(mb), Some(t)) => format!(
            ", GC ballast per TaskManager sized each round for a {} s pause from the pauses measured so far ({mb} MB in \
             the first round; each round's in its notes)",
            t / 1000.0
        ),
        (Some(mb), None) => format!(", {mb} MB GC ballast per TaskManager"),
        _ => String::new(),
    }
}

/// How long the injected pauses lasted, per arm, and how many reached the 10 s a long GC pause must last
/// (tm-gc-pause only: the pause's length depends on the host).
fn pauses(o: &mut String, r: &Report) {
    if r.scenario != super::Scenario::TmGcPause.name() {
        return;
    }
    let _ = writeln!(o, "\n## Pauses\n");
    let _ = writeln!(
        o,
        "| arm | rounds with a measured pause | >= 10 s | pause_ms median (min-max) |"
    );
    let _ = writeln!(o, "|---|---|---|---|");
    for a in &r.arms {
        let ms_all: Vec<u64> = a.rounds.iter().filter_map(|x| x.fault_ms).collect();
        let long = ms_all.iter().filter(|m| **m >= 10_000).count();
        let sp = measure::spread(ms_all.iter().map(|m| Some(*m)));
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            a.name,
            ms_all.len(),
            long,
            spread_cell(&sp)
        );
    }
}

/// A summary cell: `median (min-max)`, or `-` when no round measured it.
fn spread_cell(sp: &measure::Spread) -> String {
    if sp.n == 0 {
        "-".to_string()
    } else {
        format!("{} ({}-{})", fmed(sp.median), ms(sp.min), ms(sp.max))
    }
}

/// A round's phases and its gap.
type PhaseRow<'a> = (&'a super::phases::Phases, Option<u64>);

/// Medians of the phase boundaries read from the JobManager's log, per arm (rounds that have them).
fn where_time_goes(o: &mut String, r: &Report) {
    if !r
        .arms
        .iter()
        .flat_map(|a| &a.rounds)
        .any(|x| x.phases.is_some())
    {
        return;
    }
    let _ = writeln!(
        o,
        "\n## Where the time goes (JobManager log; medians, ms from injection)\n\n\
         failed = Flink declared the failure (job RUNNING -> RESTARTING); restarts = job (re)starts Flink began; \
         restart = the (re)start that stuck began; deployed = its last task sent to a TaskManager; tasks running = \
         the last subtask initialised (state restored, Kafka source and sink open); checkpoint = the first checkpoint \
         completed after that (exactly-once output becomes visible when it commits); gap = output resumed at the sink; \
         last checkpoint = the last one completed before the fault (negative: with at-least-once output, what was \
         read after it may be written again).\n"
    );
    let _ = writeln!(
        o,
        "| arm | rounds | last checkpoint | failed | restarts | restart | deployed | tasks running | checkpoint | gap |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    for a in &r.arms {
        let ph: Vec<PhaseRow> = a
            .rounds
            .iter()
            .filter_map(|x| x.phases.as_ref().map(|p| (p, x.gap_ms)))
            .collect();
        if ph.is_empty() {
            continue;
        }
        let med = |f: &dyn Fn(&PhaseRow) -> Option<u64>| {
            let mut v: Vec<u64> = ph.iter().filter_map(f).collect();
            v.sort_unstable();
            if v.is_empty() {
                "-".to_string()
            } else if v.len() % 2 == 1 {
                v[v.len() / 2].to_string()
            } else {
                ((v[v.len() / 2 - 1] + v[v.len() / 2]) / 2).to_string()
            }
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            a.name,
            ph.len(),
            {
                let mut v: Vec<i64> = ph
                    .iter()
                    .filter_map(|x| x.0.last_checkpoint_before_ms)
                    .collect();
                v.sort_unstable();
                match v.len() {
                    0 => "-".to_string(),
                    n if n % 2 == 1 => v[n / 2].to_string(),
                    n => ((v[n / 2 - 1] + v[n / 2]) / 2).to_string(),
                }
            },
            med(&|x| x.0.failed_ms),
            med(&|x| Some(u64::from(x.0.restarts))),
            med(&|x| x.0.restart_ms),
            med(&|x| x.0.deployed_ms),
            med(&|x| x.0.tasks_running_ms),
            med(&|x| x.0.checkpoint_ms),
            med(&|x| x.1),
        );
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The round whose gap is the arm's median (failed rounds last): the one the timeline shows.
fn representative(a: &ArmReport) -> Option<&Round> {
    let mut rs: Vec<&Round> = a.rounds.iter().filter(|r| !r.timeline.is_empty()).collect();
    rs.sort_by_key(|r| (r.gap_ms.is_none(), r.gap_ms.unwrap_or(u64::MAX)));
    let ok: Vec<&&Round> = rs.iter().filter(|r| r.gap_ms.is_some()).collect();
    if ok.is_empty() {
        rs.first().copied()
    } else {
        Some(ok[(ok.len() - 1) / 2])
    }
}

/// Throughput (records/s) and median latency around the fault, one panel per arm, the fault at t = 0.
pub fn svg(r: &Report) -> String {
    const W: f64 = 900.0;
    const PH: f64 = 170.0;
    const ML: f64 = 60.0;
    const MR: f64 = 60.0;
    let panels: Vec<(&ArmReport, Option<&Round>)> =
        r.arms.iter().map(|a| (a, representative(a))).collect();
    let h = 40.0 + PH * panels.len() as f64 + 20.0;
    let t_min = -10_000i64;
    let t_max = panels
        .iter()
        .filter_map(|(_, rd)| {
            rd.and_then(|x| x.timeline.last().map(|b| b.t_ms + measure::BUCKET_MS))
        })
        .max()
        .unwrap_or(10_000)
        .max(10_000);
    // Output per second (a 1 s moving sum: exactly-once output arrives in a burst per checkpoint), on a scale of 3x
    // the steady rate before the fault; the catch-up burst is clipped at the top.
    let steady = panels
        .iter()
        .filter_map(|(_, rd)| *rd)
        .flat_map(|x| {
            let r = per_second(&x.timeline);
            x.timeline
                .iter()
                .zip(r)
                .filter(|(b, _)| b.t_ms < 0)
                .map(|(_, v)| v)
                .collect::<Vec<u64>>()
        })
        .max()
        .unwrap_or(1)
        .max(1);
    let max_rate = (steady * 3) as f64;
    let max_lat = panels
        .iter()
        .filter_map(|(_, rd)| *rd)
        .flat_map(|x| x.timeline.iter().filter_map(|b| b.p50_ms))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: i64| ML + (t - t_min) as f64 / (t_max - t_min) as f64 * (W - ML - MR);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{ML}" y="18" font-size="14">{}: output/s over the last 1 s (blue, clipped at 3x steady), median latency (orange dots), fault at 0 (red)</text>"#,
        r.scenario
    );
    for (i, (a, rd)) in panels.iter().enumerate() {
        let top = 40.0 + PH * i as f64;
        let bottom = top + PH - 30.0;
        let y_rate = |v: f64| bottom - v / max_rate * (bottom - top - 10.0);
        let y_lat = |v: f64| bottom - v / max_lat * (bottom - top - 10.0);
        let _ = writeln!(
            s,
            r##"<rect x="{ML}" y="{top}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
            W - ML - MR,
            bottom - top
        );
        let label = match rd {
            Some(x) => format!(
                "{} (round {}: gap {} ms, running {} ms{})",
                a.name,
                x.round,
                ms(x.gap_ms),
                ms(x.running_ms),
                if x.ok { "" } else { ", FAILED" }
            ),
            None => format!("{} (no measured round)", a.name),
        };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            ML + 4.0,
            top + 12.0,
            esc(&label)
        );
        let _ = writeln!(
            s,
            r##"<text x="4" y="{}" fill="#1f77b4">{:.0}/s</text><text x="{}" y="{}" fill="#ff7f0e">{:.0} ms</text>"##,
            top + 12.0,
            max_rate,
            W - MR + 4.0,
            top + 12.0,
            max_lat
        );
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{top}" x2="{0}" y2="{bottom}" stroke="red" stroke-width="1.5"/>"##,
            x(0)
        );
        if let Some(rd) = rd {
            let pts: Vec<String> = rd
                .timeline
                .iter()
                .zip(per_second(&rd.timeline))
                .map(|(b, rate)| {
                    format!(
                        "{:.1},{:.1}",
                        x(b.t_ms + measure::BUCKET_MS),
                        y_rate((rate as f64).min(max_rate))
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" points="{}"/>"##,
                pts.join(" ")
            );
            // Latency: a dot per bucket with output (exactly-once output comes in bursts: no line across gaps).
            for b in &rd.timeline {
                if let Some(l) = b.p50_ms {
                    let _ = writeln!(
                        s,
                        r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="#ff7f0e"/>"##,
                        x(b.t_ms + measure::BUCKET_MS / 2),
                        y_lat(l as f64)
                    );
                }
            }
            for (t, color) in [
                (rd.gap_ms, "#2ca02c"),
                (rd.running_ms.filter(|v| *v > 0), "#9467bd"),
            ] {
                if let Some(t) = t {
                    let _ = writeln!(
                        s,
                        r##"<line x1="{0}" y1="{top}" x2="{0}" y2="{bottom}" stroke="{color}" stroke-dasharray="4,3"/>"##,
                        x(t as i64)
                    );
                }
            }
        }
        let mut t = (t_min / 5_000) * 5_000;
        while t <= t_max {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#555">{}s</text>"##,
                x(t),
                bottom + 13.0,
                t / 1000
            );
            t += if t_max - t_min > 60_000 {
                10_000
            } else {
                5_000
            };
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="{ML}" y="{}" fill="#555">dashed: output resumed (green), every subtask RUNNING again (purple). Shown: each arm's median-gap round.</text>"##,
        h - 6.0
    );
    s.push_str("</svg>\n");
    s
}

/// Output per second at the end of each bucket: the sum over the last 1 s of buckets.
fn per_second(t: &[measure::Bucket]) -> Vec<u64> {
    let per = (1000 / measure::BUCKET_MS).max(1) as usize;
    (0..t.len())
        .map(|i| t[i.saturating_sub(per - 1)..=i].iter().map(|b| b.out).sum())
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_how_the_ballast_was_chosen() {
        let fixed = serde_json::json!({"gc_ballast_mb": 220});
        assert_eq!(
            gc_ballast_words(&fixed),
            ", 220 MB GC ballast per TaskManager"
        );
        let sized = serde_json::json!({"gc_ballast_mb": 300, "gc_pause_target_ms": 18000});
        let w = gc_ballast_words(&sized);
        assert!(
            w.contains("for a 18 s pause") && w.contains("300 MB in the first round"),
            "{w}"
        );
        // Other scenarios (and reports written before the ballast was recorded) say nothing.
        assert_eq!(
            gc_ballast_words(&serde_json::json!({"gc_ballast_mb": null})),
            ""
        );
    }

    #[test]
    fn the_header_names_overridden_flink_settings() {
        assert_eq!(flink_conf_words(&serde_json::json!({})), "");
        assert_eq!(flink_conf_words(&serde_json::json!({"flink_conf": []})), "");
        assert_eq!(
            flink_conf_words(&serde_json::json!({"flink_conf": ["a: 1", "b: x"]})),
            " Every arm's profile overridden with `a: 1`, `b: x`."
        );
    }
}
