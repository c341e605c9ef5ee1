//! What explains a round's outcome, from the logs and Flink's exception history: the failures Flink recorded since
//! the fault, what became of the TaskManager cut off in `tm-partition` (from its agent's log), and copying the logs
//! of an unexpected failure to the report.

use std::path::Path;

use super::DrillOptions;
use crate::flink;
use crate::host::process::Recorded;

/// What became of the TaskManager cut off in `tm-partition`, said before the partition heals: alive or gone, and
/// whether the agent inside the partition fenced it (its log's self-fence line, with the time since the cut).
pub(super) fn partition_outcome(agent_log: &str, alive: bool, inject_ms: i64) -> String {
    let fenced = agent_log
        .lines()
        .find(|l| l.contains("Cut off from the coordinator and the JobManager"))
        .map(|l| {
            let plain = strip_ansi(l);
            let at = plain
                .split_whitespace()
                .next()
                .and_then(|ts| humantime::parse_rfc3339_weak(ts).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| format!(" at +{} ms", d.as_millis() as i64 - inject_ms))
                .unwrap_or_default();
            format!("its agent fenced it from inside the partition{at}")
        });
    match (alive, fenced) {
        (false, Some(f)) => format!("the cut-off TaskManager was gone when the partition healed: {f}"),
        (false, None) => {
            "the cut-off TaskManager was gone when the partition healed (no self-fence in its agent's log)".into()
        }
        (true, Some(f)) => format!("the cut-off TaskManager was still running when the partition healed, although {f}"),
        (true, None) => "the cut-off TaskManager was still running when the partition healed".into(),
    }
}

/// A log line without its terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The failures Flink recorded since the fault (its exception history, oldest first): when, where, and the first
/// line of each cause, so that a report says why a job restarted, not only that it did.
pub(super) fn failure_causes(entries: &[flink::ExceptionEntry], inject_ms: i64) -> Option<String> {
    const SHOWN: usize = 3;
    if entries.is_empty() {
        return None;
    }
    let mut sorted: Vec<&flink::ExceptionEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.timestamp);
    let mut parts: Vec<String> = sorted
        .iter()
        .take(SHOWN)
        .map(|e| {
            let first = e
                .stacktrace
                .lines()
                .next()
                .filter(|l| !l.trim().is_empty())
                .unwrap_or(&e.exception_name);
            let first: String = first.trim().chars().take(240).collect();
            let on = e
                .task_manager_id
                .as_deref()
                .map(|t| format!(" on {t}"))
                .unwrap_or_default();
            format!("+{} ms{on}: {first}", e.timestamp - inject_ms)
        })
        .collect();
    if sorted.len() > SHOWN {
        parts.push(format!("and {} more", sorted.len() - SHOWN));
    }
    Some(format!(
        "failures in Flink's exception history since the fault: {}",
        parts.join("; ")
    ))
}

/// Copies the logs that explain a round (JobManager, the target TaskManager, and in the shield arm the coordinator
/// and the target's agent) to `<report>/logs/<arm>-r<round>/`, since the round's run directory is removed.
pub(super) fn keep_logs(
    opts: &DrillOptions,
    arm: &str,
    round: u32,
    dir: &Path,
    target: Option<&Recorded>,
) -> String {
    let keep = opts.report_dir.join("logs").join(format!("{arm}-r{round}"));
    if let Err(e) = std::fs::create_dir_all(&keep) {
        return format!("could not keep the round's logs in {}: {e}", keep.display());
    }
    let logs = dir.join("logs");
    let mut names = vec!["jobmanager.log".to_string(), "coordinator.out".to_string()];
    if let Some(t) = target {
        names.push(format!("{}.log", t.name));
        names.push(format!("{}.out", t.name));
        names.push(format!("agent-{}.out", t.name));
    }
    let copied: Vec<String> = names
        .into_iter()
        .filter(|n| std::fs::copy(logs.join(n), keep.join(n)).is_ok())
        .collect();
    format!(
        "unexpected failure: logs kept in {} ({})",
        keep.display(),
        copied.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_outcome_says_who_fenced_and_when() {
        // 2026-11-25T05:00:03.500Z is 3,500 ms after the cut at 05:00:00.000Z.
        let inject = 1_795_582_800_000; // 2026-11-25T05:00:00Z
        let log = "\u{1b}[2m2026-11-25T05:00:01.000000Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m uplink lost\n\
                   \u{1b}[2m2026-11-25T05:00:03.500123Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m streamshield::agent::command: \
                   Cut off from the coordinator and the JobManager: fencing the TaskManager outcome=SIGKILL sent to pid 7\n";
        assert_eq!(
            partition_outcome(log, false, inject),
            "the cut-off TaskManager was gone when the partition healed: its agent fenced it from inside the partition at +3500 ms"
        );
        assert!(partition_outcome("", false, inject).contains("no self-fence"));
        assert_eq!(
            partition_outcome("", true, inject),
            "the cut-off TaskManager was still running when the partition healed"
        );
        // A line without a readable time still counts.
        assert!(partition_outcome(
            "Cut off from the coordinator and the JobManager",
            true,
            inject
        )
        .ends_with("although its agent fenced it from inside the partition"));
    }

    fn entry(ts: i64, tm: Option<&str>, trace: &str) -> flink::ExceptionEntry {
        flink::ExceptionEntry {
            exception_name: "java.util.concurrent.TimeoutException".into(),
            stacktrace: trace.into(),
            timestamp: ts,
            task_manager_id: tm.map(str::to_string),
        }
    }

    #[test]
    fn failure_causes_name_when_where_and_why_oldest_first() {
        assert_eq!(failure_causes(&[], 1_000), None);
        let e = [
            entry(
                3_500,
                None,
                "org.apache.flink.util.FlinkException: Second\n\tat x.y(Z.java:1)",
            ),
            entry(
                1_930,
                Some("tm-2"),
                "java.util.concurrent.TimeoutException: Heartbeat of TaskManager with id tm-2 timed out.\n\tat a.b(C.java:2)",
            ),
        ];
        assert_eq!(
            failure_causes(&e, 1_000).unwrap(),
            "failures in Flink's exception history since the fault: +930 ms on tm-2: \
             java.util.concurrent.TimeoutException: Heartbeat of TaskManager with id tm-2 timed out.; \
             +2500 ms: org.apache.flink.util.FlinkException: Second"
        );
    }

    #[test]
    fn failure_causes_fall_back_to_the_name_and_cap_the_list() {
        let e: Vec<_> = (0..5).map(|i| entry(100 + i, None, "")).collect();
        let note = failure_causes(&e, 100).unwrap();
        assert!(
            note.contains("+0 ms: java.util.concurrent.TimeoutException"),
            "{note}"
        );
        assert!(note.ends_with("; and 2 more"), "{note}");
    }
}
