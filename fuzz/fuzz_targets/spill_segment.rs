//! Arbitrary bytes into the spill log's segment reader (what a damaged disk or a torn write can leave in a segment).
//! `check_scan` asserts the reader's invariants; any panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    streamshield::agent::spill::segment::check_scan(data);
});
