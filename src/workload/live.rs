//! The verifier as a live stream consumer: it reads the input and the output topic from the beginning, feeds a
//! [`Ledger`], and can be asked for a report at any time while it runs (the drill does so every second).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::host::clock::now_ms;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::ledger::{Ledger, Report};
use super::record::{InputRecord, OutputRecord};
use crate::kafka;

/// Where to read and what to count.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub bootstrap: String,
    pub input_topic: String,
    pub output_topic: String,
    /// Only this generator run counts (None: all runs in the topics).
    pub run: Option<String>,
}

struct Shared {
    /// std Mutex: held only for one record's bookkeeping, never across an await.
    ledger: Mutex<Ledger>,
    stop: AtomicBool,
    input_caught_up: AtomicBool,
    output_caught_up: AtomicBool,
}

/// A running verifier. Dropping it stops its consumer threads.
pub struct LiveVerifier {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Clone, Copy)]
enum Side {
    Input,
    Output,
}

impl LiveVerifier {
    /// Connects to both topics (they must exist) and starts consuming from their beginnings.
    pub fn start(cfg: &VerifyConfig) -> kafka::Result<Self> {
        let shared = Arc::new(Shared {
            ledger: Mutex::new(Ledger::new(cfg.run.clone())),
            stop: AtomicBool::new(false),
            input_caught_up: AtomicBool::new(false),
            output_caught_up: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for (side, topic) in [
            (Side::Input, &cfg.input_topic),
            (Side::Output, &cfg.output_topic),
        ] {
            let consumer = assigned_consumer(&cfg.bootstrap, topic)?;
            let parts = consumer.assignment().map(|a| a.count()).unwrap_or(0);
            let shared = shared.clone();
            let name = match side {
                Side::Input => "verify-input",
                Side::Output => "verify-output",
            };
            let handle = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || consume(consumer, parts, side, shared))
                .expect("spawning a verifier thread");
            threads.push(handle);
        }
        Ok(LiveVerifier { shared, threads })
    }

    /// Sets the ledger's progress marker now (see [`Ledger::set_marker_at`]): output the sink created before this
    /// moment counts as before the marker, whenever it arrives. Returns the marker's time (unix ms).
    pub fn set_marker(&self) -> i64 {
        let at = now_ms();
        self.ledger().set_marker_at(Some(at));
        at
    }

    /// The ledger, for callers that need more than a report (progress markers). Hold it briefly.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.shared.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A live report: in-flight records are `records_pending`.
    pub fn report(&self) -> Report {
        self.ledger().report(false, false)
    }

    /// True when both consumers have reached the end of every partition since their last record.
    pub fn caught_up(&self) -> bool {
        self.shared.input_caught_up.load(Ordering::Relaxed)
            && self.shared.output_caught_up.load(Ordering::Relaxed)
    }

    /// Waits for in-flight records, then stops and returns the final report.
    ///
    /// Done when the input is read to its end and every input record has reached the output (complete); or when no
    /// output record arrived for `settle` (the rest is lost; complete); or after `timeout` (incomplete).
    pub async fn finish(self, settle: Duration, timeout: Duration) -> Report {
        let start = tokio::time::Instant::now();
        let start_ms = now_ms();
        let complete = loop {
            let (outstanding, last_out) = {
                let l = self.ledger();
                (l.outstanding(), l.last_output_ms())
            };
            if self.caught_up() && outstanding == 0 {
                break true;
            }
            let quiet_since = last_out.unwrap_or(start_ms).max(start_ms);
            if now_ms() - quiet_since >= settle.as_millis() as i64 && self.caught_up() {
                break true;
            }
            if start.elapsed() >= timeout {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let report = self.ledger().report(true, complete);
        drop(self);
        report
    }
}

impl Drop for LiveVerifier {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A consumer context that does not report reaching the end of a partition as an error: the verifier asks for
/// those events (`enable.partition.eof`) to know when it has caught up.
struct VerifierContext;

impl ClientContext for VerifierContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(&error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!(%error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for VerifierContext {
    fn commit_callback(&self, _: KafkaResult<()>, _: &TopicPartitionList) {}
}

type VerifierConsumer = BaseConsumer<VerifierContext>;

fn assigned_consumer(bootstrap: &str, topic: &str) -> kafka::Result<VerifierConsumer> {
    let consumer: VerifierConsumer = kafka::client_config(bootstrap)
        .set(
            "group.id",
            format!("streamshield-verify-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // The verifier measures latency: do not let the broker hold fetches for long.
        .set("fetch.wait.max.ms", "20")
        .create_with_context(VerifierContext)
        .map_err(|source| kafka::Error::Client {
            bootstrap: bootstrap.to_string(),
            source,
        })?;
    let n = kafka::partitions(&consumer, bootstrap, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|source| kafka::Error::Client {
                bootstrap: bootstrap.to_string(),
                source,
            })?;
    }
    consumer
        .assign(&tpl)
        .map_err(|source| kafka::Error::Client {
            bootstrap: bootstrap.to_string(),
            source,
        })?;
    Ok(consumer)
}

fn consume(consumer: VerifierConsumer, partitions: usize, side: Side, shared: Arc<Shared>) {
    let caught_up = match side {
        Side::Input => &shared.input_caught_up,
        Side::Output => &shared.output_caught_up,
    };
    let mut at_eof = vec![false; partitions];
    let mut last_error_log = None::<std::time::Instant>;
    while !shared.stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(msg)) => {
                let now = now_ms();
                if let Some(e) = at_eof.get_mut(msg.partition() as usize) {
                    *e = false;
                }
                caught_up.store(false, Ordering::Relaxed);
                let mut ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
                match side {
                    Side::Input => match InputRecord::decode(msg.key(), msg.payload()) {
                        Ok(r) => ledger.on_input(&r),
                        Err(e) => {
                            ledger.on_malformed_input();
                            tracing::debug!(error = %e, "Malformed input record");
                        }
                    },
                    Side::Output => match OutputRecord::decode(msg.key(), msg.payload()) {
                        Ok(r) => ledger.on_output_at(&r, now, msg.timestamp().to_millis()),
                        Err(e) => {
                            ledger.on_malformed_output();
                            tracing::debug!(error = %e, "Malformed output record");
                        }
                    },
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(e) = at_eof.get_mut(p as usize) {
                    *e = true;
                }
                if at_eof.iter().all(|e| *e) {
                    caught_up.store(true, Ordering::Relaxed);
                }
            }
            // Broker restarts and the like: librdkafka reconnects by itself; say so now and then.
            Some(Err(e)) if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) => {
                tracing::warn!(error = %e, "Verifier consumer error; retrying");
                last_error_log = Some(std::time::Instant::now());
            }
            Some(Err(_)) => {}
        }
    }
}
