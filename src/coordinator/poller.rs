//! Polls Flink's REST API: jobs (state, vertices, Flink's own state timestamps, checkpoint counts and the latest
//! completed and restored checkpoint), TaskManagers, and new entries of
//! each job's exception history. Time-outs, 5xx answers and malformed JSON make the poll fail (recorded, counted);
//! the next poll tries again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::model::{JobView, Polled, TaskManagerView};
use super::Shared;
use crate::flink;

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let client = flink::Client::with_timeout(&shared.cfg.flink_rest, Duration::from_secs(2));
    let mut tick = tokio::time::interval(shared.cfg.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let known: Vec<(String, i64)> = shared
            .model()
            .flink
            .jobs
            .iter()
            .map(|j| (j.id.clone(), j.last_exception_ms))
            .collect();
        let result = poll(&client, &known).await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::debug!(error = %e, "Flink poll failed");
        }
        shared.model().flink_polled(result);
    }
}

/// One poll. `known` holds (job id, newest exception already reported) from the previous poll.
pub async fn poll(client: &flink::Client, known: &[(String, i64)]) -> flink::Result<Polled> {
    let summaries = client.jobs().await?;
    let tms = client.taskmanagers().await?;
    let mut jobs = Vec::new();
    let mut new_exceptions = Vec::new();
    for s in summaries {
        let terminal = flink::is_terminal(&s.state);
        let previous = known.iter().find(|(id, _)| *id == s.jid).map(|(_, t)| *t);
        let mut view = JobView {
            id: s.jid.clone(),
            name: s.name.clone(),
            state: s.state.clone(),
            vertices_running: 0,
            vertices: 0,
            timestamps: Default::default(),
            last_exception_ms: previous.unwrap_or(0),
            checkpoints: None,
        };
        if !terminal {
            let d = client.job(&s.jid).await?;
            view.vertices = d.vertices.len();
            view.vertices_running = d.vertices.iter().filter(|v| v.status == "RUNNING").count();
            view.timestamps = d.timestamps;
            view.checkpoints = Some(client.checkpoints(&s.jid).await?.into());
            let entries = client.exceptions(&s.jid).await?;
            let newest = entries.iter().map(|e| e.timestamp).max().unwrap_or(0);
            // The first sight of a job only sets the mark: its older history is not news.
            if previous.is_some() {
                for e in entries
                    .into_iter()
                    .rev()
                    .filter(|e| e.timestamp > view.last_exception_ms)
                {
                    new_exceptions.push((s.jid.clone(), e));
                }
            }
            view.last_exception_ms = view.last_exception_ms.max(newest);
        }
        jobs.push(view);
    }
    Ok((
        jobs,
        tms.iter().map(TaskManagerView::from).collect(),
        new_exceptions,
    ))
}
