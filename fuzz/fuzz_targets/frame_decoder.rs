//! Arbitrary bytes into the link protocol's frame decoder and message parser (what a hostile or broken peer can
//! send). `check_decoder` asserts the invariants; any panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    streamshield::protocol::frame::check_decoder(data);
});
