//! StreamShield attached to a standalone Flink cluster it did not start (tests/common/standalone.rs): a
//! distribution unpacked into a temp dir and started with its own scripts, `streamshield install` on it, one agent
//! and the coordinator from the configuration files install wrote, and jobs StreamShield does not ship (SQL
//! pipelines run by a user's SQL runner, tests/standalone/SqlRunner.java, submitted with Flink's own `bin/flink run`). On Flink 1.20: install's bad inputs, dry run and idempotence;
//! two jobs with different policies (failover from the cluster's key, observe-only from the job's own global job
//! parameter); `kill -9` of a TaskManager of each: the failover job's TaskManager is restarted in place by the
//! agent (same resource id, the scripts' pid file updated) and the job runs again, the observe-only job's kill is
//! recorded with what would have been done; a TaskManager started later with `bin/taskmanager.sh start` is
//! attached by the same agent. On Flink 2.3: plugin linked, kill detected, decision logged, job running again.
//! Everything is stopped with Flink's own stop scripts and checked gone; the harness kills what is left on failure.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::standalone::{wait_for, Standalone};

/// One cluster at a time: two are more than a 2-core machine runs without timing out.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a well-informed operator sets without StreamShield (the drills' `tuned` profile).
const TUNED: [(&str, &str); 4] = [
    ("heartbeat.interval", "1 s"),
    ("heartbeat.timeout", "8 s"),
    ("restart-strategy.type", "exponential-delay"),
    (
        "restart-strategy.exponential-delay.initial-backoff",
        "100 ms",
    ),
];

/// A keyed aggregation over generated payments, written to a blackhole: a job StreamShield does not ship.
fn sql(name: &str, parallelism: u32, job_keys: &str) -> String {
    let mut s = format!(
        "SET 'pipeline.name' = '{name}';\n\
         SET 'parallelism.default' = '{parallelism}';\n"
    );
    if !job_keys.is_empty() {
        s.push_str(&format!(
            "SET 'pipeline.global-job-parameters' = '{job_keys}';\n"
        ));
    }
    s.push_str(
        "CREATE TEMPORARY TABLE payments (account INT, amount DOUBLE) WITH (\n\
           'connector' = 'datagen', 'rows-per-second' = '2000',\n\
           'fields.account.min' = '1', 'fields.account.max' = '5000');\n\
         CREATE TEMPORARY TABLE totals (account INT, total DOUBLE, n BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO totals SELECT account, SUM(amount), COUNT(*) FROM payments GROUP BY account;\n",
    );
    s
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until the agent reports `n` linked processes (JobManager and TaskManagers) with their plugins connected.
fn wait_linked(c: &Standalone, n: usize) -> Value {
    wait_for(
        Duration::from_secs(60),
        &format!("{n} linked processes"),
        || {
            let st = c.status();
            let linked = st["processes"]
                .as_array()?
                .iter()
                .filter(|p| p["status"]["plugin_connected"] == true)
                .count();
            (linked == n).then_some(st)
        },
    )
}

/// The newest decision about `rid` made after `after_ms`.
fn decision_about(c: &Standalone, rid: &str, after_ms: i64) -> Option<Value> {
    let st = c.status();
    st["decisions"]
        .as_array()?
        .iter()
        .find(|d| d["resource_id"] == rid && d["ts_ms"].as_i64().unwrap_or(0) >= after_ms)
        .cloned()
}

fn now_ms() -> i64 {
    streamshield::host::clock::now_ms()
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn attached_to_a_standalone_flink_1_20() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Standalone::new("1.20.5", &TUNED);
    let config = c.config_file();
    let original = std::fs::read(&config).unwrap();

    // Bad input: not a Flink home, a configuration that does not parse. Exit 64, nothing changed.
    let o = common::streamshield(&["install", "--flink-home", c.root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("not a Flink home") || text(&o).contains("no lib/"));
    std::fs::write(&config, "jobmanager.rpc.port: [6123\n").unwrap();
    let o = c.install(&[]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("cannot be parsed"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "jobmanager.rpc.port: [6123\n"
    );
    assert!(!c.home.join("plugins/streamshield").exists());
    std::fs::write(&config, &original).unwrap();

    // A dry run prints the diff and changes nothing.
    let o = c.install(&["--failover", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("+metrics.reporter.streamshield.factory.class")
            && out.contains("dry run: nothing was changed"),
        "{out}"
    );
    assert_eq!(std::fs::read(&config).unwrap(), original);
    assert!(!c.home.join("plugins/streamshield").exists());

    // Install, then again: the second changes nothing.
    let o = c.install(&["--failover"]);
    assert!(o.status.success(), "{}", text(&o));
    let installed = std::fs::read(&config).unwrap();
    assert!(c
        .home
        .join("plugins/streamshield/streamshield-flink-plugin.jar")
        .is_file());
    let o = c.install(&["--failover"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("already has StreamShield's keys"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(&config).unwrap(),
        installed,
        "install is idempotent"
    );
    for (k, _) in TUNED {
        assert!(
            String::from_utf8_lossy(&installed).contains(&format!("\n{k}: ")),
            "the user's {k} is kept"
        );
    }

    c.start_streamshield();
    c.start_flink(3);
    let st = wait_linked(&c, 4);
    assert_eq!(
        st["agents"].as_array().unwrap().len(),
        1,
        "one agent per host"
    );
    let tm_rids: Vec<String> = st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"]["watches"] == "tm")
        .map(|p| p["resource_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tm_rids.len(), 3, "{st}");
    for p in st["processes"].as_array().unwrap() {
        assert_eq!(p["status"]["restartable"], true, "{p}");
    }

    // Two jobs: payments follows the cluster's policy (failover, from install --failover); reports sets its own.
    let payments = c.submit_sql("payments", &sql("payments", 2, ""));
    let reports = c.submit_sql("reports", &sql("reports", 1, "streamshield.failover:false"));
    let pay_tms = c.job_taskmanagers(&payments);
    let rep_tms = c.job_taskmanagers(&reports);
    assert_eq!(pay_tms.len(), 2, "{pay_tms:?}");
    assert_eq!(rep_tms.len(), 1, "{rep_tms:?}");
    // The coordinator knows both jobs' policies before any failure.
    wait_for(Duration::from_secs(30), "both jobs' policies", || {
        let st = c.status();
        let jobs = st["flink"]["jobs"].as_array()?.len();
        (jobs == 2).then_some(())
    });

    // kill -9 of a payments TaskManager: no free slot, so the agent starts it again in place.
    let victim = pay_tms[0].clone();
    let old_pid = c.pid_of(&victim).expect("the victim's pid");
    assert!(
        c.tm_pid_file().contains(&old_pid),
        "the scripts' pid file lists it"
    );
    let t0 = now_ms();
    kill9(old_pid);
    let d = wait_for(Duration::from_secs(30), "the decision on the kill", || {
        decision_about(&c, &victim, t0).filter(|d| d["outcome"].is_object())
    });
    eprintln!("decision: {d:#}");
    assert_eq!(d["mode"], "acted", "{d}");
    assert_eq!(d["trigger"], "tm-dead", "{d}");
    assert_eq!(d["policy"]["failover"], true, "{d}");
    assert!(
        d["command"].as_str().unwrap_or("").contains("restart"),
        "{d}"
    );
    assert_eq!(
        d["outcome"]["outcome"], "done",
        "the agent restarted it: {d}"
    );
    let running_at = c.wait_running_since(&payments, t0, Duration::from_secs(60));
    eprintln!(
        "payments running again {} ms after the kill",
        running_at - t0
    );
    let new_pid = wait_for(Duration::from_secs(30), "the restarted TaskManager", || {
        c.pid_of(&victim).filter(|p| *p != old_pid)
    });
    let pids = c.tm_pid_file();
    assert!(
        pids.contains(&new_pid) && !pids.contains(&old_pid),
        "the pid file follows the restart: {pids:?}, new {new_pid}"
    );
    assert!(
        c.job_taskmanagers(&payments).contains(&victim),
        "the TaskManager came back with its resource id"
    );

    // kill -9 of the reports TaskManager: observe-only, recorded with what would have been done.
    let victim2 = rep_tms[0].clone();
    let pid2 = c.pid_of(&victim2).unwrap();
    let t1 = now_ms();
    kill9(pid2);
    let d2 = wait_for(Duration::from_secs(30), "the observe-only decision", || {
        decision_about(&c, &victim2, t1)
    });
    eprintln!("decision: {d2:#}");
    assert_eq!(d2["mode"], "observe-only", "{d2}");
    assert_eq!(d2["policy"]["failover"], false, "{d2}");
    let basis = d2["policy"]["basis"].as_str().unwrap_or("");
    assert!(
        d2["policy"]["jobs"].to_string().contains("reports"),
        "the decision names the job whose policy it used: {d2}"
    );
    assert!(!basis.is_empty(), "{d2}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.pid_of(&victim2), Some(pid2), "nothing restarted it");
    // The operator starts a TaskManager with Flink's script: the same agent attaches it, reports runs again.
    assert!(c.script("taskmanager.sh", &["start"]).status.success());
    c.wait_running_since(&reports, t1, Duration::from_secs(90));
    wait_for(
        Duration::from_secs(30),
        "the new TaskManager linked",
        || {
            let st = c.status();
            st["processes"]
                .as_array()?
                .iter()
                .any(|p| {
                    p["status"]["watches"] == "tm"
                        && p["status"]["plugin_connected"] == true
                        && !tm_rids.contains(&p["resource_id"].as_str().unwrap_or("").to_string())
                })
                .then_some(())
        },
    );

    // The decision log shows both policies applied.
    let st = c.status();
    let modes: Vec<&str> = st["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["ts_ms"].as_i64().unwrap_or(0) >= t0)
        .filter_map(|d| d["mode"].as_str())
        .collect();
    assert!(
        modes.contains(&"acted") && modes.contains(&"observe-only"),
        "{modes:?}"
    );

    // Uninstall restores the user's file exactly.
    let start = Instant::now();
    c.stop_and_check();
    eprintln!("stopped in {:?}", start.elapsed());
    let o = common::streamshield(&["uninstall", "--flink-home", c.home.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&config).unwrap(), original);
    assert!(!c.home.join("plugins/streamshield").exists());
}

#[test]
fn attached_to_a_standalone_flink_2() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Standalone::new("2.3.0", &TUNED);
    let o = c.install(&["--failover"]);
    assert!(o.status.success(), "{}", text(&o));
    c.start_streamshield();
    c.start_flink(2);
    wait_linked(&c, 3);
    let job = c.submit_sql("payments", &sql("payments", 2, ""));
    let tms = c.job_taskmanagers(&job);
    let victim = tms[0].clone();
    let pid = c.pid_of(&victim).unwrap();
    let t0 = now_ms();
    kill9(pid);
    let d = wait_for(Duration::from_secs(30), "the decision on the kill", || {
        decision_about(&c, &victim, t0).filter(|d| d["outcome"].is_object())
    });
    eprintln!("decision: {d:#}");
    assert_eq!(d["mode"], "acted", "{d}");
    let at = c.wait_running_since(&job, t0, Duration::from_secs(60));
    eprintln!("job running again {} ms after the kill", at - t0);
    c.stop_and_check();
}
