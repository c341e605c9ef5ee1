//! The spill log's on-disk record and the reader that finds the records in a segment's bytes, whatever else they
//! hold.
//!
//! A record is a 20-byte header and its payload, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `SSP1` |
//! | 4..8 | payload length (at most [`MAX_PAYLOAD`]) |
//! | 8..16 | sequence number |
//! | 16..20 | CRC-32C of bytes 4..16 and of the payload |
//! | 20.. | payload |
//!
//! A record counts only when its magic, length and CRC all agree. Where they do not, the reader looks for the next
//! place where a whole valid record starts: the bytes in between are **corrupt** (skipped and counted, the records
//! after them kept); when there is no such place, the rest is a **torn tail** (a write the process did not finish),
//! which the log truncates. Either way no byte that fails its CRC is ever returned. docs/spill.md.

use std::ops::Range;

pub const MAGIC: [u8; 4] = *b"SSP1";
pub const HEADER: usize = 20;
/// The largest payload a record may carry.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Appends the record (`seq`, `payload`) to `out`. `payload` must be at most [`MAX_PAYLOAD`] bytes.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start + 4..start + 16]), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The bytes a record of `payload_len` takes.
pub fn encoded_len(payload_len: usize) -> u64 {
    (HEADER + payload_len) as u64
}

/// One valid record found: its sequence number and where its payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub seq: u64,
    pub payload: Range<usize>,
    /// Where the record (its header) starts.
    pub at: usize,
}

/// What [`scan`] found in a segment's bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<Found>,
    /// Bytes skipped between valid records (failed a check, or a sequence number out of order).
    pub corrupt_bytes: u64,
    /// Runs of such bytes (each is at least one lost write).
    pub corrupt_runs: u64,
    /// Where the valid data ends: everything from here is a torn tail (`data.len()` when there is none).
    pub valid_end: usize,
}

impl Scan {
    pub fn torn_bytes(&self, len: usize) -> u64 {
        (len - self.valid_end) as u64
    }
}

/// The valid record starting at `at`, if one does.
fn record_at(data: &[u8], at: usize) -> Option<Found> {
    let h = data.get(at..at.checked_add(HEADER)?)?;
    if h[0..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().ok()?) as usize;
    if len > MAX_PAYLOAD {
        return None;
    }
    let seq = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let crc = u32::from_le_bytes(h[16..20].try_into().ok()?);
    let start = at + HEADER;
    let payload = data.get(start..start.checked_add(len)?)?;
    let want = crc32c::crc32c_append(crc32c::crc32c(&h[4..16]), payload);
    (want == crc).then_some(Found {
        seq,
        payload: start..start + len,
        at,
    })
}

/// The next valid record starting after `from` whose sequence number is above `after` (if any).
fn next_valid(data: &[u8], from: usize, after: Option<u64>) -> Option<Found> {
    let mut p = from;
    while p < data.len() {
        let rel = data[p..].windows(4).position(|w| w == MAGIC)?;
        let at = p + rel;
        if let Some(f) = record_at(data, at) {
            if after.is_none_or(|a| f.seq > a) {
                return Some(f);
            }
        }
        p = at + 1;
    }
    None
}

/// Every valid record of `data` in order, with strictly increasing sequence numbers; corrupt runs skipped and the
/// torn tail located. Never panics, whatever `data` holds.
pub fn scan(data: &[u8]) -> Scan {
    let mut s = Scan::default();
    let mut pos = 0;
    let mut last: Option<u64> = None;
    while pos < data.len() {
        let here = record_at(data, pos).filter(|f| last.is_none_or(|l| f.seq > l));
        let found = match here {
            Some(f) => f,
            None => match next_valid(data, pos + 1, last) {
                Some(f) => {
                    s.corrupt_bytes += (f.at - pos) as u64;
                    s.corrupt_runs += 1;
                    f
                }
                None => break,
            },
        };
        pos = found.payload.end;
        last = Some(found.seq);
        s.records.push(found);
    }
    s.valid_end = pos.min(data.len());
    s
}

/// For the fuzz target and the corpus replay in the tests: scans `data` and asserts the reader's invariants (every
/// record returned passes its CRC, in order, inside the data, accounted bytes add up). Panics on a violated
/// invariant, never on bad input.
pub fn check_scan(data: &[u8]) {
    let s = scan(data);
    let mut covered = 0u64;
    let mut prev: Option<&Found> = None;
    for f in &s.records {
        assert!(f.payload.end <= data.len(), "a record past the end");
        assert_eq!(
            record_at(data, f.at).as_ref(),
            Some(f),
            "a record that fails its check"
        );
        if let Some(p) = prev {
            assert!(f.seq > p.seq && f.at >= p.payload.end, "out of order");
        }
        covered += (f.payload.end - f.at) as u64;
        prev = Some(f);
    }
    assert!(s.valid_end <= data.len());
    assert_eq!(
        covered + s.corrupt_bytes + s.torn_bytes(data.len()),
        data.len() as u64,
        "every byte is a record, corrupt or the torn tail"
    );
    // Re-encoding what was found and scanning it again gives the same records.
    let mut again = Vec::new();
    for f in &s.records {
        encode(f.seq, &data[f.payload.clone()], &mut again);
    }
    let t = scan(&again);
    assert_eq!(t.records.len(), s.records.len());
    assert_eq!((t.corrupt_bytes, t.valid_end), (0, again.len()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for s in seqs {
            encode(
                s,
                format!("record {s} {}", "x".repeat(s as usize % 7)).as_bytes(),
                &mut out,
            );
        }
        out
    }

    #[test]
    fn records_round_trip() {
        let data = log(1..=5);
        let s = scan(&data);
        assert_eq!(
            s.records.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(&data[s.records[2].payload.clone()], b"record 3 xxx");
        assert_eq!((s.corrupt_bytes, s.valid_end), (0, data.len()));
        check_scan(&data);
    }

    #[test]
    fn a_cut_at_any_byte_keeps_every_whole_record_and_marks_the_rest_torn() {
        let data = log(1..=4);
        let ends: Vec<usize> = scan(&data).records.iter().map(|f| f.payload.end).collect();
        for cut in 0..=data.len() {
            let s = scan(&data[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(s.records.len(), whole, "cut at {cut}");
            assert_eq!(s.corrupt_bytes, 0, "cut at {cut}");
            assert_eq!(s.valid_end, ends[..whole].last().copied().unwrap_or(0));
            check_scan(&data[..cut]);
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_loses_only_its_record() {
        let data = log(1..=4);
        for byte in 0..data.len() {
            for bit in [0, 3, 7] {
                let mut bad = data.clone();
                bad[byte] ^= 1 << bit;
                let s = scan(&bad);
                check_scan(&bad);
                let seqs: Vec<u64> = s.records.iter().map(|f| f.seq).collect();
                assert!(seqs.len() >= 3, "byte {byte} bit {bit}: {seqs:?}");
                for f in &s.records {
                    assert_eq!(
                        &bad[f.payload.clone()],
                        format!("record {} {}", f.seq, "x".repeat(f.seq as usize % 7)).as_bytes(),
                        "no corrupt payload is returned"
                    );
                }
            }
        }
    }

    #[test]
    fn garbage_between_records_is_skipped_and_counted() {
        let mut data = log(1..=2);
        data.extend_from_slice(b"SSP1\xff\xff\xff\xffnot a record at all");
        data.extend(log(3..=4));
        let s = scan(&data);
        assert_eq!(
            s.records.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!((s.corrupt_runs, s.corrupt_bytes), (1, 27));
        assert_eq!(s.valid_end, data.len());
    }

    #[test]
    fn a_sequence_number_going_back_is_not_a_record() {
        let mut data = log([5, 6]);
        data.extend(log([6, 7]));
        let s = scan(&data);
        assert_eq!(
            s.records.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [5, 6, 7]
        );
        assert_eq!(s.corrupt_runs, 1);
    }
}
