//! The dead-letter segment: records the replay's target refused for good (too large, an unknown topic, a value the
//! target cannot take) are kept here, with the reason, instead of being dropped or blocking the replay behind them.
//! It is a spill log of its own in `<spill-dir>/dead-letter/` (the same format, CRCs and recovery), whose payload
//! is the original record's sequence number, the reason and the original payload. Nothing deletes a dead letter:
//! an operator reads them (`streamshield spill inspect`), and removes the directory when done.

use std::path::{Path, PathBuf};

use super::log::{Error, Record, SpillConfig, SpillLog};

/// The directory under the spill directory.
pub const DIR: &str = "dead-letter";
/// A reason is cut to this many bytes.
const MAX_REASON: usize = 1024;

/// One dead letter read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Its sequence number in the spill log.
    pub seq: u64,
    pub reason: String,
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub payload_bytes: usize,
}

pub struct DeadLetters {
    log: SpillLog,
}

impl DeadLetters {
    /// Opens (creating) the dead letters of the spill log in `spill_dir`.
    pub fn open(spill_dir: &Path, cfg: SpillConfig) -> Result<DeadLetters, Error> {
        let (log, _) = SpillLog::open(&Self::dir(spill_dir), cfg)?;
        Ok(DeadLetters { log })
    }

    pub fn dir(spill_dir: &Path) -> PathBuf {
        spill_dir.join(DIR)
    }

    /// Keeps `record` with `reason`; durable (as the log's fsync policy says) before it returns.
    pub fn keep(&mut self, record: &Record, reason: &str) -> Result<(), Error> {
        let mut cut = reason.len().min(MAX_REASON);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let reason = &reason.as_bytes()[..cut];
        let mut p = Vec::with_capacity(12 + reason.len() + record.payload.len());
        p.extend_from_slice(&record.seq.to_le_bytes());
        p.extend_from_slice(&(reason.len() as u32).to_le_bytes());
        p.extend_from_slice(reason);
        p.extend_from_slice(&record.payload);
        self.log.append(&[&p]).map(|_| ())
    }

    /// Every dead letter kept, oldest first (a payload this build cannot parse is shown with that reason).
    pub fn all(&mut self) -> Result<Vec<DeadLetter>, Error> {
        let recs = self.log.read(0, usize::MAX)?;
        Ok(recs.into_iter().map(|r| parse(&r.payload)).collect())
    }

    pub fn count(&self) -> u64 {
        self.log.pending()
    }
}

fn parse(p: &[u8]) -> DeadLetter {
    let bad = || DeadLetter {
        seq: 0,
        reason: "a dead letter this build cannot read".into(),
        payload: p.to_vec(),
        payload_bytes: p.len(),
    };
    if p.len() < 12 {
        return bad();
    }
    let seq = u64::from_le_bytes(p[0..8].try_into().expect("8 bytes"));
    let n = u32::from_le_bytes(p[8..12].try_into().expect("4 bytes")) as usize;
    let Some(reason) = p.get(12..12 + n) else {
        return bad();
    };
    let payload = p[12 + n..].to_vec();
    DeadLetter {
        seq,
        reason: String::from_utf8_lossy(reason).into_owned(),
        payload_bytes: payload.len(),
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_keep_the_record_and_the_reason_across_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SpillConfig::default();
        {
            let (mut log, _) = SpillLog::open(tmp.path(), cfg.clone()).unwrap();
            log.append(&[b"fine", b"too big for the topic"]).unwrap();
            let recs = log.read(0, 10).unwrap();
            let mut dead = DeadLetters::open(tmp.path(), cfg.clone()).unwrap();
            dead.keep(
                &recs[1],
                "MESSAGE_TOO_LARGE: the record is larger than max.message.bytes",
            )
            .unwrap();
            dead.keep(&recs[0], &"é".repeat(1000)).unwrap();
            log.commit(2).unwrap();
        }
        // The main log ignores the dead-letter directory; the dead letters are all there.
        let (log, rec) = SpillLog::open(tmp.path(), cfg.clone()).unwrap();
        assert_eq!((rec.pending, rec.corrupt_bytes, log.cursor()), (0, 0, 2));
        let mut dead = DeadLetters::open(tmp.path(), cfg).unwrap();
        let all = dead.all().unwrap();
        assert_eq!(dead.count(), 2);
        assert_eq!(
            (all[0].seq, all[0].payload.as_slice()),
            (1, &b"too big for the topic"[..])
        );
        assert!(all[0].reason.starts_with("MESSAGE_TOO_LARGE"));
        assert_eq!(
            all[1].reason.len(),
            1024,
            "a long reason is cut at a character boundary"
        );
        assert_eq!(
            parse(b"short").reason,
            "a dead letter this build cannot read"
        );
    }
}
