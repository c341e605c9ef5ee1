//! A small client for Flink's REST API (the subset StreamShield uses; see docs/architecture.md for the endpoints
//! and the FLINK.md facts they rest on).
//!
//! [`conf`] reads Flink's configuration files.
//!
//! Beware the execution-graph cache: `/jobs/:id` can be up to `web.refresh-interval` (3 s by default) stale. Use it
//! for state, not for timing.

pub mod conf;
pub mod plugin;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("flink REST {url}: {detail}")]
    Http { url: String, detail: String },
    #[error("flink REST {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("flink REST {url} returned JSON we cannot read: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading {path}: {source}")]
    Jar {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("flink REST upload of {0} gave no file name")]
    NoJarId(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request error with its causes ("timed out", "connection refused"), which reqwest's own message leaves out.
fn http_err(url: &str, e: reqwest::Error) -> Error {
    let mut detail = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        cause = c.source();
    }
    Error::Http {
        url: url.to_string(),
        detail,
    }
}

#[derive(Debug, Deserialize)]
struct TriggerResponse {
    #[serde(rename = "request-id")]
    request_id: String,
}

#[derive(Debug, Deserialize)]
struct TriggerStatus {
    status: TriggerState,
    #[serde(default)]
    operation: Option<TriggerOperation>,
}

#[derive(Debug, Deserialize)]
struct TriggerState {
    id: String,
}

#[derive(Debug, Default, Deserialize)]
struct TriggerOperation {
    #[serde(rename = "checkpointId", default)]
    checkpoint_id: Option<u64>,
    #[serde(rename = "failureCause", alias = "failure-cause", default)]
    failure_cause: Option<serde_json::Value>,
}

/// One job in `/jobs/overview`.
#[derive(Debug, Clone, Deserialize)]
pub struct JobSummary {
    pub jid: String,
    pub name: String,
    pub state: String,
    #[serde(rename = "start-time", default)]
    pub start_time: i64,
}

#[derive(Debug, Deserialize)]
struct JobsOverview {
    jobs: Vec<JobSummary>,
}

/// A vertex in `/jobs/:id`.
#[derive(Debug, Clone, Deserialize)]
pub struct Vertex {
    #[serde(default)]
    pub id: String,
    pub name: String,
    pub status: String,
    pub parallelism: i64,
}

/// `/jobs/:id`.
#[derive(Debug, Clone, Deserialize)]
pub struct JobDetails {
    pub jid: String,
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub vertices: Vec<Vertex>,
    /// Per job status, when the job entered it (ms).
    #[serde(default)]
    pub timestamps: std::collections::BTreeMap<String, i64>,
}

/// A job state from which Flink does not run the job again (`FINISHED`, `CANCELED`, `FAILED`).
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "FINISHED" | "CANCELED" | "FAILED")
}

impl JobDetails {
    /// RUNNING, with every vertex (hence every subtask) RUNNING.
    pub fn fully_running(&self) -> bool {
        self.state == "RUNNING"
            && !self.vertices.is_empty()
            && self.vertices.iter().all(|v| v.status == "RUNNING")
    }
}

/// One entry of the exception history.
#[derive(Debug, Clone, Deserialize)]
pub struct ExceptionEntry {
    #[serde(rename = "exceptionName", default)]
    pub exception_name: String,
    #[serde(default)]
    pub stacktrace: String,
    #[serde(default)]
    pub timestamp: i64,
    #[serde(rename = "taskManagerId", default)]
    pub task_manager_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Exceptions {
    #[serde(rename = "exceptionHistory", default)]
    history: Option<History>,
}

#[derive(Debug, Deserialize)]
struct History {
    #[serde(default)]
    entries: Vec<ExceptionEntry>,
}

#[derive(Debug, Deserialize)]
struct MetricValue {
    id: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct VertexDetails {
    #[serde(default)]
    subtasks: Vec<SubtaskDetails>,
}

#[derive(Debug, Deserialize)]
struct SubtaskDetails {
    #[serde(rename = "taskmanager-id", default)]
    taskmanager_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigEntry {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Default, Deserialize)]
struct JobExecutionConfig {
    #[serde(rename = "execution-config", default)]
    execution_config: ExecutionConfig,
}

#[derive(Debug, Default, Deserialize)]
struct ExecutionConfig {
    #[serde(rename = "user-config", default)]
    user_config: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct SubtaskTimes {
    #[serde(default)]
    subtasks: Vec<SubtaskTime>,
}

#[derive(Debug, Deserialize)]
struct SubtaskTime {
    #[serde(default)]
    timestamps: std::collections::BTreeMap<String, i64>,
}

/// `/jobs/:id/checkpoints` (the parts StreamShield uses).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CheckpointStats {
    #[serde(default)]
    pub counts: CheckpointCounts,
    #[serde(default)]
    pub latest: LatestCheckpoints,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CheckpointCounts {
    #[serde(default)]
    pub restored: u64,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub in_progress: u64,
    #[serde(default)]
    pub completed: u64,
    #[serde(default)]
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LatestCheckpoints {
    pub completed: Option<CompletedCheckpoint>,
    pub restored: Option<RestoredCheckpoint>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletedCheckpoint {
    pub id: u64,
    #[serde(default)]
    pub latest_ack_timestamp: i64,
    #[serde(default)]
    pub end_to_end_duration: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RestoredCheckpoint {
    pub id: u64,
    #[serde(default)]
    pub restore_timestamp: i64,
}

/// One TaskManager in `/taskmanagers`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskManager {
    pub id: String,
    #[serde(rename = "slotsNumber")]
    pub slots: i64,
    #[serde(rename = "freeSlots")]
    pub free_slots: i64,
    /// When the JobManager last heard from it, unix ms (despite the REST field's name).
    #[serde(rename = "timeSinceLastHeartbeat", default)]
    pub last_heartbeat: i64,
    /// Its RPC endpoint, e.g. `pekko.tcp://flink@127.0.0.1:35393/user/rpc/taskmanager_0`.
    #[serde(default)]
    pub path: String,
}

impl TaskManager {
    /// `host:port` of its RPC endpoint, from `path`.
    pub fn rpc_address(&self) -> Option<String> {
        let rest = self.path.split_once('@')?.1;
        let hostport = rest.split('/').next()?;
        let (host, port) = hostport.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        (!host.is_empty()).then(|| format!("{host}:{port}"))
    }
}

#[derive(Debug, Deserialize)]
struct TaskManagers {
    taskmanagers: Vec<TaskManager>,
}

#[derive(Debug, Deserialize)]
struct Upload {
    filename: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RunResponse {
    jobid: String,
}

/// A Flink REST endpoint.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// `base` like `http://127.0.0.1:8081`.
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_timeout(base, Duration::from_secs(30))
    }

    /// A client whose requests give up after `timeout` (pollers want short ones).
    pub fn with_timeout(base: impl Into<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3).min(timeout))
            .build()
            .expect("static reqwest client settings");
        Client {
            base: base.into().trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
        resp: reqwest::Response,
    ) -> Result<T> {
        let status = resp.status();
        let body = resp.text().await.map_err(|e| http_err(&url, e))?;
        if !status.is_success() {
            return Err(Error::Status {
                url,
                status: status.as_u16(),
                body: error_text(&body),
            });
        }
        serde_json::from_str(&body).map_err(|source| Error::Decode { url, source })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| http_err(&url, e))?;
        self.read(url, resp).await
    }

    /// True when the REST endpoint answers `/overview`.
    pub async fn ready(&self) -> bool {
        self.get::<serde_json::Value>("/overview").await.is_ok()
    }

    pub async fn jobs(&self) -> Result<Vec<JobSummary>> {
        Ok(self.get::<JobsOverview>("/jobs/overview").await?.jobs)
    }

    pub async fn job(&self, id: &str) -> Result<JobDetails> {
        self.get(&format!("/jobs/{id}")).await
    }

    /// The job's exception history, newest first.
    pub async fn exceptions(&self, id: &str) -> Result<Vec<ExceptionEntry>> {
        let e: Exceptions = self
            .get(&format!("/jobs/{id}/exceptions?maxExceptions=20"))
            .await?;
        Ok(e.history.map(|h| h.entries).unwrap_or_default())
    }

    /// One job metric's value as a number (`/jobs/:id/metrics?get=`), e.g. `numRestarts`.
    pub async fn job_metric(&self, id: &str, name: &str) -> Result<u64> {
        let url = format!("/jobs/{id}/metrics?get={name}");
        let v: Vec<MetricValue> = self.get(&url).await?;
        v.into_iter()
            .find(|m| m.id == name)
            .and_then(|m| m.value.parse::<f64>().ok())
            .map(|f| f as u64)
            .ok_or_else(|| Error::Status {
                url: format!("{}{url}", self.base),
                status: 200,
                body: format!("no numeric metric {name}"),
            })
    }

    /// The resource ids of the TaskManagers that run subtasks of the job (`taskmanager-id` of every subtask).
    pub async fn subtask_hosts(&self, id: &str) -> Result<Vec<String>> {
        let job = self.job(id).await?;
        let mut hosts = Vec::new();
        for v in &job.vertices {
            let d: VertexDetails = self.get(&format!("/jobs/{id}/vertices/{}", v.id)).await?;
            for s in d.subtasks {
                if let Some(t) = s.taskmanager_id {
                    if !hosts.contains(&t) {
                        hosts.push(t);
                    }
                }
            }
        }
        Ok(hosts)
    }

    /// The resource ids of the TaskManagers running subtasks of `job` (whose vertices are given).
    pub async fn placement(&self, id: &str, job: &JobDetails) -> Result<Vec<String>> {
        let mut hosts = Vec::new();
        for v in &job.vertices {
            let d: VertexDetails = self.get(&format!("/jobs/{id}/vertices/{}", v.id)).await?;
            for t in d.subtasks.into_iter().filter_map(|s| s.taskmanager_id) {
                if !hosts.contains(&t) {
                    hosts.push(t);
                }
            }
        }
        hosts.sort();
        Ok(hosts)
    }

    /// The cluster's configuration as the JobManager has it (`/jobmanager/config`: `[{key, value}]`).
    pub async fn cluster_config(&self) -> Result<BTreeMap<String, String>> {
        let entries: Vec<ConfigEntry> = self.get("/jobmanager/config").await?;
        Ok(entries.into_iter().map(|e| (e.key, e.value)).collect())
    }

    /// A job's own settings as Flink's REST API shows them: its global job parameters (`/jobs/:id/config`,
    /// `execution-config.user-config`: `pipeline.global-job-parameters`, or `setGlobalJobParameters` in the job's
    /// code). Keys set for a job with `-D` or a job's `Configuration` are not visible over REST in 1.20 or 2.x
    /// (`/jobs/:id/jobmanager/config` is the cluster's configuration whatever the job).
    pub async fn job_config(&self, id: &str) -> Result<BTreeMap<String, String>> {
        let exec: JobExecutionConfig = self.get(&format!("/jobs/{id}/config")).await?;
        Ok(exec
            .execution_config
            .user_config
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect())
    }

    /// When each subtask of the job entered RUNNING, by Flink's own clock (`/subtasktimes`); 0 for a subtask that
    /// is not running.
    pub async fn subtask_running_times(&self, id: &str) -> Result<Vec<i64>> {
        let job = self.job(id).await?;
        let mut out = Vec::new();
        for v in &job.vertices {
            let t: SubtaskTimes = self
                .get(&format!("/jobs/{id}/vertices/{}/subtasktimes", v.id))
                .await?;
            out.extend(
                t.subtasks
                    .iter()
                    .map(|s| s.timestamps.get("RUNNING").copied().unwrap_or(0)),
            );
        }
        Ok(out)
    }

    pub async fn checkpoints(&self, id: &str) -> Result<CheckpointStats> {
        self.get(&format!("/jobs/{id}/checkpoints")).await
    }

    pub async fn taskmanagers(&self) -> Result<Vec<TaskManager>> {
        Ok(self
            .get::<TaskManagers>("/taskmanagers")
            .await?
            .taskmanagers)
    }

    /// Uploads a jar; returns its jar id.
    pub async fn upload_jar(&self, jar: &Path) -> Result<String> {
        let url = format!("{}/jars/upload", self.base);
        let bytes = tokio::fs::read(jar).await.map_err(|source| Error::Jar {
            path: jar.display().to_string(),
            source,
        })?;
        let name = jar
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "job.jar".into());
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name)
            .mime_str("application/x-java-archive")
            .expect("static mime type");
        let form = reqwest::multipart::Form::new().part("jarfile", part);
        let resp = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(120))
            .multipart(form)
            .send()
            .await
            .map_err(|e| http_err(&url, e))?;
        let up: Upload = self.read(url, resp).await?;
        let filename = up
            .filename
            .ok_or_else(|| Error::NoJarId(jar.display().to_string()))?;
        Ok(filename.rsplit('/').next().unwrap_or(&filename).to_string())
    }

    /// Runs an uploaded jar; returns the job id.
    pub async fn run_jar(
        &self,
        jar_id: &str,
        entry_class: &str,
        args: &[String],
        parallelism: u32,
    ) -> Result<String> {
        let url = format!("{}/jars/{jar_id}/run", self.base);
        let body = serde_json::json!({
            "entryClass": entry_class,
            "programArgsList": args,
            "parallelism": parallelism,
        });
        let resp = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(120))
            .json(&body)
            .send()
            .await
            .map_err(|e| http_err(&url, e))?;
        Ok(self.read::<RunResponse>(url, resp).await?.jobid)
    }

    /// Triggers a checkpoint of a job (`POST /jobs/:id/checkpoints`, Flink 1.17+) of its configured kind; returns
    /// the trigger id to follow with [`Client::checkpoint_status`].
    pub async fn trigger_checkpoint(&self, id: &str) -> Result<String> {
        let url = format!("{}/jobs/{id}/checkpoints", self.base);
        let resp = self
            .http
            .post(&url)
            .json(&serde_json::json!({"checkpointType": "CONFIGURED"}))
            .send()
            .await
            .map_err(|e| http_err(&url, e))?;
        Ok(self.read::<TriggerResponse>(url, resp).await?.request_id)
    }

    /// Where a triggered checkpoint is: `Ok(None)` while in progress, then its id or why it failed.
    pub async fn checkpoint_status(
        &self,
        id: &str,
        trigger: &str,
    ) -> Result<Option<std::result::Result<u64, String>>> {
        let s: TriggerStatus = self
            .get(&format!("/jobs/{id}/checkpoints/{trigger}"))
            .await?;
        if s.status.id != "COMPLETED" {
            return Ok(None);
        }
        let op = s.operation.unwrap_or_default();
        Ok(Some(match (op.checkpoint_id, op.failure_cause) {
            (Some(c), _) => Ok(c),
            (None, Some(f)) => Err(f
                .get("stack-trace")
                .or_else(|| f.get("serialized-throwable"))
                .and_then(|v| v.as_str())
                .map(summarize_stacktrace)
                .unwrap_or_else(|| f.to_string())),
            (None, None) => Err("Flink reported neither a checkpoint id nor a failure".into()),
        }))
    }

    /// Cancels a job (best effort; used when tearing down).
    pub async fn cancel(&self, id: &str) -> Result<()> {
        let url = format!("{}/jobs/{id}?mode=cancel", self.base);
        let resp = self
            .http
            .patch(&url)
            .send()
            .await
            .map_err(|e| http_err(&url, e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::Status {
                url,
                status: resp.status().as_u16(),
                body: resp.text().await.unwrap_or_default(),
            })
        }
    }
}

/// Flink's REST errors are `{"errors": [...]}`, often with whole stack traces: keep what says why.
pub fn error_text(body: &str) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<String>,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|t| summarize_stacktrace(t))
            .collect::<Vec<_>>()
            .join("; "),
        _ => body.chars().take(2000).collect(),
    }
}

/// The first line of a Java stack trace plus its innermost "Caused by", which is usually the real reason.
pub fn summarize_stacktrace(trace: &str) -> String {
    let first = trace.lines().next().unwrap_or("").trim();
    let cause = trace
        .lines()
        .rfind(|l| l.trim_start().starts_with("Caused by:"))
        .map(|l| l.trim());
    match cause {
        Some(c) if c != first => format!("{first}\n  {c}"),
        _ => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_details_decode_and_full_running() {
        let j: JobDetails = serde_json::from_str(
            r#"{"jid":"a","name":"n","state":"RUNNING","timestamps":{"RUNNING":5},
                "vertices":[{"id":"v","name":"src","status":"RUNNING","parallelism":2},
                            {"id":"w","name":"sink","status":"DEPLOYING","parallelism":2}]}"#,
        )
        .unwrap();
        assert!(!j.fully_running());
        assert_eq!(j.timestamps["RUNNING"], 5);
    }

    #[test]
    fn rest_errors_are_summarised() {
        let body = r#"{"errors":["org.apache.flink.runtime.rest.handler.RestHandlerException: Could not execute application.\n\tat a\nCaused by: java.lang.IllegalArgumentException: --delivery must be exactly-once or at-least-once, got bogus\n\tat b"]}"#;
        let t = error_text(body);
        assert!(t.contains("Could not execute application"), "{t}");
        assert!(
            t.contains("IllegalArgumentException: --delivery must be"),
            "{t}"
        );
        assert_eq!(error_text("plain text"), "plain text");
    }

    #[test]
    fn checkpoint_stats_decode() {
        let c: CheckpointStats = serde_json::from_str(
            r#"{"counts":{"restored":1,"total":9,"in_progress":0,"completed":8,"failed":1},
                "latest":{"completed":{"id":9,"latest_ack_timestamp":1000,"end_to_end_duration":35,"extra":1},
                          "restored":{"id":4,"restore_timestamp":900},"savepoint":null,"failed":null},
                "history":[]}"#,
        )
        .unwrap();
        assert_eq!(
            (c.counts.completed, c.counts.failed, c.counts.restored),
            (8, 1, 1)
        );
        assert_eq!(c.latest.completed.unwrap().end_to_end_duration, 35);
        assert_eq!(c.latest.restored.unwrap().id, 4);
    }

    #[test]
    fn stacktrace_summary_prefers_the_root_cause() {
        let t = "org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat x\nCaused by: java.lang.RuntimeException: mid\nCaused by: org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node\n\tat y";
        let s = summarize_stacktrace(t);
        assert!(s.starts_with("org.apache.flink.runtime.JobException"));
        assert!(s.contains("TimeoutException: Timed out"));
    }

    #[test]
    fn a_taskmanagers_rpc_address_comes_from_its_path() {
        let mut t = TaskManager {
            id: "tm-1".into(),
            slots: 2,
            free_slots: 0,
            last_heartbeat: 0,
            path: "pekko.tcp://flink@127.0.0.1:35393/user/rpc/taskmanager_0".into(),
        };
        assert_eq!(t.rpc_address().as_deref(), Some("127.0.0.1:35393"));
        t.path = "garbage".into();
        assert_eq!(t.rpc_address(), None);
    }
}
