//! `streamshield demo`: the main job on the embedded default. Kills a TaskManager of a real local cluster (Flink
//! 1.20 + Kafka, the sequence workload under load, verified record by record) twice — once on stock Flink, once with
//! StreamShield — and prints the comparison. It is one round of `streamshield drill --scenario tm-kill` per arm, so
//! everything the drill guarantees holds: measured at the sink and by Flink's own clock, and every process, rule and
//! directory it started is gone afterwards, also on failure and Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::drill::{self, measure::Round, report::Report, DrillOptions, Scenario};
use crate::local::Delivery;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the rounds' clusters run and the report goes.
    pub dir: PathBuf,
    /// Load before the kill.
    pub warmup: Duration,
    pub rate: u32,
    pub keys: u32,
    pub port_offset: u16,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Load before the TaskManager is killed (each arm).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Records per second.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    #[arg(long, default_value_t = 100)]
    pub keys: u32,
    /// Where the demo's clusters run and its drill report (report.json/md, timeline.svg) goes.
    #[arg(long, env = "STREAMSHIELD_DEMO_DIR", default_value_os_t = crate::local::default_run_dir().with_file_name("demo"))]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 0, env = "STREAMSHIELD_PORT_OFFSET")]
    pub port_offset: u16,
}

/// Runs the demo: a tm-kill round on stock Flink, then one with StreamShield.
pub async fn run(opts: &DemoOptions, cancel: CancellationToken) -> Result<Report, drill::Error> {
    let d = DrillOptions {
        scenario: Scenario::TmKill,
        rounds: 1,
        arms: vec!["stock".into(), "shield".into()],
        report_dir: opts.dir.join("report"),
        work_dir: opts.dir.join("work"),
        keep_work: false,
        port_offset: opts.port_offset,
        rate: opts.rate,
        keys: opts.keys,
        delivery: Delivery::ExactlyOnce,
        warmup: opts.warmup,
        taskmanagers: 2,
        slots: 2,
        // The standby pool as we recommend running it: the spare TaskManager starts before the job and the job's
        // slots are spread over all of them, so a failover lands on TaskManagers that already run the job (both arms).
        warm_spares: true,
        checkpoint_interval: Duration::from_secs(1),
        gc_ballast_mb: drill::GC_BALLAST_MB,
        gc_pause_target: None,
        flink_conf: Vec::new(),
    };
    drill::validate(&d)?;
    let rep = drill::run(&d, cancel).await;
    let _ = std::fs::remove_dir(opts.dir.join("work"));
    rep
}

fn ms(v: Option<u64>) -> String {
    v.map(|v| format!("{:.1} s", v as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// How one row of the table renders a round.
type Cell = Box<dyn Fn(&Round) -> String>;

/// The comparison table printed at the end.
pub fn table(r: &Report) -> String {
    let round = |arm: &str| -> Option<&Round> {
        r.arms
            .iter()
            .find(|a| a.name == arm)
            .and_then(|a| a.rounds.first())
    };
    let rows: Vec<(&str, Cell)> = vec![
        (
            "output stopped for (gap)",
            Box::new(|x: &Round| ms(x.gap_ms)),
        ),
        (
            "every subtask RUNNING again after",
            Box::new(|x: &Round| ms(x.running_ms)),
        ),
        (
            "first sign of the fault after",
            Box::new(|x: &Round| ms(x.detect_ms)),
        ),
        (
            "latency back to normal after",
            Box::new(|x: &Round| ms(x.catchup_ms)),
        ),
        (
            "records lost",
            Box::new(|x: &Round| x.records_lost.to_string()),
        ),
        (
            "records duplicated",
            Box::new(|x: &Round| x.records_duplicated.to_string()),
        ),
        (
            "job restarts",
            Box::new(|x: &Round| {
                x.restarts
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into())
            }),
        ),
        (
            "StreamShield actions",
            Box::new(|x: &Round| x.failovers.to_string()),
        ),
        (
            "recovered",
            Box::new(|x: &Round| {
                if x.ok {
                    "yes".into()
                } else {
                    format!("NO: {}", x.failure.clone().unwrap_or_default())
                }
            }),
        ),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!(
        "  {:<w$}  {:>14}  {:>14}\n",
        "", "stock Flink", "StreamShield"
    );
    for (k, f) in &rows {
        let cell = |arm: &str| round(arm).map(f).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "  {k:<w$}  {:>14}  {:>14}\n",
            cell("stock"),
            cell("shield")
        ));
    }
    out
}
