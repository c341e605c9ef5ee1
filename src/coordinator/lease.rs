//! Leader election for two (or more) coordinators through a `coordination.k8s.io/v1` Lease, the way client-go's
//! leaderelection does it, with the Lease's `leaseTransitions` as the fencing epoch: every new holder increments it,
//! so the leader's orders carry a number no deposed leader has, and an agent that has seen it refuses the older one
//! (at the handshake and on every order).
//!
//! - A candidate takes the Lease when it has no holder, or when its record (holder, renew time, resource version)
//!   has not changed for `leaseDurationSeconds` by the candidate's own clock (no clock is compared across hosts).
//!   A candidate that finds itself the holder at start (a restart under the same identity) takes it over as a new
//!   transition too: the process that renewed it before is gone, and with it what it knew.
//! - The leader renews every retry period; every write is a replace with the resource version read, so two
//!   candidates cannot both win. A leader that has not renewed for the renew deadline (shorter than the lease's
//!   duration, so it stops before anyone may take over) has lost: [`campaign`] returns an error and the coordinator
//!   exits, to be restarted as a follower with a clean model — it never acts again on what it knew as leader.
//! - On a clean stop the leader gives the Lease up (no holder), so the follower takes over at its next retry.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How a coordinator takes part in the election.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This candidate (the pod's name).
    pub identity: String,
    /// How long a silent holder keeps the Lease (whole seconds, as the Lease stores it).
    pub duration: Duration,
    /// How often candidates look and the leader renews.
    pub retry: Duration,
}

impl LeaseSettings {
    /// A leader that could not renew for this long steps down: two thirds of the duration, so that it has stopped
    /// before a follower may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// This coordinator's part, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leadership {
    pub leading: bool,
    /// The epoch while leading (the Lease's transitions).
    pub epoch: Option<u64>,
    pub identity: String,
    /// The holder as last read (none: no holder).
    pub holder: Option<String>,
    /// When this coordinator took the Lease (unix ms).
    pub since_ms: Option<i64>,
}

/// What the election does with the Lease.
pub const LEASE_VERBS: [&str; 3] = ["get", "create", "update"];

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// What was last read of the Lease, and when it last changed by our clock.
struct Observed {
    record: (Option<String>, Option<String>, Option<String>),
    at: Instant,
}

/// Runs the election until `stop` (then gives the Lease up if held) or until leadership is lost (an error).
/// `tx` carries this coordinator's part; the leader's epoch is in it from the moment the Lease is held.
pub async fn campaign(
    client: Client,
    s: LeaseSettings,
    tx: watch::Sender<Leadership>,
    stop: CancellationToken,
) -> Result<(), String> {
    // Without these the election cannot work at all: say so and stop, rather than follow forever.
    let mut missing = Vec::new();
    const GROUP: &str = "coordination.k8s.io";
    for verb in LEASE_VERBS {
        // create cannot be granted for one name; get and update can (the chart grants only this Lease).
        let name = (verb != "create").then_some(s.name.as_str());
        let ns = Some(s.namespace.as_str());
        if !super::kube::allowed(&client, GROUP, "leases", verb, ns, name).await {
            let what = super::kube::permission_text(verb, GROUP, "leases", ns);
            missing.push(match name {
                Some(n) => format!("{what} (Lease {n})"),
                None => what,
            });
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "ha-lease needs these permissions, which this coordinator lacks: {} (docs/install-kubernetes.md lists the coordinator's RBAC)",
            missing.join(", ")
        ));
    }
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let mut observed: Option<Observed> = None;
    let mut last_renew: Option<Instant> = None;
    let mut tick = tokio::time::interval(s.retry);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if last_renew.is_some() {
                    release(&api, &s).await;
                }
                return Ok(());
            }
            _ = tick.tick() => {}
        }
        let leading = last_renew.is_some();
        match step(&api, &s, leading, &mut observed).await {
            Ok(Step::Holding { epoch, fresh }) => {
                last_renew = Some(Instant::now());
                if fresh {
                    tracing::warn!(lease = %s.name, identity = %s.identity, epoch, "Took the coordinators' Lease: leading");
                    tx.send_replace(Leadership {
                        leading: true,
                        epoch: Some(epoch),
                        identity: s.identity.clone(),
                        holder: Some(s.identity.clone()),
                        since_ms: Some(crate::host::clock::now_ms()),
                    });
                }
            }
            Ok(Step::Following { holder }) => {
                if leading {
                    return Err(format!(
                        "lost the Lease {} to {}: stepping down (the coordinator exits and comes back as a follower)",
                        s.name,
                        holder.as_deref().unwrap_or("nobody")
                    ));
                }
                tx.send_if_modified(|l| {
                    let changed = l.holder != holder;
                    l.holder = holder.clone();
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(lease = %s.name, error = %e, "Lease request failed");
                if let Some(t) = last_renew {
                    if t.elapsed() >= s.renew_deadline() {
                        return Err(format!(
                            "could not renew the Lease {} for {:?} (last error: {e}): stepping down",
                            s.name,
                            t.elapsed()
                        ));
                    }
                }
            }
        }
    }
}

enum Step {
    /// We hold it; `fresh`: just taken.
    Holding {
        epoch: u64,
        fresh: bool,
    },
    Following {
        holder: Option<String>,
    },
}

async fn step(
    api: &Api<Lease>,
    s: &LeaseSettings,
    leading: bool,
    observed: &mut Option<Observed>,
) -> Result<Step, kube::Error> {
    let duration_s = s.duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(s.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.identity.clone()),
                lease_duration_seconds: Some(duration_s),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(1),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Step::Holding {
                epoch: 1,
                fresh: true,
            }),
            // Someone else created it first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Step::Following { holder: None }),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let transitions = spec.lease_transitions.unwrap_or(0).max(0) as u64;
    let mine = holder.as_deref() == Some(s.identity.as_str());
    if mine && leading {
        let mut spec = spec;
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(duration_s);
        lease.spec = Some(spec);
        return match api.replace(&s.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Step::Holding {
                epoch: transitions,
                fresh: false,
            }),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Changed under us: read again next time; if someone else holds it now, we follow (and exit).
                let now = api.get_opt(&s.name).await?;
                let holder = now
                    .and_then(|l| l.spec?.holder_identity)
                    .filter(|h| !h.is_empty());
                if holder.as_deref() == Some(s.identity.as_str()) {
                    Ok(Step::Holding {
                        epoch: transitions,
                        fresh: false,
                    })
                } else {
                    Ok(Step::Following { holder })
                }
            }
            Err(e) => Err(e),
        };
    }
    // Not (knowingly) ours: take it if it has no holder, if it is ours from an earlier life, or if it has not
    // changed for its duration by our clock.
    let record = (
        holder.clone(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()),
        lease.metadata.resource_version.clone(),
    );
    let changed = observed.as_ref().is_none_or(|o| o.record != record);
    if changed {
        *observed = Some(Observed {
            record,
            at: Instant::now(),
        });
    }
    let their_duration =
        Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_s).max(1) as u64);
    let expired = observed
        .as_ref()
        .is_some_and(|o| o.at.elapsed() >= their_duration);
    if holder.is_some() && !mine && !expired {
        return Ok(Step::Following { holder });
    }
    let epoch = transitions + 1;
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(s.identity.clone()),
        lease_duration_seconds: Some(duration_s),
        acquire_time: Some(now()),
        renew_time: Some(now()),
        lease_transitions: Some(epoch as i32),
        ..spec
    });
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Step::Holding { epoch, fresh: true }),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Step::Following { holder }),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up (no holder; the transitions stay, so the next holder's epoch is still higher).
async fn release(api: &Api<Lease>, s: &LeaseSettings) {
    let Ok(Some(mut lease)) = api.get_opt(&s.name).await else {
        return;
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now());
    lease.spec = Some(spec);
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %s.name, "Gave the Lease up"),
        Err(e) => {
            tracing::warn!(lease = %s.name, error = %e, "Could not give the Lease up; it expires")
        }
    }
}
