//! Benchmark (ignored by default; `cargo test --release --test attach_bench -- --ignored --nocapture`): StreamShield
//! attached to a standalone Flink 1.20 cluster it did not start (tests/common/standalone.rs), against the same
//! cluster without it, in the same run. Each round starts a fresh cluster of one JobManager and three TaskManagers
//! (one slot each) with Flink's own scripts and the drills' `tuned` settings, once per arm:
//!
//! - **tuned**: no StreamShield part;
//! - **shield**: the same, plus `streamshield install --failover` with its defaults (`--tuning add`: it adds
//!   `heartbeat.rpc-failure-threshold: 1` and keeps the user's `heartbeat.interval: 1 s`), one agent and the
//!   coordinator from the files install wrote.
//!
//! In each round and arm, three measurements:
//!
//! 1. **steady state**: a user's SQL job (datagen at full speed → keyed SUM/COUNT → blackhole, parallelism 2) for
//!    `STEADY` after `WARMUP`: records/s out of its source (Flink's `numRecordsOut`, summed over subtasks), and the
//!    agent's and coordinator's RSS and CPU over the same window (from /proc);
//! 2. **kill -9** of a TaskManager running the rate-limited job (2,000 records/s, parallelism 2, one spare slot);
//! 3. **SIGSTOP** of one (a hung JVM), resumed after the round (tuned) or already fenced (shield).
//!
//! For 2 and 3: "running again" is the time from the fault until every subtask of the job has reached RUNNING in an
//! attempt after the fault (Flink's own per-subtask state timestamps), and "failure seen" when Flink's exception
//! history first records a failure after the fault. Every raw measurement is one JSON line in
//! `$STREAMSHIELD_BENCH_OUT` (default `target/attach-bench.jsonl`); the summary (medians, ranges) is printed.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::standalone::{wait_for, Standalone};

const TUNED: [(&str, &str); 4] = [
    ("heartbeat.interval", "1 s"),
    ("heartbeat.timeout", "8 s"),
    ("restart-strategy.type", "exponential-delay"),
    (
        "restart-strategy.exponential-delay.initial-backoff",
        "100 ms",
    ),
];
/// Flink's own Prometheus reporter (its plugins/metrics-prometheus), in both arms: the throughput is read from
/// every TaskManager's page. Flink's REST metrics are not used for it: they come through the JobManager's metric
/// fetcher from each TaskManager's metric query service, whose thread runs at the lowest priority and fell behind on
/// the saturated 2-core machine (in a first run one 30 s window read no change at all).
const PROM_PORTS: (u16, u16) = (19300, 19340);
const WARMUP: Duration = Duration::from_secs(15);
const STEADY: Duration = Duration::from_secs(30);
const BEFORE_FAULT: Duration = Duration::from_secs(15);

fn rounds() -> usize {
    std::env::var("STREAMSHIELD_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
}

/// `STREAMSHIELD_BENCH_FAULTS=0`: the steady-state measurement only.
fn faults() -> bool {
    std::env::var("STREAMSHIELD_BENCH_FAULTS").map_or(true, |v| v != "0")
}

fn job_sql(name: &str, rows_per_second: u64) -> String {
    format!(
        "SET 'pipeline.name' = '{name}';\n\
         SET 'parallelism.default' = '2';\n\
         CREATE TEMPORARY TABLE payments (account INT, amount DOUBLE) WITH (\n\
           'connector' = 'datagen', 'rows-per-second' = '{rows_per_second}',\n\
           'fields.account.min' = '1', 'fields.account.max' = '5000');\n\
         CREATE TEMPORARY TABLE totals (account INT, total DOUBLE, n BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO totals SELECT account, SUM(amount), COUNT(*) FROM payments GROUP BY account;\n"
    )
}

fn now_ms() -> i64 {
    streamshield::host::clock::now_ms()
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// Records out of the job's first operator so far, summed over every TaskManager's Prometheus page: per operator
/// name, the sum of `numRecordsOut`; the largest is the source's (the aggregation emits at most one update per
/// input, the blackhole sink nothing). None until some page shows the job's operators.
fn source_records(http: &reqwest::blocking::Client) -> Option<f64> {
    let mut per_operator: std::collections::BTreeMap<String, f64> = Default::default();
    for port in PROM_PORTS.0..=PROM_PORTS.1 {
        let Ok(r) = http.get(format!("http://127.0.0.1:{port}/metrics")).send() else {
            continue;
        };
        let Ok(text) = r.text() else { continue };
        for line in text.lines() {
            let Some(rest) =
                line.strip_prefix("flink_taskmanager_job_task_operator_numRecordsOut{")
            else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let op = labels
                .split("operator_name=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string();
            if let Ok(v) = value.trim().parse::<f64>() {
                *per_operator.entry(op).or_default() += v;
            }
        }
    }
    per_operator.values().copied().reduce(f64::max)
}

/// (RSS bytes, CPU ticks) of `pid`.
fn footprint(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    (rss_kb * 1024, ticks)
}

const TICKS_PER_SECOND: f64 = 100.0;

/// Every subtask of `job` runs in an attempt that reached RUNNING at or after `since_ms` (Flink's own per-subtask
/// state timestamps, `/vertices/<id>/subtasktimes`): the latest such time.
fn restarted_since(c: &Standalone, job: &str, since_ms: i64) -> Option<i64> {
    let j = c.rest_get(&format!("/jobs/{job}"))?;
    if j["state"] != "RUNNING" {
        return None;
    }
    let mut latest = 0;
    for v in j["vertices"].as_array()? {
        if v["status"] != "RUNNING" {
            return None;
        }
        let vid = v["id"].as_str()?;
        let times = c.rest_get(&format!("/jobs/{job}/vertices/{vid}/subtasktimes"))?;
        for s in times["subtasks"].as_array()? {
            let running = s["timestamps"]["RUNNING"].as_i64()?;
            if running < since_ms {
                return None;
            }
            latest = latest.max(running);
        }
    }
    Some(latest)
}

/// The first failure Flink recorded for `job` at or after `since_ms` (exception history).
fn failure_seen(c: &Standalone, job: &str, since_ms: i64) -> Option<i64> {
    let e = c.rest_get(&format!("/jobs/{job}/exceptions?maxExceptions=20"))?;
    e["exceptionHistory"]["entries"]
        .as_array()?
        .iter()
        .filter_map(|x| x["timestamp"].as_i64())
        .filter(|t| *t >= since_ms)
        .min()
}

/// The pid of TaskManager `rid` (from the scripts' processes: its command line names the resource id only when
/// restarted, so the agent's view where there is one, else /proc by its RPC port).
fn tm_pid(c: &Standalone, shield: bool, rid: &str) -> u32 {
    if shield {
        return c.pid_of(rid).expect("the agent knows the TaskManager");
    }
    // A standalone TaskManager's id is <host>:<rpc port>-<suffix>: find the JVM listening on that port.
    let port: u16 = rid
        .split_once(':')
        .and_then(|(_, r)| r.split('-').next())
        .and_then(|p| p.parse().ok())
        .expect("a standalone resource id");
    for (pid, _) in c.processes() {
        let listening = streamshield::host::sockets::tcp_sockets(pid)
            .iter()
            .any(|s| s.local_port == port && s.remote_port == 0);
        if listening {
            return pid as u32;
        }
    }
    panic!("no process listens on {port} for {rid}");
}

struct Arm {
    name: &'static str,
    /// StreamShield installed and its daemons running.
    shield: bool,
    /// Only the daemons: install's keys taken out of Flink's configuration again, so no JVM loads the plugin
    /// (the coordinator still polls Flink's REST API; the agent watches nothing). Steady state only: it isolates
    /// the daemons' share of the cost from the plugin's.
    daemons_only: bool,
}

fn fault_round(
    c: &Standalone,
    arm: &Arm,
    round: usize,
    fault: &str,
    job: &str,
    out: &mut Vec<Value>,
) {
    std::thread::sleep(BEFORE_FAULT);
    let tms = c.job_taskmanagers(job);
    let victim = tms[0].clone();
    let pid = tm_pid(c, arm.shield, &victim);
    let t0 = now_ms();
    match fault {
        "kill" => signal(pid, nix::sys::signal::Signal::SIGKILL),
        _ => signal(pid, nix::sys::signal::Signal::SIGSTOP),
    }
    let started = Instant::now();
    let running = wait_for(Duration::from_secs(120), "the job running again", || {
        restarted_since(c, job, t0)
    });
    let wall = started.elapsed();
    let seen = failure_seen(c, job, t0);
    let row = json!({
        "bench": "attach",
        "arm": arm.name,
        "round": round,
        "scenario": if fault == "kill" { "tm-kill" } else { "tm-hang" },
        "flink": c.version,
        "running_again_ms": running - t0,
        "failure_seen_ms": seen.map(|s| s - t0),
        "polled_ms": wall.as_millis() as u64,
        "victim": victim,
    });
    eprintln!("{row}");
    out.push(row);
    if fault == "stop" {
        // Resume it (tuned: Flink has dropped it and it re-registers or exits; shield: already fenced).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// Back to three TaskManagers with the job fully running: shield restarts in place by itself; tuned has the
/// operator start one with Flink's script (what a user without StreamShield does, or a supervisor).
fn restore(c: &Standalone, arm: &Arm, job: &str) {
    if !arm.shield {
        std::thread::sleep(Duration::from_secs(2));
        let n = c
            .rest_get("/taskmanagers")
            .and_then(|t| t["taskmanagers"].as_array().map(|a| a.len()))
            .unwrap_or(0);
        for _ in n..3 {
            assert!(c.script("taskmanager.sh", &["start"]).status.success());
        }
    }
    c.wait_taskmanagers(3);
    c.wait_running(job, Duration::from_secs(60));
}

fn round(arm: &Arm, round: usize, out: &mut Vec<Value>) {
    let ports = format!("{}-{}", PROM_PORTS.0, PROM_PORTS.1);
    let mut keys = TUNED.to_vec();
    keys.push((
        "metrics.reporter.prom.factory.class",
        "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
    ));
    keys.push(("metrics.reporter.prom.port", &ports));
    let mut c = Standalone::new("1.20.5", &keys);
    if arm.shield || arm.daemons_only {
        let original = std::fs::read(c.config_file()).unwrap();
        let o = c.install(&["--failover"]);
        assert!(o.status.success());
        if arm.daemons_only {
            std::fs::write(c.config_file(), original).unwrap();
        }
        c.start_streamshield();
    }
    c.start_flink(3);

    // Steady state: full-speed job, then cancelled.
    let fast = c.submit_sql("throughput", &job_sql("throughput", 100_000_000));
    std::thread::sleep(WARMUP);
    let daemons: Vec<(String, u32)> = c.daemon_pids();
    let before: Vec<(u64, u64)> = daemons.iter().map(|(_, p)| footprint(*p)).collect();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // The Flink JVMs (every process naming the cluster's dir, less StreamShield's daemons).
    let flink: Vec<u32> = c
        .processes()
        .iter()
        .map(|(p, _)| *p as u32)
        .filter(|p| !daemons.iter().any(|(_, d)| d == p))
        .collect();
    let flink_ticks = |pids: &[u32]| pids.iter().map(|p| footprint(*p).1).sum::<u64>();
    let f0 = flink_ticks(&flink);
    let r0 = wait_for(
        Duration::from_secs(30),
        "the source's numRecordsOut",
        || source_records(&http),
    );
    let t = Instant::now();
    std::thread::sleep(STEADY);
    let r1 = wait_for(
        Duration::from_secs(30),
        "the source's numRecordsOut",
        || source_records(&http),
    );
    let f1 = flink_ticks(&flink);
    let secs = t.elapsed().as_secs_f64();
    let mut row = json!({
        "bench": "attach",
        "arm": arm.name,
        "round": round,
        "scenario": "steady-state",
        "flink": c.version,
        "records_per_second": ((r1 - r0) / secs).round(),
        "records_at_start": r0,
        "records_at_end": r1,
        "flink_cpu_percent": ((f1 - f0) as f64 / TICKS_PER_SECOND / secs * 1000.0).round() / 10.0,
        "window_s": secs,
    });
    for ((name, pid), (_, ticks0)) in daemons.iter().zip(&before) {
        let (rss, ticks1) = footprint(*pid);
        row[format!("{name}_rss_bytes")] = json!(rss);
        row[format!("{name}_cpu_percent")] =
            json!(((ticks1 - ticks0) as f64 / TICKS_PER_SECOND / secs * 1000.0).round() / 10.0);
    }
    eprintln!("{row}");
    out.push(row);
    let o = c.script("flink", &["cancel", &fast]);
    assert!(o.status.success());
    wait_for(
        Duration::from_secs(30),
        "the throughput job cancelled",
        || {
            let j = c.rest_get(&format!("/jobs/{fast}"))?;
            (j["state"] == "CANCELED").then_some(())
        },
    );

    if !faults() || arm.daemons_only {
        c.stop_and_check();
        return;
    }
    // Failures: the rate-limited job on two of the three TaskManagers.
    let job = c.submit_sql("payments", &job_sql("payments", 2000));
    std::thread::sleep(WARMUP);
    fault_round(&c, arm, round, "kill", &job, out);
    restore(&c, arm, &job);
    fault_round(&c, arm, round, "stop", &job, out);
    c.stop_and_check();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[test]
#[ignore = "a benchmark: ~3 min per round and arm; run with --ignored"]
fn attach_benchmark() {
    let all = [
        Arm {
            name: "tuned",
            shield: false,
            daemons_only: false,
        },
        Arm {
            name: "shield",
            shield: true,
            daemons_only: false,
        },
        Arm {
            name: "daemons-only",
            shield: false,
            daemons_only: true,
        },
    ];
    // STREAMSHIELD_BENCH_ARMS=tuned,shield,daemons-only (default: tuned,shield).
    let wanted = std::env::var("STREAMSHIELD_BENCH_ARMS").unwrap_or_else(|_| "tuned,shield".into());
    let arms: Vec<&Arm> = wanted
        .split(',')
        .map(|w| {
            all.iter()
                .find(|a| a.name == w.trim())
                .unwrap_or_else(|| panic!("unknown arm {w:?}: tuned, shield or daemons-only"))
        })
        .collect();
    let mut rows = Vec::new();
    for r in 0..rounds() {
        // Alternate which arm goes first, so that drift of the machine does not favour one.
        let order: Vec<&Arm> = if r % 2 == 0 {
            arms.clone()
        } else {
            arms.iter().rev().copied().collect()
        };
        for arm in order {
            round(arm, r, &mut rows);
        }
    }
    let out = std::env::var("STREAMSHIELD_BENCH_OUT")
        .unwrap_or_else(|_| format!("{}/target/attach-bench.jsonl", env!("CARGO_MANIFEST_DIR")));
    let mut f = std::fs::File::create(&out).unwrap();
    for row in &rows {
        writeln!(f, "{row}").unwrap();
    }
    eprintln!("raw rows: {out}");
    for scenario in ["steady-state", "tm-kill", "tm-hang"] {
        for arm in ["tuned", "shield", "daemons-only"] {
            let field = if scenario == "steady-state" {
                "records_per_second"
            } else {
                "running_again_ms"
            };
            let mut v: Vec<f64> = rows
                .iter()
                .filter(|r| r["scenario"] == scenario && r["arm"] == arm)
                .filter_map(|r| r[field].as_f64())
                .collect();
            if v.is_empty() {
                continue;
            }
            let m = median(&mut v);
            eprintln!(
                "{scenario:13} {arm:7} {field}: median {m:.0}, range {:.0}-{:.0}, n={}",
                v[0],
                v[v.len() - 1],
                v.len()
            );
        }
    }
}
