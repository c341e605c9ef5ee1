//! The Kafka broker (KRaft): formatting its storage with a fresh cluster id, starting it, and starting it again on
//! that storage (the drill's `kafka-broker-outage`).

use std::collections::BTreeMap;
use std::path::Path;

use super::launch::spawn_java;
use super::wait::wait_kafka;
use super::{config, dist, io, logs::tail, say, write, Error, Launch, Result, RunState};
use crate::host::process::Recorded;

pub(super) async fn start_kafka(
    state: &mut RunState,
    kafka_home: &Path,
    vars: &BTreeMap<&str, String>,
) -> Result<()> {
    let dir = state.run_dir.join("kafka");
    std::fs::create_dir_all(dir.join("data")).map_err(io(&dir))?;
    let props = dir.join("server.properties");
    write(
        &props,
        &config::render("kafka/server.properties", config::KAFKA_SERVER, vars)?,
    )?;
    let log4j = dir.join("log4j2.yaml");
    write(&log4j, config::KAFKA_LOG4J2)?;
    let cp = format!("{}/libs/*", kafka_home.display());
    let logs = state.logs_dir();
    say(format!(
        "starting Kafka {} on 127.0.0.1:{}",
        dist::KAFKA_VERSION,
        state.ports.kafka
    ));
    format_storage(
        &cp,
        &log4j,
        &logs.join("kafka-format.log"),
        &props,
        &cluster_id(),
        &logs.join("kafka-format.out"),
        "kafka storage format",
    )
    .await?;
    state.kafka_launch = Some(Launch {
        java_args: vec![
            "-Xms512m".into(),
            "-Xmx512m".into(),
            "-XX:+UseG1GC".into(),
            "-Djava.awt.headless=true".into(),
            format!("-Dlog4j2.configurationFile=file:{}", log4j.display()),
            format!("-Dkafka.log.file={}", logs.join("kafka.log").display()),
            "-cp".into(),
            cp,
            "kafka.Kafka".into(),
            props.display().to_string(),
        ],
        main_args: Vec::new(),
    });
    let rec = spawn_kafka(state)?;
    wait_kafka(state, &rec).await
}

/// Formats a KRaft node's storage for `props` with `cluster_id` (`kafka.tools.StorageTool format`, classpath `cp`),
/// its output in `out`; a failure names `component` and shows the output's tail.
pub(super) async fn format_storage(
    cp: &str,
    log4j: &Path,
    log: &Path,
    props: &Path,
    cluster_id: &str,
    out: &Path,
    component: &str,
) -> Result<()> {
    let file = std::fs::File::create(out).map_err(io(out))?;
    let status = tokio::process::Command::new("java")
        .args(["-Xmx256m", "-cp", cp])
        .arg(format!(
            "-Dlog4j2.configurationFile=file:{}",
            log4j.display()
        ))
        .arg(format!("-Dkafka.log.file={}", log.display()))
        .args(["kafka.tools.StorageTool", "format"])
        .arg(format!("--cluster-id={cluster_id}"))
        .arg("--config")
        .arg(props)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().map_err(io(out))?)
        .stderr(file)
        .status()
        .await
        .map_err(io(out))?;
    if !status.success() {
        return Err(Error::Exited {
            component: component.into(),
            log: out.to_path_buf(),
            tail: tail(out, 20),
        });
    }
    Ok(())
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what `kafka-storage random-uuid` prints).
/// Like Kafka's own `Uuid.randomUuid`, never one starting with '-', which a command line would take for an option.
pub(super) fn cluster_id() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    if bytes == [0u8; 16] {
        let t = crate::host::clock::now_ms() as u128 ^ ((std::process::id() as u128) << 64);
        bytes = t.to_le_bytes();
    }
    // The first character encodes the top 6 bits of the first byte; with the top bit clear it is one of A..f.
    bytes[0] &= 0x7f;
    base64_url(&bytes)
}

fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Starts the Kafka broker again on its existing storage (the drill's `kafka-broker-outage`) and waits until it
/// answers metadata requests.
pub async fn restart_kafka(state: &mut RunState) -> Result<()> {
    if state.kafka.as_ref().is_some_and(|p| p.alive()) {
        return Err(Error::Invalid("the Kafka broker is still running".into()));
    }
    let rec = spawn_kafka(state)?;
    wait_kafka(state, &rec).await
}

fn spawn_kafka(state: &mut RunState) -> Result<Recorded> {
    let launch = state.kafka_launch.clone().ok_or_else(|| {
        Error::Invalid("this run has no Kafka launch line (was `up` interrupted?)".into())
    })?;
    let rec = spawn_java(state, "kafka", launch, &state.run_dir.join("kafka"), vec![])?;
    state.kafka = Some(rec.clone());
    state.save()?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(base64_url(b"\xfb\xff"), "-_8");
        assert_ne!(cluster_id(), cluster_id());
        for _ in 0..2000 {
            assert!(
                !cluster_id().starts_with('-'),
                "a leading '-' reads as an option"
            );
        }
    }
}
