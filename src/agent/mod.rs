//! `streamshield agent`: the agent beside Flink processes. One agent can watch every Flink JVM of a host
//! (standalone: every plugin of the host links to the same socket) or one pod's TaskManager (the sidecar); the
//! processes it watches come from the plugins' handshakes, which the agent checks against the kernel's view of who
//! connected ([`server`]). Nothing here knows who started the processes: the agent restarts one in place from how
//! /proc says it was started ([`recipe`]).
//!
//! It keeps each process's liveness from heartbeats, the socket and `/proc` ([`liveness`], [`watch`]), serves
//! `/metrics` and `/healthz` ([`http`]), and streams statuses and events to the coordinator ([`uplink`]). It acts
//! only on the coordinator's orders ([`command`]: fence, restart, stop-ready; [`isolate`]), each checked against the
//! coordinator's fencing token, and on its own only to fence a TaskManager cut off from everything ([`partition`]).
//! Configuration: [`config`] (docs/configuration.md).

pub mod command;
pub mod config;
pub mod http;
pub mod isolate;
pub mod liveness;
pub mod partition;
pub mod recipe;
pub mod server;
pub mod spill;
pub mod state;
pub mod uplink;
pub mod watch;
pub mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

pub use config::{AgentConfig, AgentSettings, RestartMode};
pub use state::{IdentityChecks, Shared};

use crate::daemon::{self, Tasks};
use crate::host::endpoint::{self, Endpoint, Listener, SocketAccess};
use crate::host::secret;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Endpoint(#[from] endpoint::Error),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] secret::Error),
    #[error(transparent)]
    Spill(#[from] spill::Error),
    #[error(transparent)]
    Stopped(#[from] daemon::TaskDied),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An agent with its sockets bound, ready to run.
pub struct BoundAgent {
    shared: Arc<Shared>,
    plugin_listener: Listener,
    http_listener: tokio::net::TcpListener,
}

impl BoundAgent {
    /// Reads the secrets and binds the plugin socket and the HTTP port (the settings are validated already).
    pub async fn bind(cfg: AgentSettings) -> Result<BoundAgent> {
        Self::bind_with(cfg, IdentityChecks::default()).await
    }

    /// [`BoundAgent::bind`] with the given checks of the plugins' claims.
    pub async fn bind_with(cfg: AgentSettings, identity: IdentityChecks) -> Result<BoundAgent> {
        let secret = match &cfg.secret_file {
            Some(p) => Some(secret::read_or_create(p, true)?),
            None => None,
        };
        let token = match &cfg.token_file {
            Some(p) => Some(secret::read_or_create(p, false)?),
            None => None,
        };
        let access = SocketAccess {
            mode: cfg.socket_mode,
            gid: cfg.socket_gid,
        };
        let plugin_listener = Listener::bind_with(&cfg.listen, access).await?;
        let http_listener = tokio::net::TcpListener::bind(cfg.http)
            .await
            .map_err(|source| Error::Http {
                addr: cfg.http,
                source,
            })?;
        let http_addr = http_listener.local_addr().map_err(|source| Error::Http {
            addr: cfg.http,
            source,
        })?;
        let spill = match &cfg.spill {
            Some((dir, sc)) => Some(spill::Spill::open(dir, sc.clone())?),
            None => None,
        };
        let shared = Arc::new(Shared::new(
            cfg,
            identity,
            secret,
            token,
            format!("http://{http_addr}/metrics"),
            spill,
        ));
        Ok(BoundAgent {
            shared,
            plugin_listener,
            http_listener,
        })
    }

    pub fn plugin_endpoint(&self) -> Endpoint {
        self.plugin_listener.endpoint()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Runs until `shutdown` (then drains its tasks, lifts its isolations and returns), or until one of its tasks
    /// stops on its own (then returns why).
    pub async fn run(self, shutdown: CancellationToken) -> Result<daemon::Drained> {
        let BoundAgent {
            shared,
            plugin_listener,
            http_listener,
        } = self;
        tracing::info!(
            agent = %shared.cfg.id,
            plugin = %plugin_listener.endpoint(),
            http = %shared.http_url,
            coordinator = ?shared.cfg.coordinator,
            restart = ?shared.cfg.restart,
            "Agent started"
        );
        let mut tasks = Tasks::new("agent", &shutdown);
        let stop = tasks.token();
        tasks.spawn(
            "plugin listener",
            server::serve(shared.clone(), plugin_listener, stop.clone()),
        );
        tasks.spawn("liveness watch", watch::run(shared.clone(), stop.clone()));
        tasks.spawn(
            "partition watch",
            partition::watch(shared.clone(), stop.clone()),
        );
        tasks.spawn(
            "http",
            http::serve(shared.clone(), http_listener, stop.clone()),
        );
        if !shared.cfg.watchdog.targets.is_empty() {
            tasks.spawn("watchdogs", watchdog::run(shared.clone(), stop.clone()));
        }
        if shared.cfg.coordinator.is_some() {
            tasks.spawn("uplink", uplink::run(shared.clone(), stop.clone()));
        }
        let result = tasks.run().await;
        isolate::lift_all(&shared);
        Ok(result?)
    }
}
