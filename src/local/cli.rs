//! The arguments of `streamshield local up | status | down | logs` (the binary runs them).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::Delivery;

#[derive(Args, Clone)]
pub struct DirArg {
    /// Run directory of the local cluster (state, configs, logs, data).
    #[arg(long, env = "STREAMSHIELD_RUN_DIR", default_value_os_t = super::default_run_dir())]
    pub dir: PathBuf,
}

#[derive(Subcommand)]
pub enum LocalCommand {
    /// Fetches what is missing, starts Kafka, a JobManager and N+K TaskManagers, and submits the workload.
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// TaskManagers that run the job.
        #[arg(long, default_value_t = 2, env = "STREAMSHIELD_TASKMANAGERS")]
        taskmanagers: u32,
        /// Spare TaskManagers started after the job, so their slots stay free.
        #[arg(long, default_value_t = 1, env = "STREAMSHIELD_STANDBY")]
        standby: u32,
        /// Slots per TaskManager. The job's parallelism is taskmanagers x slots.
        #[arg(long, default_value_t = 2, env = "STREAMSHIELD_SLOTS")]
        slots: u32,
        /// Flink settings profile (deploy/local/profiles/).
        #[arg(long, default_value = "stock", env = "STREAMSHIELD_PROFILE")]
        profile: String,
        /// Added to every port (REST 8081, JobManager RPC 6123, blob 6124, Kafka 9092/9093).
        #[arg(long, default_value_t = 0, env = "STREAMSHIELD_PORT_OFFSET")]
        port_offset: u16,
        /// Delivery guarantee of the workload's Kafka sink.
        #[arg(long, value_enum, default_value = "exactly-once")]
        delivery: Delivery,
        /// Checkpoint interval of the workload.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        checkpoint_interval: Duration,
        /// A Flink setting laid over the profile, repeatable (e.g. --flink-conf heartbeat.timeout=20s).
        #[arg(long = "flink-conf", value_name = "KEY=VALUE", value_parser = crate::conf::parse_key_value)]
        flink_conf: Vec<(String, String)>,
        /// Start each TaskManager (and its agent) in its own cgroup so that `drill --scenario tm-partition` can cut
        /// its network with iptables (root, cgroup v2 and iptables needed).
        #[arg(long)]
        isolate: bool,
        /// Start the standby TaskManagers before the job and spread its slots over every TaskManager, so that the
        /// spare slots are on TaskManagers that already run the job.
        #[arg(long)]
        warm_spares: bool,
        /// Extra keyed-state bytes per key (varies checkpoint and restore size).
        #[arg(long, default_value_t = 0)]
        state_bytes: u32,
        /// An extra argument for the workload job, repeatable (e.g. --job-arg=--job-name --job-arg=mine).
        #[arg(long = "job-arg", allow_hyphen_values = true)]
        job_args: Vec<String>,
    },
    /// Shows the cluster: processes, TaskManager roles, jobs.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stops every process the run started.
    Down {
        #[command(flatten)]
        dir: DirArg,
        /// Also delete the run directory (logs, Kafka data, checkpoints).
        #[arg(long)]
        purge: bool,
    },
    /// Prints a component's log (kafka, jobmanager, tm-1, ...).
    Logs {
        component: String,
        #[command(flatten)]
        dir: DirArg,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// The process's stdout/stderr instead of its log file.
        #[arg(long)]
        out: bool,
        /// Print the file's path only.
        #[arg(long)]
        path: bool,
    },
}
