//! Replays the frame-decoder fuzz corpus (fuzz/corpus/frame_decoder, seeds plus what `cargo fuzz` found) through
//! the same checks as the fuzz target, so every input that ever mattered stays covered by the normal test suite.

#[test]
fn frame_decoder_corpus_replays_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/frame_decoder");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        streamshield::protocol::frame::check_decoder(&data);
        n += 1;
    }
    assert!(n >= 10, "corpus has only {n} inputs");
}
