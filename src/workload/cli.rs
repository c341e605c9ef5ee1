//! The arguments of `streamshield workload produce | verify` (the binary runs them).

use std::time::Duration;

use clap::{Args, Subcommand};

use super::{INPUT_TOPIC, OUTPUT_TOPIC};
use crate::local::cli::DirArg;

#[derive(Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers; default: the local cluster's (see --dir).
    #[arg(long, env = "STREAMSHIELD_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    #[command(flatten)]
    pub dir: DirArg,
}

impl KafkaArgs {
    /// The bootstrap servers: given, or the local cluster's.
    pub fn bootstrap(&self) -> Result<String, String> {
        if let Some(b) = &self.bootstrap {
            return Ok(b.clone());
        }
        match crate::local::RunState::load(&self.dir.dir).map_err(|e| e.to_string())? {
            Some(s) => Ok(s.bootstrap()),
            None => Err(format!(
                "no --bootstrap given and no local cluster at {}; run `streamshield local up` or pass --bootstrap",
                self.dir.dir.display()
            )),
        }
    }
}

#[derive(Subcommand)]
pub enum WorkloadCommand {
    /// Writes per-key strictly increasing sequence numbers at a fixed rate.
    Produce {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Records per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Distinct keys.
        #[arg(long, default_value_t = 100)]
        keys: u32,
        /// How long to produce (default: until Ctrl-C or --records).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Stop after this many records.
        #[arg(long)]
        records: Option<u64>,
        /// Run id (a new one from the clock by default).
        #[arg(long)]
        run: Option<String>,
        #[arg(long, default_value = INPUT_TOPIC)]
        topic: String,
        /// Print the final statistics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reads input and output topics and reports lost and duplicated records, latency and throughput.
    Verify {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Only this generator run (default: every run in the topics).
        #[arg(long)]
        run: Option<String>,
        /// Keep consuming for this long before settling (live mode); progress every 5 s.
        #[arg(long, value_parser = humantime::parse_duration)]
        follow: Option<Duration>,
        /// After input is read, how long the output may stay still before missing records count as lost.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// Give up waiting after this long overall (the report then says complete: false).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(long, default_value = INPUT_TOPIC)]
        input_topic: String,
        #[arg(long, default_value = OUTPUT_TOPIC)]
        output_topic: String,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
        /// Exit with code 3 unless the result is exactly-once (nothing lost or duplicated, no state error).
        #[arg(long)]
        check: bool,
    },
}
