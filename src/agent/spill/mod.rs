//! The agent's spill log (issue 17): durable, ordered storage for the records a guarded sink could not write to its
//! target, until the replay has delivered them. [`segment`]: the record format and its reader; [`log`]: segments,
//! acknowledgement, recovery, the replay cursor and clean-up; [`exercise`]: the crash-test workload. docs/spill.md.

pub mod cli;
pub mod exercise;
pub mod log;
pub mod segment;

pub use log::{Error, Fsync, Record, Recovery, SpillConfig, SpillLog};

/// What `streamshield spill inspect` prints.
#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    pub recovery: Recovery,
    pub cursor: u64,
    pub next_seq: u64,
    pub pending: u64,
    pub bytes: u64,
    pub segments: usize,
}

/// Opens the log in `dir` (recovering it) and describes it.
pub fn inspect(dir: &std::path::Path, cfg: SpillConfig) -> Result<Inspection, Error> {
    let (log, recovery) = SpillLog::open(dir, cfg)?;
    Ok(Inspection {
        recovery,
        cursor: log.cursor(),
        next_seq: log.next_seq(),
        pending: log.pending(),
        bytes: log.bytes(),
        segments: log.segments(),
    })
}
