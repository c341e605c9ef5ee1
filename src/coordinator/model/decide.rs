//! From the policy's acts to decisions and orders: every act becomes a decision with its evidence and the policy it
//! followed; an acted one also becomes an order (with the coordinator's epoch as its fencing token) waiting for the
//! agent of its process. Record-only incidents (an agent lost, a JobManager dead) and planned stops are decided here
//! too.

use super::{Decision, Evidence, Model, StopRequest};
use crate::coordinator::policy::{Act, Mode, Trigger};
use crate::host::clock::now_ms;
use crate::protocol::message::{AgentCommand, AgentEvent};
use crate::protocol::vocab::PlannedStop;
use crate::protocol::{Action, StopOutcome};

/// The release must reach the plugin this long before its own wait runs out.
pub const STOP_RELEASE_MARGIN_MS: i64 = 500;

impl Model {
    /// A new order for process `rid` (the next decision id, this coordinator's epoch).
    pub(super) fn command(&mut self, rid: &str, action: Action, reason: String) -> AgentCommand {
        AgentCommand {
            id: self.next_decision,
            epoch: self.epoch,
            action,
            resource_id: rid.to_string(),
            pid: None,
            reason,
            ts_ms: now_ms(),
            address: None,
            ports: vec![],
            outcome: None,
        }
    }

    /// Records the policy's acts as decisions and queues the acted ones' orders.
    pub(super) fn apply(&mut self, acts: Vec<Act>) {
        for act in acts {
            let now = now_ms();
            let evidence = vec![
                Evidence {
                    ts_ms: now,
                    signal: "last agent status".into(),
                    detail: serde_json::to_value(
                        self.processes
                            .get(&act.resource_id)
                            .and_then(|p| p.status.as_ref()),
                    )
                    .unwrap_or_default(),
                },
                Evidence {
                    ts_ms: now,
                    signal: "flink taskmanager view".into(),
                    detail: serde_json::to_value(
                        self.flink
                            .taskmanagers
                            .iter()
                            .find(|t| t.id == act.resource_id),
                    )
                    .unwrap_or_default(),
                },
            ];
            self.next_decision += 1;
            let id = self.next_decision;
            let action = match (act.action, act.mode) {
                (Some(a), Mode::Acted) => format!("{a}: {}", act.reason),
                (Some(a), Mode::ObserveOnly) => format!("would {a} (observe-only): {}", act.reason),
                (None, _) => act.reason.clone(),
            };
            if act.trigger == Trigger::TmPartitioned {
                if let Some(addr) = &act.address {
                    self.isolated.insert(act.resource_id.clone(), addr.clone());
                }
            }
            tracing::warn!(trigger = %act.trigger, resource_id = %act.resource_id, %action, mode = act.mode.as_str(), epoch = self.epoch, policy = %act.policy.basis, "Failover decision");
            let acted = act.mode == Mode::Acted && act.action.is_some();
            let d = Decision {
                id,
                ts_ms: now,
                trigger: act.trigger,
                resource_id: act.resource_id.clone(),
                evidence,
                action,
                mode: act.mode,
                policy: Some(act.policy.clone()),
                fencing_token: acted.then_some(self.epoch),
                command: act.action.map(|a| a.as_str().to_string()),
                outcome: None,
                recovery_ms: None,
                incident_ms: Some(act.opened_ms),
            };
            if let (Some(a), true) = (act.action, acted) {
                let target = act.target.clone().unwrap_or(act.resource_id.clone());
                let cmd = AgentCommand {
                    pid: act.pid,
                    address: act.address.clone(),
                    ports: act.ports.clone(),
                    // An isolation is about the TaskManager but carried out by the JobManager's agent.
                    resource_id: target.clone(),
                    ..self.command(&target, a, act.reason.clone())
                };
                self.outbox.entry(target).or_default().push(cmd);
                // An agent that cannot be reached cannot fence: on Kubernetes the pod is deleted as well.
                if matches!(a, Action::Fence | Action::Isolate) {
                    if let Some(order) = self.fence_pod(&act.resource_id, id) {
                        self.kube_order(order);
                    }
                }
            }
            self.log_decision(d);
        }
    }

    /// A record-only decision (no order), once per incident of `resource_id` until it is alive again.
    pub(super) fn note(
        &mut self,
        trigger: Trigger,
        resource_id: &str,
        evidence: Vec<Evidence>,
        action: String,
    ) {
        if self.open.get(resource_id) == Some(&trigger) {
            return;
        }
        self.open.insert(resource_id.to_string(), trigger);
        self.next_decision += 1;
        let d = Decision {
            id: self.next_decision,
            ts_ms: now_ms(),
            trigger,
            resource_id: resource_id.into(),
            evidence,
            action: action.clone(),
            mode: Mode::ObserveOnly,
            policy: None,
            fencing_token: None,
            command: None,
            outcome: None,
            recovery_ms: None,
            incident_ms: None,
        };
        tracing::warn!(trigger = %trigger, resource_id, %action, "Decision (record only)");
        self.log_decision(d);
    }

    /// Keeps a decision in the bounded log, counts it and records it as an event.
    pub(super) fn log_decision(&mut self, d: Decision) {
        *self.decisions_total.entry((d.trigger, d.mode)).or_default() += 1;
        self.kube_decision_notice(&d);
        let detail = serde_json::to_value(&d).unwrap_or_default();
        let resource_id = d.resource_id.clone();
        if self.decisions.len() >= super::DECISION_LOG {
            self.decisions.pop_front();
        }
        self.decisions.push_back(d);
        self.record(
            "coordinator",
            Some(&resource_id),
            "decision",
            now_ms(),
            detail,
        );
    }

    /// A TaskManager's plugin holds a stop (SIGTERM, eviction): every running job whose policy wants it
    /// (`streamshield.failover` and `streamshield.planned-stop`) is checkpointed first (the stopper task triggers
    /// the checkpoints through Flink's REST API and then releases the stop), so that the restart replays from just
    /// before the stop instead of from up to a checkpoint interval earlier. Otherwise the stop is released at once.
    pub(super) fn planned_stop(&mut self, ev: &AgentEvent) {
        let rid = ev.resource_id.clone();
        self.stopping.insert(rid.clone());
        let max_wait = ev
            .detail_as::<PlannedStop>()
            .map_or(0, |s| s.max_wait_ms as i64);
        let running: Vec<&super::JobView> = self
            .flink
            .jobs
            .iter()
            .filter(|j| j.state == "RUNNING")
            .collect();
        let wanted: Vec<String> = running
            .iter()
            .filter(|j| {
                j.policy
                    .as_ref()
                    .is_some_and(|p| p.config.failover && p.config.planned_stop)
            })
            .map(|j| j.id.clone())
            .collect();
        let skipped: Vec<String> = running
            .iter()
            .filter(|j| !wanted.contains(&j.id))
            .map(|j| format!("{} ({})", j.name, j.id))
            .collect();
        let evidence = vec![
            Evidence {
                ts_ms: ev.ts_ms,
                signal: "plugin holds a stop".into(),
                detail: ev.detail.clone(),
            },
            Evidence {
                ts_ms: now_ms(),
                signal: "running jobs".into(),
                detail: serde_json::json!({"checkpoint": wanted, "policy observe-only or planned-stop off": skipped}),
            },
        ];
        let act = !wanted.is_empty();
        self.next_decision += 1;
        let id = self.next_decision;
        let action = match (act, skipped.is_empty(), running.is_empty()) {
            (_, _, true) => format!("let {rid} stop at once: no job is running"),
            (true, true, _) => format!(
                "checkpoint: trigger a checkpoint of {} running job(s), then let {rid} stop",
                wanted.len()
            ),
            (true, false, _) => format!(
                "checkpoint: trigger a checkpoint of {} running job(s) whose policy wants it, then let {rid} stop; not for {}",
                wanted.len(),
                skipped.join(", ")
            ),
            (false, _, _) => format!(
                "would checkpoint every running job before letting {rid} stop (observe-only for {}); lets it stop at once",
                skipped.join(", ")
            ),
        };
        let mode = if act { Mode::Acted } else { Mode::ObserveOnly };
        tracing::warn!(trigger = "tm-stopping", resource_id = %rid, %action, mode = mode.as_str(), "Planned stop");
        let policy = self.context().tm(&rid).policy;
        self.log_decision(Decision {
            id,
            ts_ms: now_ms(),
            trigger: Trigger::TmStopping,
            resource_id: rid.clone(),
            evidence,
            action,
            mode,
            policy: Some(policy),
            fencing_token: act.then_some(self.epoch),
            command: Some(if act { "checkpoint" } else { "stop-ready" }.into()),
            outcome: None,
            recovery_ms: None,
            incident_ms: Some(ev.ts_ms),
        });
        if act {
            self.stop_requests.push(StopRequest {
                decision: id,
                resource_id: rid,
                jobs: wanted,
                deadline_ms: now_ms() + max_wait - STOP_RELEASE_MARGIN_MS,
                release: true,
            });
        } else {
            self.release_stop(&rid, StopOutcome::Skipped, "no checkpoint taken".into());
        }
    }

    /// Planned stops whose checkpoints the stopper task is to take.
    pub fn take_stop_requests(&mut self) -> Vec<StopRequest> {
        std::mem::take(&mut self.stop_requests)
    }

    /// The checkpoints of a planned stop are done (or failed, or ran out of time): record the outcome in its
    /// decision and release the stop.
    pub fn stop_checkpointed(
        &mut self,
        req: &StopRequest,
        outcome: StopOutcome,
        detail: serde_json::Value,
    ) {
        if let Some(d) = self.decisions.iter_mut().find(|d| d.id == req.decision) {
            d.outcome = Some(serde_json::json!({"outcome": outcome, "detail": detail.clone()}));
        }
        self.record(
            "coordinator",
            Some(&req.resource_id),
            "planned-stop-checkpoint",
            now_ms(),
            serde_json::json!({"decision": req.decision, "outcome": outcome, "detail": detail}),
        );
        if req.release {
            self.release_stop(&req.resource_id, outcome, detail.to_string());
        }
    }

    /// Queues the `stop-ready` order that lets a TaskManager's plugin stop its process.
    fn release_stop(&mut self, rid: &str, outcome: StopOutcome, reason: String) {
        self.next_decision += 1;
        let cmd = AgentCommand {
            outcome: Some(outcome),
            ..self.command(rid, Action::StopReady, reason)
        };
        self.outbox.entry(rid.to_string()).or_default().push(cmd);
    }
}
