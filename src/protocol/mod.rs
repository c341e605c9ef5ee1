//! The link protocol between the Flink plugin and its agent, and between agents and the coordinator
//! (spec: docs/protocol.md). Length-framed, versioned, one JSON payload per frame, unknown kinds ignored.
//!
//! [`FrameCodec`] is the framing (a `tokio_util` codec with a hard size limit); [`Message`] the typed kinds;
//! [`handshake`] the HELLO / WELCOME / REJECT exchange both sides use.

pub mod frame;
pub mod handshake;
pub mod message;
pub mod vocab;
pub mod watchdog;

pub use frame::{Frame, FrameCodec, FrameError, HANDSHAKE_MAX_FRAME, MAX_FRAME};
pub use message::{
    Failure, Heartbeat, Hello, Message, MessageError, Metric, MetricsBatch, Reject, Role, Span,
    Welcome,
};
pub use vocab::{Action, CommandOutcome, EventKind, Liveness, StopOutcome};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The versions an acceptor built from this code serves.
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 1..=1;
