//! The ledger's accounting, record by record.

use super::*;

fn input(key: &str, seq: u64, ts: i64) -> InputRecord {
    InputRecord {
        key: key.into(),
        run: "r1".into(),
        seq,
        send_ts_ms: ts,
    }
}

fn output(key: &str, seq: u64, prev: u64, ts: i64) -> OutputRecord {
    OutputRecord {
        key: key.into(),
        run: "r1".into(),
        seq,
        send_ts_ms: ts,
        prev_seq: prev,
        count: seq,
        subtask: 0,
    }
}

#[test]
fn seqset_folds_stragglers_into_the_prefix() {
    let mut s = SeqSet::default();
    assert!(s.insert(3));
    assert!(s.insert(1));
    assert_eq!((s.upto, s.sparse.len()), (1, 1));
    assert!(s.insert(2));
    assert_eq!((s.upto, s.sparse.len()), (3, 0));
    assert!(!s.insert(2), "duplicate");
    assert!(!s.insert(0), "zero is never a member");
    assert!(s.insert(10));
    assert_eq!(s.len(), 4);
    assert_eq!(s.max(), 10);
    assert_eq!(s.holes(), 6);
    assert!(s.contains(10) && !s.contains(9));
}

#[test]
fn seqset_difference() {
    let mut a = SeqSet::default();
    let mut b = SeqSet::default();
    for i in 1..=10 {
        a.insert(i);
    }
    a.insert(20);
    for i in [1, 2, 3, 5, 6, 20, 30] {
        b.insert(i);
    }
    let mut missing = Vec::new();
    a.for_each_not_in(&b, |s| missing.push(s));
    assert_eq!(missing, vec![4, 7, 8, 9, 10]);
    assert_eq!(b.count_not_in(&a), 1); // 30
}

#[test]
fn clean_run_has_nothing_lost_or_duplicated() {
    let mut l = Ledger::new(None);
    for seq in 1..=100 {
        l.on_input(&input("k1", seq, 1_000_000 + seq as i64));
        l.on_output(
            &output("k1", seq, seq - 1, 1_000_000 + seq as i64),
            1_000_050 + seq as i64,
        );
    }
    let r = l.report(true, true);
    assert_eq!((r.records_in, r.records_out), (100, 100));
    assert_eq!(
        (r.records_lost, r.records_duplicated, r.state_errors),
        (0, 0, 0)
    );
    assert_eq!(r.latency_ms.p50, 50);
    assert_eq!(r.timeline.iter().map(|s| s.out).sum::<u64>(), 100);
    assert_eq!(r.timeline.iter().map(|s| s.input).sum::<u64>(), 100);
}

/// A fault that is never recovered: output stops at seq 40 of 100.
#[test]
fn unrecovered_fault_reports_every_missing_record_as_lost() {
    let mut l = Ledger::new(None);
    for seq in 1..=100 {
        l.on_input(&input("k1", seq, seq as i64 * 10));
    }
    for seq in 1..=40 {
        l.on_output(
            &output("k1", seq, seq - 1, seq as i64 * 10),
            seq as i64 * 10 + 5,
        );
    }
    let live = l.report(false, false);
    assert_eq!((live.records_pending, live.records_lost), (60, 0));
    let fin = l.report(true, true);
    assert_eq!((fin.records_pending, fin.records_lost), (0, 60));
    assert_eq!(fin.lost_examples.len(), EXAMPLES);
    assert_eq!(fin.lost_examples[0].seq, 41);
    assert_eq!(
        fin.lost_per_key,
        vec![StreamLoss {
            run: "r1".into(),
            key: "k1".into(),
            lost: 60,
            first_seq: 41
        }]
    );
}

/// At-least-once recovery: records after the last checkpoint are replayed once more.
#[test]
fn replay_after_restore_counts_duplicates_without_state_errors() {
    let mut l = Ledger::new(None);
    for seq in 1..=10 {
        l.on_input(&input("k1", seq, 0));
    }
    for seq in 1..=8 {
        l.on_output(&output("k1", seq, seq - 1, 0), 10);
    }
    // Restored from a checkpoint taken after seq 5: 6..=10 come again, state says prev = seq - 1.
    for seq in 6..=10 {
        l.on_output(&output("k1", seq, seq - 1, 0), 20);
    }
    let r = l.report(true, true);
    assert_eq!(r.records_lost, 0);
    assert_eq!(r.records_duplicated, 3);
    assert_eq!(r.state_errors, 0);
    assert_eq!(r.duplicate_examples.len(), 3);
}

#[test]
fn duplicates_are_placed_by_when_their_first_copy_was_created() {
    let mut l = Ledger::new(None);
    for seq in 1..=6 {
        l.on_output_at(&output("k1", seq, seq - 1, 0), 1_000 + seq as i64, None);
    }
    l.attribute_duplicates();
    for seq in 7..=10 {
        // Created by the sink at 2,000 + seq, received later.
        l.on_output_at(
            &output("k1", seq, seq - 1, 0),
            5_000,
            Some(2_000 + seq as i64),
        );
    }
    // A restore repeats 9 and 10 (first copies created at 2,009 and 2,010), and 5, whose first copy came before
    // attribution started (not placed).
    for seq in [10, 9, 5] {
        l.on_output_at(&output("k1", seq, seq - 1, 0), 6_000, Some(6_000));
    }
    let r = l.report(true, true);
    assert_eq!(r.records_duplicated, 3);
    assert_eq!(r.duplicate_first_copy_ms, vec![2_009, 2_010]);
    assert!(
        Ledger::new(None)
            .report(true, true)
            .duplicate_first_copy_ms
            .is_empty(),
        "off unless asked"
    );
}

#[test]
fn lost_state_is_a_state_error_even_when_records_arrive() {
    let mut l = Ledger::new(None);
    for seq in 1..=4 {
        l.on_input(&input("k1", seq, 0));
    }
    l.on_output(&output("k1", 1, 0, 0), 1);
    l.on_output(&output("k1", 2, 1, 0), 1);
    l.on_output(&output("k1", 3, 0, 0), 1); // state forgot seq 2
    l.on_output(&output("k1", 4, 3, 0), 1);
    let r = l.report(true, true);
    assert_eq!((r.records_lost, r.state_errors), (0, 1));
}

#[test]
fn run_filter_and_unexpected_output() {
    let mut l = Ledger::new(Some("r1".into()));
    let mut other = input("k1", 1, 0);
    other.run = "r0".into();
    l.on_input(&other);
    l.on_output(&output("k1", 1, 0, 0), 1); // no input for it
    let r = l.report(true, true);
    assert_eq!(r.runs, vec!["r1".to_string()]);
    assert_eq!((r.records_in, r.records_unexpected), (0, 1));
}

#[test]
fn input_holes_are_not_blamed_on_flink() {
    let mut l = Ledger::new(None);
    let mut prev = 0;
    for seq in [1, 2, 4] {
        l.on_input(&input("k1", seq, 0));
        // The operator's state holds the previous record it saw: 2 for seq 4.
        l.on_output(&output("k1", seq, prev, 0), 1);
        prev = seq;
    }
    let r = l.report(true, true);
    assert_eq!((r.input_gaps, r.records_lost), (1, 0));
    assert_eq!(r.state_errors, 1, "prev_seq 2 for seq 4 is flagged");
}

#[test]
fn timeline_splits_by_second_and_max_marker_tracks_progress() {
    let mut l = Ledger::new(None);
    for seq in 1..=6 {
        l.on_input(&input("k1", seq, 0));
    }
    l.on_output(&output("k1", 1, 0, 0), 5_000);
    l.on_output(&output("k1", 2, 1, 0), 5_900);
    let marker = l.max_output_seqs();
    l.on_output(&output("k1", 3, 2, 0), 9_100);
    let r = l.report(false, false);
    let secs: Vec<(i64, u64)> = r
        .timeline
        .iter()
        .filter(|s| s.out > 0)
        .map(|s| (s.t, s.out))
        .collect();
    assert_eq!(secs, vec![(5, 2), (9, 1)]);
    assert_eq!(
        r.timeline.iter().find(|s| s.t == 9).unwrap().p50_ms,
        Some(9_100)
    );
    let id = StreamId {
        run: "r1".into(),
        key: "k1".into(),
    };
    assert_eq!(marker[&id], 2);
    assert_eq!(l.max_output_seqs()[&id], 3);
    assert_eq!(l.last_output_ms(), Some(9_100));
}

#[test]
fn marker_waits_for_every_stream_and_ignores_replayed_output() {
    let mut l = Ledger::new(None);
    for seq in 1..=5 {
        l.on_input(&input("a", seq, 1_000));
        l.on_input(&input("b", seq, 1_000));
    }
    l.on_output(&output("a", 1, 0, 1_000), 1_100);
    l.on_output(&output("a", 2, 1, 1_000), 1_200);
    l.on_output(&output("b", 1, 0, 1_000), 1_200);
    assert_eq!(l.progressed_at(), None, "no marker set yet");
    l.set_marker();
    l.start_trace();
    // A restore replays from the last checkpoint: seq 2 of a again is not progress.
    l.on_output(&output("a", 2, 1, 1_000), 5_000);
    assert_eq!((l.first_progress_at(), l.progressed_at()), (None, None));
    l.on_output(&output("a", 3, 2, 1_000), 6_000);
    assert_eq!(l.first_progress_at(), Some(6_000));
    assert_eq!(l.progressed_at(), None, "b has not moved yet");
    l.on_output(&output("a", 4, 3, 1_000), 6_500);
    // A stream the marker has never seen does not count either way.
    l.on_output(&output("c", 1, 0, 1_000), 6_600);
    assert_eq!(l.progressed_at(), None);
    l.on_output(&output("b", 2, 1, 1_000), 7_000);
    assert_eq!(l.progressed_at(), Some(7_000));
    l.on_output(&output("b", 3, 2, 1_000), 8_000);
    assert_eq!(l.progressed_at(), Some(7_000), "the time stays");
    assert_eq!(l.first_progress_at(), Some(6_000));
    assert_eq!(
        l.take_trace(),
        vec![
            (5_000, 4_000),
            (6_000, 5_000),
            (6_500, 5_500),
            (6_600, 5_600),
            (7_000, 6_000),
            (8_000, 7_000)
        ]
    );
    assert!(l.take_trace().is_empty());
}

#[test]
fn output_created_before_the_marker_but_read_later_is_not_progress() {
    let mut l = Ledger::new(None);
    for seq in 1..=6 {
        l.on_input(&input("a", seq, 1_000));
    }
    l.on_output_at(&output("a", 1, 0, 1_000), 1_100, Some(1_050));
    // The fault at 1,150: seqs 2 and 3 were processed before it, their transaction commits after it.
    l.set_marker_at(Some(1_150));
    l.on_output_at(&output("a", 2, 1, 1_000), 1_200, Some(1_120));
    l.on_output_at(&output("a", 3, 2, 1_000), 1_210, Some(1_140));
    assert_eq!(
        l.progressed_at(),
        None,
        "read late, but processed before the fault"
    );
    // After a restore seq 3 is processed again: created after the fault, but not beyond the marker.
    l.on_output_at(&output("a", 3, 2, 1_000), 8_000, Some(7_900));
    assert_eq!(l.progressed_at(), None, "a replay is not progress");
    l.on_output_at(&output("a", 4, 3, 1_000), 9_000, Some(8_950));
    assert_eq!(l.progressed_at(), Some(9_000));
}
