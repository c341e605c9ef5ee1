//! The sample workload's Rust side: the generator ([`produce`]) and the verifier ([`ledger`], [`live`]) for the
//! sequence job in `flink-plugin/workloads`.

pub mod cli;
pub mod ledger;
pub mod live;
pub mod produce;
pub mod record;

/// Default topic names, shared by `local`, the generator and the verifier.
pub const INPUT_TOPIC: &str = "streamshield-input";
pub const OUTPUT_TOPIC: &str = "streamshield-output";
