//! Polls Flink's REST API: jobs (state, vertices, Flink's own state timestamps, checkpoint counts and the latest
//! completed and restored checkpoint, which TaskManagers run their subtasks, their `streamshield.*` settings),
//! TaskManagers, new entries of each job's exception history, and now and then the cluster's configuration.
//! A job's settings are its global job parameters (the only per-job configuration Flink's REST API shows).
//! Time-outs, 5xx answers and malformed JSON make the poll fail (recorded, counted); the next poll tries again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::model::{JobView, Polled, TaskManagerView};
use super::policy::keys::PREFIX;
use super::Shared;
use crate::flink;

/// The cluster's configuration is read again every this many polls (a JobManager restarted by HA may bring
/// another one).
const CLUSTER_CONFIG_EVERY: u64 = 30;

/// What the poller remembers between polls.
#[derive(Debug, Default)]
pub struct Memory {
    /// Each job's `streamshield.*` settings (from its global job parameters), read once: a job's configuration is
    /// fixed when it is submitted.
    settings: BTreeMap<String, BTreeMap<String, String>>,
}

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), String> {
    let client = flink::Client::with_timeout(&shared.cfg.flink_rest, Duration::from_secs(2));
    let mut tick = tokio::time::interval(shared.cfg.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut memory = Memory::default();
    let mut polls = 0u64;
    let mut have_cluster = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if !have_cluster || polls.is_multiple_of(CLUSTER_CONFIG_EVERY) {
            match client.cluster_config().await {
                Ok(all) => {
                    have_cluster = true;
                    shared
                        .model()
                        .cluster_config_polled(streamshield_keys(&all));
                }
                Err(e) => tracing::debug!(error = %e, "Reading the cluster's configuration failed"),
            }
        }
        polls += 1;
        let known: Vec<(String, i64)> = shared
            .model()
            .flink
            .jobs
            .iter()
            .map(|j| (j.id.clone(), j.last_exception_ms))
            .collect();
        let result = poll(&client, &known, &mut memory)
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::debug!(error = %e, "Flink poll failed");
        }
        shared.model().flink_polled(result);
    }
}

/// The `streamshield.*` keys of a configuration.
fn streamshield_keys(all: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    all.iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One poll. `known` holds (job id, newest exception already reported) from the previous poll.
pub async fn poll(
    client: &flink::Client,
    known: &[(String, i64)],
    memory: &mut Memory,
) -> flink::Result<Polled> {
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
            taskmanagers: Vec::new(),
            settings: memory.settings.get(&s.jid).cloned().unwrap_or_default(),
            policy: None,
        };
        if !terminal {
            if !memory.settings.contains_key(&s.jid) {
                match client.job_config(&s.jid).await {
                    Ok(all) => {
                        let own = streamshield_keys(&all);
                        view.settings = own.clone();
                        memory.settings.insert(s.jid.clone(), own);
                    }
                    Err(e) => {
                        tracing::debug!(job = %s.jid, error = %e, "Reading a job's configuration failed; trying again next poll")
                    }
                }
            }
            let d = client.job(&s.jid).await?;
            view.vertices = d.vertices.len();
            view.vertices_running = d.vertices.iter().filter(|v| v.status == "RUNNING").count();
            view.timestamps = d.timestamps.clone();
            view.taskmanagers = client.placement(&s.jid, &d).await?;
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
    memory
        .settings
        .retain(|id, _| jobs.iter().any(|j| j.id == *id));
    Ok((
        jobs,
        tms.iter().map(TaskManagerView::from).collect(),
        new_exceptions,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_streamshield_keys_are_kept() {
        let all: BTreeMap<String, String> = [("streamshield.failover", "false"), ("a", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(streamshield_keys(&all).len(), 1);
    }
}
