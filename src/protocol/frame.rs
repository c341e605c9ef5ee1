//! Framing: `length: u32 BE | kind: u8 | payload`, `length` counting kind + payload, at most [`MAX_FRAME`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

/// Largest allowed `length` (kind byte + payload): 1 MiB.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest allowed `length` before the handshake has completed: 4 KiB.
pub const HANDSHAKE_MAX_FRAME: usize = 4 << 10;

/// One frame: a kind and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub payload: Bytes,
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {length} bytes exceeds the limit of {limit}")]
    TooLarge { length: usize, limit: usize },
    #[error("frame with length 0 (no kind byte)")]
    Empty,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "oversized_frame",
            FrameError::Empty => "empty_frame",
            FrameError::Io(_) => "io",
        }
    }
}

/// The framing codec. Its limit starts at [`HANDSHAKE_MAX_FRAME`]; call [`FrameCodec::handshake_done`] after a
/// successful handshake to raise it to [`MAX_FRAME`]. It never reserves memory for more than the limit.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    limit: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            limit: HANDSHAKE_MAX_FRAME,
        }
    }
}

impl FrameCodec {
    /// A codec with an explicit limit (tests, and peers that already completed a handshake).
    pub fn with_limit(limit: usize) -> Self {
        FrameCodec {
            limit: limit.min(MAX_FRAME),
        }
    }

    pub fn handshake_done(&mut self) {
        self.limit = MAX_FRAME;
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if length == 0 {
            return Err(FrameError::Empty);
        }
        if length > self.limit {
            return Err(FrameError::TooLarge {
                length,
                limit: self.limit,
            });
        }
        if src.len() < 4 + length {
            // Reserve only what this (bounded) frame needs.
            src.reserve(4 + length - src.len());
            return Ok(None);
        }
        src.advance(4);
        let kind = src.get_u8();
        let payload = src.split_to(length - 1).freeze();
        Ok(Some(Frame { kind, payload }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let length = frame.payload.len() + 1;
        if length > self.limit.max(HANDSHAKE_MAX_FRAME) {
            return Err(FrameError::TooLarge {
                length,
                limit: self.limit,
            });
        }
        dst.reserve(4 + length);
        dst.put_u32(length as u32);
        dst.put_u8(frame.kind);
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

/// Encodes one frame into a fresh buffer (for tests and vectors).
pub fn encode_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(payload);
    v
}

/// Decodes every frame in `data` with a codec of limit `limit`: the frames, then the error that stopped decoding
/// (None when the data ended on a frame boundary or mid-frame). Used by the vector tests, the fuzz target and the
/// corpus replay; it must never panic whatever `data` holds.
pub fn decode_all(data: &[u8], limit: usize) -> (Vec<Frame>, Option<FrameError>, usize) {
    let mut codec = FrameCodec::with_limit(limit);
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None, buf.len()),
            Err(e) => return (frames, Some(e), buf.len()),
        }
    }
}

/// The fuzz target's body (fuzz/fuzz_targets/frame_decoder.rs), also run over the saved corpus by the normal
/// tests: decodes `data` under both limits, parses every frame, and asserts that no frame exceeds its limit and that
/// decoding consumed or kept every byte. Panics on a violated invariant, never on bad input.
pub fn check_decoder(data: &[u8]) {
    for limit in [HANDSHAKE_MAX_FRAME, MAX_FRAME] {
        let (frames, _err, rest) = decode_all(data, limit);
        let mut consumed = 0;
        for f in &frames {
            assert!(f.payload.len() < limit, "frame above the limit");
            consumed += 5 + f.payload.len();
            let _ = super::message::Message::from_frame(f);
        }
        assert!(consumed + rest <= data.len(), "decoder invented bytes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors the Java plugin's codec is tested against too.
    #[test]
    fn shared_vectors() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/frames.txt"
        ))
        .unwrap();
        let mut n = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let cols: Vec<&str> = line.splitn(3, '\t').collect();
            let bytes: Vec<u8> = (0..cols[1].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&cols[1][i..i + 2], 16).unwrap())
                .collect();
            let (frames, err, rest) = decode_all(&bytes, HANDSHAKE_MAX_FRAME);
            let expect = cols[2];
            if let Some(body) = expect.strip_prefix("frame ") {
                let (kind, payload) = body.split_once(' ').unwrap();
                assert!(err.is_none(), "{line}: {err:?}");
                assert_eq!(frames.len(), 1, "{line}");
                assert_eq!(frames[0].kind.to_string(), kind, "{line}");
                assert_eq!(
                    String::from_utf8(frames[0].payload.to_vec()).unwrap(),
                    payload,
                    "{line}"
                );
                assert_eq!(rest, 0);
            } else if expect == "error too-large" {
                assert!(matches!(err, Some(FrameError::TooLarge { .. })), "{line}");
            } else if expect == "error empty" {
                assert!(matches!(err, Some(FrameError::Empty)), "{line}");
            } else {
                assert_eq!(expect, "incomplete");
                assert!(
                    frames.is_empty() && err.is_none() && rest == bytes.len(),
                    "{line}"
                );
            }
            n += 1;
        }
        assert!(n >= 10);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let bytes = encode_frame(10, br#"{"seq":1,"ts_ms":2}"#);
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let got = codec.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none(), "complete only at the last byte");
            } else {
                let f = got.unwrap();
                assert_eq!(f.kind, 10);
                assert_eq!(&f.payload[..], br#"{"seq":1,"ts_ms":2}"#);
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_and_empty_frames_are_errors_without_allocation() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        let cap_before = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge {
                length: 4294967295,
                ..
            })
        ));
        assert_eq!(
            buf.capacity(),
            cap_before,
            "nothing reserved for a hostile length"
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::Empty)));
    }

    #[test]
    fn the_limit_rises_after_the_handshake() {
        let big = vec![b'x'; 10_000];
        let bytes = encode_frame(11, &big);
        let mut codec = FrameCodec::default();
        assert!(matches!(
            codec.decode(&mut BytesMut::from(&bytes[..])),
            Err(FrameError::TooLarge {
                limit: HANDSHAKE_MAX_FRAME,
                ..
            })
        ));
        codec.handshake_done();
        let f = codec
            .decode(&mut BytesMut::from(&bytes[..]))
            .unwrap()
            .unwrap();
        assert_eq!(f.payload.len(), 10_000);
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut bytes = encode_frame(10, b"{}");
        bytes.extend(encode_frame(99, b"future kind"));
        let mut codec = FrameCodec::with_limit(MAX_FRAME);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().kind, 10);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().kind, 99);
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }
}
