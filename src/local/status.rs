//! `streamshield local status`: the [`Status`] of a run, from its state file, Flink's REST API and its agents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::shield::agent_health;
use super::{Error, Result, RunState, WorkloadInfo};
use crate::flink;

/// `status --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub up: bool,
    pub run_dir: PathBuf,
    pub profile: String,
    pub flink: FlinkStatus,
    pub kafka: KafkaStatus,
    pub jobmanager: Option<ProcStatus>,
    pub taskmanagers: Vec<TmStatus>,
    pub jobs: Vec<JobStatus>,
    pub workload: Option<WorkloadInfo>,
    /// Agents (shield profile): their process and what they report of theirs.
    pub agents: Vec<AgentStatusLine>,
    pub coordinator: Option<CoordinatorStatus>,
    /// What could not be read (REST down, ...).
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct AgentStatusLine {
    pub resource_id: String,
    /// The agent's own pid.
    pub pid: i32,
    pub alive: bool,
    pub metrics_url: String,
    /// The agent's view of its Flink process (None when the agent does not answer).
    pub liveness: Option<String>,
    pub plugin_connected: Option<bool>,
    /// The watched Flink process's pid, as its plugin reported it.
    pub watched_pid: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct CoordinatorStatus {
    pub api: String,
    pub pid: i32,
    pub alive: bool,
    pub api_token_file: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct FlinkStatus {
    pub version: String,
    pub rest: String,
}

#[derive(Debug, Serialize)]
pub struct KafkaStatus {
    pub version: String,
    pub bootstrap: String,
    pub pid: Option<i32>,
    pub alive: bool,
}

#[derive(Debug, Serialize)]
pub struct ProcStatus {
    pub pid: i32,
    pub alive: bool,
    pub log: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct TmStatus {
    pub resource_id: String,
    pub pid: i32,
    /// `active` when its slots run tasks, `standby` when all its slots are free (as Flink reports them now;
    /// the role it was started in when Flink does not answer).
    pub role: String,
    pub alive: bool,
    pub stopped: bool,
    pub registered: bool,
    pub slots: Option<i64>,
    pub free_slots: Option<i64>,
    pub log: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct JobStatus {
    pub id: String,
    pub name: String,
    pub state: String,
}

pub async fn status(dir: &Path) -> Result<Status> {
    let state = RunState::load(dir)?.ok_or_else(|| Error::NotUp(dir.to_path_buf()))?;
    // Short time-outs: a stopped JobManager must not make `status` hang.
    let client = flink::Client::with_timeout(state.rest_url(), Duration::from_secs(3));
    let mut problems = Vec::new();
    let tms = match client.taskmanagers().await {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(format!("taskmanagers: {e}"));
            None
        }
    };
    let jobs = match client.jobs().await {
        Ok(j) => j
            .into_iter()
            .map(|j| JobStatus {
                id: j.jid,
                name: j.name,
                state: j.state,
            })
            .collect(),
        Err(e) => {
            problems.push(format!("jobs: {e}"));
            Vec::new()
        }
    };
    let taskmanagers = state
        .taskmanagers
        .iter()
        .map(|t| {
            let reg = tms
                .as_ref()
                .and_then(|l| l.iter().find(|x| x.id == t.resource_id));
            let role = match reg {
                Some(r) if r.free_slots < r.slots => "active".to_string(),
                Some(_) => "standby".to_string(),
                None => t.role.clone(),
            };
            TmStatus {
                resource_id: t.resource_id.clone(),
                pid: t.process.pid,
                role,
                alive: t.process.alive(),
                stopped: t.process.stopped(),
                registered: reg.is_some(),
                slots: reg.map(|r| r.slots),
                free_slots: reg.map(|r| r.free_slots),
                log: t.process.log.clone(),
            }
        })
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("static client settings");
    let mut agents = Vec::new();
    for a in &state.agents {
        let health = agent_health(&http, a).await;
        let process = health
            .as_ref()
            .and_then(|h| h.process(&a.resource_id))
            .cloned();
        agents.push(AgentStatusLine {
            resource_id: a.resource_id.clone(),
            pid: a.process.pid,
            alive: a.process.alive(),
            metrics_url: format!("{}/metrics", a.http),
            liveness: process.as_ref().map(|p| p.liveness.to_string()),
            plugin_connected: process.as_ref().map(|p| p.plugin_connected),
            watched_pid: process.as_ref().and_then(|p| p.pid).map(u64::from),
        });
    }
    let coordinator = state.coordinator.as_ref().map(|c| CoordinatorStatus {
        api: c.api.clone(),
        pid: c.process.pid,
        alive: c.process.alive(),
        api_token_file: c.api_token_file.clone(),
    });
    let up = state.processes().iter().any(|p| p.alive());
    Ok(Status {
        up,
        run_dir: state.run_dir.clone(),
        profile: state.profile.clone(),
        flink: FlinkStatus {
            version: state.flink_version.clone(),
            rest: state.rest_url(),
        },
        kafka: KafkaStatus {
            version: state.kafka_version.clone(),
            bootstrap: state.bootstrap(),
            pid: state.kafka.as_ref().map(|k| k.pid),
            alive: state.kafka.as_ref().is_some_and(|k| k.alive()),
        },
        jobmanager: state.jobmanager.as_ref().map(|j| ProcStatus {
            pid: j.pid,
            alive: j.alive(),
            log: j.log.clone(),
        }),
        taskmanagers,
        jobs,
        workload: state.workload.clone(),
        agents,
        coordinator,
        problems,
    })
}
