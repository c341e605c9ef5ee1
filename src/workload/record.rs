//! The workload's wire format, shared with the Java job (`flink-plugin/workloads`).
//!
//! Input (generator -> Flink): key `k00042`, value `run:seq:sendTs`.
//! Output (Flink -> verifier): same key, value `run:seq:sendTs:prevSeq:count:subtask`.
//! `tests/vectors/records.txt` holds vectors that both sides are tested against.

use thiserror::Error;

/// Why a record could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record has no key")]
    NoKey,
    #[error("record has no value")]
    NoValue,
    #[error("expected {expected} colon-separated fields, got {got} in {value:?}")]
    FieldCount {
        expected: usize,
        got: usize,
        value: String,
    },
    #[error("empty run id in {0:?}")]
    EmptyRun(String),
    #[error("field {field} is not a number in {value:?}")]
    NotANumber { field: &'static str, value: String },
    #[error("sequence numbers start at 1, got {0}")]
    SeqZero(i64),
}

/// One generator record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    pub key: String,
    pub run: String,
    pub seq: u64,
    pub send_ts_ms: i64,
}

/// What the Flink job emitted for one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub key: String,
    pub run: String,
    pub seq: u64,
    pub send_ts_ms: i64,
    /// The sequence number the operator's keyed state held before this record (0 for a run's first record).
    pub prev_seq: u64,
    /// Records the key's state has counted over all runs.
    pub count: u64,
    pub subtask: u32,
}

/// The Kafka key of generator key number `index`.
pub fn key_name(index: u32) -> String {
    format!("k{index:05}")
}

impl InputRecord {
    pub fn encode_value(&self) -> String {
        format!("{}:{}:{}", self.run, self.seq, self.send_ts_ms)
    }

    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self, RecordError> {
        let (key, fields) = split(key, value, 3)?;
        Ok(InputRecord {
            key,
            run: fields[0].to_string(),
            seq: seq_field(&fields[1])?,
            send_ts_ms: num_field::<i64>("sendTs", &fields[2], &fields)?,
        })
    }
}

impl OutputRecord {
    pub fn encode_value(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}",
            self.run, self.seq, self.send_ts_ms, self.prev_seq, self.count, self.subtask
        )
    }

    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self, RecordError> {
        let (key, fields) = split(key, value, 6)?;
        Ok(OutputRecord {
            key,
            run: fields[0].to_string(),
            seq: seq_field(&fields[1])?,
            send_ts_ms: num_field("sendTs", &fields[2], &fields)?,
            prev_seq: num_field("prevSeq", &fields[3], &fields)?,
            count: num_field("count", &fields[4], &fields)?,
            subtask: num_field("subtask", &fields[5], &fields)?,
        })
    }
}

fn split(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    expected: usize,
) -> Result<(String, Vec<String>), RecordError> {
    let key = match key {
        Some(k) if !k.is_empty() => String::from_utf8_lossy(k).into_owned(),
        _ => return Err(RecordError::NoKey),
    };
    let value = value.ok_or(RecordError::NoValue)?;
    let text = String::from_utf8_lossy(value);
    let fields: Vec<String> = text.split(':').map(str::to_string).collect();
    if fields.len() != expected {
        return Err(RecordError::FieldCount {
            expected,
            got: fields.len(),
            value: abbreviate(&text),
        });
    }
    if fields[0].is_empty() {
        return Err(RecordError::EmptyRun(abbreviate(&text)));
    }
    Ok((key, fields))
}

fn seq_field(s: &str) -> Result<u64, RecordError> {
    let v: i64 = s.parse().map_err(|_| RecordError::NotANumber {
        field: "seq",
        value: abbreviate(s),
    })?;
    if v < 1 {
        return Err(RecordError::SeqZero(v));
    }
    Ok(v as u64)
}

fn num_field<T: std::str::FromStr>(
    field: &'static str,
    s: &str,
    all: &[String],
) -> Result<T, RecordError> {
    s.parse().map_err(|_| RecordError::NotANumber {
        field,
        value: abbreviate(&all.join(":")),
    })
}

fn abbreviate(s: &str) -> String {
    if s.len() <= 64 {
        s.to_string()
    } else {
        let mut end = 64;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors the Java job is tested against too.
    #[test]
    fn shared_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/records.txt");
        let text = std::fs::read_to_string(path).expect("read vectors");
        let mut checked = 0;
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 3, "vector needs 3 columns: {line:?}");
            let got = InputRecord::decode(Some(cols[0].as_bytes()), Some(cols[1].as_bytes()));
            if cols[2] == "err" {
                assert!(got.is_err(), "should be rejected: {line:?}, got {got:?}");
            } else {
                let want: Vec<&str> = cols[2].split(' ').collect();
                let rec = got.unwrap_or_else(|e| panic!("{line:?}: {e}"));
                assert_eq!(rec.key, cols[0]);
                assert_eq!(rec.run, want[1]);
                assert_eq!(rec.seq.to_string(), want[2]);
                assert_eq!(rec.send_ts_ms.to_string(), want[3]);
                assert_eq!(rec.encode_value(), cols[1]);
            }
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} vectors");
    }

    #[test]
    fn output_round_trip_matches_the_java_format() {
        let out = OutputRecord {
            key: "k3".into(),
            run: "r9".into(),
            seq: 12,
            send_ts_ms: 1_700_000_000_123,
            prev_seq: 11,
            count: 40,
            subtask: 1,
        };
        // Same literal as OutputRecord's Java test.
        assert_eq!(out.encode_value(), "r9:12:1700000000123:11:40:1");
        let back = OutputRecord::decode(Some(b"k3"), Some(out.encode_value().as_bytes())).unwrap();
        assert_eq!(back, out);
    }

    #[test]
    fn malformed_output_is_an_error_not_a_panic() {
        for v in [
            &b""[..],
            b"::::::",
            b"r:1:2:3:4",
            b"r:1:2:3:4:x",
            b"\xff\xfe:1:2:3:4:5:6",
        ] {
            assert!(OutputRecord::decode(Some(b"k"), Some(v)).is_err(), "{v:?}");
        }
        assert_eq!(
            OutputRecord::decode(None, Some(b"r:1:2:3:4:5")),
            Err(RecordError::NoKey)
        );
        let long = "x".repeat(10_000);
        let err = InputRecord::decode(Some(b"k"), Some(long.as_bytes())).unwrap_err();
        assert!(err.to_string().len() < 200, "error text is bounded");
    }

    #[test]
    fn key_names_sort_numerically() {
        assert_eq!(key_name(7), "k00007");
        assert!(key_name(9) < key_name(10));
    }
}
