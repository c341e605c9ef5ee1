use super::*;
use crate::protocol::Liveness::*;

/// Flink with every job running since `since` (ms) and room for anything.
fn running(since: i64) -> FlinkState {
    FlinkState {
        all_running: true,
        last_running_ms: since,
        checkpointed_ms: since,
        spare_slots: 100,
    }
}

const RESTARTING: FlinkState = FlinkState {
    all_running: false,
    last_running_ms: 0,
    checkpointed_ms: 0,
    spare_slots: 100,
};

fn acting() -> TmContext {
    let mut cluster = keys::resolve(&[], &PolicyConfig::default());
    cluster.config.failover = true;
    TmContext {
        policy: TmPolicy::of_cluster(&cluster),
        used_slots: 2,
        restartable: true,
        stopping: false,
    }
}

fn ctx(flink: FlinkState) -> Context {
    Context {
        flink,
        tms: BTreeMap::new(),
        default: Some(acting()),
    }
}

fn with(flink: FlinkState, rid: &str, tm: TmContext) -> Context {
    let mut c = ctx(flink);
    c.tms.insert(rid.into(), tm);
    c
}

fn actions(acts: &[Act]) -> Vec<(Option<Action>, Mode)> {
    acts.iter().map(|a| (a.action, a.mode)).collect()
}

#[test]
fn the_refill_waits_for_a_checkpoint_after_the_recovery() {
    let mut e = Engine::new();
    e.observe("tm-1", true, Dead, 1_000, Some(7), 1_010, &ctx(RESTARTING));
    // Every subtask runs again at 2,400, but its latest checkpoint is from before the crash: still catching up.
    let catching_up = FlinkState {
        checkpointed_ms: 900,
        ..running(2_400)
    };
    assert!(e.tick(2_500, &ctx(catching_up)).is_empty());
    assert!(e.tick(9_000, &ctx(catching_up)).is_empty());
    // A checkpoint completes at 3,100: refill.
    let settled = FlinkState {
        checkpointed_ms: 3_100,
        ..running(2_400)
    };
    assert_eq!(
        actions(&e.tick(9_100, &ctx(settled))),
        vec![(Some(Action::Restart), Mode::Acted)]
    );
    // Never settling: the latest wait (30 s) still refills.
    let mut e = Engine::new();
    e.observe("tm-1", true, Dead, 1_000, Some(7), 1_010, &ctx(RESTARTING));
    assert!(e.tick(30_999, &ctx(catching_up)).is_empty());
    assert_eq!(e.tick(31_000, &ctx(catching_up)).len(), 1);
}

#[test]
fn a_crash_is_restarted_once_after_the_job_runs_again() {
    let mut e = Engine::new();
    assert!(e
        .observe("tm-1", true, Dead, 1_000, Some(7), 1_010, &ctx(running(0)))
        .is_empty());
    assert!(e.tick(1_500, &ctx(RESTARTING)).is_empty());
    let a = e.tick(2_500, &ctx(running(2_400)));
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].action, a[0].trigger),
        (Some(Action::Restart), Trigger::TmDead)
    );
    assert!(
        a[0].reason.contains("its jobs run elsewhere again"),
        "{}",
        a[0].reason
    );
    assert!(e
        .observe(
            "tm-1",
            true,
            Dead,
            1_000,
            Some(7),
            2_600,
            &ctx(running(2_400))
        )
        .is_empty());
    assert!(e.tick(60_000, &ctx(running(2_400))).is_empty());
    assert!(e
        .observe(
            "tm-1",
            true,
            Unknown,
            2_700,
            Some(8),
            2_700,
            &ctx(running(2_400))
        )
        .is_empty());
    assert!(e
        .observe(
            "tm-1",
            true,
            Alive,
            5_000,
            Some(8),
            5_000,
            &ctx(running(2_400))
        )
        .is_empty());
    assert!(e.open().is_empty());
    e.observe("tm-1", true, Dead, 9_000, Some(8), 9_000, &ctx(RESTARTING));
    assert_eq!(e.tick(9_900, &ctx(running(9_800))).len(), 1);
}

#[test]
fn without_room_elsewhere_the_dead_taskmanager_is_restarted_at_once() {
    let mut e = Engine::new();
    let full = FlinkState {
        spare_slots: 1,
        ..RESTARTING
    };
    let a = e.observe("tm-1", true, Dead, 1_000, Some(7), 1_020, &ctx(full));
    assert_eq!(actions(&a), vec![(Some(Action::Restart), Mode::Acted)]);
    assert!(
        a[0].reason
            .contains("2 busy slot(s) do not fit into the 1 free"),
        "{}",
        a[0].reason
    );
    // With room: it waits for the jobs to run elsewhere.
    let mut e = Engine::new();
    let roomy = FlinkState {
        spare_slots: 2,
        ..RESTARTING
    };
    assert!(e
        .observe("tm-1", true, Dead, 1_000, Some(7), 1_020, &ctx(roomy))
        .is_empty());
}

#[test]
fn a_planned_stop_is_not_restarted_and_a_taskmanager_that_cannot_be_is_said() {
    let mut e = Engine::new();
    let stopped = TmContext {
        stopping: true,
        ..acting()
    };
    assert!(e
        .observe(
            "tm-1",
            true,
            Dead,
            1_000,
            Some(7),
            1_020,
            &with(running(0), "tm-1", stopped.clone())
        )
        .is_empty());
    assert!(e
        .tick(100_000, &with(running(0), "tm-1", stopped))
        .is_empty());
    let mut e = Engine::new();
    let fixed = TmContext {
        restartable: false,
        ..acting()
    };
    let a = e.observe(
        "tm-2",
        true,
        Dead,
        1_000,
        Some(7),
        1_020,
        &with(RESTARTING, "tm-2", fixed.clone()),
    );
    assert_eq!(actions(&a), vec![(None, Mode::ObserveOnly)]);
    assert!(
        a[0].reason.contains("cannot start it again"),
        "{}",
        a[0].reason
    );
    assert!(
        e.tick(100_000, &with(RESTARTING, "tm-2", fixed)).is_empty(),
        "said once"
    );
}

#[test]
fn a_dead_standby_is_restarted_after_a_few_seconds_and_a_stuck_recovery_at_the_latest_wait() {
    let mut e = Engine::new();
    e.observe("tm-3", true, Dead, 1_000, Some(3), 1_000, &ctx(running(0)));
    assert!(e.tick(5_999, &ctx(running(0))).is_empty());
    assert_eq!(e.tick(6_000, &ctx(running(0))).len(), 1);
    e.observe(
        "tm-1",
        true,
        Dead,
        10_000,
        Some(1),
        10_000,
        &ctx(RESTARTING),
    );
    assert!(e.tick(39_999, &ctx(RESTARTING)).is_empty());
    assert_eq!(e.tick(40_000, &ctx(RESTARTING)).len(), 1);
}

#[test]
fn a_hang_is_fenced_after_the_tolerance_then_restarted() {
    let mut e = Engine::new();
    assert!(e
        .observe(
            "tm-2",
            true,
            Paused,
            1_000,
            Some(9),
            1_300,
            &ctx(running(0))
        )
        .is_empty());
    assert!(e.tick(1_999, &ctx(running(0))).is_empty(), "999 ms < 1 s");
    let a = e.tick(2_000, &ctx(running(0)));
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].action, a[0].pid, a[0].trigger),
        (Some(Action::Fence), Some(9), Trigger::TmPaused)
    );
    assert!(e.tick(2_100, &ctx(running(0))).is_empty(), "fenced once");
    assert!(e
        .observe("tm-2", true, Dead, 2_050, Some(9), 2_060, &ctx(RESTARTING))
        .is_empty());
    let b = e.tick(5_000, &ctx(running(4_900)));
    assert_eq!(b[0].action, Some(Action::Restart));
    assert!(b[0].reason.contains("(fenced)"));
}

#[test]
fn gc_is_tolerated_longer_than_a_hang_and_a_short_pause_never_acts() {
    let mut e = Engine::new();
    let c = ctx(running(0));
    e.observe("tm-1", true, BusyGc, 0, Some(5), 10, &c);
    assert!(e.tick(15_000, &c).is_empty(), "a 15 s GC is ridden out");
    assert!(e
        .observe("tm-1", true, Alive, 15_100, Some(5), 15_100, &c)
        .is_empty());
    assert!(e.tick(40_000, &c).is_empty());
    e.observe("tm-1", true, BusyGc, 50_000, Some(5), 50_000, &c);
    assert!(e.tick(79_999, &c).is_empty());
    assert_eq!(e.tick(80_000, &c)[0].action, Some(Action::Fence));
    e.observe("tm-3", true, Paused, 100_000, Some(6), 100_000, &c);
    assert!(e.tick(100_500, &c).is_empty());
    e.observe("tm-3", true, Alive, 100_500, Some(6), 100_500, &c);
    assert!(e.tick(200_000, &c).is_empty());
}

#[test]
fn the_jobmanager_is_not_acted_on_and_unknown_opens_nothing() {
    let mut e = Engine::new();
    let c = ctx(running(0));
    assert!(e
        .observe("jobmanager", false, Dead, 0, Some(1), 0, &c)
        .is_empty());
    assert!(e.observe("tm-1", true, Unknown, 0, None, 0, &c).is_empty());
    assert!(e.tick(100_000, &c).is_empty());
    assert_eq!(e.open(), vec![("jobmanager".into(), Dead)]);
}

#[test]
fn an_agent_that_flaps_gets_one_action_per_real_incident() {
    let mut e = Engine::new();
    let c = ctx(running(0));
    for k in 0..20 {
        let t = k * 1_000;
        assert!(e
            .observe("tm-1", true, Paused, t, Some(4), t, &c)
            .is_empty());
        assert!(e.tick(t + 500, &c).is_empty());
        assert!(e
            .observe("tm-1", true, Alive, t + 500, Some(4), t + 500, &c)
            .is_empty());
    }
    let mut acts = 0;
    for t in (30_000..36_000).step_by(200) {
        acts += e
            .observe("tm-1", true, Paused, 30_000, Some(4), t, &c)
            .len();
    }
    assert_eq!(acts, 1);
}

#[test]
fn a_coordinator_restart_rebuilds_incidents_from_status_without_repeating_actions() {
    let mut e = Engine::new();
    let c = ctx(running(0));
    assert!(e
        .observe("tm-2", true, Unknown, 10_000, Some(12), 10_100, &c)
        .is_empty());
    let a = e.observe("tm-1", true, Paused, 2_000, Some(11), 10_100, &c);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].action, Some(Action::Fence));
}

fn job(failover: bool, source: Source) -> Resolved {
    let mut r = keys::resolve(&[], &PolicyConfig::default());
    r.config.failover = failover;
    r.sources.insert("failover".into(), source);
    r
}

#[test]
fn per_job_policies_merge_per_taskmanager_and_observe_only_is_recorded_with_its_timing() {
    let cluster = keys::resolve(&[], &PolicyConfig::default());
    let on = job(true, Source::Job);
    let off = job(false, Source::Job);
    let mixed = TmPolicy::of_jobs(
        &[
            ("a1".into(), "payments".into(), &on),
            ("b2".into(), "reports".into(), &off),
        ],
        &cluster,
    );
    assert!(mixed.failover);
    assert!(
        mixed.basis.contains("failover on for payments")
            && mixed.basis.contains("observe-only for reports"),
        "{}",
        mixed.basis
    );
    let observe = TmPolicy::of_jobs(&[("b2".into(), "reports".into(), &off)], &cluster);
    assert!(!observe.failover);
    assert!(observe.basis.contains("observe-only"), "{}", observe.basis);
    let idle = TmPolicy::of_jobs(&[], &cluster);
    assert!(idle.basis.contains("no job runs on it"), "{}", idle.basis);

    // The observe-only TaskManager: the same moments, recorded, never ordered.
    let tm = TmContext {
        policy: observe,
        used_slots: 1,
        restartable: true,
        stopping: false,
    };
    let mut e = Engine::new();
    let c = with(running(0), "tm-9", tm);
    assert!(e
        .observe("tm-9", true, Hung, 1_000, Some(3), 1_100, &c)
        .is_empty());
    let a = e.tick(2_000, &c);
    assert_eq!(actions(&a), vec![(Some(Action::Fence), Mode::ObserveOnly)]);
    assert!(a[0].policy.basis.contains("reports"));
}

#[test]
fn a_partition_needs_both_silences_and_the_jobmanager_s_agent() {
    let c = ctx(running(0));
    let silent = TmSilence {
        resource_id: "tm-1".into(),
        agent_silent_ms: Some(3_000),
        flink_silent_ms: 3_000,
        dead: false,
        rpc_address: Some("127.0.0.1:35393".into()),
        ports: vec![40001],
        agent_last_seen_ms: 5,
    };
    let none = BTreeSet::new();
    let a = partitions(std::slice::from_ref(&silent), true, &none, &c);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].action, a[0].target.as_deref()),
        (Some(Action::Isolate), Some("jobmanager"))
    );
    assert!(partitions(std::slice::from_ref(&silent), false, &none, &c).is_empty());
    let heard = TmSilence {
        flink_silent_ms: 100,
        ..silent.clone()
    };
    assert!(partitions(&[heard], true, &none, &c).is_empty());
    let connected = TmSilence {
        agent_silent_ms: None,
        ..silent.clone()
    };
    assert!(partitions(&[connected], true, &none, &c).is_empty());
    let dead = TmSilence {
        dead: true,
        ..silent.clone()
    };
    assert!(partitions(&[dead], true, &none, &c).is_empty());
    let once: BTreeSet<String> = ["tm-1".to_string()].into();
    assert!(partitions(&[silent], true, &once, &c).is_empty());
}
