//! The generator: per key strictly increasing sequence numbers at a fixed rate, with idempotent, acknowledged
//! writes so that every record Kafka acknowledged is one the verifier must find in the output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::record::{key_name, InputRecord};
use crate::host::clock::now_ms;
use crate::kafka;

#[derive(Debug, Clone)]
pub struct ProduceConfig {
    pub bootstrap: String,
    pub topic: String,
    /// Records per second.
    pub rate: u32,
    /// Number of distinct keys; records go round-robin over them.
    pub keys: u32,
    /// Stop after this long (None: until cancelled or `max_records`).
    pub duration: Option<Duration>,
    /// Stop after this many records.
    pub max_records: Option<u64>,
    /// Run id (stream namespace); generated from the clock when None.
    pub run: Option<String>,
}

/// What a generator run did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProduceStats {
    pub run: String,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub elapsed_s: f64,
    pub rate_achieved: f64,
    /// The first delivery error, if any.
    pub first_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct DeliveryCounter(Arc<Counters>);

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.0.first_error.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid generator settings: {0}")]
    Invalid(String),
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error("{unacked} records were not acknowledged within {waited:?} after the last send")]
    FlushTimeout { unacked: u64, waited: Duration },
}

/// Runs the generator until its duration, record limit or `cancel`. `progress` is called about once a second.
pub async fn produce(
    cfg: &ProduceConfig,
    cancel: CancellationToken,
    mut progress: impl FnMut(&ProduceStats),
) -> Result<ProduceStats, Error> {
    if cfg.rate == 0 {
        return Err(Error::Invalid("--rate must be at least 1 record/s".into()));
    }
    if cfg.keys == 0 {
        return Err(Error::Invalid("--keys must be at least 1".into()));
    }
    let run = cfg.run.clone().unwrap_or_else(|| format!("r{}", now_ms()));
    if run.is_empty() || run.contains(':') {
        return Err(Error::Invalid(format!(
            "run id {run:?} must be non-empty and contain no ':'"
        )));
    }
    let counters = Arc::new(Counters::default());
    let producer: ThreadedProducer<DeliveryCounter> = kafka::client_config(&cfg.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // Keep retrying through a broker outage rather than failing records (10 min).
        .set("message.timeout.ms", "600000")
        .create_with_context(DeliveryCounter(counters.clone()))
        .map_err(|source| kafka::Error::Client {
            bootstrap: cfg.bootstrap.clone(),
            source,
        })?;

    let start = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_progress = start;
    let stats = |sent: u64, start: tokio::time::Instant| {
        let elapsed = start.elapsed().as_secs_f64();
        ProduceStats {
            run: run.clone(),
            sent,
            acked: counters.acked.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            elapsed_s: (elapsed * 1000.0).round() / 1000.0,
            rate_achieved: if elapsed > 0.0 {
                (sent as f64 / elapsed).round()
            } else {
                0.0
            },
            first_error: counters
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    };
    'outer: loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let elapsed = start.elapsed();
        if cfg.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        let mut due = (elapsed.as_secs_f64() * cfg.rate as f64) as u64;
        if let Some(max) = cfg.max_records {
            due = due.min(max);
        }
        while sent < due {
            let idx = (sent % cfg.keys as u64) as u32;
            let rec = InputRecord {
                key: key_name(idx),
                run: run.clone(),
                seq: sent / cfg.keys as u64 + 1,
                send_ts_ms: now_ms(),
            };
            let value = rec.encode_value();
            let mut record = BaseRecord::to(&cfg.topic).key(&rec.key).payload(&value);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // Back-pressure from the client: wait, never skip a sequence number.
                        record = r;
                        if cancel.is_cancelled() {
                            break 'outer;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        let mut first = counters
                            .first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
            sent += 1;
        }
        if cfg.max_records.is_some_and(|m| sent >= m) {
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = tokio::time::Instant::now();
            progress(&stats(sent, start));
        }
    }
    let final_stats = stats(sent, start);
    let flush_wait = Duration::from_secs(60);
    let p = producer;
    let flushed = tokio::task::spawn_blocking(move || {
        let r = p.flush(flush_wait);
        drop(p);
        r
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled));
    let mut done = stats(sent, start);
    done.elapsed_s = final_stats.elapsed_s;
    done.rate_achieved = final_stats.rate_achieved;
    if flushed.is_err() {
        return Err(Error::FlushTimeout {
            unacked: sent - done.acked - done.failed,
            waited: flush_wait,
        });
    }
    Ok(done)
}
