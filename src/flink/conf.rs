//! Flink's configuration files as Flink reads them: `conf/config.yaml` (Flink 1.19+: standard YAML, nested or
//! flat keys) or the legacy `conf/flink-conf.yaml` (`key: value` lines), plus the dynamic properties (`-D key=value`)
//! of a Flink process's command line. Used to find a TaskManager's JobManager and pid directory, and by
//! `streamshield install`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The standard configuration file of Flink 1.19 and later (the only one Flink 2.x reads).
pub const CONFIG_YAML: &str = "config.yaml";
/// The legacy file. Flink 1.x reads it *instead of* config.yaml whenever it exists (GlobalConfiguration); Flink 2.x
/// ignores it.
pub const LEGACY_YAML: &str = "flink-conf.yaml";

#[derive(Debug, Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no {CONFIG_YAML} or {LEGACY_YAML} in {0}")]
    Missing(PathBuf),
}

/// Which file a configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `config.yaml`: standard YAML.
    Standard,
    /// `flink-conf.yaml`: one `key: value` per line.
    Legacy,
}

/// A Flink configuration, flattened to `key -> value` text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlinkConf {
    pub values: BTreeMap<String, String>,
}

impl FlinkConf {
    /// The file Flink of major version `major` reads in `conf_dir`, and its format: Flink 1.x reads flink-conf.yaml
    /// when it exists, else config.yaml; Flink 2.x only config.yaml.
    pub fn file_in(conf_dir: &Path, major: u32) -> Result<(PathBuf, Format), Error> {
        let standard = conf_dir.join(CONFIG_YAML);
        let legacy = conf_dir.join(LEGACY_YAML);
        if major < 2 && legacy.is_file() {
            return Ok((legacy, Format::Legacy));
        }
        if standard.is_file() {
            return Ok((standard, Format::Standard));
        }
        Err(Error::Missing(conf_dir.to_path_buf()))
    }

    /// Reads the configuration of `conf_dir` as Flink of major version `major` does.
    pub fn read_dir(conf_dir: &Path, major: u32) -> Result<FlinkConf, Error> {
        let (path, format) = Self::file_in(conf_dir, major)?;
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, format).map_err(|message| Error::Parse { path, message })
    }

    /// Parses a configuration file's text.
    pub fn parse(text: &str, format: Format) -> Result<FlinkConf, String> {
        match format {
            Format::Standard => parse_standard(text),
            Format::Legacy => Ok(parse_legacy(text)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Lays the dynamic properties of a command line (`-D key=value`, `-Dkey=value`) over the file.
    pub fn with_dynamic(mut self, argv: &[String]) -> FlinkConf {
        for (k, v) in dynamic_properties(argv) {
            self.values.insert(k, v);
        }
        self
    }
}

/// Flattens standard YAML: nested maps join their keys with dots; lists become Flink's `;`-separated text.
fn parse_standard(text: &str) -> Result<FlinkConf, String> {
    let doc: serde_yaml_ng::Value = if text.trim().is_empty() {
        serde_yaml_ng::Value::Null
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
    };
    let mut values = BTreeMap::new();
    match doc {
        serde_yaml_ng::Value::Null => {}
        serde_yaml_ng::Value::Mapping(m) => flatten("", &m, &mut values)?,
        _ => return Err("the top level must be a mapping of keys to values".into()),
    }
    Ok(FlinkConf { values })
}

fn scalar(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Null => Some(String::new()),
        _ => None,
    }
}

fn flatten(
    prefix: &str,
    m: &serde_yaml_ng::Mapping,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (k, v) in m {
        let Some(k) = scalar(k) else {
            return Err(format!("a key under {prefix:?} is not text"));
        };
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            serde_yaml_ng::Value::Mapping(inner) => flatten(&key, inner, out)?,
            serde_yaml_ng::Value::Sequence(items) => {
                let texts: Option<Vec<String>> = items.iter().map(scalar).collect();
                let Some(texts) = texts else {
                    return Err(format!("{key}: a list may hold only plain values"));
                };
                out.insert(key, texts.join(";"));
            }
            other => {
                let Some(t) = scalar(other) else {
                    return Err(format!("{key}: unsupported value"));
                };
                out.insert(key, t);
            }
        }
    }
    Ok(())
}

/// `key: value` per line, `#` comments, as Flink's legacy parser reads it.
fn parse_legacy(text: &str) -> FlinkConf {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let line = line.split_once(" #").map_or(line, |(a, _)| a).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(": ") {
            values.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    FlinkConf { values }
}

/// The major version of a Flink version text (`1.20.5` -> 1, `2.3.0` -> 2); 1 when it cannot be read.
pub fn major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1)
}

/// The `-D key=value` / `-Dkey=value` program arguments of a Flink process (its JVM options `-Dlog.file=...`
/// before the main class are not Flink configuration and are left out).
pub fn dynamic_properties(argv: &[String]) -> Vec<(String, String)> {
    let main = argv
        .iter()
        .position(|a| a.starts_with("org.apache.flink."))
        .map_or(0, |i| i + 1);
    let mut out = Vec::new();
    let mut it = argv[main.min(argv.len())..].iter();
    while let Some(a) = it.next() {
        let kv = if a == "-D" {
            it.next().map(String::as_str)
        } else {
            a.strip_prefix("-D")
        };
        if let Some((k, v)) = kv.and_then(|kv| kv.split_once('=')) {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

/// The value of `--configDir DIR` (or `-c DIR`) in a Flink process's command line.
pub fn config_dir(argv: &[String]) -> Option<PathBuf> {
    argv.windows(2)
        .find(|w| w[0] == "--configDir" || w[0] == "-c")
        .map(|w| PathBuf::from(&w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_yaml_flatten_alike() {
        let text = "jobmanager:\n  rpc:\n    address: jm.example\n    port: 6123\nheartbeat.interval: 1 s\nenv.java.opts.all: [a, b]\nempty:\n";
        let c = FlinkConf::parse(text, Format::Standard).unwrap();
        assert_eq!(c.get("jobmanager.rpc.address"), Some("jm.example"));
        assert_eq!(c.get("jobmanager.rpc.port"), Some("6123"));
        assert_eq!(c.get("heartbeat.interval"), Some("1 s"));
        assert_eq!(c.get("env.java.opts.all"), Some("a;b"));
        assert_eq!(c.get("empty"), Some(""));
        assert!(FlinkConf::parse("- a\n", Format::Standard).is_err());
        assert!(FlinkConf::parse("a: [b\n", Format::Standard).is_err());
        assert_eq!(
            FlinkConf::parse("", Format::Standard).unwrap(),
            FlinkConf::default()
        );
    }

    #[test]
    fn which_file_each_version_reads() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(CONFIG_YAML), "k: new\n").unwrap();
        assert_eq!(
            FlinkConf::read_dir(d.path(), 1).unwrap().get("k"),
            Some("new")
        );
        std::fs::write(d.path().join(LEGACY_YAML), "k: legacy\n").unwrap();
        assert_eq!(
            FlinkConf::read_dir(d.path(), 1).unwrap().get("k"),
            Some("legacy"),
            "1.x: the legacy file wins"
        );
        assert_eq!(
            FlinkConf::read_dir(d.path(), 2).unwrap().get("k"),
            Some("new"),
            "2.x ignores it"
        );
        std::fs::remove_file(d.path().join(CONFIG_YAML)).unwrap();
        assert!(FlinkConf::read_dir(d.path(), 2).is_err());
        assert_eq!(
            (major("1.20.5"), major("2.3.0"), major("unknown")),
            (1, 2, 1)
        );
    }

    #[test]
    fn later_keys_win_and_exact_duplicates_are_errors() {
        let c = FlinkConf::parse("a.b: flat\na:\n  b: nested\n", Format::Standard).unwrap();
        assert_eq!(c.get("a.b"), Some("nested"));
        assert!(FlinkConf::parse("a: 1\na: 2\n", Format::Standard).is_err());
    }

    #[test]
    fn legacy_lines() {
        let c = FlinkConf::parse(
            "# x\njobmanager.rpc.port: 6124 # comment\nbad line\n",
            Format::Legacy,
        )
        .unwrap();
        assert_eq!(c.get("jobmanager.rpc.port"), Some("6124"));
        assert_eq!(c.values.len(), 1);
    }

    #[test]
    fn dynamic_properties_of_a_taskmanager_command_line() {
        let argv: Vec<String> = [
            "java",
            "-Dlog.file=/x.log",
            "-classpath",
            "cp",
            "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
            "--configDir",
            "/opt/flink/conf",
            "-D",
            "taskmanager.memory.network.min=64mb",
            "-Dtaskmanager.resource-id=tm-1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            dynamic_properties(&argv),
            vec![
                ("taskmanager.memory.network.min".into(), "64mb".into()),
                ("taskmanager.resource-id".into(), "tm-1".into())
            ]
        );
        assert_eq!(config_dir(&argv), Some(PathBuf::from("/opt/flink/conf")));
        let c = FlinkConf::default().with_dynamic(&argv);
        assert_eq!(c.get("taskmanager.resource-id"), Some("tm-1"));
    }
}
