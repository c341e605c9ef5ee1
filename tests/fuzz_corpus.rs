//! Replays the fuzz corpora (fuzz/corpus/<target>: seeds plus what `cargo fuzz` found) through the same checks as
//! the fuzz targets, so every input that ever mattered stays covered by the normal test suite.

fn replay(target: &str, min: usize, check: fn(&[u8])) {
    let dir = format!("{}/fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        check(&data);
        n += 1;
    }
    assert!(n >= min, "{dir} has only {n} inputs");
}

#[test]
fn frame_decoder_corpus_replays_cleanly() {
    replay(
        "frame_decoder",
        10,
        streamshield::protocol::frame::check_decoder,
    );
}

#[test]
fn spill_segment_corpus_replays_cleanly() {
    replay(
        "spill_segment",
        10,
        streamshield::agent::spill::segment::check_scan,
    );
}
