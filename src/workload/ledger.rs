//! The verifier's bookkeeping, free of I/O so it can be tested on synthetic timelines.
//!
//! Every record belongs to a *stream*: one generator run (`run`) of one key. Within a stream the generator writes
//! sequence numbers 1, 2, 3, ... The ledger keeps, per stream, the set of sequence numbers seen on the input topic
//! and on the output topic. A record is *lost* when it is on the input (Kafka acknowledged it to the generator) and
//! never reaches the output; *duplicated* when the output carries the same sequence number again; a *state error*
//! when the operator's keyed state did not hold the predecessor of a record (`prev_seq != seq - 1`), which means
//! state was lost or rewound wrongly even if every record arrived.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::{InputRecord, OutputRecord};

/// A set of sequence numbers >= 1, compact when (as usual) it is a prefix 1..=n plus a few stragglers.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    /// Every number in 1..=upto is in the set.
    upto: u64,
    /// Members above `upto + 1`; folded into `upto` as the gap fills.
    sparse: BTreeSet<u64>,
}

impl SeqSet {
    /// Adds `seq`; false when it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq == 0 || seq <= self.upto {
            return false;
        }
        if seq == self.upto + 1 {
            self.upto = seq;
            while self.sparse.remove(&(self.upto + 1)) {
                self.upto += 1;
            }
            true
        } else {
            self.sparse.insert(seq)
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        (seq >= 1 && seq <= self.upto) || self.sparse.contains(&seq)
    }

    pub fn len(&self) -> u64 {
        self.upto + self.sparse.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max(&self) -> u64 {
        self.sparse.last().copied().unwrap_or(self.upto)
    }

    /// Numbers missing below the maximum (holes in 1..=max).
    pub fn holes(&self) -> u64 {
        self.max() - self.len()
    }

    /// Members of `self` that are not in `other`, calling `f` on each (in ascending order).
    pub fn for_each_not_in(&self, other: &SeqSet, mut f: impl FnMut(u64)) {
        // 1..=min(upto) is in both; walk the rest.
        let start = other.upto.min(self.upto) + 1;
        for seq in start..=self.upto {
            if !other.contains(seq) {
                f(seq);
            }
        }
        for &seq in &self.sparse {
            if !other.contains(seq) {
                f(seq);
            }
        }
    }

    /// How many members of `self` are not in `other`.
    pub fn count_not_in(&self, other: &SeqSet) -> u64 {
        let mut n = 0;
        self.for_each_not_in(other, |_| n += 1);
        n
    }
}

/// Identifies a stream: one generator run of one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct StreamId {
    pub run: String,
    pub key: String,
}

#[derive(Debug, Default)]
struct Stream {
    input: SeqSet,
    output: SeqSet,
    input_duplicates: u64,
    output_duplicates: u64,
    state_errors: u64,
    /// When the sink created each record's first copy (Kafka CreateTime, else its receipt), while duplicates are
    /// attributed (see [`Ledger::attribute_duplicates`]).
    first_copy_ms: BTreeMap<u64, i64>,
}

/// One second of the run, by wall clock (unix seconds).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Second {
    /// Unix time, seconds.
    pub t: i64,
    /// Input records whose generator send time falls in this second.
    #[serde(rename = "in")]
    pub input: u64,
    /// Output records the verifier received in this second.
    pub out: u64,
    /// End-to-end latency (receive - send) of this second's output records, milliseconds.
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// A record that is missing or repeated, for the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Example {
    pub run: String,
    pub key: String,
    pub seq: u64,
}

/// Lost records of one stream, for the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StreamLoss {
    pub run: String,
    pub key: String,
    /// Records on the input that never reached the output.
    pub lost: u64,
    /// The lowest of them.
    pub first_seq: u64,
}

/// What the verifier found. `records_lost` is only set in a final report: while records are in flight they are
/// `records_pending`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when this is the final report (after the settle phase).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Final reports: true when every input record reached the output or was found lost after the output
    /// stopped moving for the whole settle time; false when the overall time-out cut the wait short.
    pub complete: bool,
    pub runs: Vec<String>,
    pub streams: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub records_lost: u64,
    pub records_pending: u64,
    pub records_duplicated: u64,
    /// Output records whose input the verifier never saw (another producer, or input not read yet).
    pub records_unexpected: u64,
    pub state_errors: u64,
    /// Holes in the input sequence itself (the generator's writes that Kafka never acknowledged).
    pub input_gaps: u64,
    pub input_duplicates: u64,
    pub malformed_input: u64,
    pub malformed_output: u64,
    pub latency_ms: Percentiles,
    /// Output records per second over the seconds that had output.
    pub throughput_out_per_s: f64,
    pub timeline: Vec<Second>,
    pub lost_examples: Vec<Example>,
    /// Final reports: every stream (run, key) that lost records, worst first, at most 100.
    pub lost_per_key: Vec<StreamLoss>,
    pub duplicate_examples: Vec<Example>,
    /// While duplicates are attributed (see [`Ledger::attribute_duplicates`]): for every duplicated output record,
    /// when the sink created its first copy (unix ms, ascending). With at-least-once output a restore from a
    /// checkpoint may repeat only what the sink wrote after that checkpoint's barrier left the sources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicate_first_copy_ms: Vec<i64>,
}

/// How many examples a report lists.
const EXAMPLES: usize = 10;
/// Latencies above this (1 h) are clamped: a record that old is a finding in its own right.
const MAX_LATENCY_MS: u64 = 3_600_000;

/// The verifier's state.
pub struct Ledger {
    /// Only streams of this run count (None: every run).
    run_filter: Option<String>,
    streams: HashMap<StreamId, Stream>,
    latency: Histogram<u64>,
    seconds: BTreeMap<i64, Second>,
    /// Latencies of the second being received now; summarised into `seconds` when the clock moves on.
    open_second: Option<(i64, Vec<u64>)>,
    malformed_input: u64,
    malformed_output: u64,
    duplicate_examples: Vec<Example>,
    last_output_ms: Option<i64>,
    /// A progress marker (see [`Ledger::set_marker`]) and when output first went beyond it.
    marker: Option<Marker>,
    /// Every output record's (receive ms, latency ms) while tracing is on (the drill's raw series).
    trace: Option<Vec<(i64, u32)>>,
    /// Whether first copies are timed (see [`Ledger::attribute_duplicates`]), and the first-copy times of the
    /// duplicates seen since.
    attributing: bool,
    duplicate_first_copy_ms: Vec<i64>,
}

/// The highest output sequence number per stream at one moment, and when output went beyond it: first for some
/// stream, then for every stream the marker holds.
#[derive(Debug)]
struct Marker {
    seqs: HashMap<StreamId, u64>,
    /// When the marker was set (unix ms). An output record the sink created (its Kafka CreateTime) before this
    /// was processed before the marker, even when it becomes visible later (exactly-once output is visible only
    /// once its checkpoint's transaction commits): it raises the marker instead of counting as progress.
    set_at_ms: Option<i64>,
    /// Streams of `seqs` whose output has not gone beyond their entry yet.
    waiting: usize,
    first_progress_ms: Option<i64>,
    progressed_at_ms: Option<i64>,
}

impl Ledger {
    pub fn new(run_filter: Option<String>) -> Self {
        Ledger {
            run_filter,
            streams: HashMap::new(),
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_MS, 3)
                .expect("static histogram bounds"),
            seconds: BTreeMap::new(),
            open_second: None,
            malformed_input: 0,
            malformed_output: 0,
            duplicate_examples: Vec::new(),
            last_output_ms: None,
            marker: None,
            trace: None,
            attributing: false,
            duplicate_first_copy_ms: Vec::new(),
        }
    }

    /// From now on, remembers when the sink created every output record's first copy, so that each duplicate can
    /// be placed against a checkpoint (the report's `duplicate_first_copy_ms`). Costs a map entry per output record:
    /// for a drill round, not for a long-running verifier.
    pub fn attribute_duplicates(&mut self) {
        self.attributing = true;
    }

    /// Sets a progress marker at the output seen so far: the highest sequence number of every stream.
    /// [`Ledger::progressed_at`] then tells when every one of those streams has received a record beyond it (output
    /// progress resumed everywhere), [`Ledger::first_progress_at`] when the first one did.
    pub fn set_marker(&mut self) {
        self.set_marker_at(None);
    }

    /// [`Ledger::set_marker`] at time `at_ms`: output records the sink created before it (see
    /// [`Ledger::on_output_at`]) count as before the marker even when they arrive after it.
    pub fn set_marker_at(&mut self, at_ms: Option<i64>) {
        let seqs = self.max_output_seqs();
        self.marker = Some(Marker {
            set_at_ms: at_ms,
            waiting: seqs.len(),
            seqs,
            first_progress_ms: None,
            progressed_at_ms: None,
        });
    }

    /// When every stream of the marker had output beyond it (unix ms), if that happened.
    pub fn progressed_at(&self) -> Option<i64> {
        self.marker.as_ref().and_then(|m| m.progressed_at_ms)
    }

    /// When the first stream of the marker had output beyond it (unix ms), if that happened.
    pub fn first_progress_at(&self) -> Option<i64> {
        self.marker.as_ref().and_then(|m| m.first_progress_ms)
    }

    /// Starts keeping every output record's receive time and latency (drains any earlier trace).
    pub fn start_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    /// Takes the trace kept so far (tracing goes on).
    pub fn take_trace(&mut self) -> Vec<(i64, u32)> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn wanted(&self, run: &str) -> bool {
        self.run_filter.as_deref().is_none_or(|r| r == run)
    }

    fn stream(&mut self, run: &str, key: &str) -> &mut Stream {
        let id = StreamId {
            run: run.to_string(),
            key: key.to_string(),
        };
        self.streams.entry(id).or_default()
    }

    pub fn on_input(&mut self, rec: &InputRecord) {
        if !self.wanted(&rec.run) {
            return;
        }
        let s = self.stream(&rec.run, &rec.key);
        if !s.input.insert(rec.seq) {
            s.input_duplicates += 1;
        }
        self.seconds
            .entry(rec.send_ts_ms.div_euclid(1000))
            .or_insert_with(|| Second {
                t: rec.send_ts_ms.div_euclid(1000),
                ..Second::default()
            })
            .input += 1;
    }

    /// Records an output record received at `now_ms` (unix milliseconds).
    pub fn on_output(&mut self, rec: &OutputRecord, now_ms: i64) {
        self.on_output_at(rec, now_ms, None);
    }

    /// [`Ledger::on_output`] with the time the sink created the record (its Kafka CreateTime, unix ms).
    pub fn on_output_at(&mut self, rec: &OutputRecord, now_ms: i64, created_ms: Option<i64>) {
        if !self.wanted(&rec.run) {
            return;
        }
        if let Some(m) = self.marker.as_mut() {
            if m.progressed_at_ms.is_none() {
                let id = StreamId {
                    run: rec.run.clone(),
                    key: rec.key.clone(),
                };
                let before_marker =
                    matches!((created_ms, m.set_at_ms), (Some(c), Some(at)) if c < at);
                if before_marker {
                    // Processed before the marker, read only now: it raises the marker.
                    if let Some(max) = m.seqs.get_mut(&id) {
                        *max = (*max).max(rec.seq);
                    }
                } else if m.seqs.get(&id).is_some_and(|max| rec.seq > *max) {
                    // A stream counts once: its entry is removed when it goes beyond it.
                    m.seqs.remove(&id);
                    m.waiting -= 1;
                    m.first_progress_ms.get_or_insert(now_ms);
                    if m.waiting == 0 {
                        m.progressed_at_ms = Some(now_ms);
                    }
                }
            }
        }
        let attributing = self.attributing;
        let s = self.stream(&rec.run, &rec.key);
        let fresh = s.output.insert(rec.seq);
        if !fresh {
            s.output_duplicates += 1;
        }
        if rec.prev_seq + 1 != rec.seq {
            s.state_errors += 1;
        }
        let mut first_copy = None;
        if attributing {
            if fresh {
                s.first_copy_ms
                    .insert(rec.seq, created_ms.unwrap_or(now_ms));
            } else {
                first_copy = s.first_copy_ms.get(&rec.seq).copied();
            }
        }
        if let Some(t) = first_copy {
            let at = self.duplicate_first_copy_ms.partition_point(|x| *x <= t);
            self.duplicate_first_copy_ms.insert(at, t);
        }
        if !fresh && self.duplicate_examples.len() < EXAMPLES {
            self.duplicate_examples.push(Example {
                run: rec.run.clone(),
                key: rec.key.clone(),
                seq: rec.seq,
            });
        }
        let latency = (now_ms - rec.send_ts_ms).clamp(1, MAX_LATENCY_MS as i64) as u64;
        self.latency.saturating_record(latency);
        if let Some(t) = self.trace.as_mut() {
            t.push((now_ms, latency as u32));
        }
        self.last_output_ms = Some(now_ms);
        let sec = now_ms.div_euclid(1000);
        match &mut self.open_second {
            Some((open, lat)) if *open >= sec => lat.push(latency),
            _ => {
                self.close_second();
                self.open_second = Some((sec, vec![latency]));
            }
        }
    }

    pub fn on_malformed_input(&mut self) {
        self.malformed_input += 1;
    }

    pub fn on_malformed_output(&mut self) {
        self.malformed_output += 1;
    }

    fn close_second(&mut self) {
        if let Some((t, lat)) = self.open_second.take() {
            let entry = self.seconds.entry(t).or_insert_with(|| Second {
                t,
                ..Second::default()
            });
            summarise_second(entry, lat);
        }
    }

    /// Input records that have not reached the output (yet).
    pub fn outstanding(&self) -> u64 {
        self.streams
            .values()
            .map(|s| s.input.count_not_in(&s.output))
            .sum()
    }

    /// Distinct output records so far.
    pub fn records_out(&self) -> u64 {
        self.streams.values().map(|s| s.output.len()).sum()
    }

    /// When the last output record arrived (unix ms).
    pub fn last_output_ms(&self) -> Option<i64> {
        self.last_output_ms
    }

    /// The highest output sequence number of every stream: a progress marker. Output has progressed past the
    /// marker once some stream's output goes beyond its entry (or a stream not in it appears).
    pub fn max_output_seqs(&self) -> HashMap<StreamId, u64> {
        self.streams
            .iter()
            .filter(|(_, s)| !s.output.is_empty())
            .map(|(id, s)| (id.clone(), s.output.max()))
            .collect()
    }

    /// Builds a report. `is_final` turns pending records into lost ones.
    pub fn report(&self, is_final: bool, complete: bool) -> Report {
        let mut runs: Vec<String> = self.streams.keys().map(|id| id.run.clone()).collect();
        runs.sort();
        runs.dedup();
        let mut outstanding = 0;
        let mut unexpected = 0;
        let mut lost_examples = Vec::new();
        let mut ids: Vec<&StreamId> = self.streams.keys().collect();
        ids.sort();
        let mut per_key = Vec::new();
        for id in ids {
            let s = &self.streams[id];
            let mut lost_here = 0;
            let mut first = None;
            s.input.for_each_not_in(&s.output, |seq| {
                outstanding += 1;
                lost_here += 1;
                first.get_or_insert(seq);
                if lost_examples.len() < EXAMPLES {
                    lost_examples.push(Example {
                        run: id.run.clone(),
                        key: id.key.clone(),
                        seq,
                    });
                }
            });
            if let Some(first_seq) = first {
                per_key.push(StreamLoss {
                    run: id.run.clone(),
                    key: id.key.clone(),
                    lost: lost_here,
                    first_seq,
                });
            }
            unexpected += s.output.count_not_in(&s.input);
        }
        per_key.sort_by(|a, b| {
            b.lost
                .cmp(&a.lost)
                .then_with(|| (&a.run, &a.key).cmp(&(&b.run, &b.key)))
        });
        per_key.truncate(100);
        let sum = |f: fn(&Stream) -> u64| self.streams.values().map(f).sum::<u64>();
        let mut timeline: Vec<Second> = self.seconds.values().cloned().collect();
        if let Some((t, lat)) = &self.open_second {
            let mut open = self.seconds.get(t).cloned().unwrap_or(Second {
                t: *t,
                ..Second::default()
            });
            summarise_second(&mut open, lat.clone());
            match timeline.binary_search_by_key(t, |s| s.t) {
                Ok(i) => timeline[i] = open,
                Err(i) => timeline.insert(i, open),
            }
        }
        let out_seconds: Vec<&Second> = timeline.iter().filter(|s| s.out > 0).collect();
        let throughput_out_per_s = if out_seconds.is_empty() {
            0.0
        } else {
            out_seconds.iter().map(|s| s.out).sum::<u64>() as f64 / out_seconds.len() as f64
        };
        Report {
            is_final,
            complete,
            runs,
            streams: self.streams.len() as u64,
            records_in: sum(|s| s.input.len()),
            records_out: sum(|s| s.output.len()),
            records_lost: if is_final { outstanding } else { 0 },
            records_pending: if is_final { 0 } else { outstanding },
            records_duplicated: sum(|s| s.output_duplicates),
            records_unexpected: unexpected,
            state_errors: sum(|s| s.state_errors),
            input_gaps: sum(|s| s.input.holes()),
            input_duplicates: sum(|s| s.input_duplicates),
            malformed_input: self.malformed_input,
            malformed_output: self.malformed_output,
            latency_ms: percentiles(&self.latency),
            throughput_out_per_s,
            timeline,
            lost_examples: if is_final { lost_examples } else { Vec::new() },
            lost_per_key: if is_final { per_key } else { Vec::new() },
            duplicate_examples: self.duplicate_examples.clone(),
            duplicate_first_copy_ms: self.duplicate_first_copy_ms.clone(),
        }
    }
}

fn summarise_second(entry: &mut Second, mut lat: Vec<u64>) {
    if lat.is_empty() {
        return;
    }
    lat.sort_unstable();
    let pick = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    entry.out += lat.len() as u64;
    entry.p50_ms = Some(pick(0.5));
    entry.p99_ms = Some(pick(0.99));
    entry.max_ms = lat.last().copied();
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: (h.mean() * 10.0).round() / 10.0,
    }
}

#[cfg(test)]
mod tests;
