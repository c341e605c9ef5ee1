//! Editing a Flink configuration file in place, keeping every other line (comments, nesting, order) as it was:
//! StreamShield's keys go into one managed block at the end of the file; a top-level line of the user's that sets a
//! key the block must change is disabled (commented out with a marker) rather than deleted, so `uninstall` restores
//! the file exactly. Standard YAML (`config.yaml`) lets a later flat key win over a nested one, but two identical
//! flat keys are an error, which is why a conflicting top-level line is disabled instead of repeated. Pure: text in,
//! text out, so every rule is tested without a Flink home.

use crate::flink::conf::{FlinkConf, Format};

/// First line of the managed block.
pub const BEGIN: &str =
    "# BEGIN streamshield: added by `streamshield install`; `streamshield uninstall` removes this block";
/// Last line of the managed block.
pub const END: &str = "# END streamshield";
/// Prefix of a user's line disabled by `install` (the rest of the line is the original).
pub const DISABLED: &str = "# streamshield-install disabled: ";

/// What a key should become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// The plugin needs exactly this value.
    Set(String),
    /// This item must be in the key's comma-separated list (others stay).
    InList(String),
    /// A recommended value: set only when the user has not set the key (their value is kept, and said).
    Recommend(String),
}

/// The result of an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    pub text: String,
    /// What was done or left, one line each, for the user.
    pub notes: Vec<String>,
}

/// The file without StreamShield's block and with the lines it disabled restored.
pub fn strip(text: &str) -> String {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line == BEGIN {
            in_block = true;
            continue;
        }
        if in_block {
            if line == END {
                in_block = false;
            }
            continue;
        }
        match line.strip_prefix(DISABLED) {
            Some(original) => out.push(original.to_string()),
            None => out.push(line.to_string()),
        }
    }
    // The block was appended after a blank line; do not leave it behind.
    while out.last().is_some_and(|l| l.is_empty()) && text.contains(BEGIN) {
        out.pop();
    }
    let mut s = out.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// Whether `line` is a top-level `key: value` line for `key`.
fn sets_at_top(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with(':'))
}

/// Applies `wanted` to `text` (a file of `format`). The file must parse before and after; an error says why and
/// nothing is to be written.
pub fn apply(text: &str, format: Format, wanted: &[(&str, Want)]) -> Result<Edited, String> {
    let base = strip(text);
    let current = FlinkConf::parse(&base, format).map_err(|e| format!("cannot be parsed: {e}"))?;
    let mut block: Vec<(String, String)> = Vec::new();
    let mut disable: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    for (key, want) in wanted {
        let have = current.get(key);
        let value = match (want, have) {
            (Want::Set(v), Some(h)) if h == v => {
                notes.push(format!("{key} is already {v}"));
                continue;
            }
            (Want::Set(v), Some(h)) => {
                notes.push(format!("{key}: {h} -> {v} (needed by the plugin)"));
                v.clone()
            }
            (Want::Set(v), None) => v.clone(),
            (Want::InList(item), Some(h)) => {
                let items: Vec<&str> = h
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                if items.contains(&item.as_str()) {
                    notes.push(format!("{key} already lists {item}"));
                    continue;
                }
                notes.push(format!("{key}: {item} added to {h}"));
                let mut all: Vec<String> = items.iter().map(|s| s.to_string()).collect();
                all.push(item.clone());
                all.join(",")
            }
            (Want::InList(item), None) => item.clone(),
            (Want::Recommend(v), Some(h)) => {
                if h != v {
                    notes.push(format!(
                        "{key} stays {h} (StreamShield's measurements use {v}; `install --tuning apply` sets it)"
                    ));
                }
                continue;
            }
            (Want::Recommend(v), None) => v.clone(),
        };
        if have.is_some() {
            disable.push(key.to_string());
        }
        block.push((key.to_string(), value));
    }
    let mut lines: Vec<String> = base
        .lines()
        .map(|l| {
            if disable.iter().any(|k| sets_at_top(l, k)) {
                format!("{DISABLED}{l}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !block.is_empty() {
        if lines.last().is_some_and(|l| !l.is_empty()) {
            lines.push(String::new());
        }
        lines.push(BEGIN.to_string());
        for (k, v) in &block {
            lines.push(format!("{k}: {}", quote(v, format)));
        }
        lines.push(END.to_string());
    }
    let mut out = lines.join("\n");
    out.push('\n');
    // The result must parse, and say what was wanted.
    let after = FlinkConf::parse(&out, format)
        .map_err(|e| format!("the edited file would not parse: {e}"))?;
    for (k, v) in &block {
        if after.get(k) != Some(v.as_str()) {
            return Err(format!(
                "after the edit {k} would read {:?}, not {v:?} (a nested setting of the same key later in the file?)",
                after.get(k)
            ));
        }
    }
    Ok(Edited { text: out, notes })
}

/// A value as a YAML scalar that reads back as the same text (quoted when YAML would read it otherwise).
fn quote(v: &str, format: Format) -> String {
    if format == Format::Legacy {
        return v.to_string();
    }
    let plain_ok = !v.is_empty()
        && !v.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`".contains(c))
        && !v.contains(": ")
        && !v.contains(" #")
        && !v.ends_with(' ');
    if plain_ok {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
}

/// A unified diff of `before` and `after` for `--dry-run`.
pub fn diff(path: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(2)
        .header(path, &format!("{path} (after install)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Vec<(&'static str, Want)> {
        vec![
            (
                "metrics.reporter.streamshield.factory.class",
                Want::Set("io.x.F".into()),
            ),
            (
                "jobmanager.failure-enrichers",
                Want::InList("io.x.E".into()),
            ),
            ("heartbeat.interval", Want::Recommend("500 ms".into())),
            (
                "heartbeat.rpc-failure-threshold",
                Want::Recommend("1".into()),
            ),
        ]
    }

    const NESTED: &str = "# my cluster\njobmanager:\n  rpc:\n    address: jm\n    port: 6123 # rpc\nheartbeat:\n  interval: 1 s\njobmanager.failure-enrichers: com.acme.Mine\n";

    #[test]
    fn keys_are_merged_keeping_every_other_line_and_undone_exactly() {
        let e = apply(NESTED, Format::Standard, &wanted()).unwrap();
        for line in ["# my cluster", "    port: 6123 # rpc", "  interval: 1 s"] {
            assert!(e.text.contains(line), "{line} kept:\n{}", e.text);
        }
        let c = FlinkConf::parse(&e.text, Format::Standard).unwrap();
        assert_eq!(
            c.get("jobmanager.failure-enrichers"),
            Some("com.acme.Mine,io.x.E")
        );
        assert_eq!(
            c.get("heartbeat.interval"),
            Some("1 s"),
            "the user's value is kept"
        );
        assert_eq!(c.get("heartbeat.rpc-failure-threshold"), Some("1"));
        assert_eq!(
            c.get("metrics.reporter.streamshield.factory.class"),
            Some("io.x.F")
        );
        assert!(e.text.contains(&format!(
            "{DISABLED}jobmanager.failure-enrichers: com.acme.Mine"
        )));
        assert!(
            e.notes
                .iter()
                .any(|n| n.contains("heartbeat.interval stays 1 s")),
            "{:?}",
            e.notes
        );
        // Idempotent, and uninstall gives back the original byte for byte.
        let again = apply(&e.text, Format::Standard, &wanted()).unwrap();
        assert_eq!(again.text, e.text);
        assert_eq!(strip(&e.text), NESTED);
    }

    #[test]
    fn legacy_files_and_quoting() {
        let legacy = "jobmanager.rpc.address: jm\nheartbeat.interval: 1 s\n";
        let e = apply(legacy, Format::Legacy, &wanted()).unwrap();
        let c = FlinkConf::parse(&e.text, Format::Legacy).unwrap();
        assert_eq!(c.get("jobmanager.failure-enrichers"), Some("io.x.E"));
        assert_eq!(strip(&e.text), legacy);
        let odd = [
            ("a.b", Want::Set("unix:/run/x.sock".into())),
            ("c", Want::Set("- x".into())),
        ];
        let e = apply("", Format::Standard, &odd).unwrap();
        let c = FlinkConf::parse(&e.text, Format::Standard).unwrap();
        assert_eq!(c.get("a.b"), Some("unix:/run/x.sock"));
        assert_eq!(c.get("c"), Some("- x"));
    }

    #[test]
    fn a_file_that_does_not_parse_is_refused() {
        let e = apply("a: [b\n", Format::Standard, &wanted()).unwrap_err();
        assert!(e.contains("cannot be parsed"), "{e}");
        let e = apply("a: 1\na: 2\n", Format::Standard, &wanted()).unwrap_err();
        assert!(e.contains("cannot be parsed"), "{e}");
    }

    #[test]
    fn the_diff_shows_the_block() {
        let e = apply(NESTED, Format::Standard, &wanted()).unwrap();
        let d = diff("conf/config.yaml", NESTED, &e.text);
        assert!(
            d.contains(&format!("+{BEGIN}")) && d.contains("-jobmanager.failure-enrichers"),
            "{d}"
        );
    }
}
