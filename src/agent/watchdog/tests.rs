use super::*;

fn cfg() -> WatchdogSettings {
    WatchdogSettings {
        targets: Vec::new(),
        interval: Duration::from_millis(500),
        timeout: Duration::from_secs(1),
        down_after: 2,
        up_after: 3,
        slow: Duration::from_millis(300),
    }
}

fn target() -> Target {
    "cache=redis://127.0.0.1:6379".parse().unwrap()
}

fn obs(state: TargetState) -> Observation {
    Observation::new(state, format!("probe said {state}"), Vec::new())
}

const FAST: Duration = Duration::from_millis(2);

#[test]
fn failures_go_degraded_then_down_and_back_only_after_good_probes_in_a_row() {
    let c = cfg();
    let mut s = Status::new(&target(), 0);
    assert_eq!(
        s.observe(obs(TargetState::Healthy), FAST, &c, 1),
        Some((TargetState::Unknown, TargetState::Healthy))
    );
    assert_eq!(
        s.observe(obs(TargetState::Down), FAST, &c, 2),
        Some((TargetState::Healthy, TargetState::Degraded))
    );
    assert!(
        s.evidence.starts_with("1 of 2 failed probes"),
        "{}",
        s.evidence
    );
    assert_eq!(
        s.observe(obs(TargetState::Down), FAST, &c, 3),
        Some((TargetState::Degraded, TargetState::Down))
    );
    assert_eq!(s.since_ms, 3);
    // Two good probes are not enough; a failure in between starts the count again.
    assert_eq!(s.observe(obs(TargetState::Healthy), FAST, &c, 4), None);
    assert!(
        s.evidence.starts_with("recovering: 1 of 3"),
        "{}",
        s.evidence
    );
    assert_eq!(s.observe(obs(TargetState::Healthy), FAST, &c, 5), None);
    assert_eq!(s.observe(obs(TargetState::Down), FAST, &c, 6), None);
    assert_eq!(s.state, TargetState::Down);
    for t in 7..9 {
        assert_eq!(s.observe(obs(TargetState::Healthy), FAST, &c, t), None);
    }
    assert_eq!(
        s.observe(obs(TargetState::Healthy), FAST, &c, 9),
        Some((TargetState::Down, TargetState::Healthy))
    );
    assert_eq!(s.evidence, "probe said healthy");
    assert_eq!(s.probes, [6, 0, 3]);
    assert_eq!(s.transitions.values().sum::<u64>(), 4);
}

#[test]
fn a_slow_answer_is_degraded_and_says_how_slow() {
    let c = cfg();
    let mut s = Status::new(&target(), 0);
    s.observe(obs(TargetState::Healthy), FAST, &c, 1);
    assert_eq!(
        s.observe(obs(TargetState::Healthy), Duration::from_millis(450), &c, 2),
        Some((TargetState::Healthy, TargetState::Degraded))
    );
    assert!(
        s.evidence.contains("450 ms, over watchdog-slow 300 ms"),
        "{}",
        s.evidence
    );
}

#[test]
fn a_degraded_probe_does_not_count_towards_down() {
    let c = cfg();
    let mut s = Status::new(&target(), 0);
    s.observe(obs(TargetState::Down), FAST, &c, 1);
    s.observe(obs(TargetState::Degraded), FAST, &c, 2);
    assert_eq!(
        s.observe(obs(TargetState::Down), FAST, &c, 3),
        None,
        "the run of failures began again"
    );
    assert_eq!(s.state, TargetState::Degraded);
}

#[test]
fn metrics_name_every_state_and_member() {
    let c = cfg();
    let mut statuses = std::collections::BTreeMap::new();
    let mut s = Status::new(&target(), 0);
    let mut o = obs(TargetState::Healthy);
    o.members.push(Member {
        name: "127.0.0.1:6379".into(),
        up: true,
        evidence: "PONG".into(),
    });
    s.observe(o, FAST, &c, 1);
    statuses.insert(s.target.clone(), s);
    let h = crate::metrics::LabelledHistogram::new(
        "streamshield_watchdog_probe_seconds",
        "Probe time.",
        &["target"],
        &[0.01, 0.1],
    );
    h.observe(&["cache"], 0.002);
    let mut t = crate::metrics::Text::new();
    render(&statuses, &h, 1_000, &mut t);
    let page = t.finish();
    assert!(
        page.contains(
            r#"streamshield_watchdog_state{kind="redis",state="healthy",target="cache"} 1"#
        ),
        "{page}"
    );
    assert!(
        page.contains(r#"streamshield_watchdog_state{kind="redis",state="down",target="cache"} 0"#)
    );
    assert!(page
        .contains(r#"streamshield_watchdog_member_up{member="127.0.0.1:6379",target="cache"} 1"#));
    assert!(page.contains(
        r#"streamshield_watchdog_transitions_total{from="unknown",target="cache",to="healthy"} 1"#
    ));
    assert!(page.contains(r#"streamshield_watchdog_probe_seconds_count{target="cache"} 1"#));
    assert!(!page.contains("# left out"), "{page}");
}
