//! The spill log's crash test (issue 17): `streamshield spill exercise` appends and replays against one directory
//! and is killed with SIGKILL at random points, over and over; after every kill the log is opened again as the agent
//! would open it. It must always open, no acknowledged record may be missing (each is either delivered or still in
//! the log), no delivered or recovered record may differ from what was appended, and no sequence number may be given
//! out twice. Delivering a record twice (a crash between a delivery and its commit) is allowed and counted.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use streamshield::agent::spill::exercise::{payload, Mix};
use streamshield::agent::spill::{Fsync, SpillConfig, SpillLog};

/// Kills while the workload is appending and replaying (after it printed `open`).
const WORKING_KILLS: usize = 1000;
/// Kills at a random moment from the start, which lands some of them inside open() and its recovery.
const EARLY_KILLS: usize = 100;
const SEGMENT_BYTES: u64 = 16 << 10;
const MAX_BYTES: u64 = 256 << 10;

#[derive(Default)]
struct Seen {
    acked: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    duplicates: u64,
    deliveries: u64,
    torn_repairs: u64,
    commits: u64,
}

impl Seen {
    /// Takes in one run's output; panics on a delivery whose bytes are not the appended ones.
    fn read(&mut self, out: &str) {
        // The last line may be cut by the kill: only whole lines count.
        let whole = match out.rfind('\n') {
            Some(i) => &out[..=i],
            None => "",
        };
        for line in whole.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            let n = |i: usize| -> u64 { w[i].parse().unwrap_or_else(|_| panic!("line {line:?}")) };
            match w[0] {
                "open" => assert_eq!(n(3), 0, "corrupt bytes after a kill: {line}"),
                "ack" => self.acked.extend(n(1)..n(2)),
                "deliver" => {
                    let seq = n(1);
                    assert_eq!(
                        n(2) as u32,
                        crc32c::crc32c(&payload(seq)),
                        "record {seq} was delivered with other bytes than appended"
                    );
                    self.deliveries += 1;
                    if !self.delivered.insert(seq) {
                        self.duplicates += 1;
                    }
                }
                "commit" => self.commits += 1,
                other => panic!("unexpected line {other:?}"),
            }
        }
    }
}

fn config(fsync: Fsync) -> SpillConfig {
    SpillConfig {
        max_bytes: MAX_BYTES,
        segment_bytes: SEGMENT_BYTES,
        fsync,
    }
}

/// Starts the workload, kills it after `delay` (counted from its `open` line when `after_open`), returns its output.
fn run_and_kill(dir: &Path, fsync: &str, seed: u64, delay: Duration, after_open: bool) -> String {
    let mut child = Command::new(common::BIN)
        .args(["spill", "exercise"])
        .arg(dir)
        .args(["--segment-bytes", &SEGMENT_BYTES.to_string()])
        .args(["--max-bytes", &MAX_BYTES.to_string()])
        .args(["--fsync", fsync, "--seed", &seed.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start streamshield spill exercise");
    let mut stdout = child.stdout.take().expect("piped");
    let (opened_tx, opened) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        let mut told = false;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    all.extend_from_slice(&buf[..k]);
                    if !told && all.contains(&b'\n') {
                        told = true;
                        let _ = opened_tx.send(());
                    }
                }
            }
        }
        all
    });
    if after_open {
        // The workload stopping before its open line is a failure of its own: its stderr says why.
        if opened.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "the workload did not open the log: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    std::thread::sleep(delay);
    let still_running = child.try_wait().expect("try_wait").is_none();
    // Child::kill is SIGKILL to this child's pid.
    let _ = child.kill();
    let status = child.wait().expect("wait");
    let out = reader.join().expect("reader");
    if !still_running {
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        panic!("the workload exited by itself ({status}) before it was killed: {err}");
    }
    String::from_utf8(out).expect("utf-8 output")
}

/// Opens the log as the agent would and checks it against everything seen so far.
fn check(dir: &Path, seen: &mut Seen, fsync: Fsync) {
    let (mut log, rec) = SpillLog::open(dir, config(fsync))
        .unwrap_or_else(|e| panic!("the log did not open after a kill: {e}"));
    // A kill cuts at most the write in flight: a torn tail, never corruption.
    assert_eq!(
        (rec.corrupt_bytes, rec.corrupt_runs),
        (0, 0),
        "a kill left corrupt bytes: {rec:?}"
    );
    if rec.torn_bytes > 0 {
        seen.torn_repairs += 1;
    }
    let held: Vec<_> = log.read(log.cursor(), usize::MAX).expect("read the log");
    let mut in_log = BTreeSet::new();
    for r in &held {
        assert_eq!(
            r.payload,
            payload(r.seq),
            "record {} differs from what was appended",
            r.seq
        );
        in_log.insert(r.seq);
    }
    let lost: Vec<u64> = seen
        .acked
        .iter()
        .filter(|s| !in_log.contains(s) && !seen.delivered.contains(s))
        .copied()
        .take(10)
        .collect();
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
    if let Some(&max) = seen.acked.last() {
        assert!(
            log.next_seq() > max,
            "sequence number {max} was acknowledged but the log would give out {} again",
            log.next_seq()
        );
    }
}

#[test]
fn acknowledged_records_survive_a_thousand_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spill");
    let seed = std::env::var("STREAMSHIELD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!(
        "seed {seed} (STREAMSHIELD_CRASH_SEED={seed} repeats the plan; the kill moments differ)"
    );
    let mut m = Mix::new(seed);
    let mut seen = Seen::default();
    let started = Instant::now();
    for i in 0..WORKING_KILLS + EARLY_KILLS {
        let early = i % ((WORKING_KILLS + EARLY_KILLS) / EARLY_KILLS) == 0;
        let (name, fsync) = if m.below(2) == 0 {
            ("always", Fsync::Always)
        } else {
            ("never", Fsync::Never)
        };
        let delay = if early {
            Duration::from_micros(m.below(30_000))
        } else {
            Duration::from_micros(m.below(15_000))
        };
        let out = run_and_kill(&dir, name, m.next_u64(), delay, !early);
        seen.read(&out);
        check(&dir, &mut seen, fsync);
    }
    eprintln!(
        "{} kills ({} while working) in {:.1} s: {} acknowledged, {} deliveries ({} duplicates), {} commits, {} torn tails repaired; 0 lost, 0 corrupt",
        WORKING_KILLS + EARLY_KILLS,
        WORKING_KILLS,
        started.elapsed().as_secs_f64(),
        seen.acked.len(),
        seen.deliveries,
        seen.duplicates,
        seen.commits,
        seen.torn_repairs
    );
    assert!(
        seen.acked.len() > 10 * WORKING_KILLS,
        "too little work between kills to mean anything: {} records acknowledged",
        seen.acked.len()
    );
    assert!(
        seen.commits > 0 && seen.deliveries > 0,
        "the replay never ran"
    );
}
