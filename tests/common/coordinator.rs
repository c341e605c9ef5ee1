//! `streamshield coordinator` as the Kubernetes tests run it: a process under a kubeconfig of the test's, its log
//! and info file in the test's directory, stopped by pid when dropped; and what the tests ask it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use streamshield::coordinator::client::Client;

use super::control_plane::{wait_info_file, Proc};
use super::BIN;

pub struct Coordinator {
    /// Stopped (by pid) when dropped.
    pub proc: Proc,
    /// Its name in the test (its log and info file are `<name>.log`, `<name>.json`).
    pub name: String,
    pub api: String,
    /// Where agents reach it.
    pub agents: String,
    pub token: String,
    /// The typed API client, with the token.
    pub client: Client,
    log: PathBuf,
}

impl Coordinator {
    /// `streamshield coordinator <args>` as `name`, under `kubeconfig`, with `env`; its API token is in `api_token`
    /// (written by it at start-up when missing). Returns once it has written its info file.
    pub fn start(
        dir: &Path,
        name: &str,
        kubeconfig: &Path,
        args: &[String],
        api_token: &Path,
        env: &[(&str, &str)],
    ) -> Coordinator {
        let info = dir.join(format!("{name}.json"));
        let log = dir.join(format!("{name}.log"));
        let proc = Proc::spawn(
            "streamshield coordinator",
            Command::new(BIN)
                .arg("coordinator")
                .args(args)
                .arg("--info-file")
                .arg(&info)
                .envs(env.iter().copied())
                .env("KUBECONFIG", kubeconfig)
                .env("RUST_LOG", "streamshield=info"),
            &log,
        );
        let v = wait_info_file(&info, &log, Duration::from_secs(30), name);
        let api = v["api"].as_str().unwrap().to_string();
        let token = std::fs::read_to_string(api_token)
            .unwrap()
            .trim()
            .to_string();
        Coordinator {
            proc,
            name: name.to_string(),
            client: Client::new(&api, &token),
            agents: v["agents"].as_str().unwrap().to_string(),
            api,
            token,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An API path, with the token.
    pub async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits for a decision with `trigger` about `resource_id`.
    pub async fn decision(&self, trigger: &str, resource_id: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let ds = self.get("/v1/decisions").await;
            if let Some(d) = ds
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["trigger"] == trigger && d["resource_id"] == resource_id)
            {
                return d.clone();
            }
            assert!(
                start.elapsed() < within,
                "no {trigger} decision about {resource_id} within {within:?}: {ds:#}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/readyz`'s status code (open, no token; 0 when it does not answer).
    pub async fn ready(&self) -> u16 {
        reqwest::get(format!("{}/readyz", self.api))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Its part in the election (`/v1/leader`).
    pub async fn leader(&self) -> Value {
        self.get("/v1/leader").await
    }

    /// Waits until `/readyz` answers `code`; how long that took.
    pub async fn until_ready_is(&self, code: u16, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.ready().await == code {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{}: /readyz not {code} within {within:?}\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: it stops without giving anything up (a crash).
    pub fn kill(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.proc.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = self.proc.child.wait();
    }
}
