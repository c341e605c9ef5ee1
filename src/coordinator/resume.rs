//! Recovery checkpoints: once a job that restarted runs every subtask again, the coordinator triggers a checkpoint
//! through Flink's REST API (`POST /jobs/:id/checkpoints`) instead of leaving it to the periodic schedule, which
//! Flink restarts with a random delay of up to one interval and whose triggers fail while subtasks still
//! initialise. With exactly-once output the restarted job's records become visible only when a checkpoint commits
//! them, so this shortens the output gap of every recovery by up to a checkpoint interval; with at-least-once
//! output it shortens what the next failure would replay. Only for jobs whose policy has failover and
//! `streamshield.recovery-checkpoint` on.
//!
//! Restarts are recognised by Flink's own `RESTARTING` timestamp of the job growing, whatever their cause (a crash
//! the agents saw, a Kafka outage, a failed checkpoint). Jobs are read every 100 ms while recovery is likely (a job
//! not fully running in the last poll, or an agent that reported its process not alive in the last minute), else
//! from the coordinator's regular poll.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::flink;
use crate::host::clock::now_ms;

/// How often jobs are read while a recovery is likely.
const FAST: Duration = Duration::from_millis(100);
/// How long after an agent's report of trouble jobs are read at [`FAST`].
const WATCH_AFTER_TROUBLE_MS: i64 = 60_000;
/// How long a recovery checkpoint is followed before it is recorded as not completed.
const FOLLOW_MS: i64 = 60_000;

/// What the resume task knows of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    pub id: String,
    /// Flink's `RESTARTING` timestamp (ms; 0 when it never restarted).
    pub restarted_ms: i64,
    /// RUNNING with every vertex RUNNING.
    pub fully_running: bool,
}

/// Remembers the last restart handled per job; says which jobs to checkpoint now.
#[derive(Debug, Default)]
pub struct Restarts {
    handled: BTreeMap<String, i64>,
}

impl Restarts {
    /// The jobs that restarted since last handled and run fully again: checkpoint them (each restart once). The
    /// first sight of a job only sets its mark: a restart from before the coordinator started is not news.
    pub fn due(&mut self, jobs: &[JobRun]) -> Vec<JobRun> {
        let mut due = Vec::new();
        for j in jobs {
            match self.handled.get(&j.id) {
                None => {
                    self.handled.insert(j.id.clone(), j.restarted_ms);
                }
                Some(&h) if j.restarted_ms > h && j.fully_running => {
                    self.handled.insert(j.id.clone(), j.restarted_ms);
                    due.push(j.clone());
                }
                Some(_) => {}
            }
        }
        self.handled
            .retain(|id, _| jobs.iter().any(|j| j.id == *id));
        due
    }
}

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), String> {
    let client = flink::Client::with_timeout(&shared.cfg.flink_rest, Duration::from_secs(2));
    let mut restarts = Restarts::default();
    loop {
        let (known, watch) = {
            let m = shared.model();
            let known: Vec<JobRun> = m
                .flink
                .jobs
                .iter()
                .filter(|j| !flink::is_terminal(&j.state))
                // Only the jobs whose policy wants a recovery checkpoint.
                .filter(|j| {
                    j.policy
                        .as_ref()
                        .is_some_and(|p| p.config.failover && p.config.recovery_checkpoint)
                })
                .map(|j| JobRun {
                    id: j.id.clone(),
                    restarted_ms: j.timestamps.get("RESTARTING").copied().unwrap_or(0),
                    fully_running: j.fully_running(),
                })
                .collect();
            let watch = known.iter().any(|j| !j.fully_running)
                || now_ms() - m.last_trouble_ms < WATCH_AFTER_TROUBLE_MS;
            (known, watch)
        };
        let pause = if watch {
            FAST
        } else {
            shared.cfg.poll_interval
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        let jobs = if watch {
            fresh(&client, &known).await
        } else {
            known
        };
        for job in restarts.due(&jobs) {
            let (shared, client) = (shared.clone(), client.clone());
            tokio::spawn(async move { checkpoint(&shared, &client, job).await });
        }
    }
}

/// The jobs read afresh from Flink (a job whose read fails keeps what the last poll said).
async fn fresh(client: &flink::Client, known: &[JobRun]) -> Vec<JobRun> {
    let mut out = Vec::with_capacity(known.len());
    for j in known {
        out.push(match client.job(&j.id).await {
            Ok(d) => JobRun {
                id: j.id.clone(),
                restarted_ms: d.timestamps.get("RESTARTING").copied().unwrap_or(0),
                fully_running: d.fully_running(),
            },
            Err(e) => {
                tracing::debug!(job = %j.id, error = %e, "Reading a recovering job failed");
                j.clone()
            }
        });
    }
    out
}

/// Triggers and follows one recovery checkpoint; records it as a `recovery-checkpoint` event.
async fn checkpoint(shared: &Shared, client: &flink::Client, job: JobRun) {
    let triggered = now_ms();
    tracing::info!(job = %job.id, restarted_ms = job.restarted_ms, "Job runs again after a restart: triggering a recovery checkpoint");
    let result = super::stopper::checkpoint(client, &job.id, triggered + FOLLOW_MS).await;
    let detail = serde_json::json!({
        "job_id": job.id,
        "restarted_ms": job.restarted_ms,
        "triggered_ms": triggered,
        "took_ms": now_ms() - triggered,
        "checkpoint": result.as_ref().ok(),
        "error": result.as_ref().err(),
    });
    match &result {
        Ok(id) => tracing::info!(job = %job.id, checkpoint = id, "Recovery checkpoint completed"),
        Err(e) => tracing::warn!(job = %job.id, error = %e, "Recovery checkpoint failed"),
    }
    shared.model().record(
        "coordinator",
        None,
        "recovery-checkpoint",
        triggered,
        detail,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(restarted_ms: i64, fully_running: bool) -> JobRun {
        JobRun {
            id: "j".into(),
            restarted_ms,
            fully_running,
        }
    }

    #[test]
    fn each_restart_is_checkpointed_once_when_the_job_runs_fully_again() {
        let mut r = Restarts::default();
        // First sight: an old restart is not news.
        assert!(r.due(&[job(500, true)]).is_empty());
        // Restarting, then deploying: not yet.
        assert!(r.due(&[job(2_000, false)]).is_empty());
        assert!(r.due(&[job(2_000, false)]).is_empty());
        // Every subtask runs: once.
        assert_eq!(r.due(&[job(2_000, true)]), vec![job(2_000, true)]);
        assert!(r.due(&[job(2_000, true)]).is_empty());
        // A second restart seen only once it already runs again (a slow poll): still checkpointed.
        assert_eq!(r.due(&[job(9_000, true)]), vec![job(9_000, true)]);
        // A job that is gone is forgotten; seen again, it is a first sight.
        assert!(r.due(&[]).is_empty());
        assert!(r.due(&[job(12_000, true)]).is_empty());
    }
}
