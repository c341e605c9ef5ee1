//! The agent's spill log (issue 17): durable, ordered storage for the records a guarded sink could not write to its
//! target, until the replay has delivered them. [`segment`]: the record format and its reader; [`log`]: segments,
//! acknowledgement, recovery, the replay cursor and clean-up. docs/spill.md.

pub mod log;
pub mod segment;

pub use log::{Error, Fsync, Record, Recovery, SpillConfig, SpillLog};
