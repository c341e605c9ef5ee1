//! The admission webhook's configuration: `streamshield webhook --config FILE` (YAML), every key also a flag
//! (`--tls-cert-file`) and an environment variable (`STREAMSHIELD_WEBHOOK_TLS_CERT_FILE`). Defaults are written once,
//! in [`WebhookConfig::resolve`]; docs/configuration.md lists every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::conf::{self, invalid, required, Overlay};
use crate::kube::inject::InjectSettings;

/// Every key of the webhook's configuration, optional here; [`WebhookConfig::resolve`] fills in the defaults.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookConfig {
    /// Where the API server sends AdmissionReviews (HTTPS) [default: 0.0.0.0:9443].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_LISTEN")]
    #[serde(default, with = "conf::from_str")]
    pub listen: Option<SocketAddr>,
    /// Where /metrics and /healthz are served (plain HTTP) [default: 0.0.0.0:9254].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_HTTP")]
    #[serde(default, with = "conf::from_str")]
    pub http: Option<SocketAddr>,
    /// The serving certificate (PEM, chain first). Read again when the file changes (cert-manager rotation).
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The serving certificate's private key (PEM).
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// The image injected as the agent sidecar and the plugin jar's init container (it holds the `streamshield`
    /// binary and the plugin jar).
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_IMAGE")]
    pub image: Option<String>,
    /// The injected containers' imagePullPolicy [default: the cluster's default for the image].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// The plugin jar inside the image [default: /opt/streamshield/streamshield-plugin.jar].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_PLUGIN_JAR")]
    pub plugin_jar: Option<String>,
    /// Flink's plugins directory in the Flink image; the jar appears in its `streamshield/` [default:
    /// /opt/flink/plugins].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_FLINK_PLUGINS_DIR")]
    pub flink_plugins_dir: Option<String>,
    /// The directory of the agent's socket, shared by the agent and Flink [default: /run/streamshield].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_SOCKET_DIR")]
    pub socket_dir: Option<String>,
    /// The injected agent's HTTP port (/metrics, /healthz, the probes) [default: 9252].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_AGENT_HTTP_PORT")]
    pub agent_http_port: Option<u16>,
    /// The coordinator's agent address the injected agents report to (host:port); `{cluster-id}` in it becomes the
    /// pod's Flink cluster id (its `app` label: each FlinkDeployment has its own coordinator); none: they watch and
    /// export metrics only.
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_COORDINATOR")]
    pub coordinator: Option<String>,
    /// A Secret (in each opted-in namespace) whose key `token` is the coordinator's agent token. Required with
    /// coordinator.
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_TOKEN_SECRET")]
    pub token_secret: Option<String>,
    /// The injected containers' CPU request [default: 20m].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_CPU_REQUEST")]
    pub cpu_request: Option<String>,
    /// The injected containers' memory request [default: 32Mi].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_MEMORY_REQUEST")]
    pub memory_request: Option<String>,
    /// The injected containers' memory limit [default: 64Mi].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// Write a Warning Event (events.k8s.io/v1) for every object admitted unchanged because it could not be
    /// handled, or admitted with warnings, through the API server of $KUBECONFIG or the pod's service account (which
    /// needs create and patch on events.k8s.io/events) [default: false].
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_EVENTS")]
    pub events: Option<bool>,
    /// Write the bound addresses and the webhook's pid here (JSON) once serving.
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_INFO_FILE")]
    pub info_file: Option<PathBuf>,
}

crate::overlay!(WebhookConfig {
    listen,
    http,
    tls_cert_file,
    tls_key_file,
    image,
    image_pull_policy,
    plugin_jar,
    flink_plugins_dir,
    socket_dir,
    agent_http_port,
    coordinator,
    token_secret,
    cpu_request,
    memory_request,
    memory_limit,
    events,
    info_file,
});

/// `streamshield webhook [--config FILE] [--KEY VALUE ...]`.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// A YAML file with any of the keys below (kebab-case); flags and environment variables override it.
    #[arg(long, env = "STREAMSHIELD_WEBHOOK_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub keys: WebhookConfig,
}

impl WebhookArgs {
    pub fn settings(&self) -> conf::Result<WebhookSettings> {
        WebhookConfig::load(self.config.as_deref(), self.keys.clone())
    }
}

/// The webhook's settings, resolved and validated.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub inject: InjectSettings,
    pub events: bool,
    pub info_file: Option<PathBuf>,
}

const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

impl WebhookConfig {
    /// Reads `file` (if any), lays the command line over it and resolves the result.
    pub fn load(file: Option<&Path>, cli: WebhookConfig) -> conf::Result<WebhookSettings> {
        let from_file: WebhookConfig = conf::load(file)?;
        from_file.overlay(cli).resolve(file)
    }

    /// Fills in the defaults and validates. `file` is named in errors.
    pub fn resolve(self, file: Option<&Path>) -> conf::Result<WebhookSettings> {
        let image = required(self.image, "image", "STREAMSHIELD_WEBHOOK_IMAGE", file)?;
        if image.trim().is_empty() || image.contains(char::is_whitespace) {
            return Err(invalid(
                "image",
                format!("{image:?} is not an image reference"),
                file,
            ));
        }
        if let Some(p) = &self.image_pull_policy {
            if !PULL_POLICIES.contains(&p.as_str()) {
                return Err(invalid(
                    "image-pull-policy",
                    format!("{p:?} is not one of {}", PULL_POLICIES.join(", ")),
                    file,
                ));
            }
        }
        let absolute = |key: &'static str, v: Option<String>, default: &str| {
            let v = v.unwrap_or_else(|| default.to_string());
            if !v.starts_with('/') || v.split('/').any(|c| c == "..") {
                return Err(invalid(
                    key,
                    format!("{v:?} must be an absolute path without .."),
                    file,
                ));
            }
            Ok(v)
        };
        let plugin_jar = absolute(
            "plugin-jar",
            self.plugin_jar,
            "/opt/streamshield/streamshield-plugin.jar",
        )?;
        let flink_plugins_dir = absolute(
            "flink-plugins-dir",
            self.flink_plugins_dir,
            "/opt/flink/plugins",
        )?;
        let socket_dir = absolute("socket-dir", self.socket_dir, "/run/streamshield")?;
        let agent_http_port = self.agent_http_port.unwrap_or(9252);
        if agent_http_port == 0 {
            return Err(invalid(
                "agent-http-port",
                "must be a port number (1-65535)",
                file,
            ));
        }
        let token_secret = match (&self.coordinator, self.token_secret) {
            (Some(_), t) => Some(required(
                t,
                "token-secret",
                "STREAMSHIELD_WEBHOOK_TOKEN_SECRET",
                file,
            )?),
            (None, t) => t,
        };
        if let Some(c) = &self.coordinator {
            if c.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(invalid(
                    "coordinator",
                    format!("{c:?} is not host:port"),
                    file,
                ));
            }
        }
        let quantity = |key: &'static str, v: Option<String>, default: &str| {
            let v = v.unwrap_or_else(|| default.to_string());
            let ok = !v.is_empty()
                && v.chars().next().is_some_and(|c| c.is_ascii_digit())
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
            if !ok {
                return Err(invalid(
                    key,
                    format!("{v:?} is not a Kubernetes quantity (e.g. 20m, 64Mi)"),
                    file,
                ));
            }
            Ok(v)
        };
        Ok(WebhookSettings {
            listen: self
                .listen
                .unwrap_or_else(|| "0.0.0.0:9443".parse().expect("the default address parses")),
            http: self
                .http
                .unwrap_or_else(|| "0.0.0.0:9254".parse().expect("the default address parses")),
            tls_cert_file: required(
                self.tls_cert_file,
                "tls-cert-file",
                "STREAMSHIELD_WEBHOOK_TLS_CERT_FILE",
                file,
            )?,
            tls_key_file: required(
                self.tls_key_file,
                "tls-key-file",
                "STREAMSHIELD_WEBHOOK_TLS_KEY_FILE",
                file,
            )?,
            inject: InjectSettings {
                image,
                image_pull_policy: self.image_pull_policy,
                plugin_jar,
                flink_plugins_dir,
                socket_dir,
                agent_http_port,
                coordinator: self.coordinator,
                token_secret,
                cpu_request: quantity("cpu-request", self.cpu_request, "20m")?,
                memory_request: quantity("memory-request", self.memory_request, "32Mi")?,
                memory_limit: quantity("memory-limit", self.memory_limit, "64Mi")?,
            },
            events: self.events.unwrap_or(false),
            info_file: self.info_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> conf::Result<WebhookSettings> {
        let c: WebhookConfig = conf::parse(text).map_err(|message| conf::Error::Parse {
            file: "w.yaml".into(),
            message,
        })?;
        c.resolve(Some(Path::new("w.yaml")))
    }

    #[test]
    fn every_key_is_in_the_configuration_reference() {
        conf::assert_keys_documented::<WebhookConfig>(
            include_str!("../../docs/configuration.md"),
            "webhook",
            "STREAMSHIELD_WEBHOOK_",
            17,
            conf::key_row,
        );
    }

    #[test]
    fn a_minimal_file_is_three_lines() {
        let s = parse("image: r/streamshield:1\ntls-cert-file: /c.pem\ntls-key-file: /k.pem\n")
            .unwrap();
        assert_eq!(s.listen.to_string(), "0.0.0.0:9443");
        assert_eq!(s.inject.socket_dir, "/run/streamshield");
        assert_eq!(s.inject.memory_limit, "64Mi");
        assert!(s.inject.coordinator.is_none());
        assert!(!s.events, "no API access unless asked for");
    }

    #[test]
    fn bad_values_name_the_key() {
        let base = "image: r/s:1\ntls-cert-file: /c\ntls-key-file: /k\n";
        for (extra, key) in [
            ("image-pull-policy: Sometimes\n", "image-pull-policy"),
            ("socket-dir: run/x\n", "socket-dir"),
            ("flink-plugins-dir: /opt/../etc\n", "flink-plugins-dir"),
            ("coordinator: c.svc:9251\n", "token-secret"),
            ("coordinator: nowhere\ntoken-secret: t\n", "coordinator"),
            ("memory-limit: lots\n", "memory-limit"),
            ("agent-http-port: 0\n", "agent-http-port"),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = parse("imgae: x\n").unwrap_err().to_string();
        assert!(e.contains("imgae"), "{e}");
        let e = parse("tls-cert-file: /c\ntls-key-file: /k\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("image is required"), "{e}");
    }
}
