//! `streamshield coordinator`: the one place that decides failover. It accepts authenticated agents, polls Flink's
//! REST API, merges both into one [`model`], and keeps an event log and a decision log. In this version it is
//! observe-only: every decision records its evidence and the action it *would* take.

pub mod agents;
pub mod api;
pub mod model;
pub mod policy;
pub mod poller;
pub mod resume;
pub mod stopper;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::agent::read_or_create_secret;
use model::Model;

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] crate::agent::Error),
    #[error("invalid coordinator configuration: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where agents connect (loopback or a cluster-internal address).
    pub agents_listen: String,
    /// Where the HTTP API listens.
    pub api_listen: SocketAddr,
    /// The token agents present (created, 0600, when missing).
    pub agent_token_file: PathBuf,
    /// The bearer token of the HTTP API (created, 0600, when missing).
    pub api_token_file: PathBuf,
    /// Flink's REST endpoint, e.g. `http://127.0.0.1:8081`.
    pub flink_rest: String,
    pub poll_interval: Duration,
    /// The failover policy (observe-only unless `policy.failover`).
    pub policy: policy::PolicyConfig,
    /// Where the epoch (fencing token) is kept; each start takes the next one. None: epoch 1.
    pub epoch_file: Option<PathBuf>,
}

pub struct Shared {
    pub cfg: CoordinatorConfig,
    pub agent_token: String,
    pub api_token: String,
    model: Mutex<Model>,
}

impl Shared {
    /// The model; std mutex, held only for bookkeeping, never across an await.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct BoundCoordinator {
    shared: Arc<Shared>,
    agents: tokio::net::TcpListener,
    api: tokio::net::TcpListener,
}

impl BoundCoordinator {
    pub async fn bind(cfg: CoordinatorConfig) -> Result<Self> {
        if !cfg.flink_rest.starts_with("http://") && !cfg.flink_rest.starts_with("https://") {
            return Err(Error::Invalid(format!(
                "--flink-rest must be an http(s) URL, got {}",
                cfg.flink_rest
            )));
        }
        if cfg.poll_interval < Duration::from_millis(100) {
            return Err(Error::Invalid(
                "--poll-interval must be at least 100ms".into(),
            ));
        }
        let agent_token = read_or_create_secret(&cfg.agent_token_file, true)?;
        let api_token = read_or_create_secret(&cfg.api_token_file, true)?;
        let agents = tokio::net::TcpListener::bind(&cfg.agents_listen)
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.agents_listen.clone(),
                source,
            })?;
        let api = tokio::net::TcpListener::bind(cfg.api_listen)
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.api_listen.to_string(),
                source,
            })?;
        let epoch = next_epoch(cfg.epoch_file.as_deref())?;
        let model = Mutex::new(Model::with_policy(
            &cfg.flink_rest,
            cfg.policy.clone(),
            epoch,
        ));
        Ok(BoundCoordinator {
            shared: Arc::new(Shared {
                cfg,
                agent_token,
                api_token,
                model,
            }),
            agents,
            api,
        })
    }

    pub fn agents_addr(&self) -> SocketAddr {
        self.agents.local_addr().expect("bound")
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api.local_addr().expect("bound")
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let BoundCoordinator {
            shared,
            agents,
            api,
        } = self;
        tracing::info!(
            agents = %agents.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            api = %api.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            flink = %shared.cfg.flink_rest,
            failover = shared.cfg.policy.failover,
            epoch = shared.model().epoch,
            "Coordinator started"
        );
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(agents::serve(shared.clone(), agents, shutdown.clone()));
        tasks.spawn(poller::run(shared.clone(), shutdown.clone()));
        tasks.spawn(stopper::run(shared.clone(), shutdown.clone()));
        tasks.spawn(resume::run(shared.clone(), shutdown.clone()));
        tasks.spawn(api::serve(shared.clone(), api, shutdown.clone()));
        let (s, stop) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move {
            // Tolerances are re-evaluated this often: a fence is ordered at most 20 ms after its deadline.
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => s.model().tick(),
                }
            }
        });
        shutdown.cancelled().await;
        if tokio::time::timeout(Duration::from_secs(3), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("Coordinator tasks did not stop within 3 s; abandoning them");
        }
        Ok(())
    }
}

/// Reads the last epoch from `path`, takes the next one and writes it back (atomically) before any order is sent.
fn next_epoch(path: Option<&std::path::Path>) -> Result<u64> {
    let Some(path) = path else { return Ok(1) };
    let last: u64 = match std::fs::read_to_string(path) {
        Ok(t) => t.trim().parse().map_err(|_| {
            Error::Invalid(format!(
                "epoch file {} does not hold a number; fix or remove it",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            return Err(Error::Invalid(format!(
                "epoch file {}: {e}",
                path.display()
            )))
        }
    };
    let next = last + 1;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{next}\n"))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Invalid(format!("epoch file {}: {e}", path.display())))?;
    Ok(next)
}
