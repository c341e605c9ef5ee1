//! The agent's spill log (issue 17): durable, ordered storage for the records a guarded sink could not write to its
//! target, until the replay has delivered them. [`segment`]: the record format and its reader; [`log`]: segments,
//! acknowledgement, recovery, the replay cursor and clean-up; [`dead`]: the dead letters; [`exercise`] and [`bench`]:
//! the crash-test workload and the benchmark (`streamshield spill`, [`cli`]). docs/spill.md.

pub mod bench;
pub mod cli;
pub mod dead;
pub mod exercise;
pub mod log;
pub mod segment;

pub use log::{Error, Fsync, Record, Recovery, SpillConfig, SpillLog};

/// The agent's spill log and what its opening found (`spill-dir`).
pub struct Spill {
    pub dir: std::path::PathBuf,
    pub log: std::sync::Mutex<SpillLog>,
    pub recovery: Recovery,
    /// Records the replay's target refused for good ([`dead`]).
    pub dead: std::sync::Mutex<dead::DeadLetters>,
}

impl Spill {
    /// Opens and recovers the log; what recovery repaired is logged.
    pub fn open(dir: &std::path::Path, cfg: SpillConfig) -> Result<Spill, Error> {
        let (log, recovery) = SpillLog::open(dir, cfg.clone())?;
        let dead = dead::DeadLetters::open(dir, cfg)?;
        if dead.count() > 0 {
            tracing::warn!(
                dir = %dead::DeadLetters::dir(dir).display(),
                records = dead.count(),
                "Spill log has dead letters (records their target refused); `streamshield spill inspect` lists them"
            );
        }
        if recovery.torn_bytes + recovery.corrupt_bytes > 0 {
            tracing::warn!(
                dir = %dir.display(),
                torn_bytes = recovery.torn_bytes,
                corrupt_bytes = recovery.corrupt_bytes,
                corrupt_runs = recovery.corrupt_runs,
                "Spill log repaired at start: a torn tail truncated, corrupt records skipped (never delivered)"
            );
        }
        tracing::info!(dir = %dir.display(), pending = recovery.pending, segments = recovery.segments, "Spill log open");
        Ok(Spill {
            dir: dir.to_path_buf(),
            log: std::sync::Mutex::new(log),
            recovery,
            dead: std::sync::Mutex::new(dead),
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SpillLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its `streamshield_spill_*` metrics.
    pub fn render(&self, t: &mut crate::metrics::Text) {
        let log = self.lock();
        t.single(
            "streamshield_spill_bytes",
            "gauge",
            "Bytes the spill log's segments take on disk.",
            log.bytes() as f64,
        );
        t.single(
            "streamshield_spill_max_bytes",
            "gauge",
            "spill-max-bytes: when the log is this full, records are refused and the guard back-pressures.",
            log.max_bytes() as f64,
        );
        t.single(
            "streamshield_spill_pending_records",
            "gauge",
            "Records in the spill log not yet replayed.",
            log.pending() as f64,
        );
        t.single(
            "streamshield_spill_segments",
            "gauge",
            "Segment files of the spill log.",
            log.segments() as f64,
        );
        t.single(
            "streamshield_spill_dead_letter_records",
            "gauge",
            "Records the replay's target refused for good, kept in the dead-letter segment with the reason.",
            self.dead.lock().unwrap_or_else(|p| p.into_inner()).count() as f64,
        );
        t.single(
            "streamshield_spill_recovered_torn_bytes",
            "gauge",
            "Bytes of a torn tail the last start truncated (a write the crash interrupted, never acknowledged).",
            self.recovery.torn_bytes as f64,
        );
        t.single(
            "streamshield_spill_recovered_corrupt_bytes",
            "gauge",
            "Corrupt bytes the last start skipped (their records failed the CRC and are never delivered).",
            self.recovery.corrupt_bytes as f64,
        );
    }
}

/// What `streamshield spill inspect` prints.
#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    pub recovery: Recovery,
    /// The dead letters: sequence number, reason and payload size of each.
    pub dead_letters: Vec<dead::DeadLetter>,
    pub cursor: u64,
    pub next_seq: u64,
    pub pending: u64,
    pub bytes: u64,
    pub segments: usize,
}

/// Opens the log in `dir` (recovering it) and describes it.
pub fn inspect(dir: &std::path::Path, cfg: SpillConfig) -> Result<Inspection, Error> {
    let (log, recovery) = SpillLog::open(dir, cfg.clone())?;
    let dead_letters = dead::DeadLetters::open(dir, cfg)?.all()?;
    Ok(Inspection {
        recovery,
        dead_letters,
        cursor: log.cursor(),
        next_seq: log.next_seq(),
        pending: log.pending(),
        bytes: log.bytes(),
        segments: log.segments(),
    })
}
