//! A watchdog target as configured: `[NAME=]URL`, one of
//!
//! - `kafka://HOST:PORT[,HOST:PORT...]` — a Kafka cluster by its bootstrap servers;
//! - `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` — a Redis server;
//! - `http://HOST[:PORT]/PATH`, `https://...` — a health URL (any 2xx is up);
//! - `zookeeper://HOST:PORT[,HOST:PORT...]` (or `zk://`) — a ZooKeeper ensemble.
//!
//! NAME is the `target` label of the metrics and the name in events; without one it is the URL with any password
//! left out.

use thiserror::Error;

use crate::protocol::watchdog::TargetKind;

#[derive(Debug, Error, PartialEq)]
#[error("watchdog target {given:?}: {problem}; write [NAME=]kafka://HOST:PORT[,HOST:PORT], redis://HOST:PORT, http(s)://HOST/PATH or zookeeper://HOST:PORT[,HOST:PORT]")]
pub struct Error {
    pub given: String,
    pub problem: String,
}

/// One configured target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    /// The URL as given (with credentials, for the client).
    pub url: String,
    /// `host:port` of each member (Kafka bootstrap servers, ZooKeeper servers); the server for Redis and HTTP.
    pub hosts: Vec<String>,
}

impl std::str::FromStr for Target {
    type Err = Error;

    fn from_str(given: &str) -> Result<Target, Error> {
        let bad = |problem: &str| Error {
            given: given.to_string(),
            problem: problem.to_string(),
        };
        let given_t = given.trim();
        // NAME=URL: a name has no ':' or '/' (a URL's query may hold '=' after them).
        let (name, url) = match given_t.split_once('=') {
            Some((n, u)) if !n.contains(':') && !n.contains('/') => (Some(n.trim()), u.trim()),
            _ => (None, given_t),
        };
        if name.is_some_and(|n| {
            n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        }) {
            return Err(bad(
                "a name is letters, digits, '-', '_' and '.' before the '='",
            ));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("no scheme (kafka://, redis://, http://, zookeeper://)"))?;
        let kind = match scheme {
            "kafka" => TargetKind::Kafka,
            "redis" => TargetKind::Redis,
            "http" | "https" => TargetKind::Http,
            "zookeeper" | "zk" => TargetKind::Zookeeper,
            "rediss" => {
                return Err(bad(
                    "Redis over TLS (rediss://) is not supported by the watchdog yet",
                ))
            }
            other => return Err(bad(&format!("unknown scheme {other:?}"))),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (creds, hostlist) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        if creds.is_some() && kind != TargetKind::Redis && kind != TargetKind::Http {
            return Err(bad(
                "credentials in the URL are only for redis:// and http(s)://",
            ));
        }
        let default_port = match (kind, scheme) {
            (TargetKind::Redis, _) => Some(6379),
            (TargetKind::Http, "https") => Some(443),
            (TargetKind::Http, _) => Some(80),
            _ => None,
        };
        let mut hosts = Vec::new();
        for h in hostlist.split(',') {
            let h = h.trim();
            let (host, port) = match h.rsplit_once(':') {
                Some((host, p)) if !host.is_empty() && !host.ends_with(':') => {
                    let port: u16 = p
                        .parse()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad(&format!("{p:?} is not a port")))?;
                    (host, port)
                }
                _ if !h.is_empty() && !h.contains(':') => match default_port {
                    Some(p) => (h, p),
                    None => return Err(bad(&format!("{h:?} has no port"))),
                },
                _ => return Err(bad(&format!("{h:?} is not HOST:PORT"))),
            };
            hosts.push(format!("{host}:{port}"));
        }
        if hosts.len() > 1 && matches!(kind, TargetKind::Redis | TargetKind::Http) {
            return Err(bad("one host only for redis:// and http(s)://"));
        }
        let shown = match creds {
            Some(c) => url.replacen(&format!("{c}@"), "", 1),
            None => url.to_string(),
        };
        Ok(Target {
            name: name.map_or(shown, str::to_string),
            kind,
            url: url.to_string(),
            hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        s.parse().unwrap()
    }

    #[test]
    fn targets_the_way_people_write_them() {
        let k = t("kafka://b1:9092, b2:9093");
        assert_eq!(
            (k.kind, k.hosts.clone()),
            (TargetKind::Kafka, vec!["b1:9092".into(), "b2:9093".into()])
        );
        assert_eq!(k.name, "kafka://b1:9092, b2:9093");
        let r = t("cache=redis://:s3cret@10.0.0.5/2");
        assert_eq!(
            (r.name.as_str(), r.kind, r.hosts[0].as_str()),
            ("cache", TargetKind::Redis, "10.0.0.5:6379")
        );
        assert_eq!(r.url, "redis://:s3cret@10.0.0.5/2");
        assert_eq!(
            t("redis://u:p@h:7000").name,
            "redis://h:7000",
            "no password in a label"
        );
        let h = t("https://api.example.com/health?deep=1");
        assert_eq!(
            (h.kind, h.hosts[0].as_str()),
            (TargetKind::Http, "api.example.com:443")
        );
        assert_eq!(t("zk://z1:2181,z2:2181,z3:2181").hosts.len(), 3);
        assert_eq!(t("zookeeper://[::1]:2181").hosts, ["[::1]:2181"]);
    }

    #[test]
    fn bad_targets_are_named_with_what_to_write() {
        let e = |s: &str| s.parse::<Target>().unwrap_err().to_string();
        assert!(e("b1:9092").contains("no scheme"));
        assert!(e("kafka://b1").contains("has no port"));
        assert!(e("kafka://b1:x").contains("not a port"));
        assert!(e("kafka://b1:9092,").contains("is not HOST:PORT"));
        assert!(e("mongodb://m:27017").contains("unknown scheme"));
        assert!(e("rediss://r:6380").contains("not supported"));
        assert!(e("redis://a:1,b:2").contains("one host only"));
        assert!(e("bad name=redis://r").contains("a name is"));
        assert!(e("kafka://u:p@b:9092").contains("credentials"));
        assert!(e("x").contains("kafka://HOST:PORT"));
    }
}
