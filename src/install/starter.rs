//! The starter configurations `install` writes beside a Flink home: one agent configuration (the same on every
//! host; `id` defaults to the host name) and one coordinator configuration, both a few lines, each key explained in
//! docs/configuration.md. Tokens are created (0600) by the coordinator at its first start; agents read the agent
//! token (copy it to every host).

use std::path::{Path, PathBuf};

use super::{FlinkHome, InstallArgs};
use crate::flink::conf::{self, FlinkConf};

pub const AGENT_FILE: &str = "agent.yaml";
pub const COORDINATOR_FILE: &str = "coordinator.yaml";

/// Flink's REST endpoint from its configuration (`rest.address`, `rest.port`; Flink's defaults otherwise).
pub fn rest_url(home: &FlinkHome) -> String {
    let c =
        FlinkConf::read_dir(&home.dir.join("conf"), conf::major(&home.version)).unwrap_or_default();
    let host = c
        .get("rest.address")
        .or_else(|| c.get("jobmanager.rpc.address"))
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost")
        .to_string();
    let port = c.get("rest.port").unwrap_or("8081").to_string();
    format!("http://{host}:{port}")
}

/// The starter files: (path, text).
pub fn files(home: &FlinkHome, dir: &Path, args: &InstallArgs) -> Vec<(PathBuf, String)> {
    let token = dir.join("agent.token");
    let agent = format!(
        "# StreamShield agent: one per host, watching every Flink process there (docs/configuration.md).\n\
         # Start: streamshield agent --config {agent_file}\n\
         listen: unix:{socket}\n\
         coordinator: {coordinator}\n\
         token-file: {token}\n\
         # /metrics and /healthz for Prometheus:\n\
         http: 127.0.0.1:9252\n\
         # Flink runs as another user than the agent? Let its group connect:\n\
         # socket-mode: '0660'\n\
         # socket-group: flink\n",
        agent_file = dir.join(AGENT_FILE).display(),
        socket = args.agent_socket.display(),
        coordinator = args.coordinator,
        token = token.display(),
    );
    let coordinator = format!(
        "# StreamShield coordinator: one per Flink cluster (docs/configuration.md).\n\
         # Start: streamshield coordinator --config {file}\n\
         flink-rest: {rest}\n\
         agents-listen: {coordinator}\n\
         api-listen: 127.0.0.1:9251\n\
         agent-token-file: {token}\n\
         api-token-file: {api}\n\
         epoch-file: {epoch}\n\
         # The policy comes from each job's and the cluster's streamshield.* keys (conf/config.yaml: streamshield.failover);\n\
         # these are the last level:\n\
         # failover: false\n\
         # hang-tolerance: 1 s\n",
        file = dir.join(COORDINATOR_FILE).display(),
        rest = rest_url(home),
        coordinator = args.coordinator,
        token = token.display(),
        api = dir.join("api.token").display(),
        epoch = dir.join("epoch").display(),
    );
    vec![
        (dir.join(AGENT_FILE), agent),
        (dir.join(COORDINATOR_FILE), coordinator),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentConfig;
    use crate::coordinator::CoordinatorConfig;

    #[test]
    fn the_starters_are_valid_configurations() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("conf")).unwrap();
        std::fs::write(
            d.path().join("conf/config.yaml"),
            "rest:\n  address: jm.example\n  port: 18081\n",
        )
        .unwrap();
        let home = FlinkHome {
            dir: d.path().to_path_buf(),
            version: "2.3.0".into(),
            config: d.path().join("conf/config.yaml"),
            format: conf::Format::Standard,
        };
        let args = InstallArgs {
            flink_home: d.path().to_path_buf(),
            plugin_jar: None,
            config_dir: None,
            agent_socket: "/run/streamshield/agent.sock".into(),
            coordinator: "coord:9250".into(),
            failover: false,
            tuning: super::super::Tuning::Add,
            dry_run: false,
            force: false,
        };
        let files = files(&home, &d.path().join("conf/streamshield"), &args);
        let a: AgentConfig = crate::conf::parse(&files[0].1).unwrap();
        let a = a.resolve(None).unwrap();
        assert_eq!(a.coordinator.as_deref(), Some("coord:9250"));
        let c: CoordinatorConfig = crate::conf::parse(&files[1].1).unwrap();
        let c = c.resolve(None).unwrap();
        assert_eq!(c.flink_rest, "http://jm.example:18081");
    }
}
