//! The Kafka watchdog: every probe asks each broker on its own for its API versions (one connection each, so that a
//! broker that accepts connections and never answers — SIGSTOPped, a full request queue, a dead disk — is told apart
//! from one that refuses them), then the fastest broker for the cluster's metadata (the brokers it should have, and
//! which partitions have no leader or a leader that did not answer). Requests are encoded and decoded by the
//! maintained `kafka-protocol` crate. PLAINTEXT listeners only (TLS and SASL: not yet).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Observation, Reach};
use crate::protocol::watchdog::{Member, TargetState};

const API_VERSIONS_V: i16 = 3;
const METADATA_V: i16 = 12;
/// A broker's answer larger than this is not one (a hostile or broken peer).
const MAX_RESPONSE: usize = 64 << 20;
const CLIENT_ID: &str = "streamshield-watchdog";

/// The brokers a cluster's probes know: the bootstrap servers and those its metadata named.
#[derive(Debug, Default)]
pub struct Kafka {
    bootstrap: Vec<String>,
    /// Broker id -> host:port, from the last metadata.
    learned: BTreeMap<i32, String>,
}

impl Kafka {
    pub fn new(bootstrap: &[String]) -> Kafka {
        Kafka {
            bootstrap: bootstrap.to_vec(),
            learned: BTreeMap::new(),
        }
    }

    pub async fn probe(&mut self, timeout: Duration) -> Observation {
        // Every broker known by address: the learned ones by id, then bootstrap servers not among them.
        let mut addrs: Vec<(Option<i32>, String)> = self
            .learned
            .iter()
            .map(|(id, a)| (Some(*id), a.clone()))
            .collect();
        for b in &self.bootstrap {
            if !addrs.iter().any(|(_, a)| a == b) {
                addrs.push((None, b.clone()));
            }
        }
        let probes = addrs.iter().map(|(_, a)| broker_versions(a, timeout));
        let results = futures_util::future::join_all(probes).await;
        let mut members = Vec::new();
        let mut fastest: Option<(Duration, &str)> = None;
        for ((id, addr), r) in addrs.iter().zip(&results) {
            let name = match id {
                Some(id) => format!("{id}@{addr}"),
                None => addr.clone(),
            };
            match r {
                Ok(took) => {
                    if fastest.is_none_or(|(t, _)| took < &t) {
                        fastest = Some((*took, addr));
                    }
                    members.push(Member {
                        name,
                        up: true,
                        evidence: format!("answered in {} ms", took.as_millis()),
                    });
                }
                Err(reach) => members.push(Member {
                    name,
                    up: false,
                    evidence: reach.to_string(),
                }),
            }
        }
        let Some((_, via)) = fastest else {
            let why = members
                .iter()
                .map(|m| format!("{}: {}", m.name, m.evidence))
                .collect::<Vec<_>>()
                .join("; ");
            return Observation::new(
                TargetState::Down,
                format!("no broker answered ({why})"),
                members,
            );
        };
        let meta = match metadata(via, timeout).await {
            Ok(m) => m,
            Err(reach) => {
                return Observation::new(
                    TargetState::Degraded,
                    format!("brokers answer, but the metadata request to {via} failed: {reach}"),
                    members,
                )
            }
        };
        let down_ids: Vec<i32> = addrs
            .iter()
            .zip(&results)
            .filter_map(|((id, _), r)| r.is_err().then_some(*id).flatten())
            .collect();
        self.learned = meta
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let (mut partitions, mut leaderless, mut behind_down, mut under) = (0, 0, 0, 0);
        for t in &meta.topics {
            for p in &t.partitions {
                partitions += 1;
                if p.leader_id.0 < 0 {
                    leaderless += 1;
                } else if down_ids.contains(&p.leader_id.0) {
                    behind_down += 1;
                }
                // A broker the controller fenced leaves the metadata's broker list, not the replica lists.
                if p.isr_nodes.len() < p.replica_nodes.len() {
                    under += 1;
                }
            }
        }
        let down: Vec<&Member> = members.iter().filter(|m| !m.up).collect();
        // A broker the cluster no longer lists (removed, or a bootstrap alias of a listed one) is not a failure.
        let missing: Vec<String> = self
            .learned
            .iter()
            .filter(|(id, _)| !addrs.iter().any(|(known, _)| known == &Some(**id)))
            .map(|(id, a)| format!("{id}@{a}"))
            .collect();
        let mut problems = Vec::new();
        if !down.is_empty() {
            problems.push(format!(
                "{} of {} brokers not answering ({})",
                down.len(),
                members.len(),
                down.iter()
                    .map(|m| format!("{}: {}", m.name, m.evidence))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if behind_down > 0 {
            problems.push(format!(
                "{behind_down} of {partitions} partitions led by a broker that did not answer"
            ));
        }
        if under > 0 {
            problems.push(format!(
                "{under} of {partitions} partitions under-replicated (a replica out of sync)"
            ));
        }
        if leaderless > 0 {
            problems.push(format!(
                "{leaderless} of {partitions} partitions without a leader"
            ));
        }
        if problems.is_empty() {
            let extra = if missing.is_empty() {
                String::new()
            } else {
                format!("; newly listed: {}", missing.join(", "))
            };
            Observation::new(
                TargetState::Healthy,
                format!(
                    "{} brokers answer, {partitions} partitions led{extra}",
                    members.len()
                ),
                members,
            )
        } else {
            Observation::new(TargetState::Degraded, problems.join("; "), members)
        }
    }
}

/// Connects to one broker and asks for its API versions; the time the answer took.
async fn broker_versions(addr: &str, timeout: Duration) -> Result<Duration, Reach> {
    let start = Instant::now();
    let mut s = super::connect(addr, timeout).await?;
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("streamshield"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let rest = timeout.saturating_sub(start.elapsed());
    let resp = call(&mut s, API_VERSIONS_V, &req, 1, rest)
        .await
        .map_err(|r| r.after(timeout))?;
    if resp.error_code != 0 {
        return Err(Reach::Refused(format!(
            "ApiVersions error code {}",
            resp.error_code
        )));
    }
    Ok(start.elapsed())
}

async fn metadata(addr: &str, timeout: Duration) -> Result<MetadataResponse, Reach> {
    let start = Instant::now();
    let mut s = super::connect(addr, timeout).await?;
    // No topic list (null): every topic.
    let req = MetadataRequest::default()
        .with_topics(None)
        .with_allow_auto_topic_creation(false);
    call(
        &mut s,
        METADATA_V,
        &req,
        2,
        timeout.saturating_sub(start.elapsed()),
    )
    .await
    .map_err(|r| r.after(timeout))
}

/// One request and its answer on an open connection, within `timeout`.
async fn call<R: Request>(
    s: &mut TcpStream,
    version: i16,
    req: &R,
    correlation: i32,
    timeout: Duration,
) -> Result<R::Response, Reach> {
    let garbled = |e: anyhow::Error| Reach::Garbled(e.to_string());
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .map_err(garbled)?;
    req.encode(&mut body, version).map_err(garbled)?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    let exchange = async {
        s.write_all(&frame).await.map_err(Reach::io)?;
        let len = s.read_i32().await.map_err(Reach::io)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RESPONSE)
            .ok_or_else(|| Reach::Garbled(format!("an answer of {len} bytes")))?;
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await.map_err(Reach::io)?;
        Ok::<_, Reach>(buf)
    };
    let buf = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Reach::Hung(timeout))??;
    let mut b = bytes::Bytes::from(buf);
    let rh =
        ResponseHeader::decode(&mut b, R::Response::header_version(version)).map_err(garbled)?;
    if rh.correlation_id != correlation {
        return Err(Reach::Garbled(format!(
            "an answer to request {} (asked {correlation})",
            rh.correlation_id
        )));
    }
    let resp = R::Response::decode(&mut b, version).map_err(garbled)?;
    if b.has_remaining() {
        tracing::debug!(left = b.remaining(), "Kafka answer longer than decoded");
    }
    Ok(resp)
}
