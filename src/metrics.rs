//! Prometheus exposition through a maintained client library (`prometheus`, the Prometheus text format that
//! Prometheus scrapes and `promtool check metrics` reads): each component renders its current state into a
//! [`Text`] when scraped, which registers the families in a fresh registry and encodes it. Names follow
//! `streamshield_<subsystem>_<name>_<unit>[_total]` (docs/metrics.md); a counter is declared with its `_total` name.
//! A sample the library refuses (a name or label that is not valid Prometheus) is left out of the page and named
//! in a comment at its end, never a panic.

use std::collections::BTreeMap;

use prometheus::core::Collector;
use prometheus::{CounterVec, Encoder, GaugeVec, HistogramOpts, Opts, Registry, TextEncoder};

/// The content type of a page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label pairs of one sample.
pub type Labels = Vec<(String, String)>;

/// A histogram a component keeps across scrapes (its name and help are fixed when it is made).
#[derive(Clone)]
pub struct Histogram(prometheus::Histogram);

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram({} observations)", self.count())
    }
}

impl Histogram {
    /// A histogram `name` with the upper bounds `buckets`. An invalid name is a programming error caught by the
    /// tests of the component that declares it; it falls back to a histogram named `invalid_histogram`.
    pub fn new(name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let make = |n: &str| {
            prometheus::Histogram::with_opts(
                HistogramOpts::new(n, help_text(help, n)).buckets(buckets.to_vec()),
            )
        };
        Histogram(make(name).unwrap_or_else(|_| {
            make("invalid_histogram").unwrap_or_else(|_| {
                prometheus::Histogram::with_opts(HistogramOpts::new("h", "h"))
                    .expect("static options")
            })
        }))
    }

    pub fn observe(&self, v: f64) {
        self.0.observe(v);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.get_sample_count()
    }
}

/// A histogram with labels (one series per label values, e.g. per watchdog target), kept across scrapes.
#[derive(Clone)]
pub struct LabelledHistogram(prometheus::HistogramVec);

impl std::fmt::Debug for LabelledHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LabelledHistogram")
    }
}

impl LabelledHistogram {
    /// As [`Histogram::new`], with the label names `labels`; a programming error in them falls back to a histogram
    /// named `invalid_histogram` with the same labels.
    pub fn new(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> LabelledHistogram {
        let make = |n: &str| {
            prometheus::HistogramVec::new(
                HistogramOpts::new(n, help_text(help, n)).buckets(buckets.to_vec()),
                labels,
            )
        };
        LabelledHistogram(make(name).unwrap_or_else(|_| {
            make("invalid_histogram").unwrap_or_else(|_| {
                prometheus::HistogramVec::new(HistogramOpts::new("h", "h"), &[])
                    .expect("static options")
            })
        }))
    }

    /// Observes `v` in the series of `values` (one per label name); a wrong number of values is left out.
    pub fn observe(&self, values: &[&str], v: f64) {
        if let Ok(h) = self.0.get_metric_with_label_values(values) {
            h.observe(v);
        }
    }

    /// Observations so far in the series of `values`.
    pub fn count(&self, values: &[&str]) -> u64 {
        self.0
            .get_metric_with_label_values(values)
            .map(|h| h.get_sample_count())
            .unwrap_or(0)
    }
}

enum Kind {
    Gauge,
    Counter,
}

struct Fam {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<(Labels, f64)>,
}

enum Entry {
    Plain(Fam),
    Histogram(Box<dyn Collector>),
}

/// A metrics page being built: families are declared (name, kind, help) and their samples set; [`Text::finish`]
/// encodes them.
#[derive(Default)]
pub struct Text {
    entries: Vec<Entry>,
    index: BTreeMap<String, usize>,
}

/// The library refuses an empty help text.
fn help_text(help: &str, name: &str) -> String {
    let h = help.replace('\n', " ");
    if h.trim().is_empty() {
        name.to_string()
    } else {
        h
    }
}

impl Text {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a family: `kind` is `gauge` or `counter` (a counter's `name` ends in `_total`). Declaring it again
    /// keeps the first declaration.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        if self.index.contains_key(name) {
            return self;
        }
        let kind = match kind {
            "counter" => Kind::Counter,
            _ => Kind::Gauge,
        };
        self.index.insert(name.to_string(), self.entries.len());
        self.entries.push(Entry::Plain(Fam {
            name: name.to_string(),
            help: help_text(help, name),
            kind,
            samples: Vec::new(),
        }));
        self
    }

    /// One sample of a declared family (an undeclared one becomes a gauge).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        if !self.index.contains_key(name) {
            self.family(name, "gauge", "");
        }
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Entry::Plain(f) = &mut self.entries[self.index[name]] {
            f.samples.push((labels, value));
        }
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A histogram the component keeps (its observations are shared with it).
    pub fn histogram(&mut self, h: &Histogram) -> &mut Self {
        self.collector(Box::new(h.0.clone()))
    }

    /// Adds a labelled histogram with its series.
    pub fn labelled_histogram(&mut self, h: &LabelledHistogram) -> &mut Self {
        self.collector(Box::new(h.0.clone()))
    }

    fn collector(&mut self, c: Box<dyn Collector>) -> &mut Self {
        let name = c
            .desc()
            .first()
            .map(|d| d.fq_name.clone())
            .unwrap_or_default();
        if !self.index.contains_key(&name) {
            self.index.insert(name, self.entries.len());
            self.entries.push(Entry::Histogram(c));
        }
        self
    }

    /// The page.
    pub fn finish(self) -> String {
        let registry = Registry::new();
        let mut refused = Vec::new();
        for e in self.entries {
            let (name, result) = match e {
                Entry::Histogram(c) => (String::new(), registry.register(c)),
                Entry::Plain(f) => {
                    let name = f.name.clone();
                    (name, register(&registry, f))
                }
            };
            if let Err(e) = result {
                refused.push(format!("{name}: {e}"));
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
            refused.push(format!("encoding: {e}"));
        }
        let mut page = String::from_utf8_lossy(&out).into_owned();
        for r in refused {
            page.push_str(&format!("# left out: {}\n", r.replace('\n', " ")));
        }
        page
    }
}

/// Registers one family: its label names are the union over its samples (a sample without one has it empty,
/// which Prometheus reads as absent).
fn register(registry: &Registry, f: Fam) -> prometheus::Result<()> {
    let mut names: Vec<String> = Vec::new();
    for (labels, _) in &f.samples {
        for (k, _) in labels {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let values = |labels: &Labels| -> Vec<String> {
        names
            .iter()
            .map(|n| {
                labels
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect()
    };
    let opts = Opts::new(f.name.clone(), f.help.clone());
    match f.kind {
        Kind::Gauge => {
            let vec = GaugeVec::new(opts, &names_ref)?;
            for (labels, v) in &f.samples {
                let vals = values(labels);
                let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
                vec.get_metric_with_label_values(&vals)?.set(*v);
            }
            registry.register(Box::new(vec))
        }
        Kind::Counter => {
            let vec = CounterVec::new(opts, &names_ref)?;
            for (labels, v) in &f.samples {
                let vals = values(labels);
                let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
                let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
                vec.get_metric_with_label_values(&vals)?.inc_by(v);
            }
            registry.register(Box::new(vec))
        }
    }
}

/// `numRestarts` -> `num_restarts`, `Status.JVM.CPU.Load` -> `status_jvm_cpu_load`, `records-lag-max` ->
/// `records_lag_max`: a Flink metric name as a Prometheus name part.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    out.trim_matches('_').to_string()
}

/// The Prometheus name and value scale for a forwarded Flink metric: `streamshield_flink_<snake name>`, with
/// Flink's `...TimeMsPerSecond` gauges as `..._time_ratio` (0..1) and suffixes Prometheus reserves for counters,
/// histograms and summaries renamed (`..._count` of a garbage collector becomes `..._collections`).
pub fn flink_metric(name: &str) -> (String, f64) {
    let mut n = snake(name);
    let mut scale = 1.0;
    if let Some(stem) = n.strip_suffix("_ms_per_second") {
        n = format!("{stem}_ratio");
        scale = 0.001;
    } else if let Some(stem) = n.strip_suffix("_count") {
        n = if stem.contains("garbage_collector") {
            format!("{stem}_collections")
        } else {
            format!("{stem}_number")
        };
    } else if ["_total", "_sum", "_bucket"].iter().any(|s| n.ends_with(s)) {
        n.push_str("_value");
    }
    (format!("streamshield_flink_{n}"), scale)
}

/// Label names must match `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        format!("_{s}")
    } else {
        s
    }
}

/// This process's resident memory and CPU time from /proc/self (the standard `process_*` metrics).
pub fn process_metrics(t: &mut Text) {
    let page = 4096.0;
    let ticks = 100.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
            // Fields from 3 on: utime is field 14 (index 11), stime 15 (12), rss 24 (21).
            t.single(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (num(11) + num(12)) / ticks,
            );
            t.single(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                num(21) * page,
            );
        }
    }
}

/// Groups samples by family so each family is declared once, whatever order they come in.
#[derive(Default)]
pub struct Families {
    map: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Families {
    pub fn add(&mut self, name: String, labels: Labels, value: f64) {
        self.map.entry(name).or_default().push((labels, value));
    }

    pub fn render(&self, t: &mut Text, kind: &str, help: &str) {
        for (name, samples) in &self.map {
            t.family(name, kind, help);
            for (labels, v) in samples {
                let l: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                t.sample(name, &l, *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_snake_case() {
        assert_eq!(snake("numRestarts"), "num_restarts");
        assert_eq!(snake("Status.JVM.CPU.Load"), "status_jvm_cpu_load");
        assert_eq!(snake("records-lag-max"), "records_lag_max");
        assert_eq!(snake("busyTimeMsPerSecond"), "busy_time_ms_per_second");
        assert_eq!(snake("numRecordsIn"), "num_records_in");
        assert_eq!(label_name("3x-y"), "_3x_y");
        assert_eq!(
            flink_metric("busyTimeMsPerSecond"),
            ("streamshield_flink_busy_time_ratio".into(), 0.001)
        );
        assert_eq!(
            flink_metric("Status.JVM.GarbageCollector.G1_Young_Generation.Count").0,
            "streamshield_flink_status_jvm_garbage_collector_g1_young_generation_collections"
        );
        assert_eq!(
            flink_metric("numRestarts").0,
            "streamshield_flink_num_restarts"
        );
        assert_eq!(
            flink_metric("x_total").0,
            "streamshield_flink_x_total_value"
        );
    }

    #[test]
    fn exposition_format() {
        let mut t = Text::new();
        t.family("x_total", "counter", "Things.")
            .sample("x_total", &[("a", "q\"uote")], 2.0);
        t.single("y", "gauge", "Why.", f64::NAN);
        let h = Histogram::new("z_seconds", "Zed.", &[1.0, 2.0]);
        h.observe(1.5);
        t.histogram(&h);
        let s = t.finish();
        for line in [
            "# HELP x_total Things.",
            "# TYPE x_total counter",
            "x_total{a=\"q\\\"uote\"} 2",
            "# TYPE y gauge",
            "y NaN",
            "z_seconds_bucket{le=\"2\"} 1",
            "z_seconds_count 1",
        ] {
            assert!(s.lines().any(|l| l == line), "{line} in\n{s}");
        }
        // A name the library refuses is left out and said, never a panic.
        let mut t = Text::new();
        t.single("bad name", "gauge", "", 1.0);
        t.single("ok", "gauge", "", 1.0);
        let s = t.finish();
        assert!(
            s.contains("ok 1") && s.contains("# left out: bad name"),
            "{s}"
        );
    }
}
