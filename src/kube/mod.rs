//! Kubernetes: the mutating admission webhook that puts StreamShield beside Flink's pods (`streamshield webhook`,
//! docs/install-kubernetes.md), and the helper its init container runs (`streamshield plugin-jar`).
//!
//! - [`inject`]: what is changed in a Flink pod (the agent as a native sidecar, the plugin jar, the socket) and in a
//!   FlinkDeployment (the plugin's keys, the pods' opt-in label), as pure functions returning JSON patches;
//! - [`webhook`]: the HTTPS server answering AdmissionReviews, which never blocks a pod;
//! - [`tls`]: its serving certificate, reloaded when the files rotate;
//! - [`events`]: the Warning Events it writes about objects it admitted unchanged or with warnings;
//! - [`config`]: its configuration file, flags and environment variables;
//! - [`api`]: the API client and the permission check the webhook and the coordinator share.

pub mod api;
pub mod config;
pub mod events;
pub mod inject;
pub mod tls;
pub mod webhook;

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PluginJarError {
    #[error(
        "the plugin jar {0} does not exist or is not a file (is this the StreamShield image?)"
    )]
    Missing(PathBuf),
    #[error("cannot copy the plugin jar to {to}: {source}")]
    Copy {
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Copies the plugin jar `from` into the directory `to` (created if missing), through a temporary file and a
/// rename, so that Flink never sees half a jar. Returns the copy's path.
pub fn copy_plugin_jar(from: &Path, to: &Path) -> Result<PathBuf, PluginJarError> {
    if !from.is_file() {
        return Err(PluginJarError::Missing(from.to_path_buf()));
    }
    let name = from
        .file_name()
        .unwrap_or(std::ffi::OsStr::new("streamshield-plugin.jar"));
    let target = to.join(name);
    let err = |source| PluginJarError::Copy {
        to: target.clone(),
        source,
    };
    std::fs::create_dir_all(to).map_err(err)?;
    let tmp = to.join(".streamshield-plugin.jar.tmp");
    std::fs::copy(from, &tmp).map_err(err)?;
    std::fs::rename(&tmp, &target).map_err(err)?;
    Ok(target)
}
