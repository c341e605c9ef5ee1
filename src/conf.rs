//! Configuration files of the daemons (`streamshield agent --config FILE`, `streamshield coordinator --config
//! FILE`): YAML, every key kebab-case, unknown keys rejected with the key, the file and the line named. Each daemon's
//! configuration struct derives both `clap::Args` and `serde::Deserialize` with every field optional, so one struct
//! is the file's schema, the flags and the environment variables at once; [`Overlay`] lays the command line over the
//! file, and the daemon's `resolve` fills in the defaults (each written once, there) and validates everything
//! before anything starts. Precedence: flag or environment variable, then the file, then the default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot read the configuration file {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{key}: {message}{}", origin(.file))]
    Invalid {
        key: &'static str,
        message: String,
        file: Option<PathBuf>,
    },
    #[error("{key} is required{}: set it in the file, with --{key} or with {env}", origin(.file))]
    Missing {
        key: &'static str,
        env: &'static str,
        file: Option<PathBuf>,
    },
}

fn origin(file: &Option<PathBuf>) -> String {
    match file {
        Some(f) => format!(" (configuration file {})", f.display()),
        None => String::new(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads a configuration file (None: no file, every key from flags, environment or defaults). An empty file or
/// one holding only comments is an empty configuration.
pub fn load<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|message| Error::Parse {
        file: path.to_path_buf(),
        message,
    })
}

/// Parses the text of a configuration file; the error says what and where (line and column).
pub fn parse<T: DeserializeOwned + Default>(text: &str) -> Result<T, String> {
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Ok(T::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

/// Lays `over` (the command line and environment) over `self` (the file): a field set in `over` wins.
pub trait Overlay {
    fn overlay(self, over: Self) -> Self;
}

/// Implements [`Overlay`] for a struct whose fields are all `Option`s.
#[macro_export]
macro_rules! overlay {
    ($t:ty { $($f:ident),* $(,)? }) => {
        impl $crate::conf::Overlay for $t {
            fn overlay(self, over: Self) -> Self {
                Self { $($f: over.$f.or(self.$f)),* }
            }
        }
    };
}

/// A duration as Flink and StreamShield write them: `100ms`, `100 ms`, `1 s`, `2min`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("a duration must not be empty (e.g. 500ms, 1 s, 2min)".into());
    }
    // humantime wants the unit right after the number: "100 ms" -> "100ms".
    let mut compact = String::with_capacity(t.len());
    let mut prev_digit = false;
    for c in t.chars() {
        if c == ' ' && prev_digit {
            continue;
        }
        prev_digit = c.is_ascii_digit();
        compact.push(c);
    }
    humantime::parse_duration(&compact)
        .map_err(|e| format!("{text:?} is not a duration ({e}; e.g. 500ms, 1 s, 2min)"))
}

/// A size as Flink writes one (its `MemorySize`, binary units): `1073741824`, `64mb`, `64 MiB`, `1g`, `512k`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size (e.g. 1073741824, 64mb, 1 gb)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Serde for `Option<u64>` size fields (see [`parse_bytes`]); a plain number is bytes.
pub mod bytes {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            N(u64),
            Text(String),
        }
        match Option::<Size>::deserialize(d)? {
            None => Ok(None),
            Some(Size::N(n)) => Ok(Some(n)),
            Some(Size::Text(t)) => parse_bytes(&t).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for `Option<Duration>` fields: a duration text (see [`parse_duration`]).
pub mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde for `Option<T: FromStr>` fields written as text (endpoints, addresses, modes).
pub mod from_str {
    use super::*;

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `KEY=VALUE` (a Flink setting given on a command line).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !k.contains(' ') => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// A value, or the error saying it is required.
pub fn required<T>(
    v: Option<T>,
    key: &'static str,
    env: &'static str,
    file: Option<&Path>,
) -> Result<T> {
    v.ok_or_else(|| Error::Missing {
        key,
        env,
        file: file.map(Path::to_path_buf),
    })
}

/// The error for a value that is out of range or inconsistent.
pub fn invalid(key: &'static str, message: impl Into<String>, file: Option<&Path>) -> Error {
    Error::Invalid {
        key,
        message: message.into(),
        file: file.map(Path::to_path_buf),
    }
}

/// Fails unless `value >= min`.
pub fn at_least(
    value: Duration,
    min: Duration,
    key: &'static str,
    file: Option<&Path>,
) -> Result<Duration> {
    if value < min {
        return Err(invalid(
            key,
            format!("must be at least {min:?}, got {value:?}"),
            file,
        ));
    }
    Ok(value)
}

/// The flags of a configuration struct as (key, environment variable) pairs, for the checks that
/// docs/configuration.md lists every key under its name and variable.
#[cfg(test)]
pub fn documented_keys<T: clap::Args>() -> Vec<(String, String)> {
    T::augment_args(clap::Command::new("keys"))
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            let env = a.get_env()?.to_string_lossy().to_string();
            Some((long, env))
        })
        .collect()
}

/// Checks that configuration struct `T` has `count` keys, that each key's environment variable is `env_prefix` and
/// the key in upper snake case, and that docs/configuration.md (`doc`) holds `row(key, env)` for each; `daemon` names
/// the daemon in failures.
#[cfg(test)]
pub fn assert_keys_documented<T: clap::Args>(
    doc: &str,
    daemon: &str,
    env_prefix: &str,
    count: usize,
    row: impl Fn(&str, &str) -> String,
) {
    let keys = documented_keys::<T>();
    assert_eq!(keys.len(), count, "{keys:?}");
    for (key, env) in keys {
        assert_eq!(
            env,
            format!("{env_prefix}{}", key.to_uppercase().replace('-', "_"))
        );
        assert!(
            doc.contains(&row(&key, &env)),
            "docs/configuration.md lacks the {daemon}'s {key} ({env})"
        );
    }
}

/// The row of a key in docs/configuration.md's tables: its name, then its environment variable.
#[cfg(test)]
pub fn key_row(key: &str, env: &str) -> String {
    format!("| `{key}` | `{env}` |")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Sample {
        #[serde(default, with = "duration")]
        suspect_after: Option<Duration>,
        name: Option<String>,
        #[serde(default, with = "from_str")]
        port: Option<u16>,
    }
    overlay!(Sample {
        suspect_after,
        name,
        port
    });

    #[test]
    fn durations_the_way_people_write_them() {
        for (t, ms) in [
            ("100ms", 100),
            ("100 ms", 100),
            ("1 s", 1000),
            ("2min", 120_000),
            ("1h 30m", 5_400_000),
        ] {
            assert_eq!(parse_duration(t).unwrap(), Duration::from_millis(ms), "{t}");
        }
        for bad in ["", "fast", "10 parsecs", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_name_unknown_keys_wrong_types_and_lines() {
        let ok: Sample = parse("# comment\nsuspect-after: 300 ms\nname: a\nport: '80'\n").unwrap();
        assert_eq!(ok.suspect_after, Some(Duration::from_millis(300)));
        assert_eq!(ok.port, Some(80));
        assert_eq!(parse::<Sample>("").unwrap(), Sample::default());
        assert_eq!(
            parse::<Sample>("# only comments\n\n").unwrap(),
            Sample::default()
        );
        let e = parse::<Sample>("name: a\nsuspect-aftr: 1s\n").unwrap_err();
        assert!(
            e.contains("unknown field `suspect-aftr`") && e.contains("line 2"),
            "{e}"
        );
        let e = parse::<Sample>("suspect-after: soon\n").unwrap_err();
        assert!(e.contains("\"soon\" is not a duration"), "{e}");
        let e = parse::<Sample>("port: [1]\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = parse::<Sample>("- a\n- b\n").unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let file = Sample {
            suspect_after: Some(Duration::from_secs(1)),
            name: Some("file".into()),
            port: None,
        };
        let cli = Sample {
            suspect_after: None,
            name: Some("flag".into()),
            port: Some(9),
        };
        let m = file.overlay(cli);
        assert_eq!(m.suspect_after, Some(Duration::from_secs(1)));
        assert_eq!(m.name.as_deref(), Some("flag"));
        assert_eq!(m.port, Some(9));
    }

    #[test]
    fn a_missing_file_and_a_missing_key_are_named() {
        let e = load::<Sample>(Some(Path::new("/nonexistent/agent.yaml"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/agent.yaml"), "{e}");
        let e = required::<u8>(
            None,
            "token-file",
            "STREAMSHIELD_X_TOKEN_FILE",
            Some(Path::new("a.yaml")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("token-file is required")
                && e.contains("a.yaml")
                && e.contains("--token-file"),
            "{e}"
        );
    }
}
