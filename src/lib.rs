//! StreamShield: a resiliency layer for stock Apache Flink.
//!
//! StreamShield attaches beside an existing Flink cluster, with no engine fork, to make recovery fast, failures
//! contained and the result provable. This crate is its single binary, `streamshield`, and the library behind it.
//!
//! # Layout
//!
//! Production parts (they work on a cluster StreamShield did not start, and import neither [`local`] nor [`drill`]):
//!
//! - [`agent`]: `streamshield agent`, one per host (or per pod): watches every Flink JVM that links to it (the
//!   plugin's handshake names pid, role and resource id), liveness, fencing, restart in place from what it recorded
//!   in /proc, `/metrics`, uplink to the coordinator.
//! - [`coordinator`]: `streamshield coordinator`, the one place that decides: agents + Flink REST merged into one
//!   model, per-job policy, orders with fencing tokens, a decision log with evidence, an authenticated HTTP API.
//! - [`protocol`]: the framed, versioned link protocol between plugin, agents and coordinator, its vocabulary as
//!   enums (docs/protocol.md).
//! - [`flink`]: a client for Flink's REST API, and Flink's configuration files and dynamic properties.
//! - [`host`]: what the daemons and `local` share: process identity and spawning, /proc and socket tables, owner-only
//!   secrets, `unix:`/`tcp:` endpoints, the clock.
//! - [`conf`]: the daemons' configuration files (YAML, every key also a flag and an environment variable).
//! - [`install`]: `streamshield install` / `uninstall` on a Flink home (docs/install-standalone.md).
//! - [`kube`]: `streamshield webhook`, the admission webhook that injects the agent and the plugin into Flink's pods
//!   on Kubernetes (docs/install-kubernetes.md).
//! - [`metrics`]: Prometheus text exposition; [`daemon`]: the daemons' long-lived tasks and their shutdown; [`status`]:
//!   `streamshield status`.
//!
//! Consumers of those parts:
//!
//! - [`local`]: `streamshield local up|status|down|logs`, the embedded default: real Flink 1.20 and a real Kafka
//!   broker (KRaft) on loopback, started as processes it records and can stop again; it writes the same agent and
//!   coordinator configuration files a user would and starts the same commands.
//! - [`drill`]: real faults into real local clusters, stock vs tuned vs shield in one run.
//! - [`demo`]: `streamshield demo`, the main job on the embedded default.
//! - [`workload`]: the sequence workload's Rust side: the generator and the record-by-record verifier.
//! - [`kafka`]: Kafka helpers (topics, readiness) over rdkafka; [`print`]: tables for people.
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
pub mod kube;
pub mod local;
pub mod metrics;
pub mod print;
pub mod protocol;
pub mod status;
pub mod workload;
