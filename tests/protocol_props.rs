//! Property tests of the link protocol: any sequence of messages, cut into any chunks, decodes to the same
//! messages; arbitrary bytes never panic the decoder and never make it reserve more than the frame limit.

use std::collections::BTreeMap;

use bytes::BytesMut;
use proptest::prelude::*;
use streamshield::protocol::frame::decode_all;
use streamshield::protocol::message::{AgentStatus, Failure, StopReady, Stopping};
use streamshield::protocol::{
    Frame, FrameCodec, Heartbeat, Hello, Liveness, Message, Metric, MetricsBatch, Role, Span,
    StopOutcome, MAX_FRAME,
};
use tokio_util::codec::{Decoder, Encoder};

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Tm), Just(Role::Jm), Just(Role::Agent)]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), any::<i64>())
            .prop_map(|(seq, ts_ms)| Message::Heartbeat(Heartbeat { seq, ts_ms })),
        (
            any::<u32>(),
            role(),
            ".{0,40}",
            any::<u32>(),
            ".{0,10}",
            proptest::option::of(".{0,30}")
        )
            .prop_map(
                |(protocol, role, resource_id, pid, flink_version, secret)| {
                    Message::Hello(Hello {
                        protocol,
                        role,
                        resource_id,
                        pid,
                        flink_version,
                        secret,
                    })
                }
            ),
        (
            any::<i64>(),
            any::<u64>(),
            proptest::collection::vec(
                (
                    ".{0,30}",
                    -1e12f64..1e12,
                    proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..3)
                ),
                0..20
            )
        )
            .prop_map(|(ts_ms, dropped, ms)| Message::Metrics(MetricsBatch {
                ts_ms,
                dropped,
                metrics: ms
                    .into_iter()
                    .map(|(name, value, labels)| Metric {
                        name,
                        value,
                        labels
                    })
                    .collect(),
            })),
        (".{0,20}", ".{0,20}", any::<i64>(), any::<i64>()).prop_map(
            |(scope, name, start_ms, end_ms)| {
                Message::Span(Span {
                    scope,
                    name,
                    start_ms,
                    end_ms,
                    attributes: serde_json::Map::new(),
                    children: vec![],
                })
            }
        ),
        (any::<i64>(), ".{0,20}", ".{0,60}").prop_map(|(ts_ms, exception, message)| {
            Message::Failure(Failure {
                ts_ms,
                job_id: "j".into(),
                job_name: String::new(),
                failure_type: "TASK".into(),
                exception,
                message,
            })
        }),
        (
            ".{0,20}",
            proptest::option::of(any::<u32>()),
            any::<i64>(),
            any::<bool>()
        )
            .prop_map(|(resource_id, pid, since_ms, plugin_connected)| {
                Message::AgentStatus(AgentStatus {
                    resource_id,
                    watches: Role::Tm,
                    pid,
                    liveness: Liveness::Alive,
                    since_ms,
                    last_heartbeat_ms: None,
                    plugin_connected,
                    metrics_url: String::new(),
                    ts_ms: 0,
                    ports: vec![],
                    restartable: true,
                })
            }),
        (".{0,12}", any::<i64>(), any::<u64>()).prop_map(|(signal, ts_ms, max_wait_ms)| {
            Message::Stopping(Stopping {
                signal,
                ts_ms,
                max_wait_ms,
            })
        }),
        (
            prop_oneof![
                Just(StopOutcome::Checkpointed),
                Just(StopOutcome::Failed),
                Just(StopOutcome::Skipped)
            ],
            ".{0,40}"
        )
            .prop_map(|(outcome, detail)| Message::StopReady(StopReady { outcome, detail })),
    ]
}

proptest! {
    #[test]
    fn messages_survive_any_chunking(msgs in proptest::collection::vec(message(), 1..20),
                                     cuts in proptest::collection::vec(1usize..64, 1..50)) {
        let mut codec = FrameCodec::with_limit(MAX_FRAME);
        let mut wire = BytesMut::new();
        for m in &msgs {
            codec.encode(m.to_frame(), &mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut decoder = FrameCodec::with_limit(MAX_FRAME);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < wire.len() {
            let n = (*cut.next().unwrap()).min(wire.len() - pos);
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            while let Some(f) = decoder.decode(&mut buf).unwrap() {
                got.push(Message::from_frame(&f).unwrap().unwrap());
            }
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let (frames, _err, _rest) = decode_all(&data, 4096);
        for f in &frames {
            prop_assert!(f.payload.len() < 4096);
            let _ = Message::from_frame(f);
        }
    }

    #[test]
    fn unknown_kinds_are_skipped(kind in 100u8..=255, payload in proptest::collection::vec(any::<u8>(), 0..100)) {
        let f = Frame { kind, payload: payload.into() };
        prop_assert_eq!(Message::from_frame(&f).unwrap(), None);
    }
}

#[test]
fn labels_keep_their_order_and_content() {
    let m = Message::Metrics(MetricsBatch {
        ts_ms: 1,
        dropped: 0,
        metrics: vec![Metric {
            name: "x".into(),
            value: 0.5,
            labels: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
        }],
    });
    assert_eq!(Message::from_frame(&m.to_frame()).unwrap(), Some(m));
}
