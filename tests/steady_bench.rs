//! Benchmark (ignored by default; `cargo test --release --test steady_bench -- --ignored --nocapture`): the steady
//! cost of StreamShield on the sequence workload — the highest sustained throughput of the job with the `shield`
//! profile against `stock` (and, if asked, `tuned`), in one run, arms alternating, a fresh `streamshield local`
//! cluster per round and arm (2 active TaskManagers x 2 slots + 1 standby, parallelism 4, Kafka 4.1.1 on loopback,
//! at-least-once output, the workload's 1 s checkpoints).
//!
//! "Highest sustained" is the rate at which the job drains a backlog. The job as `local up` submitted it is
//! cancelled (its Kafka source has committed its offsets at its checkpoints), the generator writes for `PRODUCE` as
//! fast as it can with nothing reading, and the same workload is submitted again through Flink's REST API (the jar
//! `local up` uploaded, the same arguments, at-least-once): it resumes from the committed offsets, behind by the
//! whole backlog. (A first version let the generator and the job run together: the job kept up with the generator's
//! ~170,000 records/s on the shared two cores, so it measured the generator; alone, the generator writes ~850,000
//! records/s.) From `SETTLE` after the job runs again, the output rate is read from the output topic's end offsets
//! (Kafka's, neutral to the arms) over `WINDOW`. The window counts only if the job was still behind at its end
//! (input end offsets ahead of output); otherwise it is reported as invalid. Over the same window, the RSS and CPU
//! of every agent and of the coordinator (shield arm), and the CPU of the JobManager, every TaskManager, Kafka and
//! ZooKeeper (if any) are read from /proc: on two shared cores, whatever else runs takes from the TaskManagers.
//!
//! Arms: `stock`, `tuned`, `shield`, and, to find where the shield profile's cost goes, the shield profile with one
//! of its parts taken out (leave one out, see `ARMS`).
//!
//! Environment: `STREAMSHIELD_BENCH_ROUNDS` (3), `STREAMSHIELD_BENCH_ARMS` (`stock,shield`),
//! `STREAMSHIELD_BENCH_OUT` (`target/steady-bench.jsonl`: one JSON line per round and arm).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{json, Value};

mod common;

use common::{streamshield, Cluster};
use streamshield::host::process::Recorded;

const PORT_OFFSET: &str = "21000";
const PRODUCE: Duration = Duration::from_secs(30);
const PRODUCE_RATE: &str = "1000000";
const SETTLE: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(30);
const TICKS_PER_SECOND: f64 = 100.0;

/// One arm: a `local` profile, Flink settings laid over it (`local up --flink-conf`), and whether StreamShield's
/// daemons are killed once the cluster is up.
struct Arm {
    name: &'static str,
    profile: &'static str,
    conf: &'static [&'static str],
    kill_daemons: bool,
}

const fn arm(name: &'static str, profile: &'static str, conf: &'static [&'static str]) -> Arm {
    Arm {
        name,
        profile,
        conf,
        kill_daemons: false,
    }
}

/// The shield profile's Flink keys that are not the plugin's (deploy/local/profiles/shield.yaml): high availability.
const SHIELD_HA: [&str; 4] = [
    "high-availability.type=zookeeper",
    "high-availability.zookeeper.quorum=127.0.0.1:${ZK_PORT}",
    "high-availability.storageDir=file://${RUN_DIR}/flink/ha",
    "streamshield.jobmanager.zookeeper-session-timeout=4 s",
];
/// ... detection ...
const SHIELD_HEARTBEAT: [&str; 3] = [
    "heartbeat.interval=500 ms",
    "heartbeat.timeout=50 s",
    "heartbeat.rpc-failure-threshold=1",
];
/// ... and recovery.
const SHIELD_RECOVERY: [&str; 3] = [
    "restart-strategy.type=exponential-delay",
    "restart-strategy.exponential-delay.initial-backoff=100 ms",
    "state.backend.local-recovery=true",
];
const fn concat<const N: usize>(parts: [&[&'static str]; 3]) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut p) = (0, 0);
    while p < parts.len() {
        let mut j = 0;
        while j < parts[p].len() {
            out[i] = parts[p][j];
            i += 1;
            j += 1;
        }
        p += 1;
    }
    assert!(i == N, "concat: wrong length");
    out
}
const SHIELD_FLINK: [&str; 10] = concat([&SHIELD_HA, &SHIELD_HEARTBEAT, &SHIELD_RECOVERY]);

/// Every arm. The `shield-*` arms take one part out of the shield profile each
/// (deploy/local/profiles/shield.yaml), everything else, the agents and the coordinator included, unchanged. The
/// `stock-*` arms build it up instead: stock Flink (no plugin, no daemons) with the shield profile's Flink keys, in
/// parts and then all of them; `shield-daemons-stopped` adds the plugin, `shield` the daemons.
const ARMS: &[Arm] = &[
    arm("stock-ha", "stock", &SHIELD_HA),
    arm("stock-fast-heartbeat", "stock", &SHIELD_HEARTBEAT),
    arm("stock-shield-flink", "stock", &SHIELD_FLINK),
    arm("stock", "stock", &[]),
    // Stock again, as its own arm: the spread of stock against itself in one run is the bench's resolution.
    arm("stock-again", "stock", &[]),
    arm("tuned", "tuned", &[]),
    arm("shield", "shield", &[]),
    // No ZooKeeper high availability (the JobManager keeps jobs and checkpoints' pointers in memory).
    arm("shield-no-ha", "shield", &["high-availability.type=NONE"]),
    // Flink's default heartbeat interval instead of 500 ms.
    arm(
        "shield-no-fast-heartbeat",
        "shield",
        &["heartbeat.interval=10 s"],
    ),
    // Faster Flink heartbeats than the profile's 500 ms (100 ms was the profile's until 2026-12-06: a dead
    // TaskManager's failed heartbeat RPC comes sooner; the heartbeats' cost rises with their rate).
    arm("shield-hb-100ms", "shield", &["heartbeat.interval=100 ms"]),
    arm("shield-hb-250ms", "shield", &["heartbeat.interval=250 ms"]),
    // No local copies of state beside the remote checkpoint.
    arm(
        "shield-no-local-recovery",
        "shield",
        &["state.backend.local-recovery=false"],
    ),
    // The shield profile's cluster with its agents and coordinator killed once it is up (SIGKILL to each, by its
    // recorded pid and start time): Flink keeps every shield setting and the plugin, whose link then retries its
    // connection with back-off. What this arm gains over `shield` is the daemons' own cost plus what they cost
    // Flink (the coordinator's REST calls to the JobManager, the agents' reads of /proc).
    Arm {
        kill_daemons: true,
        ..arm("shield-daemons-stopped", "shield", &[])
    },
    // The plugin's metric reporter sends its batch (every numeric metric of the process) every 60 s instead of
    // every 1 s; its link and heartbeats to the agent stay (`local up` waits for every plugin to link, so the
    // reporter cannot be left out altogether).
    arm(
        "shield-slow-reporter",
        "shield",
        &["metrics.reporter.streamshield.interval=60 s"],
    ),
];

fn arm_settings(name: &str) -> &'static Arm {
    ARMS.iter().find(|a| a.name == name).unwrap_or_else(|| {
        let names: Vec<&str> = ARMS.iter().map(|a| a.name).collect();
        panic!("unknown arm {name:?}; arms: {}", names.join(", "))
    })
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sum of the end offsets of every partition of `topic`.
fn end_offsets(consumer: &BaseConsumer, bootstrap: &str, topic: &str) -> i64 {
    let n = streamshield::kafka::partitions(consumer, bootstrap, topic).expect("partitions");
    (0..n)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum()
}

/// (RSS bytes, CPU ticks) of `pid` from /proc.
fn footprint(pid: i32) -> (u64, u64) {
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

/// Waits (up to 120 s) until `job` is in one of `states` per Flink's REST API.
fn wait_job_state(
    flink: &streamshield::flink::Client,
    rt: &tokio::runtime::Runtime,
    job: &str,
    states: &[&str],
) {
    let start = Instant::now();
    loop {
        let now = rt
            .block_on(flink.job(job))
            .map(|j| j.state)
            .unwrap_or_default();
        if states.iter().any(|s| now == *s) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job {job} is {now}, not {states:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn state(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap()
}

fn round(arm: &str, n: usize) -> Value {
    let tmp = tempfile::Builder::new()
        .prefix("ss-steady-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    let _cluster = Cluster(dir.clone());
    let settings = arm_settings(arm);
    let mut up_args = vec![
        "local",
        "up",
        "--dir",
        d,
        "--profile",
        settings.profile,
        "--delivery",
        "at-least-once",
        "--port-offset",
        PORT_OFFSET,
    ];
    for kv in settings.conf {
        up_args.extend(["--flink-conf", kv]);
    }
    let up = streamshield(&up_args);
    assert!(up.status.success(), "local up for arm {arm} failed");
    let st = state(&dir);
    let bootstrap = format!("127.0.0.1:{}", st["ports"]["kafka"]);
    let input = st["workload"]["input_topic"].as_str().unwrap().to_string();
    let output = st["workload"]["output_topic"].as_str().unwrap().to_string();
    let recorded = |p: &Value| -> Recorded {
        serde_json::from_value(p.clone()).expect("a recorded process in state.json")
    };
    let daemons: Vec<(String, Recorded)> = st["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                format!("agent {}", a["resource_id"].as_str().unwrap()),
                recorded(&a["process"]),
            )
        })
        .chain(
            Some(&st["coordinator"]["process"])
                .filter(|p| !p.is_null())
                .map(|p| ("coordinator".to_string(), recorded(p))),
        )
        .collect();
    if settings.kill_daemons {
        for (name, r) in &daemons {
            assert!(
                r.signal(nix::sys::signal::Signal::SIGKILL),
                "{name} was not running"
            );
        }
    }
    let daemons: Vec<(String, i32)> = daemons.into_iter().map(|(n, r)| (n, r.pid)).collect();
    // Flink's processes, Kafka and ZooKeeper (if any), to see where the CPU goes in each arm.
    let flink_procs: Vec<(String, i32)> =
        std::iter::once(("jobmanager".to_string(), &st["jobmanager"]))
            .chain(std::iter::once(("kafka".to_string(), &st["kafka"])))
            .chain(std::iter::once(("zookeeper".to_string(), &st["zookeeper"])))
            .chain(
                st["taskmanagers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        (
                            t["resource_id"].as_str().unwrap().to_string(),
                            &t["process"],
                        )
                    }),
            )
            .filter_map(|(n, p)| p["pid"].as_i64().map(|pid| (n, pid as i32)))
            .collect();

    // Nothing reads while the backlog is written.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let flink =
        streamshield::flink::Client::new(format!("http://127.0.0.1:{}", st["ports"]["rest"]));
    let job = st["workload"]["job_id"].as_str().unwrap().to_string();
    rt.block_on(flink.cancel(&job)).expect("cancel the job");
    wait_job_state(&flink, &rt, &job, &["CANCELED"]);

    let produced = streamshield(&[
        "workload",
        "produce",
        "--dir",
        d,
        "--rate",
        PRODUCE_RATE,
        "--duration",
        &format!("{}s", PRODUCE.as_secs()),
        "--json",
    ]);
    assert!(produced.status.success(), "the generator failed");
    let gen: Value = serde_json::from_slice(&produced.stdout).unwrap_or(Value::Null);

    // The same workload again (the arguments `local up` passes, src/local/mod.rs), from the committed offsets.
    let jars_url = format!("http://127.0.0.1:{}/jars", st["ports"]["rest"]);
    let jars: Value = rt
        .block_on(async { reqwest::get(&jars_url).await?.json::<Value>().await })
        .expect("Flink's list of uploaded jars");
    let jar_id = jars["files"][0]["id"]
        .as_str()
        .expect("the uploaded workload jar")
        .to_string();
    let args: Vec<String> = [
        ("--bootstrap", bootstrap.clone()),
        ("--input-topic", input.clone()),
        ("--output-topic", output.clone()),
        ("--delivery", "at-least-once".into()),
        (
            "--checkpoint-interval-ms",
            st["workload"]["checkpoint_interval_ms"].to_string(),
        ),
        ("--state-bytes", st["workload"]["state_bytes"].to_string()),
        ("--transactional-id-prefix", format!("steady-bench-{n}")),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect();
    let parallelism = st["workload"]["parallelism"].as_u64().unwrap() as u32;
    let job = rt
        .block_on(flink.run_jar(
            &jar_id,
            "io.streamshield.workloads.SequenceJob",
            &args,
            parallelism,
        ))
        .expect("submit the workload again");
    wait_job_state(&flink, &rt, &job, &["RUNNING"]);

    let consumer: BaseConsumer = streamshield::kafka::client_config(&bootstrap)
        .create()
        .expect("a Kafka client");
    std::thread::sleep(SETTLE);
    let before: Vec<(u64, u64)> = daemons.iter().map(|(_, p)| footprint(*p)).collect();
    let flink_before: Vec<(u64, u64)> = flink_procs.iter().map(|(_, p)| footprint(*p)).collect();
    let machine_before = machine_ticks();
    let probe = SpeedProbe::start();
    let t0 = Instant::now();
    let out0 = end_offsets(&consumer, &bootstrap, &output);
    std::thread::sleep(WINDOW);
    let out1 = end_offsets(&consumer, &bootstrap, &output);
    let probe_ns = probe.stop();
    let secs = t0.elapsed().as_secs_f64();
    let in1 = end_offsets(&consumer, &bootstrap, &input);
    let machine_after = machine_ticks();
    let after: Vec<(u64, u64)> = daemons.iter().map(|(_, p)| footprint(*p)).collect();
    let flink_after: Vec<(u64, u64)> = flink_procs.iter().map(|(_, p)| footprint(*p)).collect();

    let rate = (out1 - out0) as f64 / secs;
    let behind = in1 - out1;
    let rss: u64 = after.iter().map(|a| a.0).sum();
    let share =
        |b: &(u64, u64), a: &(u64, u64)| a.1.saturating_sub(b.1) as f64 / TICKS_PER_SECOND / secs;
    // `+ 0.0`: the sum of no shares (stock) is -0.0.
    let cpu: f64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| share(b, a))
        .sum::<f64>()
        + 0.0;
    let per_daemon: Vec<Value> = daemons
        .iter()
        .zip(before.iter().zip(&after))
        .map(
            |((name, _), (b, a))| json!({"name": name, "rss_bytes": a.0, "cpu_share": share(b, a)}),
        )
        .collect();
    let flink_cpu: Vec<Value> = flink_procs
        .iter()
        .zip(flink_before.iter().zip(&flink_after))
        .map(|((name, _), (b, a))| json!({"name": name, "cpu_share": share(b, a)}))
        .collect();
    let line = json!({
        "arm": arm, "round": n, "records_per_s": rate, "window_s": secs,
        "behind_at_end": behind, "valid": behind > 0,
        "input_records": in1, "generator": gen,
        "daemons_rss_bytes": rss, "daemons_cpu_share": cpu, "daemons": per_daemon,
        "flink_cpu": flink_cpu,
        // The whole machine over the window (cores): busy, idle and stolen by the hypervisor.
        "machine": machine_share(&machine_before, &machine_after, secs),
        // The machine's speed during the window: on-CPU nanoseconds of a fixed piece of work (median of samples).
        "probe_ns": probe_ns,
    });
    eprintln!("{line}");
    line
}

/// A thread that, twice a second, does a fixed piece of work (arithmetic and a walk over 4 MiB) and measures the
/// CPU time it took (`/proc/thread-self/schedstat`, nanoseconds on a CPU): how fast the machine is for anyone at
/// that moment, StreamShield's code or not. A 2-vCPU VM's speed moves by more than any effect measured here, and
/// it reports no steal time; the probe costs ~2 % of one core in every arm alike.
struct SpeedProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl SpeedProbe {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let on_cpu = || -> u64 {
                std::fs::read_to_string("/proc/thread-self/schedstat")
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0)
            };
            let mut buf = vec![0u64; 512 * 1024];
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let before = on_cpu();
                let mut x = 0x9E37_79B9_7F4A_7C15u64;
                for _ in 0..4 {
                    for i in 0..buf.len() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let j = (x as usize) % buf.len();
                        buf[i] = buf[i].wrapping_add(buf[j] ^ x);
                    }
                }
                std::hint::black_box(&buf);
                samples.push(on_cpu().saturating_sub(before));
                std::thread::sleep(Duration::from_millis(500));
            }
            samples
        });
        SpeedProbe { stop, thread }
    }

    /// The median sample, nanoseconds.
    fn stop(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut v: Vec<f64> = self
            .thread
            .join()
            .unwrap_or_default()
            .into_iter()
            .filter(|&n| n > 0)
            .map(|n| n as f64)
            .collect();
        if v.is_empty() {
            0.0
        } else {
            median(&mut v)
        }
    }
}

/// The first line of /proc/stat: cumulative ticks of all CPUs (user nice system idle iowait irq softirq steal ...).
fn machine_ticks() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect()
}

fn machine_share(before: &[u64], after: &[u64], secs: f64) -> Value {
    let d = |i: usize| {
        after
            .get(i)
            .unwrap_or(&0)
            .saturating_sub(*before.get(i).unwrap_or(&0)) as f64
            / TICKS_PER_SECOND
            / secs
    };
    let idle = d(3) + d(4);
    let steal = d(7);
    let busy = d(0) + d(1) + d(2) + d(5) + d(6);
    json!({"busy_cores": busy, "idle_cores": idle, "steal_cores": steal})
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
#[ignore = "a benchmark: ~2 min per round and arm; run with --ignored"]
fn steady_state_cost_of_the_shield_profile() {
    let rounds = env_or("STREAMSHIELD_BENCH_ROUNDS", 3usize);
    let arms: Vec<String> = env_or("STREAMSHIELD_BENCH_ARMS", "stock,shield".to_string())
        .split(',')
        .map(str::to_string)
        .collect();
    for arm in &arms {
        arm_settings(arm);
    }
    let out_path = std::env::var("STREAMSHIELD_BENCH_OUT")
        .unwrap_or_else(|_| "target/steady-bench.jsonl".into());
    let mut out = std::fs::File::create(&out_path).unwrap();
    let mut lines = Vec::new();
    for n in 1..=rounds {
        for arm in &arms {
            let l = round(arm, n);
            writeln!(out, "{l}").unwrap();
            lines.push(l);
        }
    }
    println!(
        "\narm | rounds valid | records/s median (min-max) | daemons RSS MB | daemons CPU (cores) | JobManager CPU \
         (cores) | TaskManagers CPU (cores) | TaskManagers CPU per record (us)"
    );
    let mut medians = std::collections::BTreeMap::new();
    for arm in &arms {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| l["arm"] == arm.as_str() && l["valid"] == true)
            .collect();
        let mut r: Vec<f64> = mine
            .iter()
            .map(|l| l["records_per_s"].as_f64().unwrap())
            .collect();
        if r.is_empty() {
            println!("{arm} | 0 | - | - | -");
            continue;
        }
        let (lo, hi) = (
            r.iter().cloned().fold(f64::MAX, f64::min),
            r.iter().cloned().fold(0.0, f64::max),
        );
        let m = median(&mut r);
        medians.insert(arm.clone(), m);
        let mut rss: Vec<f64> = mine
            .iter()
            .map(|l| l["daemons_rss_bytes"].as_f64().unwrap() / 1e6)
            .collect();
        let mut cpu: Vec<f64> = mine
            .iter()
            .map(|l| l["daemons_cpu_share"].as_f64().unwrap())
            .collect();
        let cpu_of = |l: &Value, tm: bool| -> f64 {
            l["flink_cpu"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    let n = p["name"].as_str().unwrap_or("");
                    if tm {
                        n.starts_with("tm-")
                    } else {
                        n == "jobmanager"
                    }
                })
                .filter_map(|p| p["cpu_share"].as_f64())
                .sum::<f64>()
                + 0.0
        };
        let mut jm: Vec<f64> = mine.iter().map(|l| cpu_of(l, false)).collect();
        let mut tms: Vec<f64> = mine.iter().map(|l| cpu_of(l, true)).collect();
        let mut per_record: Vec<f64> = mine
            .iter()
            .map(|l| cpu_of(l, true) / l["records_per_s"].as_f64().unwrap() * 1e6)
            .collect();
        println!(
            "{arm} | {} | {m:.0} ({lo:.0}-{hi:.0}) | {:.1} | {:.3} | {:.3} | {:.3} | {:.2}",
            mine.len(),
            median(&mut rss),
            median(&mut cpu),
            median(&mut jm),
            median(&mut tms),
            median(&mut per_record)
        );
    }
    assert!(
        lines.iter().any(|l| l["valid"] == true),
        "no window measured the job (the generator never got ahead of it)"
    );
    let Some(base) = medians.get("stock") else {
        println!("(no stock arm: no ratios)");
        return;
    };
    for (arm, m) in medians.iter().filter(|(a, _)| *a != "stock") {
        println!("{arm} / stock (medians): {:.3}", m / base);
    }
    // Paired ratios, round by round, as measured and at equal machine speed (records/s x the probe's time: a
    // window in which the probe's work took 10 % longer had a machine 10 % slower for everyone).
    let mut paired: std::collections::BTreeMap<&str, (Vec<f64>, Vec<f64>)> = Default::default();
    for n in 1..=rounds {
        let get = |arm: &str| {
            lines
                .iter()
                .find(|l| l["arm"] == arm && l["round"] == n && l["valid"] == true)
                .and_then(|l| Some((l["records_per_s"].as_f64()?, l["probe_ns"].as_f64()?)))
        };
        let Some((b, bp)) = get("stock") else {
            continue;
        };
        for arm in arms.iter().filter(|a| *a != "stock") {
            if let Some((s, sp)) = get(arm) {
                let (raw, speed) = (s / b, s * sp / (b * bp));
                println!("round {n}: {arm} / stock {raw:.3}, at equal machine speed {speed:.3}");
                let e = paired.entry(arm.as_str()).or_default();
                e.0.push(raw);
                e.1.push(speed);
            }
        }
    }
    for (arm, (mut raw, mut speed)) in paired {
        println!(
            "{arm} / stock, paired medians: {:.3} as measured, {:.3} at equal machine speed",
            median(&mut raw),
            median(&mut speed)
        );
    }
}
