//! `streamshield coordinator`: the one place that decides failover. It accepts authenticated agents, polls Flink's
//! REST API, merges both into one [`model`], and keeps an event log and a decision log. In this version it is
//! observe-only: every decision records its evidence and the action it *would* take.

pub mod agents;
pub mod api;
pub mod model;
pub mod poller;

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
        let model = Mutex::new(Model::new(&cfg.flink_rest));
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
            "Coordinator started (observe-only)"
        );
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(agents::serve(shared.clone(), agents, shutdown.clone()));
        tasks.spawn(poller::run(shared.clone(), shutdown.clone()));
        tasks.spawn(api::serve(shared.clone(), api, shutdown.clone()));
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
