//! The drill on the real local cluster: the quick drill (one tm-kill round per arm, what CI runs) and an
//! interrupted drill that must leave nothing behind.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{wait_no_process_naming, BIN};
use serde_json::Value;

/// The tests share ports; they run one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn quick_drill_measures_every_arm_and_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let work = tmp.path().join("work");
    let out = Command::new(BIN)
        .args(["drill", "--quick", "--json", "--port-offset", "18000"])
        .arg("--report")
        .arg(&report)
        .arg("--work-dir")
        .arg(&work)
        .stderr(Stdio::inherit())
        .output()
        .expect("run the drill");
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "drill printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(rep, on_disk, "stdout and report.json agree");
    assert!(out.status.success(), "every round recovered: {rep:#}");
    assert_eq!(rep["schema"], "streamshield.drill/v1");
    assert_eq!(rep["scenario"], "tm-kill");
    assert!(rep["flink_version"].as_str().unwrap().starts_with("1.20."));
    assert!(rep["machine"]["cores"].as_u64().unwrap() >= 1);
    let arms = rep["arms"].as_array().unwrap();
    let names: Vec<&str> = arms.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["stock", "tuned", "shield"]);
    for a in arms {
        let rounds = a["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 1, "{}", a["name"]);
        let r = &rounds[0];
        assert_eq!(r["ok"], true, "{r:#}");
        let gap = r["gap_ms"].as_u64().unwrap();
        let running = r["running_ms"].as_u64().unwrap();
        let detect = r["detect_ms"].as_u64().unwrap();
        // A kill -9 stops output and makes Flink redeploy: none of these can be zero, and the first sign of the
        // fault comes before output resumes.
        assert!(gap > 0 && running > 0, "{r:#}");
        assert!(detect <= gap, "{r:#}");
        assert!(r["catchup_ms"].as_u64().unwrap() >= gap, "{r:#}");
        assert!(r["restarts"].as_u64().unwrap() >= 1, "{r:#}");
        assert_eq!(r["records_lost"], 0, "{r:#}");
        assert_eq!(r["records_duplicated"], 0, "exactly-once: {r:#}");
        // The restart restored a checkpoint, which the JobManager's log names: duplicates are attributed to it.
        assert_eq!(r["duplicates_before_checkpoint"], 0, "{r:#}");
        assert!(
            r["phases"]["restored_checkpoint_ms"].as_i64().unwrap() < 0,
            "a checkpoint from before the kill: {r:#}"
        );
        assert_eq!(r["state_errors"], 0, "{r:#}");
        assert!(
            r["timeline"].as_array().unwrap().len() >= 20,
            "the raw series is kept"
        );
        assert_eq!(
            a["summary"]["gap_ms"]["median"].as_f64().unwrap(),
            gap as f64
        );
        assert_eq!(a["summary"]["failed_rounds"], 0);
    }
    let shield = &arms[2];
    assert_eq!(shield["profile"]["streamshield"], true);
    let tuned = &arms[1];
    assert_eq!(tuned["profile"]["flink"]["heartbeat.timeout"], "8 s");
    assert!(
        rep["ratios"]["stock_over_shield"]["gap_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        rep["ratios"]["tuned_over_shield"]["gap_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("| stock / shield |"), "{md}");
    let svg = std::fs::read_to_string(report.join("timeline.svg")).unwrap();
    // Per arm: an output line and latency dots.
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() >= 3);
    assert!(svg.matches("<circle").count() >= 3, "latency dots");
    assert!(wait_no_process_naming(&work, Duration::from_secs(30)));
    assert!(!work.exists(), "the drill removes its work dir");
}

#[test]
fn an_interrupted_drill_continues_the_stopped_taskmanager_and_stops_everything() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let work = tmp.path().join("work");
    let mut child = Command::new(BIN)
        .args([
            "drill",
            "--scenario",
            "tm-hang",
            "--arms",
            "stock",
            "--rounds",
            "1",
            "--port-offset",
            "18000",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--work-dir")
        .arg(&work)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let start = Instant::now();
    let mut injected = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        eprintln!("{line}");
        if line.contains("+  2.") {
            injected = true;
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(240), "no injection");
    }
    assert!(injected, "the drill got to the fault");
    // The target TaskManager is SIGSTOPped now. Ctrl-C.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    eprintln!("{}", rest.join("\n"));
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "an interrupted drill does not report success"
    );
    assert!(
        wait_no_process_naming(&work, Duration::from_secs(60)),
        "everything the drill started is stopped, the stopped TaskManager included"
    );
    let rep: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let r = &rep["arms"][0]["rounds"][0];
    assert_eq!(r["ok"], false);
    assert_eq!(r["failure"], "interrupted", "{r:#}");
}
