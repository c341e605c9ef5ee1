//! A complete Flink distribution (`bin/`, `conf/`, `lib/`, `opt/`, `plugins/`) as a user has one: assembled from
//! PyPI's `apache-flink` wheel (the scripts and the default configuration) and `apache-flink-libraries` (the jars),
//! for the tests and benchmarks of StreamShield attached to a cluster started by Flink's own scripts. The pristine
//! copy is cached and checksummed like the other components; [`copy_home`] gives each run its own home, with the
//! big directories hard-linked.

use std::path::{Path, PathBuf};

use super::dist::{cached_dir, fetch_pypi, say, write_manifest_of, Error, Result};

/// Flink versions a home can be assembled for (the ones StreamShield is tested on).
pub const HOME_VERSIONS: [&str; 2] = ["1.20.5", "2.3.0"];

/// Assembles (once) the Flink home of `version` under the cache.
pub async fn ensure_flink_home(cache: &Path, version: &str) -> Result<PathBuf> {
    let dir = cache.join("flink-home").join(version);
    if let Some(d) = cached_dir(&dir, &format!("Flink {version} distribution")) {
        return Ok(d);
    }
    let downloads = cache.join("downloads");
    let wheel = fetch_pypi(&downloads, "apache-flink", version, "apache_flink-").await?;
    let libraries = fetch_pypi(
        &downloads,
        "apache-flink-libraries",
        version,
        "apache_flink_libraries-",
    )
    .await?;
    say(format!(
        "assembling a Flink {version} distribution into {}",
        dir.display()
    ));
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|source| Error::Io {
        path: partial.clone(),
        source,
    })?;
    // The wheel's pyflink/ holds bin/ and conf/ (2.x: also lib/, opt/, plugins/ from the libraries wheel); the
    // 1.x libraries sdist holds them under deps/. Python's own zipfile and tarfile read both.
    let script = r#"
import os, shutil, stat, sys, tarfile, zipfile
wheel, libs, out = sys.argv[1], sys.argv[2], sys.argv[3]
def take(name, data):
    for top in ("pyflink/", "deps/"):
        i = name.find(top)
        if i < 0:
            continue
        rel = name[i + len(top):]
        if rel.split("/")[0] not in ("bin", "conf", "lib", "opt", "plugins", "log"):
            return
        if rel.endswith(".py") or not rel or rel.endswith("/"):
            return
        p = os.path.join(out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        if rel.startswith("bin/"):
            os.chmod(p, 0o755)
        return
for path in (wheel, libs):
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                take(n, z.read(n))
    else:
        with tarfile.open(path) as t:
            for m in t.getmembers():
                if m.isfile():
                    take(m.name, t.extractfile(m).read())
os.makedirs(os.path.join(out, "log"), exist_ok=True)
"#;
    let status = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&wheel)
        .arg(&libraries)
        .arg(&partial)
        .status()
        .await
        .map_err(|e| Error::Fetch {
            artifact: format!("Flink {version} distribution"),
            cache: dir.clone(),
            detail: format!("python3 is needed to unpack it: {e}"),
        })?;
    let dist = partial.join(format!("lib/flink-dist-{version}.jar"));
    if !status.success() || !dist.is_file() || !partial.join("bin/taskmanager.sh").is_file() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(Error::Fetch {
            artifact: format!("Flink {version} distribution"),
            cache: dir,
            detail: format!(
                "unpacking {} and {} did not give bin/ and lib/",
                wheel.display(),
                libraries.display()
            ),
        });
    }
    write_manifest_of(&partial)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// A copy of the home at `pristine` in `to`: `conf/` and `bin/` copied (a run edits its configuration),
/// `lib/`, `opt/` and `plugins/`' files hard-linked (hundreds of MB; a run only adds files there).
pub fn copy_home(pristine: &Path, to: &Path) -> std::io::Result<()> {
    copy_tree(pristine, to, &|rel: &Path| {
        !(rel.starts_with("conf") || rel.starts_with("bin") || rel.starts_with("log"))
    })?;
    let _ = std::fs::remove_file(to.join(super::dist::MANIFEST_NAME));
    Ok(())
}

fn copy_tree(from: &Path, to: &Path, link: &dyn Fn(&Path) -> bool) -> std::io::Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let src = from.join(&rel);
        let dst = to.join(&rel);
        std::fs::create_dir_all(&dst)?;
        for e in std::fs::read_dir(&src)? {
            let e = e?;
            let r = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                stack.push(r);
            } else if link(&r) && std::fs::hard_link(e.path(), to.join(&r)).is_ok() {
            } else {
                std::fs::copy(e.path(), to.join(&r))?;
            }
        }
    }
    Ok(())
}
