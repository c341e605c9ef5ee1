//! Flink's side of the model: the result of each poll of its REST API (jobs with their placement and policy,
//! TaskManagers, new exceptions), the cluster's configuration, and the recovery times the coordinator observes.

use std::collections::BTreeMap;

use super::{Model, Polled};
use crate::coordinator::policy::{keys, Mode, Source};
use crate::flink;
use crate::host::clock::now_ms;

impl Model {
    /// The cluster's `streamshield.*` keys, read from `/jobmanager/config`.
    pub fn cluster_config_polled(&mut self, settings: BTreeMap<String, String>) {
        if self.cluster_read && self.flink.cluster_settings == settings {
            return;
        }
        self.cluster_read = true;
        let annotations = self.annotation_settings();
        let resolved = keys::resolve(
            &[
                (Source::Annotation, &annotations),
                (Source::Cluster, &settings),
            ],
            &self.base,
        );
        self.record(
            "flink",
            None,
            "cluster-policy",
            now_ms(),
            serde_json::json!({"settings": settings, "policy": resolved.config, "problems": resolved.problems}),
        );
        for p in &resolved.problems {
            tracing::warn!(key = %p.key, value = %p.value, problem = %p.problem, "Ignoring a StreamShield key of the cluster's configuration");
        }
        self.flink.cluster_settings = settings;
        self.flink.cluster_policy = Some(resolved);
    }

    /// The result of one Flink poll.
    pub fn flink_polled(&mut self, result: Result<Polled, String>) {
        let now = now_ms();
        match result {
            Ok((mut jobs, tms, exceptions)) => {
                if !self.flink.reachable {
                    self.record(
                        "flink",
                        None,
                        "rest-reachable",
                        now,
                        serde_json::json!({"rest": self.flink.rest}),
                    );
                }
                for j in jobs.iter_mut() {
                    self.job_policy(j);
                }
                for j in &jobs {
                    let old = self.flink.jobs.iter().find(|o| o.id == j.id);
                    let old_restore = old
                        .and_then(|o| o.checkpoints.as_ref())
                        .and_then(|c| c.latest_restored_id);
                    let before = old.map(|o| o.state.clone());
                    if let Some(cp) = &j.checkpoints {
                        if cp.latest_restored_id.is_some() && cp.latest_restored_id != old_restore {
                            self.record(
                                "flink",
                                None,
                                "checkpoint-restored",
                                cp.latest_restore_ms.unwrap_or(now),
                                serde_json::json!({"job_id": j.id, "checkpoint_id": cp.latest_restored_id}),
                            );
                        }
                    }
                    if before.as_deref() != Some(j.state.as_str()) {
                        let ts = j.timestamps.get(&j.state).copied().unwrap_or(now);
                        self.record(
                            "flink",
                            None,
                            "job-state",
                            ts,
                            serde_json::json!({"job_id": j.id, "from": before, "to": j.state}),
                        );
                    }
                }
                for t in &tms {
                    if !self.flink.taskmanagers.iter().any(|o| o.id == t.id) {
                        self.record(
                            "flink",
                            Some(&t.id),
                            "taskmanager-registered",
                            now,
                            serde_json::json!({"slots": t.slots}),
                        );
                    }
                }
                let gone: Vec<String> = self
                    .flink
                    .taskmanagers
                    .iter()
                    .filter(|o| !tms.iter().any(|t| t.id == o.id))
                    .map(|o| o.id.clone())
                    .collect();
                for id in gone {
                    self.record(
                        "flink",
                        Some(&id),
                        "taskmanager-released",
                        now,
                        serde_json::json!({}),
                    );
                }
                for (job, e) in exceptions {
                    self.record(
                        "flink",
                        e.task_manager_id.as_deref(),
                        "exception",
                        e.timestamp,
                        serde_json::json!({"job_id": job, "exception": e.exception_name, "summary": flink::summarize_stacktrace(&e.stacktrace)}),
                    );
                }
                self.flink.jobs = jobs;
                self.flink.taskmanagers = tms;
                self.observe_recoveries();
                self.flink.reachable = true;
                self.flink.last_ok_ms = Some(now);
                self.flink.last_error = None;
                self.flink.polls_ok += 1;
            }
            Err(e) => {
                if self.flink.reachable || self.flink.polls_failed == 0 {
                    self.record(
                        "flink",
                        None,
                        "rest-unreachable",
                        now,
                        serde_json::json!({"error": e}),
                    );
                }
                self.flink.reachable = false;
                if self.flink.recent_errors.len() >= 10 {
                    self.flink.recent_errors.pop_front();
                }
                self.flink.recent_errors.push_back((now, e.clone()));
                self.flink.last_error = Some(e);
                self.flink.polls_failed += 1;
            }
        }
    }

    /// Resolves a job's policy (its keys, then the cluster's, then the coordinator's); a new job, or one whose keys
    /// changed, gets an event saying which policy it runs under (and which keys were ignored, why).
    fn job_policy(&mut self, j: &mut super::JobView) {
        let cluster = self.flink.cluster_settings.clone();
        let annotations = self.annotation_settings();
        let resolved = keys::resolve(
            &[
                (Source::Annotation, &annotations),
                (Source::Job, &j.settings),
                (Source::Cluster, &cluster),
            ],
            &self.base,
        );
        let old = self
            .flink
            .jobs
            .iter()
            .find(|o| o.id == j.id)
            .and_then(|o| o.policy.clone());
        if old.as_ref() != Some(&resolved) {
            for p in &resolved.problems {
                tracing::warn!(job = %j.id, key = %p.key, value = %p.value, problem = %p.problem, "Ignoring a StreamShield key of a job's configuration");
            }
            self.record(
                "coordinator",
                None,
                "job-policy",
                now_ms(),
                serde_json::json!({
                    "job_id": j.id,
                    "job_name": j.name,
                    "settings": j.settings,
                    "failover": resolved.config.failover,
                    "source": resolved.failover_source(),
                    "policy": resolved.config,
                    "problems": resolved.problems,
                }),
            );
        }
        j.policy = Some(resolved);
    }

    /// A policy level changed outside Flink (the FlinkDeployment's annotations): the cluster's and every job's
    /// policy are resolved again now, each change recorded.
    pub(super) fn policies_changed(&mut self) {
        let annotations = self.annotation_settings();
        self.flink.cluster_policy = Some(keys::resolve(
            &[
                (Source::Annotation, &annotations),
                (Source::Cluster, &self.flink.cluster_settings),
            ],
            &self.base,
        ));
        let mut jobs = self.flink.jobs.clone();
        for j in jobs.iter_mut() {
            self.job_policy(j);
        }
        self.flink.jobs = jobs;
    }

    /// Flink ran every vertex of a job again after a decision's incident: its recovery time, by Flink's clock (for
    /// observe-only decisions too: how long Flink took on its own). Acted ones feed the recovery histogram.
    fn observe_recoveries(&mut self) {
        let running: Vec<i64> = self
            .flink
            .jobs
            .iter()
            .filter(|j| j.fully_running())
            .filter_map(|j| j.timestamps.get("RUNNING").copied())
            .collect();
        let mut seen = Vec::new();
        for d in self.decisions.iter_mut() {
            let Some(from) = d.incident_ms else { continue };
            if d.recovery_ms.is_some()
                || d.trigger == crate::coordinator::policy::Trigger::TmStopping
            {
                continue;
            }
            if let Some(t) = running.iter().filter(|t| **t >= from).min() {
                d.recovery_ms = Some(t - from);
                if d.mode == Mode::Acted {
                    seen.push((t - from) as f64 / 1000.0);
                }
            }
        }
        for s in seen {
            self.recovery.observe(s);
        }
    }
}
