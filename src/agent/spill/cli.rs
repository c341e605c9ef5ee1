//! The arguments of `streamshield spill inspect | exercise` (the binary runs them).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::log::{Fsync, SpillConfig, DEFAULT_MAX_BYTES, DEFAULT_SEGMENT_BYTES};

#[derive(Args, Clone)]
pub struct SpillArgs {
    /// The spill directory (the agent's `spill.dir`).
    pub dir: PathBuf,
    /// spill.max-bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
    pub max_bytes: u64,
    /// spill.segment-bytes.
    #[arg(long, default_value_t = DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
    /// spill.fsync: always | never.
    #[arg(long, default_value_t = SpillConfig::default().fsync)]
    pub fsync: Fsync,
}

impl SpillArgs {
    pub fn config(&self) -> SpillConfig {
        SpillConfig {
            max_bytes: self.max_bytes,
            segment_bytes: self.segment_bytes,
            fsync: self.fsync,
        }
    }
}

#[derive(Subcommand)]
pub enum SpillCommand {
    /// Opens a spill directory as the agent would (a torn tail is truncated; the agent must not be running) and
    /// prints what recovery found and what waits for the replay, as JSON.
    Inspect(SpillArgs),
    /// The crash-test workload: appends and replays random batches until killed, printing each acknowledgement and
    /// delivery (tests/spill_crash.rs kills it at random points).
    Exercise {
        #[command(flatten)]
        spill: SpillArgs,
        /// Picks the sequence of appends and replays.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Measures append throughput, acknowledgement latency and replay throughput in DIR (empty or absent), and
    /// prints one JSON line.
    Bench {
        #[command(flatten)]
        spill: SpillArgs,
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        #[arg(long, default_value_t = 512)]
        payload_bytes: usize,
        /// Records per append (one acknowledgement each).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Records per replay read (a commit after each).
        #[arg(long, default_value_t = 1000)]
        read_batch: usize,
    },
}
