//! The agent's configuration: `streamshield agent --config FILE` (YAML), every key also a flag
//! (`--suspect-after`) and an environment variable (`STREAMSHIELD_AGENT_SUSPECT_AFTER`). Defaults are written once,
//! in [`AgentConfig::resolve`]; docs/configuration.md lists every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::spill::log::{Fsync, SpillConfig};
use super::watchdog::{Target, WatchdogSettings};
use crate::conf::{self, at_least, invalid, required, Overlay};
use crate::host::endpoint::Endpoint;
use crate::protocol::Role;

/// Where plugins connect by default: one agent per host serves every Flink JVM on it.
pub const DEFAULT_LISTEN: &str = "unix:/run/streamshield/agent.sock";
/// Where `/metrics` and `/healthz` are served by default.
pub const DEFAULT_HTTP: &str = "127.0.0.1:9252";

/// What the agent does on the coordinator's `restart` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Start the process again exactly as it was started (command line, environment, working directory, output
    /// files and cgroup recorded from /proc while it ran), with the same `taskmanager.resource-id`.
    InPlace,
    /// Never start a process: the agent only fences, and the coordinator relies on spare slots.
    Never,
}

impl std::str::FromStr for RestartMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "in-place" => Ok(RestartMode::InPlace),
            "never" => Ok(RestartMode::Never),
            _ => Err(format!("expected in-place or never, got {s:?}")),
        }
    }
}

/// Every key of the agent's configuration, optional here; [`AgentConfig::resolve`] fills in the defaults.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    /// This agent's name towards the coordinator [default: the host name].
    #[arg(long, env = "STREAMSHIELD_AGENT_ID")]
    pub id: Option<String>,
    /// Where plugins connect: unix:/path (a socket file) or tcp:127.0.0.1:PORT (needs secret-file)
    /// [default: unix:/run/streamshield/agent.sock].
    #[arg(long, env = "STREAMSHIELD_AGENT_LISTEN")]
    #[serde(default, with = "conf::from_str")]
    pub listen: Option<Endpoint>,
    /// Permissions of the Unix socket, octal [default: 0600: only the agent's user; 0660 with socket-group lets a
    /// Flink user of that group connect].
    #[arg(long, env = "STREAMSHIELD_AGENT_SOCKET_MODE")]
    pub socket_mode: Option<String>,
    /// Group that owns the Unix socket (a name or a gid), e.g. the group Flink runs as.
    #[arg(long, env = "STREAMSHIELD_AGENT_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// The secret a plugin must present (a file; created 0600 when missing). Required for a tcp: listener.
    #[arg(long, env = "STREAMSHIELD_AGENT_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Address of /metrics and /healthz [default: 127.0.0.1:9252].
    #[arg(long, env = "STREAMSHIELD_AGENT_HTTP")]
    #[serde(default, with = "conf::from_str")]
    pub http: Option<SocketAddr>,
    /// The coordinator's agent address (host:port), or the addresses of its replicas (comma-separated, tried in
    /// turn); without it the agent watches and exports metrics only.
    #[arg(long, env = "STREAMSHIELD_AGENT_COORDINATOR")]
    pub coordinator: Option<String>,
    /// The coordinator's agent token (a file). Required with coordinator.
    #[arg(long, env = "STREAMSHIELD_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Which Flink processes may link: tm, jm or both (comma-separated) [default: tm,jm].
    #[arg(long, env = "STREAMSHIELD_AGENT_ROLES", value_delimiter = ',', value_parser = parse_role)]
    #[serde(default, deserialize_with = "roles")]
    pub roles: Option<Vec<Role>>,
    /// What a `restart` order does: in-place (start the process again as it was started) or never (only fence)
    /// [default: in-place].
    #[arg(long, env = "STREAMSHIELD_AGENT_RESTART")]
    #[serde(default, with = "conf::from_str")]
    pub restart: Option<RestartMode>,
    /// The JobManager's RPC host:port: a TaskManager's agent that has lost the coordinator for partition-tolerance
    /// and cannot reach this either fences its TaskManagers [default: read from each TaskManager's Flink
    /// configuration (jobmanager.rpc.address and .port)].
    #[arg(long, env = "STREAMSHIELD_AGENT_JOBMANAGER")]
    pub jobmanager: Option<String>,
    /// How long the coordinator may be silent before a cut-off TaskManager is fenced by its own agent [default: 3s].
    #[arg(long, env = "STREAMSHIELD_AGENT_PARTITION_TOLERANCE", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub partition_tolerance: Option<Duration>,
    /// No heartbeat for this long makes a process suspect (then paused, hung or busy-gc by /proc) [default: 300ms].
    #[arg(long, env = "STREAMSHIELD_AGENT_SUSPECT_AFTER", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub suspect_after: Option<Duration>,
    /// How often each process's status goes to the coordinator [default: 200ms].
    #[arg(long, env = "STREAMSHIELD_AGENT_STATUS_INTERVAL", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub status_interval: Option<Duration>,
    /// The heartbeat interval plugins are told (informative: the plugin's own setting decides) [default: 100ms].
    #[arg(long, env = "STREAMSHIELD_AGENT_HEARTBEAT_INTERVAL", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub heartbeat_interval: Option<Duration>,
    /// A plugin connection holding half a frame without progress for this long is closed [default: 10s].
    #[arg(long, env = "STREAMSHIELD_AGENT_STALL_TIMEOUT", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub stall_timeout: Option<Duration>,
    /// Processes watched at once; more are refused [default: 64].
    #[arg(long, env = "STREAMSHIELD_AGENT_MAX_PROCESSES")]
    pub max_processes: Option<usize>,
    /// Write the bound addresses and the agent's pid here (JSON) once serving.
    #[arg(long, env = "STREAMSHIELD_AGENT_INFO_FILE")]
    pub info_file: Option<PathBuf>,
    /// Systems to watch, each `[NAME=]URL`: kafka://HOST:PORT[,HOST:PORT], redis://HOST:PORT, http(s)://HOST/PATH,
    /// zookeeper://HOST:PORT[,HOST:PORT] (a list in the file; separated by spaces as a flag) [default: none].
    #[arg(
        long,
        env = "STREAMSHIELD_AGENT_WATCHDOG_TARGETS",
        value_delimiter = ' '
    )]
    #[serde(default, deserialize_with = "targets")]
    pub watchdog_targets: Option<Vec<Target>>,
    /// Time between two probes of a target [default: 500ms].
    #[arg(long, env = "STREAMSHIELD_AGENT_WATCHDOG_INTERVAL", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub watchdog_interval: Option<Duration>,
    /// A probe without its answer this long has failed (the target is hung) [default: 1s].
    #[arg(long, env = "STREAMSHIELD_AGENT_WATCHDOG_TIMEOUT", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub watchdog_timeout: Option<Duration>,
    /// Failed probes in a row that make a target down [default: 2].
    #[arg(long, env = "STREAMSHIELD_AGENT_WATCHDOG_DOWN_AFTER")]
    pub watchdog_down_after: Option<u32>,
    /// Good probes in a row that make a target healthy again [default: 3].
    #[arg(long, env = "STREAMSHIELD_AGENT_WATCHDOG_UP_AFTER")]
    pub watchdog_up_after: Option<u32>,
    /// A good probe slower than this counts as degraded [default: 500ms].
    #[arg(long, env = "STREAMSHIELD_AGENT_WATCHDOG_SLOW", value_parser = conf::parse_duration)]
    #[serde(default, with = "conf::duration")]
    pub watchdog_slow: Option<Duration>,
    /// The spill log's directory (one per agent, on local disk) [default: none: no spill log, a guard that needs
    /// one falls back to back-pressure].
    #[arg(long, env = "STREAMSHIELD_AGENT_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    /// The most disk the spill log may take; a full log refuses records (the guard back-pressures) [default: 1gb].
    #[arg(long, env = "STREAMSHIELD_AGENT_SPILL_MAX_BYTES", value_parser = conf::parse_bytes)]
    #[serde(default, with = "conf::bytes")]
    pub spill_max_bytes: Option<u64>,
    /// A segment is closed and the next begun at this size [default: 64mb].
    #[arg(long, env = "STREAMSHIELD_AGENT_SPILL_SEGMENT_BYTES", value_parser = conf::parse_bytes)]
    #[serde(default, with = "conf::bytes")]
    pub spill_segment_bytes: Option<u64>,
    /// always: fsync before every acknowledgement (survives a power loss); never: the kernel's page cache (survives
    /// the agent's crash, not the host's) [default: always].
    #[arg(long, env = "STREAMSHIELD_AGENT_SPILL_FSYNC")]
    #[serde(default, with = "conf::from_str")]
    pub spill_fsync: Option<Fsync>,
}

crate::overlay!(AgentConfig {
    id,
    listen,
    socket_mode,
    socket_group,
    secret_file,
    http,
    coordinator,
    token_file,
    roles,
    restart,
    jobmanager,
    partition_tolerance,
    suspect_after,
    status_interval,
    heartbeat_interval,
    stall_timeout,
    max_processes,
    info_file,
    watchdog_targets,
    watchdog_interval,
    watchdog_timeout,
    watchdog_down_after,
    watchdog_up_after,
    watchdog_slow,
    spill_dir,
    spill_max_bytes,
    spill_segment_bytes,
    spill_fsync,
});

fn parse_role(s: &str) -> Result<Role, String> {
    match s.trim() {
        "tm" => Ok(Role::Tm),
        "jm" => Ok(Role::Jm),
        other => Err(format!("expected tm or jm, got {other:?}")),
    }
}

fn targets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Target>>, D::Error> {
    let v: Option<Vec<String>> = Option::deserialize(d)?;
    v.map(|v| {
        v.iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    })
    .transpose()
}

fn roles<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Role>>, D::Error> {
    let v: Option<Vec<String>> = Option::deserialize(d)?;
    v.map(|v| {
        v.iter()
            .map(|s| parse_role(s).map_err(serde::de::Error::custom))
            .collect()
    })
    .transpose()
}

/// The agent's settings, resolved and validated.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub id: String,
    pub listen: Endpoint,
    pub socket_mode: u32,
    /// The gid to give the socket, when configured.
    pub socket_gid: Option<u32>,
    pub secret_file: Option<PathBuf>,
    pub http: SocketAddr,
    /// As configured (one address or several, comma-separated): [`AgentSettings::coordinator_addrs`].
    pub coordinator: Option<String>,
    pub token_file: Option<PathBuf>,
    pub roles: Vec<Role>,
    pub restart: RestartMode,
    pub jobmanager: Option<String>,
    pub partition_tolerance: Duration,
    pub suspect_after: Duration,
    pub status_interval: Duration,
    pub heartbeat_interval: Duration,
    pub stall_timeout: Duration,
    pub max_processes: usize,
    pub info_file: Option<PathBuf>,
    pub watchdog: WatchdogSettings,
    /// The spill log: its directory and settings (None: no spill log).
    pub spill: Option<(PathBuf, SpillConfig)>,
}

impl AgentSettings {
    /// The coordinator's addresses, in the order they are tried (empty: no coordinator).
    pub fn coordinator_addrs(&self) -> Vec<String> {
        self.coordinator
            .iter()
            .flat_map(|c| c.split(','))
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect()
    }
}

/// The host's name (the agent's default id).
pub fn host_name() -> String {
    crate::host::procfs::host_name().unwrap_or_else(|| "localhost".into())
}

impl AgentConfig {
    /// Reads `file` (if any), lays the command line over it and resolves the result.
    pub fn load(file: Option<&Path>, cli: AgentConfig) -> conf::Result<AgentSettings> {
        let from_file: AgentConfig = conf::load(file)?;
        from_file.overlay(cli).resolve(file)
    }

    /// Fills in the defaults and validates. `file` is named in errors.
    pub fn resolve(self, file: Option<&Path>) -> conf::Result<AgentSettings> {
        let id = self.id.unwrap_or_else(host_name);
        if id.trim().is_empty() || id.len() > 253 {
            return Err(invalid("id", "must be 1 to 253 characters", file));
        }
        let listen = match self.listen {
            Some(l) => l,
            None => DEFAULT_LISTEN.parse().expect("the default endpoint parses"),
        };
        let socket_mode = match &self.socket_mode {
            None => 0o600,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    invalid(
                        "socket-mode",
                        format!("{m:?} is not an octal mode like 0660"),
                        file,
                    )
                })?,
        };
        if socket_mode & 0o600 != 0o600 {
            return Err(invalid(
                "socket-mode",
                "the agent's own user needs read and write (at least 0600)",
                file,
            ));
        }
        if socket_mode & 0o007 != 0 {
            return Err(invalid(
                "socket-mode",
                "other users may not connect (no permissions for others; use socket-group)",
                file,
            ));
        }
        let socket_gid = match &self.socket_group {
            None => None,
            Some(g) => Some(group_id(g).ok_or_else(|| {
                invalid(
                    "socket-group",
                    format!("no group {g:?} on this host (/etc/group)"),
                    file,
                )
            })?),
        };
        if matches!(listen, Endpoint::Tcp(_)) && self.secret_file.is_none() {
            return Err(invalid(
                "secret-file",
                "a tcp: listener needs a secret file (created if missing)",
                file,
            ));
        }
        if let Some(c) = &self.coordinator {
            if c.split(',').any(|a| {
                let a = a.trim();
                a.is_empty()
                    || a.rsplit_once(':')
                        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            }) {
                return Err(invalid(
                    "coordinator",
                    format!("must be host:port, or several separated by commas, got {c:?}"),
                    file,
                ));
            }
        }
        let token_file = match (&self.coordinator, self.token_file) {
            (Some(_), t) => Some(required(
                t,
                "token-file",
                "STREAMSHIELD_AGENT_TOKEN_FILE",
                file,
            )?),
            (None, t) => t,
        };
        let roles = self.roles.unwrap_or_else(|| vec![Role::Tm, Role::Jm]);
        if roles.is_empty() || roles.contains(&Role::Agent) {
            return Err(invalid("roles", "list tm, jm or both", file));
        }
        let ms = Duration::from_millis;
        let max_processes = self.max_processes.unwrap_or(64);
        if max_processes == 0 {
            return Err(invalid("max-processes", "must be at least 1", file));
        }
        Ok(AgentSettings {
            id,
            listen,
            socket_mode,
            socket_gid,
            secret_file: self.secret_file,
            http: self
                .http
                .unwrap_or_else(|| DEFAULT_HTTP.parse().expect("the default address parses")),
            coordinator: self.coordinator,
            token_file,
            roles,
            restart: self.restart.unwrap_or(RestartMode::InPlace),
            jobmanager: self.jobmanager,
            partition_tolerance: at_least(
                self.partition_tolerance.unwrap_or(ms(3_000)),
                ms(500),
                "partition-tolerance",
                file,
            )?,
            suspect_after: at_least(
                self.suspect_after.unwrap_or(ms(300)),
                ms(50),
                "suspect-after",
                file,
            )?,
            status_interval: at_least(
                self.status_interval.unwrap_or(ms(200)),
                ms(10),
                "status-interval",
                file,
            )?,
            heartbeat_interval: at_least(
                self.heartbeat_interval.unwrap_or(ms(100)),
                ms(10),
                "heartbeat-interval",
                file,
            )?,
            stall_timeout: at_least(
                self.stall_timeout.unwrap_or(ms(10_000)),
                ms(100),
                "stall-timeout",
                file,
            )?,
            max_processes,
            info_file: self.info_file,
            watchdog: watchdog_settings(
                self.watchdog_targets,
                self.watchdog_interval,
                self.watchdog_timeout,
                self.watchdog_down_after,
                self.watchdog_up_after,
                self.watchdog_slow,
                file,
            )?,
            spill: spill_settings(
                self.spill_dir,
                self.spill_max_bytes,
                self.spill_segment_bytes,
                self.spill_fsync,
                file,
            )?,
        })
    }
}

fn watchdog_settings(
    targets: Option<Vec<Target>>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    down_after: Option<u32>,
    up_after: Option<u32>,
    slow: Option<Duration>,
    file: Option<&Path>,
) -> conf::Result<WatchdogSettings> {
    let ms = Duration::from_millis;
    let targets = targets.unwrap_or_default();
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|o| o.name == t.name) {
            return Err(invalid(
                "watchdog-targets",
                format!(
                    "two targets are named {:?}; give one a NAME= of its own",
                    t.name
                ),
                file,
            ));
        }
    }
    let timeout = at_least(
        timeout.unwrap_or(ms(1_000)),
        ms(10),
        "watchdog-timeout",
        file,
    )?;
    let slow = slow.unwrap_or(ms(500));
    if slow >= timeout {
        return Err(invalid(
            "watchdog-slow",
            "must be shorter than watchdog-timeout (a probe that slow has failed already)",
            file,
        ));
    }
    let count = |v: Option<u32>, default: u32, key: &'static str| match v.unwrap_or(default) {
        0 => Err(invalid(key, "must be at least 1", file)),
        n => Ok(n),
    };
    Ok(WatchdogSettings {
        targets,
        interval: at_least(
            interval.unwrap_or(ms(500)),
            ms(10),
            "watchdog-interval",
            file,
        )?,
        timeout,
        down_after: count(down_after, 2, "watchdog-down-after")?,
        up_after: count(up_after, 3, "watchdog-up-after")?,
        slow,
    })
}

fn spill_settings(
    dir: Option<PathBuf>,
    max_bytes: Option<u64>,
    segment_bytes: Option<u64>,
    fsync: Option<Fsync>,
    file: Option<&Path>,
) -> conf::Result<Option<(PathBuf, SpillConfig)>> {
    let default = SpillConfig::default();
    let segment_bytes = segment_bytes.unwrap_or(default.segment_bytes);
    let max_bytes = max_bytes.unwrap_or(default.max_bytes);
    if segment_bytes < 4096 {
        return Err(invalid("spill-segment-bytes", "must be at least 4kb", file));
    }
    if max_bytes < segment_bytes {
        return Err(invalid(
            "spill-max-bytes",
            format!("must be at least spill-segment-bytes ({segment_bytes} bytes)"),
            file,
        ));
    }
    let Some(dir) = dir else {
        return Ok(None);
    };
    Ok(Some((
        dir,
        SpillConfig {
            max_bytes,
            segment_bytes,
            fsync: fsync.unwrap_or(default.fsync),
        },
    )))
}

/// A group's id from its name (or a number), from /etc/group.
fn group_id(g: &str) -> Option<u32> {
    if let Ok(n) = g.parse() {
        return Some(n);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == g).then(|| f.nth(1)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_the_configuration_reference() {
        conf::assert_keys_documented::<AgentConfig>(
            include_str!("../../docs/configuration.md"),
            "agent",
            "STREAMSHIELD_AGENT_",
            28,
            conf::key_row,
        );
    }

    #[test]
    fn a_minimal_file_is_a_few_lines() {
        let cfg: AgentConfig = conf::parse(
            "coordinator: coord.example:9250\ntoken-file: /etc/streamshield/agent.token\n",
        )
        .unwrap();
        let s = cfg.resolve(None).unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.socket_mode, 0o600);
        assert_eq!(s.roles, vec![Role::Tm, Role::Jm]);
        assert_eq!(s.restart, RestartMode::InPlace);
        assert_eq!(s.suspect_after, Duration::from_millis(300));
        assert!(!s.id.is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let err = |yaml: &str| {
            conf::parse::<AgentConfig>(yaml)
                .and_then(|c| {
                    c.resolve(Some(Path::new("agent.yaml")))
                        .map_err(|e| e.to_string())
                })
                .unwrap_err()
        };
        assert!(err("coordinator: c:1\n").contains("token-file is required"));
        assert!(
            err("coordinator: c:1,,d:2\ntoken-file: /t\n").contains("several separated by commas")
        );
        assert!(err("coordinator: c\ntoken-file: /t\n").contains("must be host:port"));
        let two: AgentConfig = conf::parse("coordinator: a:1, b:2\ntoken-file: /t\n").unwrap();
        assert_eq!(
            two.resolve(None).unwrap().coordinator_addrs(),
            ["a:1", "b:2"]
        );
        assert!(err("listen: tcp:127.0.0.1:1\n").contains("secret-file"));
        assert!(err("listen: udp:x\n").contains("unix:/path or tcp:host:port"));
        assert!(err("socket-mode: '0666'\n").contains("socket-group"));
        assert!(err("socket-mode: rwx\n").contains("octal"));
        assert!(err("roles: [tm, agent]\n").contains("expected tm or jm"));
        assert!(err("restart: sometimes\n").contains("in-place or never"));
        assert!(err("suspect-after: 1ms\n").contains("at least"));
        assert!(err("socket-group: no-such-group-here\n").contains("no group"));
        assert!(err("listen-on: x\n").contains("unknown field `listen-on`"));
        assert!(err("suspect-after: 1ms\n").contains("agent.yaml"));
        assert!(err("watchdog-targets: [b1:9092]\n").contains("no scheme"));
        assert!(
            err("watchdog-targets: [redis://a:1, redis://a:1]\n").contains("two targets are named")
        );
        assert!(err("watchdog-slow: 2s\n").contains("shorter than watchdog-timeout"));
        assert!(err("watchdog-down-after: 0\n").contains("at least 1"));
        assert!(err("spill-max-bytes: 1 zb\n").contains("not a size"));
        assert!(err("spill-segment-bytes: 1kb\n").contains("at least 4kb"));
        assert!(err("spill-fsync: sometimes\n").contains("always or never"));
    }

    #[test]
    fn watchdog_and_spill_keys() {
        let cfg: AgentConfig = conf::parse(
            "watchdog-targets:\n  - orders=kafka://b1:9092,b2:9092\n  - redis://cache:6379\nspill-dir: /var/lib/streamshield/spill\nspill-max-bytes: 2gb\nspill-fsync: never\n",
        )
        .unwrap();
        let s = cfg.resolve(None).unwrap();
        assert_eq!(s.watchdog.targets.len(), 2);
        assert_eq!(s.watchdog.targets[0].name, "orders");
        assert_eq!((s.watchdog.down_after, s.watchdog.up_after), (2, 3));
        let (dir, spill) = s.spill.unwrap();
        assert_eq!(dir, Path::new("/var/lib/streamshield/spill"));
        assert_eq!(
            (spill.max_bytes, spill.segment_bytes, spill.fsync),
            (2 << 30, SpillConfig::default().segment_bytes, Fsync::Never)
        );
        let none = AgentConfig::default().resolve(None).unwrap();
        assert!(none.spill.is_none() && none.watchdog.targets.is_empty());
    }

    #[test]
    fn flags_win_over_the_file() {
        use crate::conf::Overlay;
        let file: AgentConfig = conf::parse("suspect-after: 1s\nid: from-file\n").unwrap();
        let cli = AgentConfig {
            id: Some("from-flag".into()),
            ..AgentConfig::default()
        };
        let s = file.overlay(cli).resolve(None).unwrap();
        assert_eq!(s.id, "from-flag");
        assert_eq!(s.suspect_after, Duration::from_secs(1));
    }
}

/// `streamshield agent`: a configuration file and/or its keys as flags.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The configuration file (YAML; docs/configuration.md). Flags and environment variables override its keys.
    #[arg(long, env = "STREAMSHIELD_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub keys: AgentConfig,
}

impl AgentArgs {
    /// Reads the file (if any), lays the flags over it and resolves the settings.
    pub fn settings(self) -> conf::Result<AgentSettings> {
        AgentConfig::load(self.config.as_deref(), self.keys)
    }
}
