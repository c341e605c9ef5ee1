//! The run's state: what `up` started and how, recorded in `<run dir>/state.json` ([`RunState`], with its load
//! and save), the loopback [`Ports`], the [`Delivery`] guarantee, the info structs of the workload, agents,
//! coordinator and TaskManagers, the recorded Java command lines ([`Launch`]) and the default run directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{config, io, Error, Result};
use crate::host::process::Recorded;

/// The run directory used when none is given (`STREAMSHIELD_RUN_DIR`, else `~/.local/share/streamshield/local`).
pub fn default_run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STREAMSHIELD_RUN_DIR") {
        return PathBuf::from(d);
    }
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("streamshield")
        .join("local")
}

/// Loopback ports of a local cluster. `--port-offset` shifts all of them, so two clusters can run side by side.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ports {
    pub rest: u16,
    pub jm_rpc: u16,
    pub blob: u16,
    pub kafka: u16,
    pub kafka_controller: u16,
    /// Where agents reach the coordinator (shield profile).
    pub coordinator_agents: u16,
    /// The coordinator's HTTP API (shield profile).
    pub coordinator_api: u16,
    /// ZooKeeper, for profiles with ZooKeeper high availability (the shield profile).
    #[serde(default)]
    pub zookeeper: u16,
}

impl Ports {
    pub fn with_offset(offset: u16) -> Result<Self> {
        let add = |p: u16| {
            p.checked_add(offset).ok_or_else(|| {
                Error::Invalid(format!("--port-offset {offset} pushes port {p} past 65535"))
            })
        };
        Ok(Ports {
            rest: add(8081)?,
            jm_rpc: add(6123)?,
            blob: add(6124)?,
            kafka: add(9092)?,
            kafka_controller: add(9093)?,
            coordinator_agents: add(9250)?,
            coordinator_api: add(9251)?,
            zookeeper: add(2181)?,
        })
    }

    /// Every port with its name, in the order `up` checks them (Flink REST first).
    pub(super) fn all(&self) -> [(&'static str, u16); 8] {
        [
            ("Flink REST", self.rest),
            ("JobManager RPC", self.jm_rpc),
            ("Flink blob server", self.blob),
            ("Kafka", self.kafka),
            ("Kafka controller", self.kafka_controller),
            ("StreamShield coordinator (agents)", self.coordinator_agents),
            ("StreamShield coordinator API", self.coordinator_api),
            ("ZooKeeper", self.zookeeper),
        ]
    }
}

/// Delivery guarantee of the workload's Kafka sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    ExactlyOnce,
    AtLeastOnce,
}

impl Delivery {
    pub fn as_arg(&self) -> &'static str {
        match self {
            Delivery::ExactlyOnce => "exactly-once",
            Delivery::AtLeastOnce => "at-least-once",
        }
    }
}

/// The workload as submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub job_id: String,
    pub job_name: String,
    pub parallelism: u32,
    pub delivery: Delivery,
    pub checkpoint_interval_ms: u64,
    pub state_bytes: u32,
    pub input_topic: String,
    pub output_topic: String,
    pub partitions: u32,
}

/// An agent of the run (shield profile).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub resource_id: String,
    /// Where its plugin connects (`unix:...`).
    pub plugin: String,
    /// Its /metrics and /healthz base URL.
    pub http: String,
    pub process: Recorded,
}

/// The run's coordinator (shield profile).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoordinatorInfo {
    /// API base URL.
    pub api: String,
    /// Where agents connect (host:port).
    pub agents: String,
    pub api_token_file: PathBuf,
    pub agent_token_file: PathBuf,
    pub process: Recorded,
}

/// A TaskManager of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TmInfo {
    pub resource_id: String,
    /// `active` (started before the job: its slots run tasks), `standby` (started after: free slots) or `spare`
    /// (warm spares: started before the job, which spreads its slots over every TaskManager).
    pub role: String,
    pub process: Recorded,
}

/// `<run dir>/state.json`: what `up` started. Written after every step, so an interrupted `up` can be undone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub schema: String,
    pub run_dir: PathBuf,
    pub profile: String,
    pub flink_version: String,
    pub kafka_version: String,
    pub ports: Ports,
    pub slots: u32,
    pub kafka: Option<Recorded>,
    pub jobmanager: Option<Recorded>,
    pub taskmanagers: Vec<TmInfo>,
    /// Agents (shield profile), one per Flink process.
    #[serde(default)]
    pub agents: Vec<AgentInfo>,
    #[serde(default)]
    pub coordinator: Option<CoordinatorInfo>,
    /// The plugin directory handed to Flink (shield profile).
    #[serde(default)]
    pub plugins_dir: Option<PathBuf>,
    pub workload: Option<WorkloadInfo>,
    /// Unix ms when `up` finished (None while it runs).
    pub up_at_ms: Option<i64>,
    /// How long each step of `up` took (ms), in order: where the start-up time goes.
    #[serde(default)]
    pub up_steps_ms: Vec<(String, u64)>,
    /// Paths the drill and tests reuse to start more TaskManagers the same way.
    pub flink_home: PathBuf,
    pub tm_launch: Option<Launch>,
    /// The JobManager's command line, so the drill can start it again after killing it.
    #[serde(default)]
    pub jm_launch: Option<Launch>,
    /// Kafka's command line (storage already formatted), so the drill can start the broker again.
    #[serde(default)]
    pub kafka_launch: Option<Launch>,
    /// The run's cgroup (relative to the cgroup v2 root) when TaskManagers are isolated (`UpOptions::isolate`).
    #[serde(default)]
    pub isolation: Option<String>,
    /// ZooKeeper (profiles with ZooKeeper high availability).
    #[serde(default)]
    pub zookeeper: Option<Recorded>,
    #[serde(default)]
    pub zookeeper_launch: Option<Launch>,
}

/// A Java command line, kept so a TaskManager can be started again exactly like the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub java_args: Vec<String>,
    pub main_args: Vec<String>,
}

pub(super) const STATE_SCHEMA: &str = "streamshield.local/v1";

impl RunState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<Option<RunState>> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let state: RunState = serde_json::from_str(&text).map_err(|e| Error::BadState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.schema != STATE_SCHEMA {
            return Err(Error::BadState {
                path,
                reason: format!("schema {} (this build reads {STATE_SCHEMA})", state.schema),
            });
        }
        Ok(Some(state))
    }

    /// Atomically replaces the state file.
    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.run_dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Every process of the run.
    pub fn processes(&self) -> Vec<&Recorded> {
        let mut v: Vec<&Recorded> = self.taskmanagers.iter().map(|t| &t.process).collect();
        v.extend(self.jobmanager.iter());
        v.extend(self.agents.iter().map(|a| &a.process));
        v.extend(self.coordinator.iter().map(|c| &c.process));
        v.extend(self.kafka.iter());
        v.extend(self.zookeeper.iter());
        v
    }

    pub fn shielded(&self) -> bool {
        config::runs_streamshield(&self.profile)
    }

    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.rest)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports.kafka)
    }

    pub(super) fn logs_dir(&self) -> PathBuf {
        self.run_dir.join("logs")
    }

    pub(super) fn conf_dir(&self) -> PathBuf {
        self.run_dir.join("flink/conf")
    }
}

#[cfg(test)]
pub(super) fn test_state(dir: &Path) -> RunState {
    RunState {
        schema: STATE_SCHEMA.into(),
        run_dir: dir.to_path_buf(),
        profile: "stock".into(),
        flink_version: "1.20.5".into(),
        kafka_version: "4.1.1".into(),
        ports: Ports::with_offset(0).unwrap(),
        slots: 2,
        kafka: None,
        jobmanager: None,
        taskmanagers: vec![],
        agents: vec![],
        coordinator: None,
        plugins_dir: None,
        workload: None,
        up_at_ms: None,
        up_steps_ms: Vec::new(),
        flink_home: PathBuf::new(),
        tm_launch: None,
        jm_launch: None,
        kafka_launch: None,
        isolation: None,
        zookeeper: None,
        zookeeper_launch: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_shift_and_overflow() {
        let p = Ports::with_offset(100).unwrap();
        assert_eq!((p.rest, p.kafka), (8181, 9192));
        assert!(Ports::with_offset(60000).is_err());
    }

    #[test]
    fn state_round_trip_and_schema_check() {
        let d = tempfile::tempdir().unwrap();
        let s = test_state(d.path());
        s.save().unwrap();
        let back = RunState::load(d.path()).unwrap().unwrap();
        assert_eq!(back.bootstrap(), "127.0.0.1:9092");
        std::fs::write(RunState::path(d.path()), "{\"schema\": 1}").unwrap();
        assert!(matches!(
            RunState::load(d.path()),
            Err(Error::BadState { .. })
        ));
    }
}
