//! `streamshield demo`: the main job on the embedded default. Brings the local cluster up, runs the generator and
//! the live verifier side by side, prints a summary table and takes everything down again, also on failure and
//! Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::local::{self, dist::say, Delivery, UpOptions};
use crate::workload::ledger::Report;
use crate::workload::live::{LiveVerifier, VerifyConfig};
use crate::workload::produce::{self, ProduceConfig, ProduceStats};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub duration: Duration,
    pub rate: u32,
    pub keys: u32,
    pub port_offset: u16,
}

/// What the demo measured.
pub struct DemoResult {
    pub produced: ProduceStats,
    pub report: Report,
}

/// Runs the demo. The cluster is always taken down before this returns.
pub async fn run(opts: &DemoOptions, cancel: CancellationToken) -> Result<DemoResult, Error> {
    let up = UpOptions {
        dir: opts.dir.clone(),
        taskmanagers: 2,
        standby: 1,
        slots: 2,
        profile: "stock".into(),
        port_offset: opts.port_offset,
        delivery: Delivery::ExactlyOnce,
        checkpoint_interval: Duration::from_secs(1),
        state_bytes: 64,
        job_args: vec![],
        flink_overrides: vec![],
        isolate: false,
    };
    let state = local::up(&up, cancel.clone()).await?;
    let result = drive(&state, opts, cancel).await;
    say("taking the local cluster down");
    let _ = local::down(&state.run_dir, false).await;
    result
}

async fn drive(
    state: &local::RunState,
    opts: &DemoOptions,
    cancel: CancellationToken,
) -> Result<DemoResult, Error> {
    let run = format!("demo{}", crate::clock::now_ms());
    let verifier = LiveVerifier::start(&VerifyConfig {
        bootstrap: state.bootstrap(),
        input_topic: crate::workload::INPUT_TOPIC.into(),
        output_topic: crate::workload::OUTPUT_TOPIC.into(),
        run: Some(run.clone()),
    })?;
    say(format!(
        "producing {} records/s over {} keys for {} s, verifying every record",
        opts.rate,
        opts.keys,
        opts.duration.as_secs()
    ));
    let cfg = ProduceConfig {
        bootstrap: state.bootstrap(),
        topic: crate::workload::INPUT_TOPIC.into(),
        rate: opts.rate,
        keys: opts.keys,
        duration: Some(opts.duration),
        max_records: None,
        run: Some(run),
    };
    let mut last_print = 0.0;
    let produced = produce::produce(&cfg, cancel.clone(), |p| {
        if p.elapsed_s - last_print >= 10.0 {
            last_print = p.elapsed_s;
            let r = verifier.report();
            say(format!(
                "  {:>4.0} s: sent {} acked {} | out {} pending {} dup {} | latency p50 {} ms p99 {} ms",
                p.elapsed_s, p.sent, p.acked, r.records_out, r.records_pending, r.records_duplicated, r.latency_ms.p50, r.latency_ms.p99
            ));
        }
    })
    .await?;
    if cancel.is_cancelled() {
        return Err(local::Error::Cancelled.into());
    }
    say("generator done; waiting for the last records to come through");
    let report = verifier
        .finish(Duration::from_secs(30), Duration::from_secs(180))
        .await;
    Ok(DemoResult { produced, report })
}

/// The demo's error: whichever part failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Local(#[from] crate::local::Error),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::Error),
    #[error(transparent)]
    Produce(#[from] crate::workload::produce::Error),
}

/// The summary table printed at the end.
pub fn table(r: &DemoResult) -> String {
    let rep = &r.report;
    let rows: Vec<(&str, String)> = vec![
        ("records produced (acked)", format!("{}", r.produced.acked)),
        (
            "generator rate",
            format!("{:.0} records/s", r.produced.rate_achieved),
        ),
        ("records in (input topic)", rep.records_in.to_string()),
        ("records out (distinct)", rep.records_out.to_string()),
        ("records lost", rep.records_lost.to_string()),
        ("records duplicated", rep.records_duplicated.to_string()),
        ("state errors", rep.state_errors.to_string()),
        (
            "output throughput",
            format!("{:.0} records/s", rep.throughput_out_per_s),
        ),
        (
            "latency p50 / p99 / max",
            format!(
                "{} / {} / {} ms",
                rep.latency_ms.p50, rep.latency_ms.p99, rep.latency_ms.max
            ),
        ),
        (
            "verdict",
            if rep.records_lost == 0
                && rep.records_duplicated == 0
                && rep.state_errors == 0
                && rep.complete
            {
                "OK: every record exactly once".into()
            } else {
                "PROBLEM: see above".into()
            },
        ),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("  {k:<w$}  {v}\n"));
    }
    out
}
