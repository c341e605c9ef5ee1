//! The coordinator's cluster model: the agents and the processes they watch, what Flink's REST API shows, the
//! event log and the decision log. Pure bookkeeping; the I/O lives in the sibling modules, the rules in
//! [`super::policy`]. [`flink`](self::flink) takes Flink's polls in; [`decide`] turns the policy's acts into
//! decisions and orders.

pub mod decide;
pub mod flink;
pub mod kube;
pub mod views;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub use views::*;

use super::policy::{
    self, Context, Engine, FlinkState, Mode, PolicyConfig, Resolved, TmContext, TmPolicy, Trigger,
};
use crate::host::clock::now_ms;
use crate::protocol::message::{AgentCommand, AgentEvent, AgentStatus};
use crate::protocol::vocab::LivenessChange;
use crate::protocol::{EventKind, Liveness, Role};

/// Events kept for `/v1/events`.
pub const EVENT_LOG: usize = 2000;
/// Decisions kept for `/v1/decisions`.
pub const DECISION_LOG: usize = 500;

/// One successful poll of Flink: jobs, TaskManagers, and exception-history entries new since the last poll.
pub type Polled = (
    Vec<JobView>,
    Vec<TaskManagerView>,
    Vec<(String, crate::flink::ExceptionEntry)>,
);

/// A TaskManager asked to stop whose plugin holds the stop: checkpoint these jobs, then release it.
#[derive(Debug, Clone, PartialEq)]
pub struct StopRequest {
    /// The decision that ordered the checkpoints.
    pub decision: u64,
    pub resource_id: String,
    pub jobs: Vec<String>,
    /// Give up on the checkpoints at this time (unix ms), so the release reaches the plugin before it stops anyway.
    pub deadline_ms: i64,
    /// Release a held stop when done (false: the checkpoints come before a stop that no plugin holds, e.g. a node
    /// being drained on Kubernetes).
    pub release: bool,
}

#[derive(Debug, Default)]
pub struct Model {
    /// Agents by their id.
    pub agents: BTreeMap<String, AgentView>,
    /// Flink processes by resource id, as their agents report them.
    pub processes: BTreeMap<String, ProcessView>,
    pub flink: FlinkView,
    pub events: VecDeque<Event>,
    pub decisions: VecDeque<Decision>,
    next_event: u64,
    next_decision: u64,
    next_connection: u64,
    /// Open record-only incidents by resource id (agent-lost, jm-dead): no second decision until alive again.
    open: BTreeMap<String, Trigger>,
    pub events_by_source: BTreeMap<String, u64>,
    /// Decisions by trigger and mode.
    pub decisions_total: BTreeMap<(Trigger, Mode), u64>,
    pub agent_connections: BTreeMap<&'static str, u64>,
    /// The failover policy's incidents.
    pub engine: Engine,
    /// The coordinator's own policy settings: the last level under the cluster's and each job's.
    pub base: PolicyConfig,
    /// This coordinator's epoch: the fencing token of its orders.
    pub epoch: u64,
    /// Orders waiting for the agent of their process, by the process's resource id.
    outbox: BTreeMap<String, Vec<AgentCommand>>,
    /// TaskManagers whose RPC endpoint the JobManager's agent was told to reject, with that address.
    isolated: BTreeMap<String, String>,
    pub recovery: RecoveryHistogram,
    /// Planned stops waiting for their checkpoints (taken by the stopper task).
    stop_requests: Vec<StopRequest>,
    /// When an agent last reported its process not alive (unix ms): the resume task watches restarts closely for
    /// a while after.
    pub last_trouble_ms: i64,
    /// TaskManagers whose plugin holds (or held) a planned stop, until they are alive again as a new process.
    stopping: BTreeSet<String>,
    /// The cluster's configuration has been read at least once.
    cluster_read: bool,
    /// What Kubernetes shows of the cluster's pods and nodes (none: the coordinator does not watch Kubernetes).
    pub kube: Option<kube::KubeView>,
}

impl Model {
    /// A model over Flink at `rest` whose last policy level is `base`, ordering with fencing token `epoch`.
    pub fn new(rest: &str, base: PolicyConfig, epoch: u64) -> Self {
        let mut m = Model {
            flink: FlinkView {
                rest: rest.to_string(),
                ..FlinkView::default()
            },
            base,
            epoch,
            ..Model::default()
        };
        m.flink.cluster_policy = Some(policy::keys::resolve(&[], &m.base));
        m
    }

    /// Orders waiting for agent `agent_id`: those for every process it watches (taken: the caller sends them).
    pub fn take_commands(&mut self, agent_id: &str) -> Vec<AgentCommand> {
        let mine: Vec<String> = self
            .outbox
            .keys()
            .filter(|rid| {
                self.processes
                    .get(*rid)
                    .is_some_and(|p| p.agent == agent_id)
            })
            .cloned()
            .collect();
        mine.into_iter()
            .flat_map(|rid| self.outbox.remove(&rid).unwrap_or_default())
            .collect()
    }

    /// Orders waiting for process `rid` (tests).
    pub fn queued_for(&self, rid: &str) -> &[AgentCommand] {
        self.outbox.get(rid).map(Vec::as_slice).unwrap_or_default()
    }

    /// Re-evaluates the policy's tolerances and the partition rule (called every 20 ms).
    pub fn tick(&mut self) {
        let now = now_ms();
        let ctx = self.context();
        let mut acts = self.engine.tick(now, &ctx);
        let isolated: BTreeSet<String> = self.isolated.keys().cloned().collect();
        let jm_connected = self
            .processes
            .get("jobmanager")
            .is_some_and(|p| p.connected);
        let silences = self.silences(now);
        acts.extend(policy::partitions(&silences, jm_connected, &isolated, &ctx));
        self.apply(acts);
    }

    /// The cluster's policy (its `streamshield.*` keys over the coordinator's).
    pub fn cluster_policy(&self) -> Resolved {
        self.flink
            .cluster_policy
            .clone()
            .unwrap_or_else(|| policy::keys::resolve(&[], &self.base))
    }

    /// What the policy looks at: Flink's state and, per TaskManager, the policy of the jobs on it.
    pub fn context(&self) -> Context {
        let jobs = &self.flink.jobs;
        let alive_or_unwatched = |id: &str| {
            self.processes
                .get(id)
                .and_then(|p| p.status.as_ref())
                .is_none_or(|s| s.liveness == Liveness::Alive)
        };
        let flink = FlinkState {
            all_running: self.flink.reachable
                && !jobs.is_empty()
                && jobs.iter().all(JobView::fully_running),
            last_running_ms: jobs
                .iter()
                .filter_map(|j| j.timestamps.get("RUNNING").copied())
                .max()
                .unwrap_or(0),
            checkpointed_ms: jobs
                .iter()
                .filter_map(|j| j.checkpoints.as_ref().and_then(|c| c.latest_completed_ms))
                .min()
                .unwrap_or(i64::MAX),
            spare_slots: self
                .flink
                .taskmanagers
                .iter()
                .filter(|t| alive_or_unwatched(&t.id))
                .map(|t| t.free_slots)
                .sum(),
        };
        let cluster = self.cluster_policy();
        let mut ids: BTreeSet<String> = self
            .flink
            .taskmanagers
            .iter()
            .map(|t| t.id.clone())
            .collect();
        ids.extend(
            self.processes
                .values()
                .filter(|p| p.status.as_ref().is_some_and(|s| s.watches == Role::Tm))
                .map(|p| p.resource_id.clone()),
        );
        let tms = ids
            .into_iter()
            .map(|id| {
                let on: Vec<(String, String, &Resolved)> = jobs
                    .iter()
                    .filter(|j| {
                        j.taskmanagers.contains(&id) && !crate::flink::is_terminal(&j.state)
                    })
                    .filter_map(|j| Some((j.id.clone(), j.name.clone(), j.policy.as_ref()?)))
                    .collect();
                let used = self
                    .flink
                    .taskmanagers
                    .iter()
                    .find(|t| t.id == id)
                    .map_or(0, |t| t.slots - t.free_slots);
                let restartable = self
                    .processes
                    .get(&id)
                    .and_then(|p| p.status.as_ref())
                    .is_some_and(|s| s.restartable);
                let tm = TmContext {
                    policy: TmPolicy::of_jobs(&on, &cluster),
                    used_slots: used,
                    restartable,
                    stopping: self.stopping.contains(&id),
                };
                (id, tm)
            })
            .collect();
        Context {
            flink,
            tms,
            default: Some(TmContext {
                policy: TmPolicy::of_cluster(&cluster),
                used_slots: 0,
                restartable: false,
                stopping: false,
            }),
        }
    }

    /// The TaskManagers Flink lists, with how long their agent and Flink have not heard of them.
    fn silences(&self, now: i64) -> Vec<policy::TmSilence> {
        self.flink
            .taskmanagers
            .iter()
            .filter_map(|tm| {
                let p = self.processes.get(&tm.id)?;
                Some(policy::TmSilence {
                    resource_id: tm.id.clone(),
                    agent_silent_ms: (!p.connected).then_some(now - p.last_seen_ms),
                    flink_silent_ms: if tm.last_heartbeat_ms > 0 {
                        now - tm.last_heartbeat_ms
                    } else {
                        0
                    },
                    dead: p
                        .status
                        .as_ref()
                        .is_some_and(|s| s.liveness == Liveness::Dead),
                    rpc_address: tm.rpc_address.clone(),
                    ports: p
                        .status
                        .as_ref()
                        .map(|s| s.ports.clone())
                        .unwrap_or_default(),
                    agent_last_seen_ms: p.last_seen_ms,
                })
            })
            .collect()
    }

    pub fn record(
        &mut self,
        source: &str,
        resource_id: Option<&str>,
        kind: &str,
        source_ts_ms: i64,
        detail: serde_json::Value,
    ) -> u64 {
        self.next_event += 1;
        if self.events.len() >= EVENT_LOG {
            self.events.pop_front();
        }
        *self.events_by_source.entry(source.to_string()).or_default() += 1;
        self.events.push_back(Event {
            id: self.next_event,
            ts_ms: now_ms(),
            source_ts_ms,
            source: source.into(),
            resource_id: resource_id.filter(|r| !r.is_empty()).map(str::to_string),
            kind: kind.into(),
            detail,
        });
        self.next_event
    }

    /// An agent completed its handshake; returns the connection's id (an agent that reconnects replaces its older
    /// connection, whose end is then no longer news).
    pub fn agent_connected(&mut self, agent_id: &str, peer: &str) -> u64 {
        let now = now_ms();
        self.next_connection += 1;
        let conn = self.next_connection;
        let view = self
            .agents
            .entry(agent_id.to_string())
            .or_insert_with(|| AgentView {
                id: agent_id.to_string(),
                connected: false,
                peer: String::new(),
                connected_since_ms: now,
                last_seen_ms: now,
                processes: Vec::new(),
                watchdogs: BTreeMap::new(),
                connection: 0,
            });
        view.connected = true;
        view.connection = conn;
        view.peer = peer.to_string();
        view.connected_since_ms = now;
        view.last_seen_ms = now;
        let processes = view.processes.clone();
        for rid in &processes {
            self.process_back(rid, peer, now);
        }
        self.record(
            "coordinator",
            None,
            "agent-connected",
            now,
            serde_json::json!({"agent": agent_id, "peer": peer, "processes": processes}),
        );
        conn
    }

    /// A process's agent is connected again (or reports it for the first time).
    fn process_back(&mut self, rid: &str, peer: &str, now: i64) {
        if let Some(p) = self.processes.get_mut(rid) {
            if !p.connected {
                p.connected = true;
                p.connected_since_ms = now;
            }
            p.peer = peer.to_string();
            p.last_seen_ms = now;
        }
        if self.open.get(rid) == Some(&Trigger::AgentLost) {
            self.open.remove(rid);
        }
        if let Some(addr) = self.isolated.remove(rid) {
            // Back: the JobManager's agent stops rejecting it.
            if self.failover_for(rid) {
                self.next_decision += 1;
                let cmd = self.command(
                    "jobmanager",
                    crate::protocol::Action::Unisolate,
                    format!("{rid}'s agent is back"),
                );
                let cmd = AgentCommand {
                    address: Some(addr),
                    ..cmd
                };
                self.outbox
                    .entry("jobmanager".into())
                    .or_default()
                    .push(cmd);
            }
        }
    }

    /// Whether the policy acts for TaskManager `rid` now.
    fn failover_for(&self, rid: &str) -> bool {
        self.context().tm(rid).policy.failover
    }

    /// Connection `conn` of agent `agent_id` ended: every process it watches has lost its agent.
    pub fn agent_disconnected(&mut self, agent_id: &str, conn: u64, reason: &str) {
        let now = now_ms();
        let processes = match self.agents.get_mut(agent_id) {
            Some(v) if v.connection == conn => {
                v.connected = false;
                v.processes.clone()
            }
            _ => return,
        };
        self.record(
            "coordinator",
            None,
            "agent-lost",
            now,
            serde_json::json!({"agent": agent_id, "reason": reason, "processes": processes}),
        );
        for rid in processes {
            let Some(p) = self.processes.get_mut(&rid).filter(|p| p.agent == agent_id) else {
                continue;
            };
            p.connected = false;
            let last = p.status.clone();
            // A process already known dead explains its agent's silence.
            if last.as_ref().is_some_and(|s| s.liveness == Liveness::Dead) {
                continue;
            }
            let flink_tm = self
                .flink
                .taskmanagers
                .iter()
                .find(|t| t.id == rid)
                .cloned();
            let evidence = vec![
                Evidence {
                    ts_ms: now,
                    signal: "agent connection closed".into(),
                    detail: serde_json::json!({"agent": agent_id, "reason": reason}),
                },
                Evidence {
                    ts_ms: now,
                    signal: "last agent status".into(),
                    detail: serde_json::to_value(&last).unwrap_or_default(),
                },
                Evidence {
                    ts_ms: now,
                    signal: "flink taskmanager view".into(),
                    detail: serde_json::to_value(&flink_tm).unwrap_or_default(),
                },
            ];
            self.note(
                Trigger::AgentLost,
                &rid,
                evidence,
                format!(
                    "{rid} may be partitioned: if Flink stops hearing from it too, isolate it through the JobManager's agent"
                ),
            );
        }
    }

    /// A status line from agent `agent_id` about one of its processes.
    pub fn agent_status(&mut self, agent_id: &str, status: AgentStatus) {
        let now = now_ms();
        let rid = status.resource_id.clone();
        let peer = self
            .agents
            .get(agent_id)
            .map(|a| a.peer.clone())
            .unwrap_or_default();
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.last_seen_ms = now;
            if !a.processes.contains(&rid) {
                a.processes.push(rid.clone());
            }
        }
        let known = self
            .processes
            .get(&rid)
            .is_some_and(|p| p.agent == agent_id && p.connected);
        if !known {
            self.processes.insert(
                rid.clone(),
                ProcessView {
                    resource_id: rid.clone(),
                    agent: agent_id.to_string(),
                    connected: true,
                    peer: peer.clone(),
                    connected_since_ms: now,
                    last_seen_ms: now,
                    status: None,
                },
            );
            self.process_back(&rid, &peer, now);
        }
        let ctx = self.context();
        let acts = self.engine.observe(
            &rid,
            status.watches == Role::Tm,
            status.liveness,
            status.since_ms,
            status.pid,
            now,
            &ctx,
        );
        if status.liveness == Liveness::Alive {
            self.open.remove(&rid);
        }
        if let Some(p) = self.processes.get_mut(&rid) {
            p.last_seen_ms = now;
            if p.status.as_ref().is_some_and(|s| s.pid != status.pid)
                && status.liveness == Liveness::Alive
            {
                self.stopping.remove(&rid);
            }
            p.status = Some(status);
        }
        self.apply(acts);
    }

    /// An event from agent `agent_id`; liveness transitions may open an incident.
    pub fn agent_event(&mut self, agent_id: &str, ev: AgentEvent) {
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.last_seen_ms = now_ms();
        }
        if let Some(p) = self.processes.get_mut(&ev.resource_id) {
            p.last_seen_ms = now_ms();
        }
        let mut detail = ev.detail.clone();
        if let Some(o) = detail.as_object_mut() {
            o.insert("agent".into(), agent_id.into());
        }
        self.record(
            "agent",
            Some(&ev.resource_id),
            ev.kind.as_str(),
            ev.ts_ms,
            detail,
        );
        match ev.kind {
            EventKind::Command => {
                let id = ev.detail.get("id").and_then(|v| v.as_u64());
                if let Some(d) = self.decisions.iter_mut().find(|d| Some(d.id) == id) {
                    d.outcome = Some(ev.detail.clone());
                }
            }
            EventKind::PlannedStop => self.planned_stop(&ev),
            EventKind::ProcessForgotten
                if self
                    .processes
                    .get(&ev.resource_id)
                    .is_some_and(|p| p.agent == agent_id) =>
            {
                self.processes.remove(&ev.resource_id);
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.processes.retain(|r| *r != ev.resource_id);
                }
            }
            EventKind::Liveness => {
                if let Some(change) = ev.detail_as::<LivenessChange>() {
                    self.liveness_event(&ev, change);
                }
            }
            EventKind::Watchdog => {
                if let (Some(change), Some(a)) = (
                    ev.detail_as::<crate::protocol::watchdog::WatchdogChange>(),
                    self.agents.get_mut(agent_id),
                ) {
                    a.watchdogs.insert(change.target.clone(), change);
                }
            }
            _ => {}
        }
    }

    fn liveness_event(&mut self, ev: &AgentEvent, change: LivenessChange) {
        let rid = ev.resource_id.clone();
        let to = change.to;
        if to.is_trouble() {
            self.last_trouble_ms = now_ms();
        }
        // The event is newer than the last periodic status: let the status show it at once.
        if let Some(st) = self.processes.get_mut(&rid).and_then(|p| p.status.as_mut()) {
            st.liveness = to;
        }
        let role = self
            .processes
            .get(&rid)
            .and_then(|p| p.status.as_ref())
            .map_or(Role::Tm, |s| s.watches);
        // Since when the state holds: the agent says (a silence began at the last heartbeat, noticed ~300 ms
        // later); an older agent's event has only its own time.
        let since = change
            .since_ms
            .filter(|s| *s <= ev.ts_ms)
            .unwrap_or(ev.ts_ms);
        let ctx = self.context();
        let acts = self.engine.observe(
            &rid,
            role == Role::Tm,
            to,
            since,
            change.pid,
            now_ms(),
            &ctx,
        );
        self.apply(acts);
        if to == Liveness::Alive {
            self.open.remove(&rid);
            return;
        }
        if role == Role::Jm && to == Liveness::Dead {
            let evidence = vec![Evidence {
                ts_ms: ev.ts_ms,
                signal: format!("agent liveness {to}"),
                detail: ev.detail.clone(),
            }];
            self.note(
                Trigger::JmDead,
                &rid,
                evidence,
                "the JobManager died: StreamShield does not restart JobManagers; Flink's high availability (a standby JobManager) takes over".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests;
