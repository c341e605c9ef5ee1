//! `streamshield spill bench`: the spill log's throughput and acknowledgement latency on this machine's disk
//! (docs/benchmarks.md; `scripts/bench spill` runs it for each setting and keeps the raw rows). Appends `records`
//! records of `payload_bytes` in batches of `batch` (each batch one acknowledgement, as a guard's flush would be),
//! timing every append; then replays everything (read in steps of `read_batch`, commit after each) and times that.

use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::log::{Error, SpillConfig, SpillLog};

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub fsync: &'static str,
    pub records: u64,
    pub payload_bytes: usize,
    pub batch: usize,
    pub append_records_per_s: f64,
    pub append_mib_per_s: f64,
    /// Per batch (one acknowledgement), microseconds.
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    pub ack_max_us: u64,
    pub replay_records_per_s: f64,
    pub replay_mib_per_s: f64,
    pub segments_deleted_on_replay: usize,
}

/// Runs the benchmark in `dir` (which must be empty or absent; it is left with an empty log).
pub fn run(
    dir: &Path,
    cfg: SpillConfig,
    records: u64,
    payload_bytes: usize,
    batch: usize,
    read_batch: usize,
) -> Result<BenchResult, Error> {
    let fsync = cfg.fsync.as_str();
    let (mut log, _) = SpillLog::open(dir, cfg)?;
    let payload: Vec<u8> = (0..payload_bytes).map(|i| (i * 31 % 251) as u8).collect();
    let refs: Vec<&[u8]> = vec![payload.as_slice(); batch.max(1)];
    let mut acks = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let start = Instant::now();
    let mut left = records;
    while left > 0 {
        let n = (batch as u64).min(left) as usize;
        let t = Instant::now();
        log.append(&refs[..n])?;
        let _ = acks.record(t.elapsed().as_micros() as u64);
        left -= n as u64;
    }
    let append_s = start.elapsed().as_secs_f64();
    let segments = log.segments();
    let start = Instant::now();
    let mut read = 0u64;
    loop {
        let got = log.read(log.cursor(), read_batch)?;
        let Some(last) = got.last() else { break };
        read += got.len() as u64;
        log.commit(last.seq + 1)?;
    }
    let replay_s = start.elapsed().as_secs_f64();
    let mib = |n: u64, s: f64| n as f64 * payload_bytes as f64 / s / (1 << 20) as f64;
    Ok(BenchResult {
        fsync,
        records,
        payload_bytes,
        batch,
        append_records_per_s: records as f64 / append_s,
        append_mib_per_s: mib(records, append_s),
        ack_p50_us: acks.value_at_quantile(0.5),
        ack_p99_us: acks.value_at_quantile(0.99),
        ack_max_us: acks.max(),
        replay_records_per_s: read as f64 / replay_s,
        replay_mib_per_s: mib(read, replay_s),
        segments_deleted_on_replay: segments.saturating_sub(log.segments()),
    })
}
