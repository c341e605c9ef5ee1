//! Planned stops: a TaskManager's plugin holds a SIGTERM until the coordinator says it may go on. This task takes
//! the stops the model decided to checkpoint first, triggers a checkpoint of every running job through Flink's REST
//! API (`POST /jobs/:id/checkpoints`), follows each until it completes, fails or the stop's deadline comes, and then
//! releases the stop through the model (a `stop-ready` order to the TaskManager's agent).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::model::StopRequest;
use super::Shared;
use crate::flink;
use crate::host::clock::now_ms;
use crate::protocol::StopOutcome;

/// How often new stop requests and triggered checkpoints are looked at.
const POLL: Duration = Duration::from_millis(50);

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), String> {
    let client = flink::Client::with_timeout(&shared.cfg.flink_rest, Duration::from_secs(2));
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        for req in shared.model().take_stop_requests() {
            let (shared, client) = (shared.clone(), client.clone());
            tokio::spawn(async move {
                let started = now_ms();
                let (outcome, mut detail) = checkpoint_jobs(&client, &req).await;
                detail["took_ms"] = serde_json::json!(now_ms() - started);
                tracing::warn!(resource_id = %req.resource_id, outcome = outcome.as_str(), %detail, "Planned stop: checkpoints done; releasing the stop");
                shared.model().stop_checkpointed(&req, outcome, detail);
            });
        }
    }
}

/// Checkpoints every job of the request at once; `checkpointed` when all completed, else `failed` with why.
async fn checkpoint_jobs(
    client: &flink::Client,
    req: &StopRequest,
) -> (StopOutcome, serde_json::Value) {
    let results = futures_util::future::join_all(
        req.jobs
            .iter()
            .map(|j| checkpoint(client, j, req.deadline_ms)),
    )
    .await;
    let mut all_ok = true;
    let mut jobs = serde_json::Map::new();
    for (job, r) in req.jobs.iter().zip(results) {
        let v = match r {
            Ok(id) => serde_json::json!({"checkpoint": id}),
            Err(why) => {
                all_ok = false;
                serde_json::json!({"error": why})
            }
        };
        jobs.insert(job.clone(), v);
    }
    (
        if all_ok {
            StopOutcome::Checkpointed
        } else {
            StopOutcome::Failed
        },
        serde_json::json!({ "jobs": jobs }),
    )
}

/// Triggers one job's checkpoint and waits for it until `deadline_ms`.
pub(super) async fn checkpoint(
    client: &flink::Client,
    job: &str,
    deadline_ms: i64,
) -> Result<u64, String> {
    let trigger = client
        .trigger_checkpoint(job)
        .await
        .map_err(|e| format!("trigger: {e}"))?;
    loop {
        if now_ms() >= deadline_ms {
            return Err("not completed before its deadline".into());
        }
        tokio::time::sleep(POLL).await;
        match client.checkpoint_status(job, &trigger).await {
            Ok(None) => {}
            Ok(Some(r)) => return r,
            // A slow answer is retried until the deadline; the job may be busy completing the checkpoint.
            Err(e) => {
                tracing::debug!(job, error = %e, "Reading a triggered checkpoint's status failed")
            }
        }
    }
}
