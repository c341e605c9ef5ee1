//! `streamshield webhook` as the tests run it: on loopback with a certificate from the test's CA, and the
//! AdmissionReviews they send it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::control_plane::{wait_info_file, write, Ca, Proc};
use super::BIN;

/// The image the tests' webhook injects.
pub const IMAGE: &str = "registry.example/streamshield:test";

/// A running `streamshield webhook` with its addresses and certificate files.
pub struct Webhook {
    pub proc: Proc,
    pub admission: String,
    pub http: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Webhook {
    /// Starts the webhook on free loopback ports with a certificate for 127.0.0.1 from `ca`.
    pub fn start(dir: &Path, ca: &Ca, extra: &[&str]) -> Webhook {
        Self::start_with_env(dir, ca, extra, &[])
    }

    /// [`Webhook::start`] with environment variables added (`KUBECONFIG` for its Events).
    pub fn start_with_env(dir: &Path, ca: &Ca, extra: &[&str], env: &[(&str, &Path)]) -> Webhook {
        let (cert_pem, key_pem) = ca.issue(&["127.0.0.1"]);
        let cert = dir.join("webhook.crt");
        let key = dir.join("webhook.key");
        write(&cert, &cert_pem);
        write(&key, &key_pem);
        let info = dir.join("webhook.json");
        let _ = std::fs::remove_file(&info);
        let proc = Proc::spawn(
            "streamshield webhook",
            Command::new(BIN)
                .arg("webhook")
                .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-key-file")
                .arg(&key)
                .args(["--image", IMAGE])
                .arg("--info-file")
                .arg(&info)
                .args(extra)
                .envs(env.iter().copied())
                .env("RUST_LOG", "streamshield=debug"),
            &dir.join("webhook.log"),
        );
        let v = wait_info_file(
            &info,
            &dir.join("webhook.log"),
            Duration::from_secs(20),
            "the webhook",
        );
        Webhook {
            proc,
            admission: v["admission"].as_str().unwrap().to_string(),
            http: v["http"].as_str().unwrap().to_string(),
            cert,
            key,
        }
    }

    pub fn metrics(&self) -> String {
        reqwest::blocking::get(format!("{}/metrics", self.http))
            .and_then(|r| r.text())
            .expect("the webhook's /metrics")
    }
}

pub fn https_client(ca_pem: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub fn review(uid: &str, operation: &str, namespace: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": operation,
            "namespace": namespace,
            "userInfo": {"username": "system:serviceaccount:flink:flink-operator"},
            "object": object,
            "dryRun": false
        }
    })
}

/// The JSON patch of a review's response, decoded (empty when there is none).
pub fn patch_of(response: &Value) -> Vec<Value> {
    match response["response"]["patch"].as_str() {
        None => vec![],
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
    }
}
