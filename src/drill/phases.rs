//! Where a recovery's seconds go, read from the JobManager's own log: when Flink declared the failure, how many
//! restarts it began and when the one that stuck began, when its last task was deployed, when every task had
//! initialised (state restored, sources and sinks open) and when the first checkpoint after that completed (with
//! exactly-once output, what the sink wrote since the restart becomes visible only then). The drill's own
//! measurements (gap, running) come from the sink and REST; these are the steps in between.
//!
//! Timestamps are the log's (`deploy/local/flink/log4j.properties` writes them in UTC), i.e. the same clock as the
//! drill's on this machine.

use serde::{Deserialize, Serialize};

/// Phase boundaries of one round, in ms from the injection (None: not seen).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Phases {
    /// The job left RUNNING (Flink declared a failure): the first RUNNING -> RESTARTING/FAILING after injection.
    pub failed_ms: Option<u64>,
    /// Times the job (re)started after injection: RESTARTING -> RUNNING, or CREATED -> RUNNING (a new
    /// JobManager recovering the job).
    pub restarts: u32,
    /// When the last of those (re)starts began (its back-off over): the one that stuck.
    pub restart_ms: Option<u64>,
    /// When the last task of that restart was sent to a TaskManager.
    pub deployed_ms: Option<u64>,
    /// When the last subtask switched INITIALIZING -> RUNNING (state restored, sources and sinks open).
    pub tasks_running_ms: Option<u64>,
    /// The first checkpoint completed after that.
    pub checkpoint_ms: Option<u64>,
    /// The last checkpoint completed before the injection (negative ms): with at-least-once output, records read
    /// after it are what a restart may write again.
    #[serde(default)]
    pub last_checkpoint_before_ms: Option<i64>,
    /// The earliest checkpoint a restart after the injection restored, by its trigger time (ms from the injection,
    /// negative): with at-least-once output, only what the sink wrote after it may be written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_checkpoint_ms: Option<i64>,
}

/// The trigger time (unix ms) of the checkpoint in a "Restoring job J from Checkpoint N @ T for J located at ..."
/// line of job `job`.
fn restored_checkpoint(line: &str, job: &str) -> Option<i64> {
    let rest = line.split_once("Restoring job ")?.1;
    if !rest.starts_with(job) {
        return None;
    }
    let after = rest.split_once(" from Checkpoint ")?.1;
    let ts = after.split_once(" @ ")?.1;
    ts.split_whitespace().next()?.parse().ok()
}

/// Unix ms of a log line that starts with `yyyy-MM-dd HH:mm:ss,SSS` (UTC).
fn line_ms(line: &str) -> Option<i64> {
    let ts = line.get(..23)?;
    let (date, rest) = ts.split_once(' ')?;
    let (time, ms) = rest.split_once(',')?;
    let t = humantime::parse_rfc3339(&format!("{date}T{time}.{ms}Z")).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// The `from` and `to` states of a job-level "switched from state A to B" line.
fn job_transition<'a>(line: &'a str, job: &str) -> Option<(&'a str, &'a str)> {
    if !line.contains(job) {
        return None;
    }
    let rest = line.split_once("switched from state ")?.1;
    let (from, to) = rest.split_once(" to ")?;
    Some((from, to.trim_end_matches('.').trim()))
}

/// Reads the phases of the round injected at `inject_ms` for `job` from the JobManager's log text (a restarted
/// JobManager appends to the same file).
pub fn from_log(log: &str, job: &str, inject_ms: i64) -> Phases {
    let mut p = Phases::default();
    let rel = |t: i64| (t - inject_ms).max(0) as u64;
    let mut restart_at: Option<i64> = None;
    for line in log.lines() {
        let Some(t) = line_ms(line) else { continue };
        if t < inject_ms {
            if line.contains("Completed checkpoint ") && line.contains(job) {
                p.last_checkpoint_before_ms = Some(t - inject_ms);
            }
            continue;
        }
        if let Some(cp) = restored_checkpoint(line, job) {
            let rel = cp - inject_ms;
            p.restored_checkpoint_ms = Some(p.restored_checkpoint_ms.map_or(rel, |r| r.min(rel)));
            continue;
        }
        if let Some((from, to)) = job_transition(line, job) {
            if from == "RUNNING" && matches!(to, "RESTARTING" | "FAILING") && p.failed_ms.is_none()
            {
                p.failed_ms = Some(rel(t));
            }
            if to == "RUNNING" && matches!(from, "RESTARTING" | "CREATED") {
                p.restarts += 1;
                restart_at = Some(t);
                p.restart_ms = Some(rel(t));
                p.deployed_ms = None;
                p.tasks_running_ms = None;
                p.checkpoint_ms = None;
            }
            continue;
        }
        if restart_at.is_none() {
            continue;
        }
        if line.contains("- Deploying ") && line.contains("(attempt #") {
            p.deployed_ms = Some(rel(t));
        } else if line.contains("switched from INITIALIZING to RUNNING") {
            p.tasks_running_ms = Some(rel(t));
        } else if line.contains("Completed checkpoint ")
            && line.contains(job)
            && p.tasks_running_ms.is_some()
            && p.checkpoint_ms.is_none()
        {
            p.checkpoint_ms = Some(rel(t));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "5e7499895f292f69049d8c61d2e9dea5";

    fn at(s: &str) -> i64 {
        line_ms(&format!("{s} INFO x")).unwrap()
    }

    fn log() -> String {
        [
            "2026-11-24 15:09:12,441 INFO  ExecutionGraph [] - Job streamshield-sequence (JOB) switched from state CREATED to RUNNING.",
            "2026-11-24 15:09:12,988 INFO  ExecutionGraph [] - Deploying Source: sequence-source (1/4) (attempt #0) with attempt id a to tm-1",
            "2026-11-24 15:09:20,000 INFO  CheckpointCoordinator [] - Completed checkpoint 3 for job JOB (25285 bytes).",
            "2026-11-24 15:10:00,100 INFO  ExecutionGraph [] - Job streamshield-sequence (JOB) switched from state RUNNING to RESTARTING.",
            "2026-11-24 15:10:00,300 INFO  ExecutionGraph [] - Job streamshield-sequence (JOB) switched from state RESTARTING to RUNNING.",
            "2026-11-24 15:10:00,320 INFO  CheckpointCoordinator [] - Restoring job JOB from Checkpoint 3 @ 1795532959500 for JOB located at file:/tmp/cp/chk-3.",
            "2026-11-24 15:10:00,350 INFO  ExecutionGraph [] - Deploying Source: sequence-source (1/4) (attempt #1) with attempt id b to tm-1",
            "2026-11-24 15:10:00,400 INFO  ExecutionGraph [] - Job streamshield-sequence (JOB) switched from state RUNNING to RESTARTING.",
            "2026-11-24 15:10:01,000 INFO  ExecutionGraph [] - Job streamshield-sequence (JOB) switched from state RESTARTING to RUNNING.",
            "2026-11-24 15:10:01,010 INFO  CheckpointCoordinator [] - Restoring job JOB from Checkpoint 4 @ 1795532999800 for JOB located at file:/tmp/cp/chk-4.",
            "2026-11-24 15:10:01,020 INFO  CheckpointCoordinator [] - Restoring job OTHER from Checkpoint 1 @ 5 for OTHER located at file:/tmp/cp/chk-1.",
            "Missing resources:",
            "\t Job JOB",
            "2026-11-24 15:10:01,200 INFO  ExecutionGraph [] - Deploying Source: sequence-source (1/4) (attempt #2) with attempt id c to tm-3",
            "2026-11-24 15:10:01,500 INFO  ExecutionGraph [] - Deploying sequence-sink (1/4) (attempt #2) with attempt id d to tm-3",
            "2026-11-24 15:10:02,000 INFO  ExecutionGraph [] - Source (1/4) (c) switched from INITIALIZING to RUNNING.",
            "2026-11-24 15:10:02,100 INFO  CheckpointCoordinator [] - Completed checkpoint 9 for job OTHER (1 bytes).",
            "2026-11-24 15:10:04,000 INFO  ExecutionGraph [] - sequence-sink (1/4) (d) switched from INITIALIZING to RUNNING.",
            "2026-11-24 15:10:05,500 INFO  CheckpointCoordinator [] - Completed checkpoint 10 for job JOB (25285 bytes).",
            "2026-11-24 15:10:06,500 INFO  CheckpointCoordinator [] - Completed checkpoint 11 for job JOB (25285 bytes).",
        ]
        .join("\n")
        .replace("JOB", JOB)
    }

    #[test]
    fn the_restart_that_stuck_and_its_steps() {
        let inject = at("2026-11-24 15:10:00,000");
        let p = from_log(&log(), JOB, inject);
        assert_eq!(
            p,
            Phases {
                failed_ms: Some(100),
                restarts: 2,
                restart_ms: Some(1_000),
                deployed_ms: Some(1_500),
                tasks_running_ms: Some(4_000),
                checkpoint_ms: Some(5_500),
                last_checkpoint_before_ms: Some(-40_000),
                restored_checkpoint_ms: Some(-40_500),
            }
        );
    }

    #[test]
    fn nothing_before_the_injection_counts() {
        let p = from_log(&log(), JOB, at("2026-11-24 15:10:07,000"));
        assert_eq!(
            p,
            Phases {
                last_checkpoint_before_ms: Some(-500),
                ..Phases::default()
            }
        );
        // A pause without a restart: no phase at all.
        let quiet = "2026-11-24 15:10:02,100 INFO  CheckpointCoordinator [] - Completed checkpoint 9 for job JOB (1 bytes).".replace("JOB", JOB);
        assert_eq!(from_log(&quiet, JOB, 0), Phases::default());
    }

    #[test]
    fn a_recovering_jobmanager_counts_as_a_restart() {
        let log = [
            "2026-11-24 15:09:58,346 INFO  ExecutionGraph [] - Job streamshield-sequence (JOB) switched from state CREATED to RUNNING.",
            "2026-11-24 15:09:59,963 INFO  ExecutionGraph [] - Deploying sequence-sink (4/4) (attempt #0) with attempt id x to tm-2",
            "2026-11-24 15:10:09,214 INFO  ExecutionGraph [] - sequence-sink (2/4) (x) switched from INITIALIZING to RUNNING.",
            "2026-11-24 15:10:14,365 INFO  CheckpointCoordinator [] - Completed checkpoint 25 for job JOB (26237 bytes).",
        ]
        .join("\n")
        .replace("JOB", JOB);
        let p = from_log(&log, JOB, at("2026-11-24 15:09:43,343"));
        assert_eq!(p.failed_ms, None);
        assert_eq!(p.restarts, 1);
        assert_eq!(p.restart_ms, Some(15_003));
        assert_eq!(p.checkpoint_ms, Some(31_022));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert_eq!(line_ms("not a log line at all, really not"), None);
        assert_eq!(line_ms("2026-13-45 99:99:99,999 INFO"), None);
        assert_eq!(line_ms("short"), None);
        assert_eq!(from_log("\u{0}\u{1}garbage\n\n", JOB, 0), Phases::default());
    }
}
