//! End to end with the shield profile on real Flink: the plugin inside the JobManager and every TaskManager links
//! to its agent, Flink's metrics flow out through the agents, the metric pages pass `promtool check metrics`, and a
//! `kill -9` of an active TaskManager is reported dead by its agent within 500 ms and turned into an (observe-only)
//! decision by the coordinator. Everything is taken down at the end, also when an assertion fails.

use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{promtool_check, streamshield, wait_no_process_naming, Cluster};

fn get(url: &str, token: Option<&str>) -> String {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().and_then(|r| r.text()).unwrap_or_default()
}

#[test]
fn shield_profile_links_plugins_agents_and_coordinator_and_reports_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    let _cluster = Cluster(dir.clone());
    let up = streamshield(&[
        "local",
        "up",
        "--dir",
        d,
        "--profile",
        "shield",
        "--port-offset",
        "22000",
    ]);
    assert!(up.status.success(), "local up --profile shield failed");

    let status: Value =
        serde_json::from_slice(&streamshield(&["local", "status", "--json", "--dir", d]).stdout)
            .unwrap();
    let agents = status["agents"].as_array().unwrap();
    let mut names: Vec<&str> = agents
        .iter()
        .map(|a| a["resource_id"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["jobmanager", "tm-1", "tm-2", "tm-3"]);
    for a in agents {
        assert_eq!(a["alive"], true, "{a}");
        assert_eq!(a["plugin_connected"], true, "{a}");
        assert_eq!(a["liveness"], "alive", "{a}");
    }
    assert_eq!(status["coordinator"]["alive"], true);
    let api = status["coordinator"]["api"].as_str().unwrap().to_string();
    let token =
        std::fs::read_to_string(status["coordinator"]["api_token_file"].as_str().unwrap()).unwrap();
    let agent_url = |rid: &str| {
        agents.iter().find(|a| a["resource_id"] == rid).unwrap()["metrics_url"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The live table from the coordinator: every TaskManager with a connected agent.
    let table = streamshield(&["status", "--dir", d]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    for tm in ["tm-1", "tm-2", "tm-3"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(tm))
            .unwrap_or_else(|| panic!("{tm} missing:\n{text}"));
        assert!(
            line.contains(&format!("agent-{tm}"))
                && line.contains("alive")
                && !line.contains("LOST"),
            "{line}"
        );
    }

    // Flink's metrics flow through the agents (the reporter sends every second).
    let start = Instant::now();
    let (tm_page, jm_page) = loop {
        let tm = get(&agent_url("tm-1"), None);
        let jm = get(&agent_url("jobmanager"), None);
        if tm.contains("streamshield_flink_num_records_in{")
            && jm.contains("streamshield_flink_num_restarts{")
        {
            break (tm, jm);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no forwarded Flink metrics:\n{tm}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    promtool_check(&tm_page, "tm-1 agent's /metrics");
    promtool_check(&jm_page, "jobmanager agent's /metrics");
    promtool_check(
        &get(&format!("{api}/metrics"), Some(token.trim())),
        "coordinator's /metrics",
    );

    // kill -9 of an active TaskManager: its agent says dead within 500 ms.
    let tm1 = status["taskmanagers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resource_id"] == "tm-1")
        .unwrap()
        .clone();
    assert_eq!(tm1["role"], "active");
    let health = agent_url("tm-1").replace("/metrics", "/healthz");
    // The TaskManager's agent watches the run's Kafka and ZooKeeper (local writes the targets a user would).
    let h: Value = serde_json::from_str(&get(&health, None)).unwrap();
    for target in ["kafka", "zookeeper"] {
        let w = h["watchdogs"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["target"] == target))
            .unwrap_or_else(|| panic!("no {target} watchdog in {h}"));
        assert_eq!(w["state"], "healthy", "{w}");
    }
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tm1["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let detected = loop {
        let h: Value = serde_json::from_str(&get(&health, None)).unwrap_or(Value::Null);
        if h["processes"][0]["liveness"] == "dead" {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "agent never reported tm-1 dead: {h}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!(
        "tm-1 reported dead {} ms after kill -9",
        detected.as_millis()
    );
    assert!(
        detected < Duration::from_millis(500),
        "dead after {detected:?}"
    );

    // Once the job runs again and has completed a checkpoint since (at the latest 30 s after the death), the
    // coordinator orders tm-1's agent to start it again in place (same resource id), with its evidence and its
    // fencing token.
    let decision = loop {
        let v: Value =
            serde_json::from_str(&get(&format!("{api}/v1/decisions"), Some(token.trim())))
                .unwrap_or(Value::Null);
        if let Some(d) = v
            .as_array()
            .and_then(|a| a.iter().find(|d| d["resource_id"] == "tm-1"))
        {
            break d.clone();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(35),
            "no decision for tm-1: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(decision["trigger"], "tm-dead");
    assert_eq!(decision["mode"], "acted");
    assert_eq!(decision["command"], "restart");
    assert_eq!(decision["fencing_token"], 1);
    assert!(!decision["evidence"].as_array().unwrap().is_empty());
    let decided_ms = decision["ts_ms"].as_i64().unwrap();

    // The agent started tm-1 again; it registers with Flink under its old resource id and its plugin links up.
    let start = Instant::now();
    loop {
        let v: Value =
            serde_json::from_str(&get(&format!("{api}/v1/decisions"), Some(token.trim())))
                .unwrap_or(Value::Null);
        let d = v
            .as_array()
            .and_then(|a| a.iter().find(|d| d["id"] == decision["id"]))
            .cloned()
            .unwrap_or(Value::Null);
        let h: Value = serde_json::from_str(&get(&health, None)).unwrap_or(Value::Null);
        let tms: Value = serde_json::from_str(&get(
            &format!("{}/taskmanagers", status["flink"]["rest"].as_str().unwrap()),
            None,
        ))
        .unwrap_or(Value::Null);
        let registered = tms["taskmanagers"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t["id"] == "tm-1"));
        if d["outcome"]["outcome"] == "done"
            && h["processes"][0]["liveness"] == "alive"
            && registered
        {
            assert!(
                d["outcome"]["detail"]
                    .as_str()
                    .unwrap()
                    .contains("started tm-1 again"),
                "{d}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "tm-1 not back: decision {d}, agent {h}, flink {tms}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "tm-1 restarted in place and registered {} ms after the decision",
        streamshield::host::clock::now_ms() - decided_ms
    );
    // The coordinator saw the job run again and timed it by Flink's clock.
    let start = Instant::now();
    loop {
        let m = get(&format!("{api}/metrics"), Some(token.trim()));
        if m.lines().any(|l| {
            l.starts_with("streamshield_failover_recovery_seconds_count") && !l.ends_with(" 0")
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no recovery observed:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The JobManager's failure enricher and the trace reporters report through their agents too: the failure the
    // kill causes, and Flink's spans (checkpoints every second), arrive in the coordinator's event log.
    let start = Instant::now();
    loop {
        let v: Value = serde_json::from_str(&get(
            &format!("{api}/v1/events?limit=2000"),
            Some(token.trim()),
        ))
        .unwrap_or(Value::Null);
        let events = v.as_array().cloned().unwrap_or_default();
        let failure = events
            .iter()
            .any(|e| e["kind"] == "failure" && e["resource_id"] == "jobmanager");
        let span = events.iter().any(|e| e["kind"] == "span");
        if failure && span {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "failure {failure}, span {span} in {} events",
            events.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let down = streamshield(&["local", "down", "--dir", d]);
    assert!(down.status.success());
    assert!(
        wait_no_process_naming(&dir, Duration::from_secs(10)),
        "processes of the run remain"
    );
}
