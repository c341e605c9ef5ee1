//! The waits of `up` and the restarts: a process answering (`wait_ready`, its info file, Kafka's metadata), the
//! TaskManagers registering, the job running, every plugin linked to its agent, and probe records flowing end to
//! end. Those that watch a process fail early, with its log's tail, when it exits.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::logs::exited;
use super::shield::agent_health;
use super::{say, Error, Result, RunState};
use crate::flink;
use crate::host::process::Recorded;
use crate::kafka;
use crate::workload::live::{LiveVerifier, VerifyConfig};
use crate::workload::produce::{self, ProduceConfig};
use crate::workload::{INPUT_TOPIC, OUTPUT_TOPIC};

/// Polls `ready` every `every` until it says yes; fails when `rec` exits first (with its log's tail) or after
/// `waited`.
pub(super) async fn wait_ready<F, Fut>(
    rec: &Recorded,
    what: &str,
    waited: Duration,
    every: Duration,
    mut ready: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + waited;
    while !ready().await {
        if !rec.alive() {
            return Err(exited(rec));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                waited,
                detail: format!("; see {}", rec.log.display()),
            });
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// Reads the JSON info file a starting component writes once it serves; fails if the process exits first.
pub(super) async fn wait_info(
    rec: &Recorded,
    path: &Path,
    what: &str,
) -> Result<serde_json::Value> {
    let waited = Duration::from_secs(30);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str(&text) {
                return Ok(v);
            }
        }
        if !rec.alive() {
            return Err(exited(rec));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{what} serving"),
                waited,
                detail: format!("; see {}", rec.out.display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn wait_kafka(state: &RunState, rec: &Recorded) -> Result<()> {
    let bootstrap = state.bootstrap();
    let ready = kafka::wait_ready(&bootstrap, Duration::from_secs(90));
    tokio::pin!(ready);
    loop {
        tokio::select! {
            r = &mut ready => return r.map_err(Error::from),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if !rec.alive() {
                    return Err(exited(rec));
                }
            }
        }
    }
}

/// Waits until every agent reports its plugin connected (the plugin loaded in Flink and linked).
pub(super) async fn wait_plugins_linked(state: &RunState) -> Result<()> {
    say("waiting for every plugin to link to its agent");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("static client settings");
    let waited = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        let mut missing = Vec::new();
        for a in &state.agents {
            let ok = agent_health(&http, a).await.is_some_and(|h| {
                h.process(&a.resource_id)
                    .is_some_and(|p| p.plugin_connected)
            });
            if !ok {
                missing.push(a.resource_id.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "the plugins of {} linking to their agents",
                    missing.join(", ")
                ),
                waited,
                detail: format!(
                    "; see the agent and Flink logs in {}",
                    state.logs_dir().display()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn wait_registered(
    state: &RunState,
    client: &flink::Client,
    want: usize,
) -> Result<()> {
    let waited = Duration::from_secs(120);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        let n = client.taskmanagers().await.map(|t| t.len()).unwrap_or(0);
        if n >= want {
            return Ok(());
        }
        for t in &state.taskmanagers {
            if !t.process.alive() {
                return Err(exited(&t.process));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{want} TaskManagers registering with the JobManager ({n} did)"),
                waited,
                detail: format!("; see the logs in {}", state.logs_dir().display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(super) async fn wait_job_running(
    state: &RunState,
    client: &flink::Client,
    job: &str,
    waited: Duration,
) -> Result<()> {
    say("waiting for the job to run (every subtask RUNNING)");
    let deadline = tokio::time::Instant::now() + waited;
    let mut last_state: String;
    loop {
        match client.job(job).await {
            Ok(j) if j.fully_running() => return Ok(()),
            Ok(j) if crate::flink::is_terminal(&j.state) => {
                return Err(Error::JobFailed(format!(
                    "job {job} is {}: {}",
                    j.state,
                    job_exception(client, job).await
                )));
            }
            Ok(j) => last_state = j.state,
            Err(e) => last_state = format!("unknown ({e})"),
        }
        if let Some(jm) = &state.jobmanager {
            if !jm.alive() {
                return Err(exited(jm));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::JobFailed(format!(
                "job {job} still {last_state} after {waited:?}; last exception: {}",
                job_exception(client, job).await
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The newest exception of a job, summarised, or a note that there is none.
async fn job_exception(client: &flink::Client, job: &str) -> String {
    match client.exceptions(job).await {
        Ok(list) => list
            .first()
            .map(|e| flink::summarize_stacktrace(&e.stacktrace))
            .unwrap_or_else(|| "Flink recorded no exception".into()),
        Err(e) => format!("(could not read the exception history: {e})"),
    }
}

/// Writes a small probe run through the pipeline and waits until all of it comes out the other end.
pub(super) async fn probe_output(state: &RunState) -> Result<()> {
    let bootstrap = state.bootstrap();
    let run = format!("probe{}", crate::host::clock::now_ms());
    say("checking that records flow end to end (probe records through the job)");
    let verifier = LiveVerifier::start(&VerifyConfig {
        bootstrap: bootstrap.clone(),
        input_topic: INPUT_TOPIC.into(),
        output_topic: OUTPUT_TOPIC.into(),
        run: Some(run.clone()),
    })?;
    const PROBES: u64 = 100;
    let cfg = ProduceConfig {
        bootstrap,
        topic: INPUT_TOPIC.into(),
        rate: 1000,
        keys: 10,
        duration: None,
        max_records: Some(PROBES),
        run: Some(run),
    };
    produce::produce(&cfg, CancellationToken::new(), |_| {}).await?;
    let waited = Duration::from_secs(120);
    let deadline = tokio::time::Instant::now() + waited;
    loop {
        let out = verifier.ledger().records_out();
        if out >= PROBES {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{PROBES} probe records reaching the output topic ({out} did)"),
                waited,
                detail: format!(
                    "; see the TaskManager logs in {}",
                    state.logs_dir().display()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::state::test_state;

    async fn fake_flink(job_state: &str) -> wiremock::MockServer {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, ResponseTemplate};
        let server = wiremock::MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jobs/j1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "jid": "j1", "name": "n", "state": job_state,
                "vertices": [{"id": "v", "name": "src", "status": "CREATED", "parallelism": 1}]
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jobs/j1/exceptions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "exceptionHistory": {"entries": [{
                    "exceptionName": "org.apache.flink.runtime.JobException",
                    "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat x\nCaused by: org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node assignment\n\tat y",
                    "timestamp": 1
                }]}
            })))
            .mount(&server)
            .await;
        server
    }

    #[tokio::test]
    async fn a_failed_job_fails_up_with_flinks_exception() {
        let server = fake_flink("FAILED").await;
        let d = tempfile::tempdir().unwrap();
        let client = flink::Client::new(server.uri());
        let e = wait_job_running(
            &test_state(d.path()),
            &client,
            "j1",
            Duration::from_secs(30),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("is FAILED"), "{e}");
        assert!(
            e.contains("TimeoutException: Timed out waiting for a node assignment"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_job_that_never_runs_times_out_with_its_last_exception() {
        let server = fake_flink("RESTARTING").await;
        let d = tempfile::tempdir().unwrap();
        let client = flink::Client::new(server.uri());
        let start = std::time::Instant::now();
        let e = wait_job_running(
            &test_state(d.path()),
            &client,
            "j1",
            Duration::from_millis(800),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(start.elapsed() < Duration::from_secs(10), "no hang");
        assert!(e.contains("still RESTARTING"), "{e}");
        assert!(e.contains("TimeoutException"), "{e}");
    }
}
