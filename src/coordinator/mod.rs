//! `streamshield coordinator`: the one place that decides. It accepts authenticated agents ([`agents`]), polls
//! Flink's REST API ([`poller`]: jobs, their placement and configuration, TaskManagers, the cluster's
//! configuration), merges both into one [`model`], applies the failover [`policy`] per job, and keeps an event log
//! and a decision log with the evidence of every decision. It orders fences, restarts in place and isolations from
//! the agents (each order carrying its epoch as a fencing token), checkpoints restarted jobs ([`resume`]) and jobs
//! on a TaskManager that is being stopped ([`stopper`]), and serves an authenticated HTTP API ([`api`], read by
//! [`client`]). Where a job's policy is observe-only, every decision is recorded with what would have been done.
//! Configuration: [`config`] (docs/configuration.md).

pub mod agents;
pub mod api;
pub mod client;
pub mod config;
pub mod kube;
pub mod lease;
pub mod model;
pub mod policy;
pub mod poller;
pub mod resume;
pub mod stopper;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

pub use config::{CoordinatorConfig, CoordinatorSettings};

use crate::daemon::{self, Tasks};
use crate::host::secret;
use model::Model;

#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "cannot listen on {addr}: {source}{}",
        crate::host::sockets::holder_hint(addr)
    )]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] secret::Error),
    #[error("epoch file {path}: {problem}")]
    Epoch { path: String, problem: String },
    #[error(transparent)]
    Stopped(#[from] daemon::TaskDied),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Shared {
    pub cfg: CoordinatorSettings,
    pub agent_token: String,
    pub api_token: String,
    model: Mutex<Model>,
    /// This coordinator's part in the election (always leading without `ha-lease`).
    pub leadership: tokio::sync::watch::Sender<lease::Leadership>,
}

impl Shared {
    /// Whether this coordinator leads now (it accepts agents and acts only then).
    pub fn leading(&self) -> bool {
        self.leadership.borrow().leading
    }

    /// Waits until this coordinator leads (at once without `ha-lease`); false if `stop` comes first. The model
    /// orders with the leader's epoch from then on.
    pub async fn until_leading(&self, stop: &CancellationToken) -> bool {
        let mut rx = self.leadership.subscribe();
        let leading = tokio::select! {
            _ = stop.cancelled() => false,
            r = rx.wait_for(|l| l.leading) => r.is_ok(),
        };
        if leading {
            self.adopt_epoch();
        }
        leading
    }

    /// The model takes the Lease's epoch for its orders, and records that this coordinator leads (once: whichever
    /// task notices first; nothing changes without `ha-lease`, whose epoch the model has from the start).
    fn adopt_epoch(&self) {
        let l = self.leadership.borrow().clone();
        let Some(epoch) = l.epoch else { return };
        let mut m = self.model();
        if m.epoch == epoch {
            return;
        }
        m.epoch = epoch;
        m.record(
            "coordinator",
            None,
            "leading",
            crate::host::clock::now_ms(),
            serde_json::json!({"identity": l.identity, "epoch": epoch}),
        );
    }

    /// The model; std mutex, held only for bookkeeping, never across an await.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct BoundCoordinator {
    shared: Arc<Shared>,
    agents: tokio::net::TcpListener,
    api: tokio::net::TcpListener,
    /// The API server's client, when the coordinator watches Kubernetes.
    kube: Option<::kube::Client>,
}

impl BoundCoordinator {
    /// Reads (or creates) the tokens, binds both ports and takes the next epoch (the settings are validated already).
    pub async fn bind(cfg: CoordinatorSettings) -> Result<Self> {
        let agent_token = secret::read_or_create(&cfg.agent_token_file, true)?;
        let api_token = secret::read_or_create(&cfg.api_token_file, true)?;
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
        let kube = match &cfg.kubernetes {
            Some(_) => Some(kube::client().await?),
            None => None,
        };
        // With a Lease, the epoch is the Lease's transitions, known once it is held (0 until then: no order).
        let epoch = match &cfg.ha {
            Some(_) => 0,
            None => next_epoch(cfg.epoch_file.as_deref())?,
        };
        let leadership = tokio::sync::watch::Sender::new(lease::Leadership {
            leading: cfg.ha.is_none(),
            epoch: cfg.ha.is_none().then_some(epoch),
            identity: cfg
                .ha
                .as_ref()
                .map_or_else(String::new, |h| h.identity.clone()),
            holder: None,
            since_ms: cfg.ha.is_none().then(crate::host::clock::now_ms),
        });
        let mut model = Model::new(&cfg.flink_rest, cfg.policy.clone(), epoch);
        if let Some(k) = &cfg.kubernetes {
            model.kube_enable(model::kube::KubeView::new(
                &k.namespace,
                &k.cluster_id,
                k.fence_by_delete,
            ));
        }
        Ok(BoundCoordinator {
            shared: Arc::new(Shared {
                cfg,
                agent_token,
                api_token,
                model: Mutex::new(model),
                leadership,
            }),
            agents,
            api,
            kube,
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

    /// Runs until `shutdown` (then drains its tasks), or until one of its tasks stops on its own (then returns why).
    pub async fn run(self, shutdown: CancellationToken) -> Result<daemon::Drained> {
        let BoundCoordinator {
            shared,
            agents,
            api,
            kube,
        } = self;
        tracing::info!(
            ha = ?shared.cfg.ha.as_ref().map(|h| (&h.name, &h.identity)),
            agents = %agents.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            api = %api.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            flink = %shared.cfg.flink_rest,
            failover = shared.cfg.policy.failover,
            epoch = shared.model().epoch,
            "Coordinator started"
        );
        let mut tasks = Tasks::new("coordinator", &shutdown);
        let stop = tasks.token();
        tasks.spawn(
            "agent listener",
            agents::serve(shared.clone(), agents, stop.clone()),
        );
        tasks.spawn("flink poller", poller::run(shared.clone(), stop.clone()));
        tasks.spawn("api", api::serve(shared.clone(), api, stop.clone()));
        // What acts runs only while this coordinator leads: a follower serves the read API and polls Flink.
        spawn_leading(&mut tasks, "planned stops", &shared, &stop, stopper::run);
        spawn_leading(
            &mut tasks,
            "recovery checkpoints",
            &shared,
            &stop,
            resume::run,
        );
        if let Some(client) = &kube {
            if let Some(k) = shared.cfg.kubernetes.clone() {
                let c = client.clone();
                spawn_leading(&mut tasks, "kubernetes", &shared, &stop, move |s, st| {
                    kube::run(s, c, k, st)
                });
            }
            if let Some(h) = shared.cfg.ha.clone() {
                tasks.spawn(
                    "leader election",
                    lease::campaign(client.clone(), h, shared.leadership.clone(), stop.clone()),
                );
            }
        }
        tasks.spawn("policy clock", policy_clock(shared.clone(), stop));
        Ok(tasks.run().await?)
    }
}

/// Spawns `task` once this coordinator leads (at once without `ha-lease`): a follower never acts.
fn spawn_leading<F, Fut>(
    tasks: &mut Tasks,
    name: &'static str,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    task: F,
) where
    F: FnOnce(Arc<Shared>, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let (s, st) = (shared.clone(), stop.clone());
    tasks.spawn(name, async move {
        if !s.until_leading(&st).await {
            return Ok(());
        }
        task(s, st).await
    });
}

/// Tolerances are re-evaluated this often: a fence is ordered at most this long after its deadline.
const POLICY_TICK: Duration = Duration::from_millis(20);

async fn policy_clock(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), String> {
    let mut tick = tokio::time::interval(POLICY_TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => shared.model().tick(),
        }
    }
}

/// Reads the last epoch from `path`, takes the next one and writes it back (atomically) before any order is sent.
fn next_epoch(path: Option<&Path>) -> Result<u64> {
    let Some(path) = path else { return Ok(1) };
    let err = |problem: String| Error::Epoch {
        path: path.display().to_string(),
        problem,
    };
    let last: u64 = match std::fs::read_to_string(path) {
        Ok(t) => t
            .trim()
            .parse()
            .map_err(|_| err("does not hold a number; fix or remove it".into()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(err(e.to_string())),
    };
    let next = last + 1;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{next}\n"))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| err(e.to_string()))?;
    Ok(next)
}
