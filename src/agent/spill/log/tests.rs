use super::*;

fn cfg(segment_bytes: u64, max_bytes: u64) -> SpillConfig {
    SpillConfig {
        max_bytes,
        segment_bytes,
        fsync: Fsync::Always,
    }
}

fn payload(seq: u64) -> Vec<u8> {
    format!("record {seq}").into_bytes()
}

#[test]
fn appended_records_survive_a_reopen_and_are_read_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, rec) = SpillLog::open(tmp.path(), cfg(100, 1 << 20)).unwrap();
        assert_eq!(rec.pending, 0);
        for i in 0..10u64 {
            let p = payload(i);
            assert_eq!(log.append(&[&p]).unwrap(), i..i + 1);
        }
        assert!(log.segments() > 1, "small segments roll");
    }
    let (mut log, rec) = SpillLog::open(tmp.path(), cfg(100, 1 << 20)).unwrap();
    assert_eq!((rec.pending, rec.torn_bytes, rec.corrupt_bytes), (10, 0, 0));
    let all = log.read(0, 100).unwrap();
    assert_eq!(all.len(), 10);
    for (i, r) in all.iter().enumerate() {
        assert_eq!((r.seq, r.payload.clone()), (i as u64, payload(i as u64)));
    }
    assert_eq!(
        log.read(7, 2)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        [7, 8]
    );
}

#[test]
fn a_torn_tail_is_truncated_and_appends_go_on_after_the_last_whole_record() {
    let tmp = tempfile::tempdir().unwrap();
    let seg;
    {
        let (mut log, _) = SpillLog::open(tmp.path(), SpillConfig::default()).unwrap();
        log.append(&[b"a", b"b", b"c"]).unwrap();
        seg = log.segments.back().unwrap().path.clone();
    }
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"SSP1\x05\x00\x00").unwrap();
    drop(f);
    let (mut log, rec) = SpillLog::open(tmp.path(), SpillConfig::default()).unwrap();
    assert_eq!((rec.torn_bytes, rec.pending), (7, 3));
    assert_eq!(log.append(&[b"d"]).unwrap(), 3..4);
    let seqs: Vec<u64> = log.read(0, 10).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3]);
}

#[test]
fn commit_is_durable_and_deletes_only_delivered_segments() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SpillLog::open(tmp.path(), cfg(60, 1 << 20)).unwrap();
        for i in 0..6u64 {
            log.append(&[&payload(i)]).unwrap();
        }
        let before = log.segments();
        log.commit(4).unwrap();
        assert!(log.segments() < before);
        assert_eq!(
            log.read(log.cursor(), 10).unwrap()[0].seq,
            4,
            "what is not delivered stays"
        );
        assert!(matches!(log.commit(99), Err(Error::CommitBeyond { .. })));
    }
    let (log, rec) = SpillLog::open(tmp.path(), cfg(60, 1 << 20)).unwrap();
    assert_eq!((log.cursor(), rec.pending, log.next_seq()), (4, 2, 6));
}

#[test]
fn a_full_log_refuses_the_whole_batch_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SpillLog::open(tmp.path(), cfg(1 << 20, 100)).unwrap();
    assert_eq!(
        log.append(&[]).unwrap(),
        0..0,
        "an empty batch is an empty range"
    );
    log.append(&[&[0u8; 40]]).unwrap();
    let e = log.append(&[&[1u8; 20], &[2u8; 20]]).unwrap_err();
    assert!(e.to_string().contains("spill.max-bytes"), "{e}");
    assert_eq!((log.next_seq(), log.bytes()), (1, 60));
    assert!(matches!(
        log.append(&[&vec![0u8; MAX_PAYLOAD + 1]]),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn a_second_process_on_the_same_directory_is_refused_and_a_bad_cursor_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (_log, _) = SpillLog::open(tmp.path(), SpillConfig::default()).unwrap();
    let e = SpillLog::open(tmp.path(), SpillConfig::default())
        .err()
        .unwrap();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join(CURSOR), b"garbage").unwrap();
    let e = SpillLog::open(other.path(), SpillConfig::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("cursor file is corrupt"), "{e}");
}

#[test]
fn reading_on_in_small_steps_returns_every_record_once_across_segments_and_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SpillLog::open(tmp.path(), cfg(4096, 1 << 24)).unwrap();
    // Records of every size around the read chunk's doubling, across many segments.
    let sizes = [1usize, 700, 5000, 3, (1 << 20) + 10, 9, 2 << 20, 17];
    let mut want = Vec::new();
    for (i, n) in sizes.iter().cycle().take(40).enumerate() {
        let p = vec![i as u8; *n];
        let r = log.append(&[&p]).unwrap();
        want.push((r.start, p));
    }
    let mut got = Vec::new();
    let mut from = 0;
    loop {
        let batch = log.read(from, 3).unwrap();
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        got.extend(batch.into_iter().map(|r| (r.seq, r.payload)));
        if got.len() == 20 {
            // Appends between reads are found by the next one.
            for (i, n) in sizes.iter().enumerate() {
                let p = vec![200 + i as u8; *n];
                let r = log.append(&[&p]).unwrap();
                want.push((r.start, p));
            }
        }
    }
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every record once, in order, with its bytes");
    // A read from elsewhere (a replay that starts again) ignores where the last one stopped.
    assert_eq!(log.read(5, 1).unwrap()[0].seq, 5);
    assert_eq!(
        log.read(0, 2)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        [0, 1]
    );
}
