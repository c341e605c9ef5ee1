//! A real Prometheus server (Debian's `/usr/bin/prometheus`) for a test: its configuration and storage in a temp
//! dir, its web API on a free loopback port, stopped by pid when dropped (test passed, failed or panicked), and
//! the parts of its HTTP API the test reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::control_plane::Proc;
use crate::common::standalone::free_port;

/// One series of an instant query: its labels and value (NaN and infinities as Prometheus says them).
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One series of a range query: its labels and (unix seconds, value) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

pub struct Prometheus {
    pub url: String,
    pub dir: PathBuf,
    http: reqwest::blocking::Client,
    // Last: stopped when the struct is dropped.
    proc: Proc,
}

fn value_of(v: &Value) -> f64 {
    match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML) in `dir`; returns once it says it is ready.
    pub fn start(dir: &Path, config: &str) -> Prometheus {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let proc = Proc::spawn(
            "prometheus",
            Command::new("/usr/bin/prometheus")
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--storage.tsdb.retention.time=1h")
                .arg("--log.level=warn"),
            &dir.join("prometheus.log"),
        );
        eprintln!("started prometheus (pid {}) at {url}", proc.child.id());
        let p = Prometheus {
            url,
            dir: dir.to_path_buf(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            proc,
        };
        let start = Instant::now();
        loop {
            let ready = p
                .http
                .get(format!("{}/-/ready", p.url))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "prometheus not ready within 30 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET of `/api/v1/<path>` with `params`: its `data`, or Prometheus' error.
    pub fn api(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        let r = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let v: Value = r.json().map_err(|e| format!("GET {path}: {e}"))?;
        if v["status"] != "success" {
            return Err(format!(
                "{}: {}",
                v["errorType"].as_str().unwrap_or("error"),
                v["error"].as_str().unwrap_or("?")
            ));
        }
        Ok(v["data"].clone())
    }

    /// An instant query at `time` (unix seconds).
    pub fn query(&self, expr: &str, time: f64) -> Result<Vec<Sample>, String> {
        let data = self.api(
            "query",
            &[("query", expr.to_string()), ("time", format!("{time:.3}"))],
        )?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    labels: labels_of(&s["metric"]),
                    value: value_of(&s["value"][1]),
                })
                .collect()),
            Some("scalar") => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: value_of(&data["result"][1]),
            }]),
            other => Err(format!("result type {other:?}")),
        }
    }

    /// A range query from `start` to `end` (unix seconds) every `step` seconds.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>, String> {
        let data = self.api(
            "query_range",
            &[
                ("query", expr.to_string()),
                ("start", format!("{start:.3}")),
                ("end", format!("{end:.3}")),
                ("step", format!("{step}")),
            ],
        )?;
        Ok(data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Series {
                labels: labels_of(&s["metric"]),
                points: s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_f64().unwrap(), value_of(&p[1])))
                    .collect(),
            })
            .collect())
    }

    /// The values of `label` over the series `selector` matches.
    pub fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let data = self.api(
            &format!("label/{label}/values"),
            &[("match[]", selector.to_string())],
        )?;
        Ok(data
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }

    /// The label sets of the series `selector` matches between `start` and `end` (unix seconds).
    pub fn series(
        &self,
        selector: &str,
        start: f64,
        end: f64,
    ) -> Result<Vec<BTreeMap<String, String>>, String> {
        let data = self.api(
            "series",
            &[
                ("match[]", selector.to_string()),
                ("start", format!("{start:.3}")),
                ("end", format!("{end:.3}")),
            ],
        )?;
        Ok(data.as_array().unwrap().iter().map(labels_of).collect())
    }

    /// The scrape targets: (scrape URL, health, last error).
    pub fn targets(&self) -> Vec<(String, String, String)> {
        self.api("targets", &[])
            .map(|d| {
                d["activeTargets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| {
                        (
                            t["scrapeUrl"].as_str().unwrap_or_default().to_string(),
                            t["health"].as_str().unwrap_or_default().to_string(),
                            t["lastError"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The loaded alerting and recording rules, flattened: every rule object of `/api/v1/rules`.
    pub fn rules(&self) -> Vec<Value> {
        self.api("rules", &[])
            .map(|d| {
                d["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }
}
