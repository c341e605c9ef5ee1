//! Running a daemon's long-lived tasks (the agent's and the coordinator's): each task has a name; one that ends
//! before shutdown — with an error, by returning, or by panicking — takes the daemon down with a clear error instead
//! of leaving it running without that part. Shutdown cancels every task, waits for them for a grace period, and says
//! which way it went.

use std::future::Future;
use std::time::Duration;

use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long tasks get to finish after shutdown.
pub const GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
#[error("{daemon}: its {task} task stopped: {reason}")]
pub struct TaskDied {
    pub daemon: &'static str,
    pub task: &'static str,
    pub reason: String,
}

/// How shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every task finished within the grace period.
    Clean,
    /// Some did not and were abandoned.
    Abandoned(usize),
}

/// The named tasks of one daemon; every task gets a child of the daemon's shutdown token.
pub struct Tasks {
    daemon: &'static str,
    cancel: CancellationToken,
    set: JoinSet<(&'static str, Result<(), String>)>,
}

impl Tasks {
    pub fn new(daemon: &'static str, shutdown: &CancellationToken) -> Self {
        Tasks {
            daemon,
            cancel: shutdown.child_token(),
            set: JoinSet::new(),
        }
    }

    /// The token tasks watch: cancelled at shutdown or when a task died.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn spawn<F>(&mut self, task: &'static str, fut: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.set.spawn(async move { (task, fut.await) });
    }

    /// Runs until the shutdown token is cancelled (then drains: `Ok`) or a task ends on its own (then stops the
    /// others and returns why).
    pub async fn run(mut self) -> Result<Drained, TaskDied> {
        let died = tokio::select! {
            _ = self.cancel.cancelled() => None,
            Some(joined) = self.set.join_next() => Some(match joined {
                Ok((task, Ok(()))) => (task, "it ended although the daemon was not shutting down".to_string()),
                Ok((task, Err(e))) => (task, e),
                Err(e) => ("unknown", if e.is_panic() { format!("it panicked: {e}") } else { e.to_string() }),
            }),
        };
        if let Some((task, reason)) = &died {
            tracing::error!(daemon = self.daemon, task, %reason, "A task of the daemon stopped; shutting down");
        }
        self.cancel.cancel();
        let drained = drain(&mut self.set).await;
        match drained {
            Drained::Clean => tracing::info!(daemon = self.daemon, "Shutdown drained every task"),
            Drained::Abandoned(n) => {
                tracing::warn!(
                    daemon = self.daemon,
                    "Shutdown abandoned {n} task(s) after {GRACE:?}"
                )
            }
        }
        match died {
            None => Ok(drained),
            Some((task, reason)) => Err(TaskDied {
                daemon: self.daemon,
                task,
                reason,
            }),
        }
    }
}

async fn drain(set: &mut JoinSet<(&'static str, Result<(), String>)>) -> Drained {
    let all = tokio::time::timeout(GRACE, async { while set.join_next().await.is_some() {} }).await;
    match all {
        Ok(()) => Drained::Clean,
        Err(_) => {
            let left = set.len();
            set.abort_all();
            Drained::Abandoned(left)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_fails_takes_the_daemon_down_and_shutdown_drains() {
        let shutdown = CancellationToken::new();
        let mut t = Tasks::new("test", &shutdown);
        let tok = t.token();
        t.spawn("waits", async move {
            tok.cancelled().await;
            Ok(())
        });
        t.spawn("fails", async { Err("the port went away".to_string()) });
        let e = t.run().await.unwrap_err();
        assert_eq!(e.task, "fails");
        assert!(e.to_string().contains("the port went away"), "{e}");
        assert!(!shutdown.is_cancelled(), "the caller's token is its own");

        let mut t = Tasks::new("test", &shutdown);
        let tok = t.token();
        t.spawn("waits", async move {
            tok.cancelled().await;
            Ok(())
        });
        shutdown.cancel();
        assert_eq!(t.run().await.unwrap(), Drained::Clean);
    }

    #[tokio::test]
    async fn a_task_that_returns_early_or_panics_is_named() {
        let shutdown = CancellationToken::new();
        let mut t = Tasks::new("test", &shutdown);
        t.spawn("returns", async { Ok(()) });
        assert!(t
            .run()
            .await
            .unwrap_err()
            .reason
            .contains("not shutting down"));
        let mut t = Tasks::new("test", &shutdown);
        t.spawn("panics", async { panic!("boom") });
        assert!(t.run().await.unwrap_err().reason.contains("panicked"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_shutdown_is_abandoned_after_the_grace() {
        let shutdown = CancellationToken::new();
        let mut t = Tasks::new("test", &shutdown);
        t.spawn("stubborn", async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        shutdown.cancel();
        assert_eq!(t.run().await.unwrap(), Drained::Abandoned(1));
    }
}
