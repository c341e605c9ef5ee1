//! Rendering the local cluster's configuration from the templates in `deploy/local/` (compiled in, so the binary
//! needs no checkout to configure a cluster).

use std::collections::BTreeMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown profile {0:?}; known profiles: {1}")]
    UnknownProfile(String, String),
    #[error("template {template} uses ${{{name}}}, which has no value")]
    Unbound {
        template: &'static str,
        name: String,
    },
    #[error("profile {profile}, line {line}: expected `key: value`, got {text:?}")]
    BadLine {
        profile: String,
        line: usize,
        text: String,
    },
}

pub const FLINK_CONFIG: &str = include_str!("../../deploy/local/flink/config.yaml");
pub const FLINK_LOG4J: &str = include_str!("../../deploy/local/flink/log4j.properties");
pub const KAFKA_SERVER: &str = include_str!("../../deploy/local/kafka/server.properties");
pub const KAFKA_LOG4J2: &str = include_str!("../../deploy/local/kafka/log4j2.yaml");

/// Profiles: Flink settings laid over the base configuration. `stock` changes nothing.
pub const PROFILES: &[(&str, &str)] = &[
    (
        "stock",
        include_str!("../../deploy/local/profiles/stock.yaml"),
    ),
    (
        "tuned",
        include_str!("../../deploy/local/profiles/tuned.yaml"),
    ),
    (
        "shield",
        include_str!("../../deploy/local/profiles/shield.yaml"),
    ),
];

/// Profiles that run StreamShield's plugin, agents and coordinator.
pub fn runs_streamshield(profile: &str) -> bool {
    profile == "shield"
}

pub fn profile_names() -> String {
    PROFILES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replaces every `${NAME}` in `template` with its value; a placeholder without a value is an error.
/// `${sys:...}` (log4j's own lookups) is left alone.
pub fn render(
    template_name: &'static str,
    template: &str,
    vars: &BTreeMap<&str, String>,
) -> Result<String, Error> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        if name.starts_with("sys:") {
            out.push_str(&rest[start..start + 2 + end + 1]);
        } else {
            let v = vars.get(name).ok_or_else(|| Error::Unbound {
                template: template_name,
                name: name.to_string(),
            })?;
            out.push_str(v);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses flat `key: value` lines (comments and blank lines skipped) in order.
pub fn parse_flat(profile: &str, text: &str) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match t.split_once(": ") {
            Some((k, v)) if !k.trim().is_empty() && !k.contains(' ') => {
                out.push((k.trim().to_string(), v.trim().to_string()))
            }
            _ => {
                return Err(Error::BadLine {
                    profile: profile.to_string(),
                    line: i + 1,
                    text: t.chars().take(80).collect(),
                })
            }
        }
    }
    Ok(out)
}

/// The Flink config.yaml for `profile`: the rendered base with the profile's keys replacing or adding lines.
pub fn flink_config(
    profile: &str,
    vars: &BTreeMap<&str, String>,
    overrides: &[(String, String)],
) -> Result<String, Error> {
    let overlay_text = profile_text(profile)
        .ok_or_else(|| Error::UnknownProfile(profile.to_string(), profile_names()))?;
    let base = render("deploy/local/flink/config.yaml", FLINK_CONFIG, vars)?;
    let overlay = parse_flat(profile, &render("profile", overlay_text, vars)?)?;
    // `--flink-conf` values may use the same placeholders as a profile (e.g. `file://${RUN_DIR}/flink/ha`).
    let overrides = overrides
        .iter()
        .map(|(k, v)| Ok((k.clone(), render("--flink-conf", v, vars)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    for (k, v) in overlay.into_iter().chain(overrides) {
        let prefix = format!("{k}:");
        match lines.iter_mut().find(|l| l.starts_with(&prefix)) {
            Some(l) => *l = format!("{k}: {v}"),
            None => {
                if !lines.iter().any(|l| l.starts_with("# Profile")) {
                    lines.push(format!("\n# Profile {profile}"));
                }
                lines.push(format!("{k}: {v}"));
            }
        }
    }
    Ok(lines.join("\n") + "\n")
}

/// The text of profile `name` (deploy/local/profiles/<name>.yaml, placeholders not rendered).
pub fn profile_text(name: &str) -> Option<&'static str> {
    PROFILES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The keys profile `name` sets, in order, as written (none for an unknown or malformed profile).
pub fn profile_keys(name: &str) -> Vec<(String, String)> {
    profile_text(name)
        .and_then(|t| parse_flat(name, t).ok())
        .unwrap_or_default()
}

/// Whether `profile` (with `overrides` laid over it) runs Flink with ZooKeeper high availability, which needs a
/// ZooKeeper server.
pub fn zookeeper_ha(profile: &str, overrides: &[(String, String)]) -> bool {
    profile_keys(profile)
        .into_iter()
        .chain(overrides.iter().cloned())
        .rfind(|(k, _)| k == "high-availability.type")
        .is_some_and(|(_, v)| v == "zookeeper")
}

/// The value of `key` in a flat config text.
pub fn lookup<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}:");
    config
        .lines()
        .find(|l| l.starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, String> {
        [
            ("JM_RPC_PORT", "6123"),
            ("REST_PORT", "8081"),
            ("BLOB_PORT", "6124"),
            ("SLOTS", "2"),
            ("PARALLELISM", "4"),
            ("RUN_DIR", "/tmp/run"),
            ("ZK_PORT", "2181"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
    }

    #[test]
    fn stock_profile_is_the_base_untouched() {
        let c = flink_config("stock", &vars(), &[]).unwrap();
        assert_eq!(lookup(&c, "rest.port"), Some("8081"));
        assert_eq!(
            lookup(&c, "execution.checkpointing.dir"),
            Some("file:///tmp/run/flink/checkpoints")
        );
        assert_eq!(
            lookup(&c, "heartbeat.timeout"),
            None,
            "stock keeps Flink's default"
        );
        assert!(lookup(&c, "env.java.opts.all")
            .unwrap()
            .contains("--add-opens=java.base/java.util=ALL-UNNAMED"));
        assert!(!c.contains("${"));
    }

    #[test]
    fn shield_profile_adds_the_plugin() {
        let c = flink_config("shield", &vars(), &[]).unwrap();
        assert_eq!(
            lookup(&c, "metrics.reporter.streamshield.factory.class"),
            Some("io.streamshield.plugin.StreamShieldMetricReporterFactory")
        );
        assert_eq!(
            lookup(&c, "metrics.reporter.streamshield.interval"),
            Some("1 s")
        );
        assert_eq!(lookup(&c, "rest.port"), Some("8081"), "the base stays");
        assert!(runs_streamshield("shield") && !runs_streamshield("stock"));
    }

    #[test]
    fn tuned_profile_changes_detection_and_restarts_only() {
        let stock = flink_config("stock", &vars(), &[]).unwrap();
        let tuned = flink_config("tuned", &vars(), &[]).unwrap();
        assert_eq!(lookup(&tuned, "heartbeat.timeout"), Some("8 s"));
        assert_eq!(lookup(&tuned, "heartbeat.interval"), Some("1 s"));
        assert_eq!(
            lookup(&tuned, "restart-strategy.exponential-delay.initial-backoff"),
            Some("100 ms")
        );
        assert_eq!(lookup(&tuned, "pekko.ask.timeout"), Some("5 s"));
        assert!(!runs_streamshield("tuned"));
        let added: Vec<&str> = tuned
            .lines()
            .filter(|l| !stock.lines().any(|s| s == *l))
            .collect();
        assert!(
            added.iter().all(|l| l.is_empty()
                || l.starts_with('#')
                || l.starts_with("heartbeat.")
                || l.starts_with("restart-strategy")
                || l.starts_with("pekko.")),
            "{added:?}"
        );
    }

    #[test]
    fn overrides_replace_profile_keys_and_add_new_ones() {
        let o = vec![
            ("heartbeat.timeout".to_string(), "20 s".to_string()),
            ("web.refresh-interval".to_string(), "100 ms".to_string()),
        ];
        let c = flink_config("tuned", &vars(), &o).unwrap();
        assert_eq!(lookup(&c, "heartbeat.timeout"), Some("20 s"));
        assert_eq!(lookup(&c, "web.refresh-interval"), Some("100 ms"));
        assert_eq!(c.matches("heartbeat.timeout:").count(), 1);
    }

    #[test]
    fn unknown_profile_and_unbound_placeholder_are_errors() {
        assert!(matches!(
            flink_config("nope", &vars(), &[]),
            Err(Error::UnknownProfile(..))
        ));
        let e = render("t", "a ${MISSING} b", &vars()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "template t uses ${MISSING}, which has no value"
        );
        assert_eq!(
            render("t", "${sys:log.file}", &vars()).unwrap(),
            "${sys:log.file}"
        );
    }

    #[test]
    fn overrides_may_use_the_profile_placeholders() {
        let ha = [(
            "high-availability.storageDir".to_string(),
            "file://${RUN_DIR}/flink/ha".to_string(),
        )];
        let c = flink_config("stock", &vars(), &ha).unwrap();
        assert_eq!(
            lookup(&c, "high-availability.storageDir"),
            Some("file:///tmp/run/flink/ha")
        );
        let bad = [("k".to_string(), "${NO_SUCH}".to_string())];
        assert!(flink_config("stock", &vars(), &bad).is_err());
    }

    #[test]
    fn only_the_shield_profile_needs_zookeeper() {
        assert!(zookeeper_ha("shield", &[]));
        assert!(!zookeeper_ha("stock", &[]));
        assert!(!zookeeper_ha("tuned", &[]));
        let off = [("high-availability.type".to_string(), "none".to_string())];
        assert!(!zookeeper_ha("shield", &off));
        let on = [(
            "high-availability.type".to_string(),
            "zookeeper".to_string(),
        )];
        assert!(zookeeper_ha("stock", &on));
        let c = flink_config("shield", &vars(), &[]).unwrap();
        assert_eq!(
            lookup(&c, "high-availability.zookeeper.quorum"),
            Some("127.0.0.1:2181")
        );
    }

    #[test]
    fn flat_profiles_parse_strictly() {
        assert_eq!(
            parse_flat("p", "# c\n\nheartbeat.timeout: 8000\n").unwrap(),
            vec![("heartbeat.timeout".into(), "8000".into())]
        );
        assert!(matches!(
            parse_flat("p", "nonsense"),
            Err(Error::BadLine { line: 1, .. })
        ));
    }

    #[test]
    fn templates_render_with_the_local_variables() {
        let mut v = vars();
        v.insert("KAFKA_PORT", "9092".into());
        v.insert("KAFKA_CONTROLLER_PORT", "9093".into());
        v.insert("PARTITIONS", "4".into());
        let k = render("kafka", KAFKA_SERVER, &v).unwrap();
        assert!(k.contains("listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"));
        render("log4j", FLINK_LOG4J, &v).unwrap();
        render("log4j2", KAFKA_LOG4J2, &v).unwrap();
    }
}
