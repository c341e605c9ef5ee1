use super::*;
use crate::coordinator::policy::{keys, PolicyConfig, Source};
use crate::protocol::{Action, StopOutcome};

pub(super) fn status(rid: &str, liveness: Liveness, watches: Role) -> AgentStatus {
    AgentStatus {
        resource_id: rid.into(),
        watches,
        pid: Some(1),
        liveness,
        since_ms: 0,
        last_heartbeat_ms: None,
        plugin_connected: true,
        metrics_url: String::new(),
        ts_ms: 0,
        ports: vec![],
        restartable: true,
    }
}

fn liveness(rid: &str, to: Liveness) -> AgentEvent {
    AgentEvent::new(
        now_ms(),
        rid,
        EventKind::Liveness,
        LivenessChange {
            from: Liveness::Alive,
            to,
            pid: Some(1),
            since_ms: None,
            reason: None,
        },
    )
}

pub(super) fn tm(id: &str, slots: i64, free: i64) -> TaskManagerView {
    TaskManagerView {
        id: id.into(),
        slots,
        free_slots: free,
        last_heartbeat_ms: 100,
        rpc_address: None,
    }
}

pub(super) fn acting() -> PolicyConfig {
    PolicyConfig {
        failover: true,
        ..PolicyConfig::default()
    }
}

pub(super) fn job(id: &str, on: &[&str], settings: &[(&str, &str)]) -> JobView {
    JobView {
        id: id.into(),
        name: format!("job-{id}"),
        state: "RUNNING".into(),
        vertices_running: 1,
        vertices: 1,
        timestamps: Default::default(),
        last_exception_ms: 0,
        checkpoints: None,
        taskmanagers: on.iter().map(|s| s.to_string()).collect(),
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        policy: None,
    }
}

/// One agent per process, as `local` and sidecars run them.
fn connect(m: &mut Model, rid: &str, role: Role, live: Liveness) -> u64 {
    let agent = format!("agent-{rid}");
    let c = m.agent_connected(&agent, "peer");
    m.agent_status(&agent, status(rid, live, role));
    c
}

#[test]
fn an_observe_only_crash_is_recorded_with_what_would_be_done() {
    let mut m = Model::new("http://x", PolicyConfig::default(), 1);
    for id in ["tm-1", "tm-2", "tm-3"] {
        connect(&mut m, id, Role::Tm, Liveness::Alive);
    }
    m.flink_polled(Ok((
        vec![],
        vec![tm("tm-1", 2, 2), tm("tm-2", 2, 0), tm("tm-3", 2, 2)],
        vec![],
    )));
    m.agent_event("agent-tm-1", liveness("tm-1", Liveness::Dead));
    // Flink never recovers (nothing runs): the would-be restart comes when the pool cannot wait any longer; with no
    // job at all, after 5 s of everything "running". Force the clock instead: the policy's refill-max-wait is 30 s.
    assert!(
        m.decisions.is_empty(),
        "nothing to say before the policy would act"
    );
    assert!(m.queued_for("tm-1").is_empty());
    // A hang of an observe-only TaskManager: the would-be fence at the tolerance, never ordered.
    let mut ev = liveness("tm-2", Liveness::Hung);
    ev.detail["since_ms"] = serde_json::json!(now_ms() - 2_000);
    ev.ts_ms = now_ms();
    m.agent_event("agent-tm-2", ev);
    let d = m.decisions.back().unwrap();
    assert_eq!((d.trigger, d.mode), (Trigger::TmHung, Mode::ObserveOnly));
    assert!(d.action.starts_with("would fence"), "{}", d.action);
    assert!(d
        .policy
        .as_ref()
        .unwrap()
        .basis
        .contains("no job runs on it"));
    assert!(
        m.queued_for("tm-2").is_empty(),
        "observe-only orders nothing"
    );
    assert_eq!(m.decisions_total[&(Trigger::TmHung, Mode::ObserveOnly)], 1);
}

/// The hang tolerance counts from the last heartbeat the agent names (`since_ms`), not from when the silence
/// was noticed and reported (~300 ms later).
#[test]
fn the_hang_tolerance_counts_from_the_last_heartbeat() {
    let paused = |since_ago: i64| {
        AgentEvent::new(
            now_ms(),
            "tm-1",
            EventKind::Liveness,
            LivenessChange {
                from: Liveness::Alive,
                to: Liveness::Paused,
                pid: Some(7),
                since_ms: Some(now_ms() - since_ago),
                reason: None,
            },
        )
    };
    let fences = |m: &mut Model| {
        m.take_commands("agent-tm-1")
            .iter()
            .filter(|c| c.action == Action::Fence)
            .count()
    };
    let mut m = Model::new("http://x", acting(), 3);
    connect(&mut m, "tm-1", Role::Tm, Liveness::Alive);
    m.agent_event("agent-tm-1", paused(1_100));
    m.tick();
    assert_eq!(fences(&mut m), 1);
    let mut m = Model::new("http://x", acting(), 3);
    connect(&mut m, "tm-1", Role::Tm, Liveness::Alive);
    m.agent_event("agent-tm-1", paused(300));
    m.tick();
    assert_eq!(fences(&mut m), 0);
    std::thread::sleep(std::time::Duration::from_millis(750));
    m.tick();
    assert_eq!(fences(&mut m), 1);
    m.tick();
    assert_eq!(fences(&mut m), 0, "one fence per incident");
    let mut m = Model::new("http://x", acting(), 3);
    connect(&mut m, "tm-1", Role::Tm, Liveness::Alive);
    let mut ev = paused(0);
    ev.detail = serde_json::json!({"from": "alive", "to": "paused", "pid": 7});
    ev.ts_ms = now_ms() - 1_100;
    m.agent_event("agent-tm-1", ev);
    m.tick();
    assert_eq!(fences(&mut m), 1);
}

#[test]
fn per_job_policies_decide_per_taskmanager_and_name_themselves() {
    // The cluster says failover; job b opts out in its own configuration.
    let mut m = Model::new("http://x", PolicyConfig::default(), 9);
    m.cluster_config_polled([("streamshield.failover".to_string(), "true".to_string())].into());
    for id in ["tm-1", "tm-2"] {
        connect(&mut m, id, Role::Tm, Liveness::Alive);
    }
    let jobs = vec![
        job("a", &["tm-1"], &[]),
        job("b", &["tm-2"], &[("streamshield.failover", "false")]),
    ];
    m.flink_polled(Ok((jobs, vec![tm("tm-1", 1, 0), tm("tm-2", 1, 0)], vec![])));
    let a = &m.flink.jobs[0].policy.as_ref().unwrap();
    assert!(a.config.failover);
    assert_eq!(a.failover_source(), Source::Cluster);
    let b = &m.flink.jobs[1].policy.as_ref().unwrap();
    assert!(!b.config.failover);
    assert_eq!(b.failover_source(), Source::Job);
    assert_eq!(
        m.events.iter().filter(|e| e.kind == "job-policy").count(),
        2
    );
    for rid in ["tm-1", "tm-2"] {
        let mut ev = liveness(rid, Liveness::Paused);
        ev.detail["since_ms"] = serde_json::json!(now_ms() - 5_000);
        ev.ts_ms = now_ms();
        m.agent_event(&format!("agent-{rid}"), ev);
    }
    let d1 = m
        .decisions
        .iter()
        .find(|d| d.resource_id == "tm-1")
        .unwrap();
    assert_eq!(d1.mode, Mode::Acted);
    assert!(
        d1.policy.as_ref().unwrap().basis.contains("job-a"),
        "{:?}",
        d1.policy
    );
    assert_eq!(d1.fencing_token, Some(9));
    let d2 = m
        .decisions
        .iter()
        .find(|d| d.resource_id == "tm-2")
        .unwrap();
    assert_eq!(d2.mode, Mode::ObserveOnly);
    assert!(
        d2.policy.as_ref().unwrap().basis.contains("job-b"),
        "{:?}",
        d2.policy
    );
    assert_eq!(m.take_commands("agent-tm-1").len(), 1);
    assert!(m.take_commands("agent-tm-2").is_empty());
}

#[test]
fn a_bad_key_in_a_job_is_ignored_and_said() {
    let mut m = Model::new("http://x", acting(), 1);
    let jobs = vec![job("a", &[], &[("streamshield.hang-tolerance", "soon")])];
    m.flink_polled(Ok((jobs, vec![], vec![])));
    let p = m.flink.jobs[0].policy.as_ref().unwrap();
    assert_eq!(
        p.config.hang_tolerance,
        PolicyConfig::default().hang_tolerance
    );
    let ev = m.events.iter().find(|e| e.kind == "job-policy").unwrap();
    assert!(ev.detail["problems"][0]["problem"]
        .as_str()
        .unwrap()
        .contains("not a duration"));
}

#[test]
fn one_agent_watching_several_processes_gets_their_orders() {
    let mut m = Model::new("http://x", acting(), 2);
    m.agent_connected("host-a", "peer");
    m.agent_status("host-a", status("tm-1", Liveness::Alive, Role::Tm));
    m.agent_status("host-a", status("tm-2", Liveness::Alive, Role::Tm));
    assert_eq!(m.agents["host-a"].processes, vec!["tm-1", "tm-2"]);
    let mut ev = liveness("tm-2", Liveness::Hung);
    ev.detail["since_ms"] = serde_json::json!(now_ms() - 5_000);
    ev.ts_ms = now_ms();
    m.agent_event("host-a", ev);
    let cmds = m.take_commands("host-a");
    assert_eq!(cmds.len(), 1);
    assert_eq!(
        (cmds[0].action, cmds[0].resource_id.as_str()),
        (Action::Fence, "tm-2")
    );
    assert!(m.take_commands("host-b").is_empty());
}

#[test]
fn a_planned_stop_checkpoints_running_jobs_only_when_their_policy_acts() {
    let stopping = |rid: &str| {
        AgentEvent::new(
            now_ms(),
            rid,
            EventKind::PlannedStop,
            serde_json::json!({"pid": 9, "signal": "SIGTERM", "max_wait_ms": 10_000}),
        )
    };
    let running =
        |m: &mut Model| m.flink_polled(Ok((vec![job("j1", &["tm-1"], &[])], vec![], vec![])));
    let mut m = Model::new("http://x", PolicyConfig::default(), 1);
    connect(&mut m, "tm-1", Role::Tm, Liveness::Alive);
    running(&mut m);
    m.agent_event("agent-tm-1", stopping("tm-1"));
    assert!(m.take_stop_requests().is_empty());
    let cmds = m.take_commands("agent-tm-1");
    assert_eq!(cmds.len(), 1);
    assert_eq!(
        (cmds[0].action, cmds[0].outcome),
        (Action::StopReady, Some(StopOutcome::Skipped))
    );
    assert_eq!(m.decisions.back().unwrap().mode, Mode::ObserveOnly);
    let mut m = Model::new("http://x", acting(), 3);
    connect(&mut m, "tm-1", Role::Tm, Liveness::Alive);
    running(&mut m);
    m.agent_event("agent-tm-1", stopping("tm-1"));
    let reqs = m.take_stop_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].jobs, vec!["j1".to_string()]);
    assert!(reqs[0].deadline_ms <= now_ms() + 10_000 - decide::STOP_RELEASE_MARGIN_MS);
    assert!(
        m.take_commands("agent-tm-1").is_empty(),
        "held until the checkpoint is done"
    );
    m.stop_checkpointed(
        &reqs[0],
        StopOutcome::Checkpointed,
        serde_json::json!({"jobs": {"j1": {"checkpoint": 5}}}),
    );
    let cmds = m.take_commands("agent-tm-1");
    assert_eq!(cmds.len(), 1);
    assert_eq!(
        (cmds[0].action, cmds[0].outcome, cmds[0].epoch),
        (Action::StopReady, Some(StopOutcome::Checkpointed), 3)
    );
    let d = m
        .decisions
        .iter()
        .find(|d| d.trigger == Trigger::TmStopping)
        .unwrap();
    assert_eq!(d.outcome.as_ref().unwrap()["outcome"], "checkpointed");
    // Its exit after the stop is no crash: no restart.
    let mut dead = liveness("tm-1", Liveness::Dead);
    dead.ts_ms = now_ms() - 60_000;
    m.agent_event("agent-tm-1", dead);
    m.tick();
    assert!(
        m.take_commands("agent-tm-1").is_empty(),
        "a planned stop is not undone"
    );
}

#[test]
fn jobmanager_death_and_lost_agents() {
    let mut m = Model::new("http://x", PolicyConfig::default(), 1);
    connect(&mut m, "jobmanager", Role::Jm, Liveness::Alive);
    m.agent_event("agent-jobmanager", liveness("jobmanager", Liveness::Dead));
    assert_eq!(m.decisions.back().unwrap().trigger, Trigger::JmDead);

    let old = m.agent_connected("agent-tm-2", "p");
    let new = m.agent_connected("agent-tm-2", "p");
    m.agent_status("agent-tm-2", status("tm-2", Liveness::Alive, Role::Tm));
    m.agent_disconnected("agent-tm-2", old, "eof");
    assert!(
        m.processes["tm-2"].connected,
        "the end of a replaced connection is not news"
    );
    m.agent_disconnected("agent-tm-2", new, "eof");
    assert_eq!(m.decisions.back().unwrap().trigger, Trigger::AgentLost);
    assert!(!m.processes["tm-2"].connected);

    let c4 = connect(&mut m, "tm-4", Role::Tm, Liveness::Dead);
    let n = m.decisions.len();
    m.agent_disconnected("agent-tm-4", c4, "eof");
    assert_eq!(
        m.decisions.len(),
        n,
        "an agent whose process died first is not a partition"
    );
}

#[test]
fn flink_reachability_and_job_state_changes_are_events() {
    let mut m = Model::new("http://x", PolicyConfig::default(), 1);
    m.flink_polled(Err("connection refused".into()));
    m.flink_polled(Err("connection refused".into()));
    assert_eq!(
        m.events
            .iter()
            .filter(|e| e.kind == "rest-unreachable")
            .count(),
        1
    );
    let mut j = job("j", &[], &[]);
    j.vertices_running = 0;
    m.flink_polled(Ok((vec![j.clone()], vec![], vec![])));
    j.state = "RESTARTING".into();
    m.flink_polled(Ok((vec![j], vec![], vec![])));
    let kinds: Vec<&str> = m
        .events
        .iter()
        .map(|e| e.kind.as_str())
        .filter(|k| *k != "job-policy")
        .collect();
    assert_eq!(
        kinds,
        vec![
            "rest-unreachable",
            "rest-reachable",
            "job-state",
            "job-state"
        ]
    );
    assert!(m.flink.reachable);
    assert_eq!((m.flink.polls_ok, m.flink.polls_failed), (2, 2));
}

#[test]
fn the_event_log_is_bounded() {
    let mut m = Model::new("x", PolicyConfig::default(), 1);
    for i in 0..(EVENT_LOG + 10) {
        m.record("agent", None, "span", i as i64, serde_json::Value::Null);
    }
    assert_eq!(m.events.len(), EVENT_LOG);
    assert_eq!(m.events.front().unwrap().id, 11);
}

#[test]
fn a_partitioned_taskmanager_is_isolated_once_and_only_when_both_signals_agree() {
    let mut m = Model::new("http://x", acting(), 7);
    let jm = connect(&mut m, "jobmanager", Role::Jm, Liveness::Alive);
    let c1 = connect(&mut m, "tm-1", Role::Tm, Liveness::Alive);
    let now = now_ms();
    let mut view = tm("tm-1", 2, 0);
    view.last_heartbeat_ms = now;
    view.rpc_address = Some("127.0.0.1:35393".into());
    m.flink.taskmanagers = vec![view];
    m.agent_disconnected("agent-tm-1", c1, "no status for 2s");
    m.processes.get_mut("tm-1").unwrap().last_seen_ms = now - 3_000;
    m.tick();
    assert!(m.take_commands("agent-jobmanager").is_empty());
    m.flink.taskmanagers[0].last_heartbeat_ms = now - 3_000;
    m.tick();
    let cmds = m.take_commands("agent-jobmanager");
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].action, Action::Isolate);
    assert_eq!(cmds[0].epoch, 7);
    assert_eq!(cmds[0].address.as_deref(), Some("127.0.0.1:35393"));
    let d = m.decisions.back().unwrap();
    assert_eq!(
        (d.trigger, d.resource_id.as_str()),
        (Trigger::TmPartitioned, "tm-1")
    );
    m.tick();
    assert!(m.take_commands("agent-jobmanager").is_empty(), "once");
    m.agent_connected("agent-tm-1", "p");
    let cmds = m.take_commands("agent-jobmanager");
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].action, Action::Unisolate);
    m.agent_disconnected("agent-jobmanager", jm, "eof");
    let c = m.agents["agent-tm-1"].connection;
    m.agent_disconnected("agent-tm-1", c, "eof");
    m.processes.get_mut("tm-1").unwrap().last_seen_ms = now - 3_000;
    m.tick();
    assert!(
        m.take_commands("agent-jobmanager").is_empty(),
        "without the JobManager's agent nothing is ordered"
    );
    let _ = keys::KEYS.len();
}

#[test]
fn an_agents_watchdog_states_are_kept_per_target() {
    use crate::protocol::watchdog::{TargetKind, TargetState, WatchdogChange};
    let mut m = Model::new("http://x", PolicyConfig::default(), 1);
    m.agent_connected("host-a", "peer");
    let change = |target: &str, from, to| {
        AgentEvent::new(
            now_ms(),
            "",
            EventKind::Watchdog,
            WatchdogChange {
                target: target.into(),
                kind: TargetKind::Redis,
                from,
                to,
                evidence: format!("{target} said so"),
                members: Vec::new(),
                since_ms: 5,
            },
        )
    };
    m.agent_event(
        "host-a",
        change("cache", TargetState::Unknown, TargetState::Healthy),
    );
    m.agent_event(
        "host-a",
        change("cache", TargetState::Healthy, TargetState::Down),
    );
    m.agent_event(
        "host-a",
        change("api", TargetState::Unknown, TargetState::Healthy),
    );
    let w = &m.agents["host-a"].watchdogs;
    assert_eq!(w.len(), 2);
    assert_eq!(w["cache"].to, TargetState::Down);
    assert_eq!(w["cache"].evidence, "cache said so");
    assert!(
        m.events.iter().any(|e| e.kind == "watchdog"),
        "recorded as an event too"
    );
}
