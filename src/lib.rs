//! StreamShield: a resiliency layer for stock Apache Flink.
//!
//! StreamShield attaches beside an existing Flink cluster, with no engine fork, to make recovery fast, failures
//! contained and the result provable. This crate is its single binary, `streamshield`, and the library behind it.
//!
//! # Layout
//!
//! - [`local`]: `streamshield local up|status|down|logs`, the embedded default: real Flink 1.20 and a real Kafka
//!   broker (KRaft) on loopback, started as processes it records and can stop again.
//!   - [`local::dist`]: fetching Flink (PyPI), Kafka (Maven Central) and building the workload jar, cached and
//!     checksummed.
//!   - [`local::config`]: the cluster's configuration, rendered from `deploy/local/`.
//!   - [`local::process`]: spawning, recognising (pid + start time) and stopping processes; busy-port diagnosis.
//! - [`workload`]: the sequence workload's Rust side: the generator and the record-by-record verifier, usable as a
//!   live consumer that other components query while it runs.
//! - [`protocol`]: the framed, versioned link protocol between plugin, agents and coordinator
//!   (docs/protocol.md).
//! - [`flink`]: a client for the Flink REST API.
//! - [`kafka`]: Kafka helpers (topics, readiness) over rdkafka.
//! - [`agent`]: `streamshield agent`, the sidecar beside each Flink process: plugin link, liveness, metrics,
//!   uplink to the coordinator.
//! - [`coordinator`]: `streamshield coordinator`, the one place that decides: agents + Flink REST merged into one
//!   model, event and decision logs, an authenticated HTTP API (observe-only for now).
//! - [`endpoint`]: `unix:`/`tcp:` addresses and listeners.
//! - [`metrics`]: Prometheus text exposition.
//! - [`clock`]: unix-millisecond wall time shared by all parts.
//! - [`demo`]: `streamshield demo`, the main job on the embedded default.
//!
//! The Java side lives in `flink-plugin/` (Maven): `workloads` is the sequence job the verifier checks.
//! See docs/architecture.md for how the parts fit together.

#![forbid(unsafe_code)]

pub mod agent;
pub mod conf;
pub mod coordinator;
pub mod daemon;
pub mod demo;
pub mod drill;
pub mod flink;
pub mod host;
pub mod install;
pub mod kafka;
pub mod local;
pub mod metrics;
pub mod print;
pub mod protocol;
pub mod status;
pub mod workload;
