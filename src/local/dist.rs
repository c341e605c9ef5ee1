//! Getting the real components: Flink 1.20 (from PyPI's `apache-flink-libraries`, which carries the binary
//! distribution's `lib/`), the Kafka broker (from Maven Central) and the workload jar (built with Maven).
//!
//! Everything lands under the cache directory (`STREAMSHIELD_CACHE_DIR`, default `~/.cache/streamshield`) with a
//! `manifest.json` of sizes and SHA-256 sums, checked on every use: a truncated or corrupted file is noticed and the
//! component is fetched again. Downloads themselves are checked by the clients (pip against the index's hash,
//! Maven with `--strict-checksums`, and again here against the `.sha1` Maven keeps beside each jar).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use thiserror::Error;

/// The Flink version the local cluster runs. Keep `flink.version` in flink-plugin/pom.xml in step.
pub const FLINK_VERSION: &str = "1.20.5";
/// The Kafka broker version (KRaft).
pub const KAFKA_VERSION: &str = "4.1.1";

#[derive(Debug, Error)]
pub enum Error {
    #[error("{tool} is needed {why} but was not found: {hint}")]
    MissingTool {
        tool: &'static str,
        why: &'static str,
        hint: &'static str,
    },
    #[error("{tool} is too old: {found}; {hint}")]
    OldTool {
        tool: &'static str,
        found: String,
        hint: &'static str,
    },
    #[error("fetching {artifact} into {cache} failed: {detail}")]
    Fetch {
        artifact: String,
        cache: PathBuf,
        detail: String,
    },
    #[error("building a jar from {source_dir} failed (log: {log}): {detail}")]
    Build {
        source_dir: PathBuf,
        log: PathBuf,
        detail: String,
    },
    #[error("StreamShield's source tree (with flink-plugin/pom.xml) was not found at {0}; set STREAMSHIELD_SOURCE_DIR to a checkout")]
    NoSource(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where downloads and builds are cached.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STREAMSHIELD_CACHE_DIR") {
        return PathBuf::from(d);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("streamshield")
}

/// The StreamShield checkout holding flink-plugin/ (for the workload build).
pub fn source_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("STREAMSHIELD_SOURCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if dir.join("flink-plugin/pom.xml").is_file() {
        Ok(dir)
    } else {
        Err(Error::NoSource(dir))
    }
}

/// Prints a progress line for a long step.
pub fn say(msg: impl AsRef<str>) {
    eprintln!("==> {}", msg.as_ref());
}

/// Checks that java (17+) and Maven are there; says what to install when not.
pub async fn preflight() -> Result<()> {
    let out = tokio::process::Command::new("java")
        .arg("-version")
        .output()
        .await
        .map_err(|_| Error::MissingTool {
            tool: "java",
            why: "to run Flink and Kafka",
            hint: "install a JDK 17 or newer (Debian: apt-get install openjdk-17-jdk-headless) and put java on PATH",
        })?;
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    match java_major(&text) {
        Some(v) if v >= 17 => {}
        _ => {
            return Err(Error::OldTool {
                tool: "java",
                found: text.lines().next().unwrap_or("").to_string(),
                hint: "Kafka 4 and Flink 1.20 here need Java 17 or newer",
            })
        }
    }
    tokio::process::Command::new("mvn")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(|_| Error::MissingTool {
            tool: "mvn",
            why: "to fetch Kafka and build the workload jar",
            hint: "install Apache Maven 3.8+ (Debian: apt-get install maven)",
        })?;
    Ok(())
}

/// The major version from `java -version` output (`openjdk version "17.0.15"` -> 17, `"1.8.0_1"` -> 8).
pub fn java_major(version_output: &str) -> Option<u32> {
    let quoted = version_output.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '-', '+', '_']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct Manifest {
    /// Relative path -> size and SHA-256.
    files: BTreeMap<String, FileSum>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct FileSum {
    size: u64,
    sha256: String,
}

const MANIFEST: &str = "manifest.json";
/// The name of the checksum manifest in every cached component's directory.
pub const MANIFEST_NAME: &str = MANIFEST;

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes the manifest of every file under `dir`.
fn write_manifest(dir: &Path) -> Result<()> {
    let mut m = Manifest::default();
    for p in files_under(dir).map_err(io(dir))? {
        let rel = p
            .strip_prefix(dir)
            .unwrap_or(&p)
            .to_string_lossy()
            .to_string();
        if rel == MANIFEST {
            continue;
        }
        let size = std::fs::metadata(&p).map_err(io(&p))?.len();
        let sha256 = sha256_file(&p).map_err(io(&p))?;
        m.files.insert(rel, FileSum { size, sha256 });
    }
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(&m).expect("manifest serializes");
    std::fs::write(&path, text).map_err(io(&path))
}

/// Checks every file of `dir` against its manifest. `Err` says what is wrong.
fn verify_manifest(dir: &Path) -> std::result::Result<(), String> {
    let text =
        std::fs::read_to_string(dir.join(MANIFEST)).map_err(|_| "no manifest".to_string())?;
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("unreadable manifest: {e}"))?;
    if m.files.is_empty() {
        return Err("empty manifest".into());
    }
    for (rel, want) in &m.files {
        let p = dir.join(rel);
        let size = std::fs::metadata(&p)
            .map_err(|_| format!("{rel} is missing"))?
            .len();
        if size != want.size {
            return Err(format!("{rel} has {size} bytes, expected {}", want.size));
        }
        let sum = sha256_file(&p).map_err(|e| format!("{rel}: {e}"))?;
        if sum != want.sha256 {
            return Err(format!("{rel} has a wrong checksum"));
        }
    }
    Ok(())
}

/// Returns `dir` when its manifest checks out; otherwise removes it (saying why) and returns None.
fn cached(dir: &Path, what: &str) -> Option<PathBuf> {
    if !dir.exists() {
        return None;
    }
    match verify_manifest(dir) {
        Ok(()) => Some(dir.to_path_buf()),
        Err(why) => {
            say(format!(
                "cached {what} at {} is unusable ({why}); fetching it again",
                dir.display()
            ));
            let _ = std::fs::remove_dir_all(dir);
            None
        }
    }
}

/// [`cached`] for the sibling modules.
pub(super) fn cached_dir(dir: &Path, what: &str) -> Option<PathBuf> {
    cached(dir, what)
}

/// [`write_manifest`] for the sibling modules.
pub(super) fn write_manifest_of(dir: &Path) -> Result<()> {
    write_manifest(dir)
}

/// Downloads `package==version` from PyPI into `downloads` (once; pip checks the index's hash) and returns the file
/// whose name starts with `prefix` and the version (a wheel or an sdist).
pub(super) async fn fetch_pypi(
    downloads: &Path,
    package: &str,
    version: &str,
    prefix: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(downloads).map_err(io(downloads))?;
    let stem = format!("{prefix}{version}");
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(downloads)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                n.starts_with(&stem) && (n.ends_with(".whl") || n.ends_with(".tar.gz"))
            })
    };
    if let Some(f) = find() {
        return Ok(f);
    }
    let artifact = format!("{package}=={version} (PyPI)");
    say(format!(
        "downloading {artifact} into {}",
        downloads.display()
    ));
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-d",
    ])
    .arg(downloads)
    .arg(format!("{package}=={version}"));
    run_logged(
        cmd,
        &downloads.join(format!("pip-download-{package}-{version}.log")),
        &format!("downloading {package}"),
    )
    .await
    .map_err(|detail| Error::Fetch {
        artifact: artifact.clone(),
        cache: downloads.to_path_buf(),
        detail,
    })?;
    find().ok_or_else(|| Error::Fetch {
        artifact,
        cache: downloads.to_path_buf(),
        detail: "pip finished but the file is not there".into(),
    })
}

/// Runs a command with its output in `log`, printing a line every 15 s so a long step is visibly alive.
/// On failure returns the last lines of the log.
async fn run_logged(
    mut cmd: tokio::process::Command,
    log: &Path,
    label: &str,
) -> std::result::Result<(), String> {
    let file =
        std::fs::File::create(log).map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let start = tokio::time::Instant::now();
    let mut tick =
        tokio::time::interval_at(start + Duration::from_secs(15), Duration::from_secs(15));
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.map_err(|e| e.to_string())?,
            _ = tick.tick() => say(format!("  still {label} ({} s)", start.elapsed().as_secs())),
        }
    };
    if status.success() {
        Ok(())
    } else {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "{status}; last lines of {}:\n{}",
            log.display(),
            tail.join("\n")
        ))
    }
}

/// Flink's `lib/` and `bin/bash-java-utils.jar`, fetched once.
pub async fn ensure_flink(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(format!("flink-{FLINK_VERSION}"));
    if let Some(d) = cached(&dir, "Flink") {
        return Ok(d);
    }
    let downloads = cache.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(io(&downloads))?;
    let name = format!("apache_flink_libraries-{FLINK_VERSION}");
    let tarball = downloads.join(format!("{name}.tar.gz"));
    let artifact = format!("apache-flink-libraries=={FLINK_VERSION} (PyPI)");
    let fetch_err = |detail: String| Error::Fetch {
        artifact: artifact.clone(),
        cache: downloads.clone(),
        detail,
    };
    for attempt in 0..2 {
        if !tarball.exists() {
            say(format!(
                "downloading Flink {FLINK_VERSION}: {artifact}, ~230 MB, into {}",
                downloads.display()
            ));
            let mut cmd = tokio::process::Command::new("python3");
            cmd.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&downloads)
            .arg(format!("apache-flink-libraries=={FLINK_VERSION}"));
            run_logged(
                cmd,
                &downloads.join("pip-download.log"),
                "downloading Flink",
            )
            .await
            .map_err(|e| {
                if e.contains("cannot start") {
                    fetch_err(format!(
                        "python3 with pip is needed to fetch Flink ({e}); install python3-pip"
                    ))
                } else {
                    fetch_err(e)
                }
            })?;
            if !tarball.exists() {
                return Err(fetch_err(format!(
                    "pip finished but {} is not there",
                    tarball.display()
                )));
            }
        }
        say(format!(
            "unpacking Flink {FLINK_VERSION} into {}",
            dir.display()
        ));
        let partial = cache.join(format!("flink-{FLINK_VERSION}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(io(&partial))?;
        let mut cmd = tokio::process::Command::new("tar");
        cmd.arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&partial)
            .arg("--strip-components=2")
            .arg(format!("{name}/deps/lib"))
            .arg(format!("{name}/deps/bin/bash-java-utils.jar"));
        match run_logged(cmd, &cache.join("flink-unpack.log"), "unpacking Flink").await {
            Ok(())
                if partial
                    .join(format!("lib/flink-dist-{FLINK_VERSION}.jar"))
                    .is_file() =>
            {
                write_manifest(&partial)?;
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&partial, &dir).map_err(io(&dir))?;
                return Ok(dir);
            }
            outcome => {
                let _ = std::fs::remove_dir_all(&partial);
                let why = outcome
                    .err()
                    .unwrap_or_else(|| "flink-dist jar missing from the archive".into());
                if attempt == 0 {
                    say(format!(
                        "the downloaded archive {} is damaged ({}); downloading it again",
                        tarball.display(),
                        why.lines().next().unwrap_or("")
                    ));
                    let _ = std::fs::remove_file(&tarball);
                } else {
                    return Err(fetch_err(why));
                }
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// The Kafka broker's jars (`libs/`), fetched once.
pub async fn ensure_kafka(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(format!("kafka-{KAFKA_VERSION}"));
    if let Some(d) = cached(&dir, "Kafka") {
        return Ok(d);
    }
    let work = cache.join("kafka-fetch");
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    let pom = work.join("pom.xml");
    let text = include_str!("../../deploy/local/kafka/fetch-pom.xml")
        .replace("${KAFKA_VERSION}", KAFKA_VERSION);
    std::fs::write(&pom, text).map_err(io(&pom))?;
    let artifact = format!(
        "org.apache.kafka:kafka_2.13:{KAFKA_VERSION} and its runtime dependencies (Maven Central)"
    );
    let fetch_err = |detail: String| Error::Fetch {
        artifact: artifact.clone(),
        cache: dir.clone(),
        detail,
    };
    say(format!(
        "fetching Kafka {KAFKA_VERSION} (~45 MB) with Maven into {}",
        dir.display()
    ));
    let cp_file = work.join("classpath.txt");
    for attempt in 0..2 {
        let mut cmd = tokio::process::Command::new("mvn");
        cmd.args(["-B", "-ntp", "--strict-checksums", "-f"])
            .arg(&pom)
            .arg("dependency:build-classpath")
            .arg(format!("-Dmdep.outputFile={}", cp_file.display()))
            .arg("-Dmdep.includeScope=runtime");
        run_logged(cmd, &work.join("mvn.log"), "fetching Kafka")
            .await
            .map_err(&fetch_err)?;
        let cp = std::fs::read_to_string(&cp_file).map_err(io(&cp_file))?;
        let jars: Vec<PathBuf> = cp
            .trim()
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if jars.is_empty() {
            return Err(fetch_err("Maven resolved an empty classpath".into()));
        }
        // Maven keeps the published SHA-1 beside each jar: a jar damaged in the local repository is removed
        // (so the next resolution downloads it again) instead of being copied into the cache.
        let damaged: Vec<&PathBuf> = jars.iter().filter(|j| !sha1_matches(j)).collect();
        if !damaged.is_empty() {
            if attempt == 1 {
                return Err(fetch_err(format!(
                    "{} does not match its published SHA-1",
                    damaged[0].display()
                )));
            }
            for j in damaged {
                say(format!(
                    "{} does not match its published SHA-1; fetching it again",
                    j.display()
                ));
                let _ = std::fs::remove_file(j);
            }
            continue;
        }
        let partial = cache.join(format!("kafka-{KAFKA_VERSION}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        let libs = partial.join("libs");
        std::fs::create_dir_all(&libs).map_err(io(&libs))?;
        for j in &jars {
            let name = j.file_name().unwrap_or_default();
            std::fs::copy(j, libs.join(name)).map_err(io(j))?;
        }
        write_manifest(&partial)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir).map_err(io(&dir))?;
        return Ok(dir);
    }
    Err(fetch_err(
        "jars stayed damaged after a second download".into(),
    ))
}

/// True when `jar` matches the `.sha1` beside it (or there is none to compare with).
fn sha1_matches(jar: &Path) -> bool {
    let side = PathBuf::from(format!("{}.sha1", jar.display()));
    let Ok(want) = std::fs::read_to_string(&side) else {
        return jar.is_file();
    };
    let want: String = want.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    let Ok(mut f) = std::fs::File::open(jar) else {
        return false;
    };
    let mut h = sha1::Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    want.len() == 40 && hex(&h.finalize()).eq_ignore_ascii_case(&want)
}

/// The workload jar, built with Maven from `source` and cached by a hash of its sources.
pub async fn ensure_workload_jar(cache: &Path, source: &Path) -> Result<PathBuf> {
    ensure_module_jar(cache, source, "workloads", "streamshield-workloads.jar").await
}

/// The Flink plugin jar (for `plugins/streamshield/`), built and cached the same way.
pub async fn ensure_plugin_jar(cache: &Path, source: &Path) -> Result<PathBuf> {
    ensure_module_jar(cache, source, "plugin", "streamshield-flink-plugin.jar").await
}

/// A jar of one `flink-plugin/` module, built with Maven and cached under a hash of the module's sources.
async fn ensure_module_jar(
    cache: &Path,
    source: &Path,
    module: &str,
    jar_name: &str,
) -> Result<PathBuf> {
    let plugin = source.join("flink-plugin");
    let hash = sources_hash(&[plugin.join("pom.xml"), plugin.join(module)])?;
    let dir = cache.join(module).join(&hash[..16]);
    let jar = dir.join(jar_name);
    if cached(&dir, jar_name).is_some() && jar.is_file() {
        return Ok(jar);
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let log = dir.join("build.log");
    say(format!(
        "building {jar_name} with Maven (log: {})",
        log.display()
    ));
    let mut cmd = tokio::process::Command::new("mvn");
    cmd.args(["-B", "-ntp", "-f"])
        .arg(plugin.join("pom.xml"))
        .args(["-pl", module, "-am", "package", "-DskipTests"]);
    run_logged(cmd, &log, &format!("building {jar_name}"))
        .await
        .map_err(|detail| Error::Build {
            source_dir: plugin.clone(),
            log: log.clone(),
            detail,
        })?;
    let built = plugin.join(module).join("target").join(jar_name);
    std::fs::copy(&built, &jar).map_err(io(&built))?;
    // The build log is not part of what the manifest guards.
    let _ = std::fs::rename(
        &log,
        cache
            .join(module)
            .join(format!("build-{}.log", &hash[..16])),
    );
    write_manifest(&dir)?;
    Ok(jar)
}

/// SHA-256 over the relative paths and contents of every file under `roots`, skipping build output.
fn sources_hash(roots: &[PathBuf]) -> Result<String> {
    let mut h = sha2::Sha256::new();
    for root in roots {
        let files = if root.is_dir() {
            files_under(root).map_err(io(root))?
        } else {
            vec![root.clone()]
        };
        for f in files {
            if f.components().any(|c| c.as_os_str() == "target") {
                continue;
            }
            h.update(f.to_string_lossy().as_bytes());
            h.update(std::fs::read(&f).map_err(io(&f))?);
        }
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_versions() {
        assert_eq!(
            java_major("openjdk version \"17.0.15\" 2025-04-15"),
            Some(17)
        );
        assert_eq!(java_major("java version \"1.8.0_392\""), Some(8));
        assert_eq!(java_major("openjdk version \"25\" 2025-09-16"), Some(25));
        assert_eq!(java_major("garbage"), None);
    }

    #[test]
    fn manifest_detects_truncation_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("lib")).unwrap();
        std::fs::write(d.path().join("lib/a.jar"), b"hello world").unwrap();
        write_manifest(d.path()).unwrap();
        verify_manifest(d.path()).unwrap();

        std::fs::write(d.path().join("lib/a.jar"), b"hello worlx").unwrap();
        let e = verify_manifest(d.path()).unwrap_err();
        assert!(e.contains("checksum"), "{e}");

        std::fs::write(d.path().join("lib/a.jar"), b"hello").unwrap();
        let e = verify_manifest(d.path()).unwrap_err();
        assert!(e.contains("5 bytes"), "{e}");

        std::fs::remove_file(d.path().join("lib/a.jar")).unwrap();
        assert!(verify_manifest(d.path()).unwrap_err().contains("missing"));
        assert!(cached(d.path(), "test").is_none());
        assert!(!d.path().exists(), "an unusable cache entry is removed");
    }

    #[test]
    fn sha1_sidecar_check() {
        let d = tempfile::tempdir().unwrap();
        let jar = d.path().join("x.jar");
        std::fs::write(&jar, b"abc").unwrap();
        assert!(sha1_matches(&jar), "no sidecar: accepted");
        std::fs::write(
            d.path().join("x.jar.sha1"),
            "a9993e364706816aba3e25717850c26c9cd0d89d  x.jar\n",
        )
        .unwrap();
        assert!(sha1_matches(&jar));
        std::fs::write(&jar, b"abd").unwrap();
        assert!(!sha1_matches(&jar));
    }
}
