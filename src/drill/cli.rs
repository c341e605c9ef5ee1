//! The arguments of `streamshield drill` (the binary runs them).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::local::Delivery;

#[derive(Args)]
pub struct DrillArgs {
    /// tm-kill, tm-hang, tm-term, tm-partition, tm-pause-short, tm-gc-pause, jm-kill, kafka-broker-outage.
    #[arg(long, required_unless_present_any = ["quick", "render"], value_parser = super::Scenario::parse)]
    pub scenario: Option<super::Scenario>,
    /// Rounds per arm.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Arms, in the order their rounds alternate.
    #[arg(long, value_delimiter = ',', default_value = "stock,tuned,shield")]
    pub arms: Vec<String>,
    /// Where report.json, report.md and timeline.svg go (default: drill-reports/<scenario>-<time>).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// One round of tm-kill per arm (what CI runs).
    #[arg(long)]
    pub quick: bool,
    /// Print report.json on stdout at the end (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Generator rate, records/s.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    #[arg(long, default_value_t = 100)]
    pub keys: u32,
    #[arg(long, value_enum, default_value = "exactly-once")]
    pub delivery: Delivery,
    /// Load before the fault (the latency baseline is its last 10 s).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Where the rounds' clusters run (removed afterwards).
    #[arg(long, env = "STREAMSHIELD_DRILL_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the rounds' run directories (logs) even when they succeed.
    #[arg(long)]
    pub keep_work: bool,
    /// Every arm: the spare TaskManager starts before the job, whose slots are spread over every TaskManager, so
    /// that recovery lands on TaskManagers that already run the job (see `local up --warm-spares`).
    #[arg(long)]
    pub warm_spares: bool,
    /// The job's checkpoint interval (with exactly-once output, the restarted job's records become visible at the
    /// first checkpoint after the restart).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// tm-gc-pause: megabytes of live, randomly linked heap per TaskManager whose full collection is the pause
    /// (its length depends on the machine: check each round's note and keep it between 10 s and the GC tolerance).
    #[arg(long, default_value_t = super::GC_BALLAST_MB)]
    pub gc_ballast_mb: u32,
    /// tm-gc-pause: size each round's ballast from the pauses its arm measured so far (the other arms' until it has
    /// one) for a pause of about this long; --gc-ballast-mb is then the first round's. Keep it well between 10 s and
    /// the GC tolerance (30 s): one round's pause can differ from the last by 2x or more on a busy 2-core host.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub gc_pause_target: Option<Duration>,
    /// A Flink setting laid over every arm's profile, repeatable (e.g. --flink-conf
    /// state.backend.local-recovery=false to measure what the key is worth); recorded in the report.
    #[arg(long = "flink-conf", value_name = "KEY=VALUE", value_parser = crate::conf::parse_key_value)]
    pub flink_conf: Vec<(String, String)>,
    #[arg(long, default_value_t = 0, env = "STREAMSHIELD_PORT_OFFSET")]
    pub port_offset: u16,
    /// Render report.md and timeline.svg again from DIR/report.json (no drill runs).
    #[arg(long, value_name = "DIR")]
    pub render: Option<PathBuf>,
}
