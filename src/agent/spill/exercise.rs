//! The spill log's crash-test workload (`streamshield spill exercise`): appends and replays random batches against
//! a real directory until it is killed, and prints every acknowledgement and delivery as it happens, so that a test
//! that kills it with SIGKILL at a random moment can check that nothing acknowledged was lost and nothing corrupt was
//! delivered (tests/spill_crash.rs). Each record's payload is a function of its sequence number ([`payload`]), so a
//! delivered or recovered record can be checked byte for byte.
//!
//! Output, one line per event, written before the next step starts:
//! - `open <pending> <torn_bytes> <corrupt_bytes>`: the log opened and recovered;
//! - `ack <first> <end>`: records `first..end` were acknowledged (append returned);
//! - `deliver <seq> <crc32c of the payload>`: a record was read back for the replay, before its commit;
//! - `commit <to>`: the cursor is durable at `to`.

use std::io::Write;
use std::path::Path;

use super::log::{Error, SpillConfig, SpillLog};

/// A small deterministic generator (splitmix64): the workload needs no cryptographic randomness, only a seed.
#[derive(Debug, Clone)]
pub struct Mix(u64);

impl Mix {
    pub fn new(seed: u64) -> Mix {
        Mix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The payload of the record with sequence number `seq`: 1 to 2,000 bytes derived from it.
pub fn payload(seq: u64) -> Vec<u8> {
    let mut m = Mix::new(seq ^ 0x5eed);
    let len = 1 + m.below(2000) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&m.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs until killed or until the log fails (that error is returned). `seed` picks the sequence of steps.
pub fn run(dir: &Path, cfg: SpillConfig, seed: u64) -> Result<(), Error> {
    let (mut log, rec) = SpillLog::open(dir, cfg)?;
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        // A line the test cannot read is a line it does not count: stop rather than go on unobserved.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            std::process::exit(1);
        }
    };
    say(format!(
        "open {} {} {}",
        rec.pending, rec.torn_bytes, rec.corrupt_bytes
    ));
    let mut m = Mix::new(seed);
    loop {
        if m.below(3) < 2 {
            let first = log.next_seq();
            let n = 1 + m.below(16);
            let payloads: Vec<Vec<u8>> = (first..first + n).map(payload).collect();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            match log.append(&refs) {
                Ok(r) => say(format!("ack {} {}", r.start, r.end)),
                // A full log is back-pressure, not a failure: replay to make room.
                Err(Error::Full { .. }) => {}
                Err(e) => return Err(e),
            }
        } else {
            let records = log.read(log.cursor(), 1 + m.below(40) as usize)?;
            let Some(last) = records.last().map(|r| r.seq) else {
                continue;
            };
            for r in &records {
                say(format!("deliver {} {}", r.seq, crc32c::crc32c(&r.payload)));
            }
            log.commit(last + 1)?;
            say(format!("commit {}", last + 1));
        }
    }
}
