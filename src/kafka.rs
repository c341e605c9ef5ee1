//! Small Kafka helpers over rdkafka: client settings, topic creation, waiting for a broker.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("kafka client for {bootstrap}: {source}")]
    Client {
        bootstrap: String,
        #[source]
        source: KafkaError,
    },
    #[error("kafka at {bootstrap} did not answer within {waited:?}: {last}")]
    NotReady {
        bootstrap: String,
        waited: Duration,
        last: String,
    },
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("topic {topic} not found at {bootstrap}")]
    NoSuchTopic { topic: String, bootstrap: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings every client of ours shares: where, and quiet logs (librdkafka logs through `tracing`).
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "streamshield")
        .set("socket.connection.setup.timeout.ms", "5000")
        // Only loopback brokers are expected: retry fast when one restarts.
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000");
    c
}

/// Waits until the broker answers a metadata request.
pub async fn wait_ready(bootstrap: &str, timeout: Duration) -> Result<()> {
    let start = tokio::time::Instant::now();
    let mut last: String;
    loop {
        let b = bootstrap.to_string();
        let attempt = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let consumer: BaseConsumer = client_config(&b).create().map_err(|e| e.to_string())?;
            consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("metadata task failed: {e}")));
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if start.elapsed() >= timeout {
            return Err(Error::NotReady {
                bootstrap: bootstrap.to_string(),
                waited: timeout,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates `topic` with `partitions` partitions (replication 1) unless it exists.
pub async fn ensure_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    ensure_topic_replicated(bootstrap, topic, partitions, 1).await
}

/// [`ensure_topic`] with `replication` replicas per partition.
pub async fn ensure_topic_replicated(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap)
            .create()
            .map_err(|source| Error::Client {
                bootstrap: bootstrap.to_string(),
                source,
            })?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| Error::CreateTopic {
            topic: topic.to_string(),
            reason: e.to_string(),
        })?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::CreateTopic {
                    topic: t,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// The partition count of `topic`.
pub fn partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    bootstrap: &str,
    topic: &str,
) -> Result<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| Error::Client {
            bootstrap: bootstrap.to_string(),
            source,
        })?;
    match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().len() as i32)
        }
        _ => Err(Error::NoSuchTopic {
            topic: topic.to_string(),
            bootstrap: bootstrap.to_string(),
        }),
    }
}
