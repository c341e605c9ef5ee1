//! HELLO / WELCOME / REJECT (docs/protocol.md, "Handshake"), for both ends of a link.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::frame::{FrameCodec, FrameError};
use super::message::{Hello, Message, MessageError, Reject, Role, Welcome};
use super::{PROTOCOL_VERSION, SUPPORTED_VERSIONS};

#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("no HELLO within {0:?}")]
    Timeout(Duration),
    #[error("connection closed during the handshake")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("expected {expected} first, got frame kind {got}")]
    Unexpected { expected: &'static str, got: u8 },
    #[error("rejected: {0}")]
    Rejected(String),
    /// The peer's claims did not hold (its pid, its identity).
    #[error("refused: {0}")]
    Refused(String),
}

impl HandshakeError {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::Timeout(_) => "handshake_timeout",
            HandshakeError::Closed => "closed",
            HandshakeError::Frame(e) => e.label(),
            HandshakeError::Message(_) => "bad_payload",
            HandshakeError::Unexpected { .. } => "no_hello",
            HandshakeError::Rejected(r) if r.contains("version") => "version_mismatch",
            HandshakeError::Rejected(r) if r.contains("secret") || r.contains("token") => {
                "unauthenticated"
            }
            HandshakeError::Rejected(_) => "rejected",
            HandshakeError::Refused(_) => "identity",
        }
    }
}

/// What an accepting side requires.
#[derive(Debug, Clone)]
pub struct AcceptPolicy {
    /// The shared secret a HELLO must carry (None: not required, e.g. on a 0600 Unix socket).
    pub secret: Option<String>,
    /// Roles allowed to connect.
    pub roles: Vec<Role>,
    /// Our name, sent in WELCOME.
    pub server: String,
    pub heartbeat_interval_ms: u64,
    /// Sent in WELCOME: the coordinator's epoch.
    pub epoch: Option<u64>,
}

/// Compares secrets in time independent of where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Accepting side: reads HELLO, checks version, role and secret, answers WELCOME (and raises the frame limit) or
/// REJECT (and fails).
pub async fn accept<S>(
    framed: &mut Framed<S, FrameCodec>,
    policy: &AcceptPolicy,
    timeout: Duration,
) -> Result<Hello, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_checked(framed, policy, timeout, |_| Ok(())).await
}

/// [`accept`], and `check` the HELLO's claims (who the peer says it is) before answering: an `Err` is sent as the
/// REJECT's reason and the handshake fails with [`HandshakeError::Refused`].
pub async fn accept_checked<S>(
    framed: &mut Framed<S, FrameCodec>,
    policy: &AcceptPolicy,
    timeout: Duration,
    check: impl FnOnce(&Hello) -> Result<(), String>,
) -> Result<Hello, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = match tokio::time::timeout(timeout, framed.next()).await {
        Err(_) => return Err(HandshakeError::Timeout(timeout)),
        Ok(None) => return Err(HandshakeError::Closed),
        Ok(Some(f)) => f?,
    };
    let hello = match Message::from_frame(&frame)? {
        Some(Message::Hello(h)) => h,
        _ => {
            return Err(HandshakeError::Unexpected {
                expected: "HELLO",
                got: frame.kind,
            })
        }
    };
    let refusal = if !SUPPORTED_VERSIONS.contains(&hello.protocol) {
        Some(format!(
            "protocol version {} is not supported (this side serves {}..={})",
            hello.protocol,
            SUPPORTED_VERSIONS.start(),
            SUPPORTED_VERSIONS.end()
        ))
    } else if !policy.roles.contains(&hello.role) {
        Some(format!("role {:?} may not connect here", hello.role))
    } else {
        match (&policy.secret, &hello.secret) {
            (Some(want), Some(got)) if secrets_equal(want, got) => None,
            (Some(_), Some(_)) => Some("wrong secret".into()),
            (Some(_), None) => Some("a secret is required on this link".into()),
            (None, _) => None,
        }
    };
    let refused = match refusal {
        Some(r) => Some(HandshakeError::Rejected(r)),
        None => check(&hello).err().map(HandshakeError::Refused),
    };
    if let Some(e) = refused {
        let reason = match &e {
            HandshakeError::Rejected(r) | HandshakeError::Refused(r) => r.clone(),
            other => other.to_string(),
        };
        let _ = framed
            .send(
                Message::Reject(Reject {
                    reason: reason.clone(),
                })
                .to_frame(),
            )
            .await;
        return Err(e);
    }
    framed
        .send(
            Message::Welcome(Welcome {
                protocol: PROTOCOL_VERSION,
                server: policy.server.clone(),
                heartbeat_interval_ms: policy.heartbeat_interval_ms,
                epoch: policy.epoch,
            })
            .to_frame(),
        )
        .await?;
    framed.codec_mut().handshake_done();
    Ok(hello)
}

/// Connecting side: sends HELLO, waits for WELCOME (raising the frame limit) or REJECT.
pub async fn connect<S>(
    framed: &mut Framed<S, FrameCodec>,
    hello: Hello,
    timeout: Duration,
) -> Result<Welcome, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    framed.send(Message::Hello(hello).to_frame()).await?;
    let frame = match tokio::time::timeout(timeout, framed.next()).await {
        Err(_) => return Err(HandshakeError::Timeout(timeout)),
        Ok(None) => return Err(HandshakeError::Closed),
        Ok(Some(f)) => f?,
    };
    match Message::from_frame(&frame)? {
        Some(Message::Welcome(w)) => {
            framed.codec_mut().handshake_done();
            Ok(w)
        }
        Some(Message::Reject(r)) => Err(HandshakeError::Rejected(r.reason)),
        _ => Err(HandshakeError::Unexpected {
            expected: "WELCOME or REJECT",
            got: frame.kind,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(secret: Option<&str>) -> AcceptPolicy {
        AcceptPolicy {
            secret: secret.map(str::to_string),
            roles: vec![Role::Tm, Role::Jm],
            server: "test".into(),
            heartbeat_interval_ms: 100,
            epoch: None,
        }
    }

    fn hello(protocol: u32, role: Role, secret: Option<&str>) -> Hello {
        Hello {
            protocol,
            role,
            resource_id: "tm-1".into(),
            pid: 1,
            flink_version: "1.20.5".into(),
            secret: secret.map(str::to_string),
        }
    }

    async fn run(
        p: AcceptPolicy,
        h: Hello,
    ) -> (
        Result<Hello, HandshakeError>,
        Result<Welcome, HandshakeError>,
    ) {
        let (a, b) = tokio::io::duplex(64 << 10);
        let mut server = Framed::new(a, FrameCodec::default());
        let mut client = Framed::new(b, FrameCodec::default());
        let t = Duration::from_secs(2);
        tokio::join!(accept(&mut server, &p, t), connect(&mut client, h, t))
    }

    #[tokio::test]
    async fn matching_peers_agree() {
        let (s, c) = run(policy(Some("s3")), hello(1, Role::Tm, Some("s3"))).await;
        assert_eq!(s.unwrap().resource_id, "tm-1");
        assert_eq!(c.unwrap().heartbeat_interval_ms, 100);
    }

    #[tokio::test]
    async fn version_role_and_secret_are_checked() {
        let (s, c) = run(policy(None), hello(2, Role::Tm, None)).await;
        assert_eq!(s.unwrap_err().label(), "version_mismatch");
        assert!(c
            .unwrap_err()
            .to_string()
            .contains("protocol version 2 is not supported"));

        let (s, _) = run(policy(None), hello(1, Role::Agent, None)).await;
        assert_eq!(s.unwrap_err().label(), "rejected");

        let (s, c) = run(policy(Some("right")), hello(1, Role::Tm, Some("wrong"))).await;
        assert_eq!(s.unwrap_err().label(), "unauthenticated");
        assert!(c.unwrap_err().to_string().contains("wrong secret"));

        let (s, _) = run(policy(Some("right")), hello(1, Role::Tm, None)).await;
        assert_eq!(s.unwrap_err().label(), "unauthenticated");
    }

    #[tokio::test]
    async fn silence_times_out() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut server = Framed::new(a, FrameCodec::default());
        let e = accept(&mut server, &policy(None), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.label(), "handshake_timeout");
    }

    #[test]
    fn secret_comparison() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "ab"));
        assert!(!secrets_equal("", "a"));
        assert!(secrets_equal("", ""));
    }
}
