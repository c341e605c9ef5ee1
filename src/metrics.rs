//! Prometheus exposition through the official client library (`prometheus-client`): each component renders its
//! current state into a [`Text`] when scraped, which registers the families in a fresh registry and encodes it
//! (OpenMetrics text, which Prometheus and promtool read). Names follow
//! `streamshield_<subsystem>_<name>_<unit>[_total]` (docs/metrics.md); a counter is declared with its `_total` name.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of a page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label pairs of one sample.
pub type Labels = Vec<(String, String)>;

enum Fam {
    Gauge(Family<Labels, Gauge<f64, AtomicU64>>),
    Counter(Family<Labels, Counter<f64, AtomicU64>>),
    Histogram(Histogram),
}

/// A metrics page being built: families are declared (name, kind, help) and their samples set; [`Text::finish`]
/// encodes them in declaration order.
#[derive(Default)]
pub struct Text {
    families: Vec<(String, String, Fam)>,
    index: BTreeMap<String, usize>,
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
        let fam = match kind {
            "counter" => Fam::Counter(Family::default()),
            _ => Fam::Gauge(Family::default()),
        };
        self.index.insert(name.to_string(), self.families.len());
        self.families
            .push((name.to_string(), help.replace('\n', " "), fam));
        self
    }

    /// One sample of a declared family (an undeclared one becomes a gauge without help).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        if !self.index.contains_key(name) {
            self.family(name, "gauge", "");
        }
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match &self.families[self.index[name]].2 {
            Fam::Gauge(f) => {
                f.get_or_create(&labels).set(value);
            }
            Fam::Counter(f) => {
                f.get_or_create(&labels).inc_by(value.max(0.0));
            }
            Fam::Histogram(_) => {}
        }
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A histogram the component keeps (its observations are shared with it).
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> &mut Self {
        if !self.index.contains_key(name) {
            self.index.insert(name.to_string(), self.families.len());
            self.families.push((
                name.to_string(),
                help.to_string(),
                Fam::Histogram(h.clone()),
            ));
        }
        self
    }

    /// The page.
    pub fn finish(self) -> String {
        let mut registry = Registry::default();
        for (name, help, fam) in self.families {
            // The encoder ends every HELP line with a period of its own.
            let help = help.trim_end_matches('.');
            match fam {
                Fam::Gauge(f) => registry.register(name, help, f),
                Fam::Counter(f) => {
                    let stem = name.strip_suffix("_total").unwrap_or(&name).to_string();
                    registry.register(stem, help, f)
                }
                Fam::Histogram(h) => registry.register(name, help, h),
            }
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &registry) {
            // Writing to a String cannot fail; should the encoder ever refuse, the scrape says so.
            out = format!("# encoding the metrics failed: {e}\n# EOF\n");
        }
        out
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
        let h = Histogram::new([1.0, 2.0]);
        h.observe(1.5);
        t.histogram("z_seconds", "Zed.", &h);
        let s = t.finish();
        for line in [
            "# HELP x Things.",
            "# TYPE x counter",
            "x_total{a=\"q\\\"uote\"} 2.0",
            "# TYPE y gauge",
            "y NaN",
            "z_seconds_bucket{le=\"2.0\"} 1",
            "z_seconds_count 1",
            "# EOF",
        ] {
            assert!(s.lines().any(|l| l == line), "{line} in\n{s}");
        }
    }
}
