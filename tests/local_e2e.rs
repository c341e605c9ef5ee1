//! End to end on the real thing: `streamshield local up` with real Flink and Kafka, the generator for ~30 s, the
//! verifier (exactly-once: nothing lost, nothing duplicated), `local down`, and no process of the run left behind —
//! also when an assertion fails (the guard below takes the cluster down on unwind).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{streamshield, wait_no_process_naming, Cluster, BIN};

/// Keeps this test's cluster off the default ports, so a developer's own `local up` can run beside it.
const PORT_OFFSET: &str = "20000";

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn local_cluster_runs_the_workload_exactly_once_and_goes_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    let cluster = Cluster(dir.clone());

    let start = Instant::now();
    let up = streamshield(&["local", "up", "--dir", d, "--port-offset", PORT_OFFSET]);
    assert!(up.status.success(), "local up failed");
    eprintln!("local up took {:.1} s", start.elapsed().as_secs_f64());

    // Up twice: says so, changes nothing.
    let again = streamshield(&["local", "up", "--dir", d, "--port-offset", PORT_OFFSET]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already up"));

    let status = json(&streamshield(&["local", "status", "--json", "--dir", d]));
    assert_eq!(status["up"], true);
    assert_eq!(status["flink"]["version"], "1.20.5");
    assert_eq!(status["kafka"]["bootstrap"], "127.0.0.1:29092");
    assert_eq!(status["kafka"]["alive"], true);
    let tms = status["taskmanagers"].as_array().unwrap();
    assert_eq!(tms.len(), 3, "2 active + 1 standby");
    let roles: Vec<&str> = tms.iter().map(|t| t["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "active").count(),
        2,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == "standby").count(),
        1,
        "{roles:?}"
    );
    assert!(tms
        .iter()
        .all(|t| t["alive"] == true && t["registered"] == true && t["pid"].as_i64().unwrap() > 0));
    let jobs = status["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["state"], "RUNNING");
    assert!(!jobs[0]["id"].as_str().unwrap().is_empty());

    let logs = streamshield(&["local", "logs", "jobmanager", "--dir", d, "--tail", "5"]);
    assert!(logs.status.success());
    let bad = streamshield(&["local", "logs", "nope", "--dir", d]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("tm-1"),
        "names the known components"
    );

    // ~30 s of load, verified record by record.
    let producer = std::thread::spawn({
        let d = d.to_string();
        move || {
            streamshield(&[
                "workload",
                "produce",
                "--dir",
                &d,
                "--rate",
                "1000",
                "--keys",
                "50",
                "--duration",
                "30s",
                "--run",
                "e2e",
                "--json",
            ])
        }
    });
    let verify = streamshield(&[
        "workload", "verify", "--dir", d, "--run", "e2e", "--follow", "31s", "--settle", "45s",
        "--json", "--check",
    ]);
    let produced = json(&producer.join().unwrap());
    assert!(produced["acked"].as_u64().unwrap() >= 25_000, "{produced}");
    assert_eq!(produced["failed"], 0);
    let report = json(&verify);
    assert_eq!(
        report["records_in"], produced["acked"],
        "the verifier saw every acknowledged record on the input"
    );
    assert_eq!(report["records_lost"], 0, "{report}");
    assert_eq!(report["records_duplicated"], 0, "{report}");
    assert_eq!(report["state_errors"], 0, "{report}");
    assert_eq!(report["records_out"], produced["acked"]);
    assert_eq!(report["complete"], true);
    assert!(verify.status.success(), "--check passes on a clean run");

    // Down: every process of the run is gone.
    let down = streamshield(&["local", "down", "--dir", d]);
    assert!(down.status.success());
    assert!(
        wait_no_process_naming(&dir, Duration::from_secs(10)),
        "processes of the run remain"
    );
    let down_again = streamshield(&["local", "down", "--dir", d]);
    assert!(down_again.status.success());
    assert!(String::from_utf8_lossy(&down_again.stdout).contains("nothing is up"));

    // A job that cannot run: `up` fails with Flink's own reason, not a hang, and stops what it started.
    let failed = streamshield(&[
        "local",
        "up",
        "--dir",
        d,
        "--port-offset",
        PORT_OFFSET,
        "--standby",
        "0",
        "--job-arg=--delivery",
        "--job-arg=bogus",
    ]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("the job did not reach RUNNING"), "{err}");
    assert!(
        err.contains("--delivery must be exactly-once or at-least-once, got bogus"),
        "{err}"
    );
    assert!(
        wait_no_process_naming(&dir, Duration::from_secs(10)),
        "a failed up leaves nothing running"
    );
    drop(cluster);
}

/// A cached distribution that was damaged on disk is noticed and fetched again (here: the Kafka jars, in a cache
/// directory of the test's own).
#[tokio::test]
async fn damaged_cache_is_detected_and_refetched() {
    let cache = tempfile::tempdir().unwrap();
    let dir = streamshield::local::dist::ensure_kafka(cache.path())
        .await
        .expect("first fetch");
    let jar = std::fs::read_dir(dir.join("libs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("kafka-clients")
        })
        .expect("kafka-clients jar");
    let good = std::fs::metadata(&jar).unwrap().len();
    // Truncate it, as an interrupted copy would.
    let f = std::fs::OpenOptions::new().write(true).open(&jar).unwrap();
    f.set_len(good / 2).unwrap();
    drop(f);
    let again = streamshield::local::dist::ensure_kafka(cache.path())
        .await
        .expect("refetch");
    assert_eq!(again, dir);
    assert_eq!(
        std::fs::metadata(&jar).unwrap().len(),
        good,
        "restored to its full size"
    );
}

/// Java missing: `up` says what to install and starts nothing.
#[test]
fn missing_java_is_named_with_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = Command::new(BIN)
        .args(["local", "up", "--port-offset", "21000", "--dir"])
        .arg(&dir)
        .env("PATH", tmp.path()) // an empty directory: no java, no mvn
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("java is needed"), "{err}");
    assert!(err.contains("openjdk-17"), "says what to install: {err}");
    assert!(streamshield::local::processes_naming(&dir).is_empty());
}
