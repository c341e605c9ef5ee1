//! `streamshield install --flink-home DIR` and `uninstall`: StreamShield beside a Flink distribution it did not
//! start. Install puts the plugin jar into `DIR/plugins/streamshield/`, merges the plugin's keys (and, where the
//! user has not set them, StreamShield's recommended detection settings) into the configuration file that this
//! Flink version reads ([`edit`]), and writes starter agent and coordinator configurations ([`starter`]). It is
//! idempotent; `--dry-run` prints the diff and changes nothing; a directory that is not a Flink home, an unsupported
//! Flink version or a configuration file that does not parse is refused with what is wrong, and nothing changes.
//! Uninstall removes exactly what install added.

pub mod edit;
pub mod starter;

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use thiserror::Error;

use crate::flink::conf::{self, FlinkConf, Format};
use crate::flink::plugin;
use edit::Want;

/// The Flink versions the plugin is built and tested for (docs/flink-versions.md).
pub const SUPPORTED: &str = "1.20.x and 2.0 to 2.3";

/// Where the plugin jar goes, under the Flink home.
pub const PLUGIN_DIR: &str = "plugins/streamshield";
/// The jar's name there.
pub const PLUGIN_JAR: &str = "streamshield-flink-plugin.jar";
/// The agent's socket that plugins link to by default.
pub const DEFAULT_SOCKET: &str = "/run/streamshield/agent.sock";

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0} is not a Flink home: {1}; pass the directory that holds Flink's bin/, conf/ and lib/ (nothing was changed)")]
    NotFlinkHome(PathBuf, String),
    #[error("Flink {version} in {home} is not supported (StreamShield supports Flink {SUPPORTED}); nothing was changed")]
    Unsupported { home: PathBuf, version: String },
    #[error(
        "{path} {problem}; fix the file (or restore it) and run install again; nothing was changed"
    )]
    BadConfig { path: PathBuf, problem: String },
    #[error("the plugin jar {0} does not exist")]
    NoJar(PathBuf),
    #[error("no plugin jar at hand and it cannot be built: {0}; pass --plugin-jar (the jar from a StreamShield release or `mvn -f flink-plugin/pom.xml -pl plugin package`)")]
    Build(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The user's input is wrong (exit 64), as opposed to a failure of the machine.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::NotFlinkHome(..)
                | Error::Unsupported { .. }
                | Error::BadConfig { .. }
                | Error::NoJar(_)
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How much of StreamShield's detection settings install brings along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tuning {
    /// Add the recommended keys the configuration does not set; keep (and name) the user's own values.
    Add,
    /// Set the recommended keys even where the configuration sets them otherwise.
    Apply,
    /// Only the plugin's keys.
    None,
}

#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// The Flink distribution (the directory with bin/, conf/, lib/).
    #[arg(long, env = "FLINK_HOME")]
    pub flink_home: PathBuf,
    /// The plugin jar to install (default: the one built from this checkout's flink-plugin/, built with Maven if
    /// needed).
    #[arg(long)]
    pub plugin_jar: Option<PathBuf>,
    /// Where the starter agent.yaml and coordinator.yaml go [default: FLINK_HOME/conf/streamshield].
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// The agent's socket the plugins link to (the agent's `listen`).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub agent_socket: PathBuf,
    /// Where agents reach the coordinator (its `agents-listen`).
    #[arg(long, default_value = crate::coordinator::config::DEFAULT_AGENTS_LISTEN)]
    pub coordinator: String,
    /// Write `streamshield.failover: true` (act on failures) instead of false (observe only, every decision
    /// recorded with what would have been done). Each job can set its own.
    #[arg(long)]
    pub failover: bool,
    /// StreamShield's recommended detection settings (heartbeat interval, RPC failure threshold, restart back-off).
    #[arg(long, value_enum, default_value = "add")]
    pub tuning: Tuning,
    /// Print what would change (a diff) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Overwrite existing starter configurations.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    #[arg(long, env = "FLINK_HOME")]
    pub flink_home: PathBuf,
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A Flink distribution.
#[derive(Debug, Clone)]
pub struct FlinkHome {
    pub dir: PathBuf,
    pub version: String,
    /// The configuration file this version reads, and its format.
    pub config: PathBuf,
    pub format: Format,
}

impl FlinkHome {
    /// Recognises a Flink home by its `lib/flink-dist-<version>.jar` and `conf/`.
    pub fn detect(dir: &Path) -> Result<FlinkHome, Error> {
        let not = |why: &str| Error::NotFlinkHome(dir.to_path_buf(), why.to_string());
        let lib = dir.join("lib");
        let entries = std::fs::read_dir(&lib).map_err(|_| not("it has no lib/ directory"))?;
        let version = entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_prefix("flink-dist")
                    .and_then(|r| r.strip_suffix(".jar"))
                    .map(|r| {
                        r.trim_start_matches(['-', '_'])
                            .trim_start_matches("2.12-")
                            .to_string()
                    })
            })
            .next()
            .ok_or_else(|| not("lib/ holds no flink-dist jar"))?;
        let conf_dir = dir.join("conf");
        if !conf_dir.is_dir() {
            return Err(not("it has no conf/ directory"));
        }
        if !supported(&version) {
            return Err(Error::Unsupported {
                home: dir.to_path_buf(),
                version,
            });
        }
        let (config, format) = match FlinkConf::file_in(&conf_dir, conf::major(&version)) {
            Ok(f) => f,
            // A 1.20/2.x home with no file yet: config.yaml is what both read.
            Err(_) => (conf_dir.join(conf::CONFIG_YAML), Format::Standard),
        };
        Ok(FlinkHome {
            dir: dir.to_path_buf(),
            version,
            config,
            format,
        })
    }
}

/// Whether install supports Flink `version`.
pub fn supported(version: &str) -> bool {
    let mut it = version.split('.').map(|p| p.parse::<u32>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(1), Some(20)) => true,
        (Some(2), Some(minor)) => minor <= 3,
        _ => false,
    }
}

/// The keys install merges, in the order they appear in the block.
pub fn wanted(args: &InstallArgs) -> Vec<(&'static str, Want)> {
    let agent = format!("unix:{}", args.agent_socket.display());
    let set = |(k, v): (&'static str, &str)| (k, Want::Set(v.into()));
    let mut w = vec![
        set(plugin::METRIC_REPORTER),
        set(plugin::REPORTER_INTERVAL),
        (plugin::METRIC_AGENT_ADDRESS, Want::Set(agent.clone())),
        set(plugin::PLANNED_STOP_WAIT),
        set(plugin::TRACE_REPORTER),
        (plugin::TRACE_AGENT_ADDRESS, Want::Set(agent)),
        (
            plugin::FAILURE_ENRICHERS,
            Want::InList(plugin::FAILURE_ENRICHER.into()),
        ),
        (
            "streamshield.failover",
            Want::Set(args.failover.to_string()),
        ),
    ];
    let recommended = [
        // A dead TaskManager is found by failed heartbeat RPCs: one failure is enough (it counts only unreachable
        // recipients, never a slow one), and a heartbeat every 500 ms finds it within that (100 ms is ~0.13 s
        // sooner on a kill and costs ~0.03 cores per TaskManager: deploy/local/profiles/shield.yaml). The heartbeat
        // time-out stays GC-safe: hangs are the agents' job.
        ("heartbeat.interval", "500 ms"),
        ("heartbeat.rpc-failure-threshold", "1"),
        (
            "restart-strategy.exponential-delay.initial-backoff",
            "100 ms",
        ),
    ];
    for (k, v) in recommended {
        match args.tuning {
            Tuning::Add => w.push((k, Want::Recommend(v.into()))),
            Tuning::Apply => w.push((k, Want::Set(v.into()))),
            Tuning::None => {}
        }
    }
    w
}

/// Writes `text` to `path` through a temporary file and a rename, keeping the file's permissions.
fn write_atomically(path: &Path, text: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("streamshield-tmp");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

async fn plugin_jar(args: &InstallArgs) -> Result<PathBuf, Error> {
    if let Some(j) = &args.plugin_jar {
        return if j.is_file() {
            Ok(j.clone())
        } else {
            Err(Error::NoJar(j.clone()))
        };
    }
    let source = crate::local::dist::source_dir().map_err(|e| Error::Build(e.to_string()))?;
    crate::local::dist::ensure_plugin_jar(&crate::local::dist::cache_dir(), &source)
        .await
        .map_err(|e| Error::Build(e.to_string()))
}

pub async fn install(args: &InstallArgs) -> Result<(), Error> {
    let home = FlinkHome::detect(&args.flink_home)?;
    let before = match std::fs::read_to_string(&home.config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&home.config)(e)),
    };
    let edited =
        edit::apply(&before, home.format, &wanted(args)).map_err(|problem| Error::BadConfig {
            path: home.config.clone(),
            problem,
        })?;
    let jar = plugin_jar(args).await?;
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(|| home.dir.join("conf/streamshield"));
    let starters = starter::files(&home, &config_dir, args);
    println!(
        "Flink {} at {} (configuration: {})",
        home.version,
        home.dir.display(),
        home.config.display()
    );
    for n in &edited.notes {
        println!("  note: {n}");
    }
    let target = home.dir.join(PLUGIN_DIR).join(PLUGIN_JAR);
    if args.dry_run {
        print!(
            "{}",
            edit::diff(&home.config.display().to_string(), &before, &edited.text)
        );
        println!("would copy {} to {}", jar.display(), target.display());
        for (path, _) in &starters {
            if path.exists() && !args.force {
                println!("would keep {} (exists)", path.display());
            } else {
                println!("would write {}", path.display());
            }
        }
        println!("dry run: nothing was changed");
        return Ok(());
    }
    if edited.text != before {
        let backup = home.config.with_extension("yaml.before-streamshield");
        if !backup.exists() && !before.is_empty() {
            std::fs::write(&backup, &before).map_err(io(&backup))?;
        }
        write_atomically(&home.config, edited.text.as_bytes())?;
        println!("updated {}", home.config.display());
    } else {
        println!("{} already has StreamShield's keys", home.config.display());
    }
    let dir = home.dir.join(PLUGIN_DIR);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let new = std::fs::read(&jar).map_err(io(&jar))?;
    if std::fs::read(&target).ok().as_deref() != Some(new.as_slice()) {
        write_atomically(&target, &new)?;
        println!("installed {}", target.display());
    } else {
        println!("{} is up to date", target.display());
    }
    std::fs::create_dir_all(&config_dir).map_err(io(&config_dir))?;
    for (path, text) in &starters {
        if path.exists() && !args.force {
            println!("kept {} (exists; --force overwrites)", path.display());
            continue;
        }
        write_atomically(path, text.as_bytes())?;
        println!("wrote {}", path.display());
    }
    println!(
        "next: start the agent on every host and the coordinator (docs/install-standalone.md):"
    );
    println!(
        "  streamshield agent --config {}",
        config_dir.join(starter::AGENT_FILE).display()
    );
    println!(
        "  streamshield coordinator --config {}",
        config_dir.join(starter::COORDINATOR_FILE).display()
    );
    println!("then restart Flink's processes so that they load the plugin");
    Ok(())
}

pub fn uninstall(args: &UninstallArgs) -> Result<(), Error> {
    let home = FlinkHome::detect(&args.flink_home)?;
    let before = std::fs::read_to_string(&home.config).unwrap_or_default();
    let after = edit::strip(&before);
    let jar_dir = home.dir.join(PLUGIN_DIR);
    if args.dry_run {
        print!(
            "{}",
            edit::diff(&home.config.display().to_string(), &before, &after)
        );
        if jar_dir.exists() {
            println!("would remove {}", jar_dir.join(PLUGIN_JAR).display());
        }
        println!("dry run: nothing was changed");
        return Ok(());
    }
    if after != before {
        write_atomically(&home.config, after.as_bytes())?;
        println!("removed StreamShield's keys from {}", home.config.display());
    } else {
        println!("{} has no StreamShield keys", home.config.display());
    }
    let jar = jar_dir.join(PLUGIN_JAR);
    if jar.exists() {
        std::fs::remove_file(&jar).map_err(io(&jar))?;
        // Only the directory install made, and only when nothing else is in it.
        let _ = std::fs::remove_dir(&jar_dir);
        println!("removed {}", jar.display());
    }
    println!("starter configurations (conf/streamshield/) are left in place; restart Flink's processes to unload the plugin");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for v in ["1.20.0", "1.20.5", "2.0.1", "2.3.0"] {
            assert!(supported(v), "{v}");
        }
        for v in ["1.19.3", "1.18.1", "2.4.0", "3.0.0", "x"] {
            assert!(!supported(v), "{v}");
        }
    }

    #[test]
    fn a_directory_that_is_not_a_flink_home_is_named() {
        let d = tempfile::tempdir().unwrap();
        let e = FlinkHome::detect(d.path()).unwrap_err();
        assert!(e.to_string().contains("no lib/"), "{e}");
        assert!(e.is_bad_input());
        std::fs::create_dir_all(d.path().join("lib")).unwrap();
        std::fs::write(d.path().join("lib/flink-dist-1.17.2.jar"), b"").unwrap();
        std::fs::create_dir_all(d.path().join("conf")).unwrap();
        let e = FlinkHome::detect(d.path()).unwrap_err();
        assert!(
            e.to_string().contains("Flink 1.17.2") && e.to_string().contains("not supported"),
            "{e}"
        );
        std::fs::rename(
            d.path().join("lib/flink-dist-1.17.2.jar"),
            d.path().join("lib/flink-dist-1.20.5.jar"),
        )
        .unwrap();
        std::fs::write(d.path().join("conf/flink-conf.yaml"), "a: b\n").unwrap();
        std::fs::write(d.path().join("conf/config.yaml"), "a: c\n").unwrap();
        let h = FlinkHome::detect(d.path()).unwrap();
        assert_eq!(
            (h.version.as_str(), h.format),
            ("1.20.5", Format::Legacy),
            "1.20 reads flink-conf.yaml first"
        );
    }
}
