//! Launching StreamShield's own processes (shield profile): the coordinator, and one agent per Flink process,
//! both subcommands of this very binary; and an agent's `/healthz`.

use std::path::{Path, PathBuf};

use super::wait::wait_info;
use super::{io, say, AgentInfo, CoordinatorInfo, Result, RunState};
use crate::host::process;

/// This very binary: agents and the coordinator are `streamshield` subcommands.
fn streamshield_binary() -> Result<PathBuf> {
    std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))
}

/// Writes a daemon's configuration file (the same YAML a user writes; docs/configuration.md).
fn write_config(path: &Path, lines: &[(&str, String)]) -> Result<()> {
    let mut text = String::from("# Written by `streamshield local up`: the same keys a user writes (docs/configuration.md).\n");
    for (k, v) in lines {
        text.push_str(&format!("{k}: '{}'\n", v.replace('\'', "''")));
    }
    super::write(path, &text)
}

/// Starts the coordinator from a configuration file, as a user would. Its policy comes from the Flink
/// configuration it reads over REST (the profile's `streamshield.*` keys), not from here.
pub(super) async fn start_coordinator(state: &mut RunState) -> Result<()> {
    let dir = state.run_dir.join("coordinator");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let info = dir.join("info.json");
    let _ = std::fs::remove_file(&info);
    let api_token_file = dir.join("api.token");
    let agent_token_file = dir.join("agent.token");
    say(format!(
        "starting the StreamShield coordinator (API http://127.0.0.1:{})",
        state.ports.coordinator_api
    ));
    let config = dir.join("coordinator.yaml");
    write_config(
        &config,
        &[
            (
                "agents-listen",
                format!("127.0.0.1:{}", state.ports.coordinator_agents),
            ),
            (
                "api-listen",
                format!("127.0.0.1:{}", state.ports.coordinator_api),
            ),
            ("agent-token-file", agent_token_file.display().to_string()),
            ("api-token-file", api_token_file.display().to_string()),
            ("flink-rest", state.rest_url()),
            ("epoch-file", dir.join("epoch").display().to_string()),
            ("info-file", info.display().to_string()),
        ],
    )?;
    let rec = process::spawn(process::Spec {
        name: "coordinator",
        program: &streamshield_binary()?,
        args: vec![
            "coordinator".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        cwd: &dir,
        log: state.logs_dir().join("coordinator.out"),
        out: state.logs_dir().join("coordinator.out"),
        env: vec![("STREAMSHIELD_LOG".into(), "info".into())],
        cgroup: None,
        exact: None,
    })?;
    state.coordinator = Some(CoordinatorInfo {
        api: format!("http://127.0.0.1:{}", state.ports.coordinator_api),
        agents: format!("127.0.0.1:{}", state.ports.coordinator_agents),
        api_token_file,
        agent_token_file,
        process: rec.clone(),
    });
    state.save()?;
    wait_info(&rec, &info, "the coordinator").await?;
    Ok(())
}

/// Starts the agent for `resource_id` from a configuration file (before its Flink process, so the plugin finds it
/// at once) and records it. `local` runs one agent per Flink process (the sidecar shape), so that cutting a
/// TaskManager's cgroup off the network cuts its agent off too, as on a real host.
pub(super) async fn start_agent(
    state: &mut RunState,
    resource_id: &str,
    watches: &str,
    cgroup: Option<PathBuf>,
) -> Result<()> {
    let Some(coord) = state.coordinator.clone() else {
        return Ok(());
    };
    let dir = state.run_dir.join("agents").join(resource_id);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let info = dir.join("info.json");
    let _ = std::fs::remove_file(&info);
    let name = format!("agent-{resource_id}");
    let sock = dir.join("plugin.sock");
    let config = dir.join("agent.yaml");
    write_config(
        &config,
        &[
            ("id", name.clone()),
            ("listen", format!("unix:{}", sock.display())),
            ("roles", watches.to_string()),
            ("http", "127.0.0.1:0".into()),
            ("coordinator", coord.agents.clone()),
            ("token-file", coord.agent_token_file.display().to_string()),
            ("jobmanager", format!("127.0.0.1:{}", state.ports.jm_rpc)),
            ("info-file", info.display().to_string()),
        ],
    )?;
    // roles is a list: the quoted scalar above is rewritten as one.
    let mut text = std::fs::read_to_string(&config)
        .map_err(io(&config))?
        .replace(
            &format!("roles: '{watches}'"),
            &format!("roles: [{watches}]"),
        );
    // A TaskManager's agent watches what its sinks write to: the run's Kafka, and its ZooKeeper when there is one
    // (docs/watchdogs.md); its spill log waits in the agent's directory (docs/spill.md).
    if watches.contains("tm") {
        text.push_str(&format!(
            "spill-dir: '{}'\n",
            dir.join("spill").display().to_string().replace('\'', "''")
        ));
        text.push_str(&format!(
            "watchdog-targets:\n  - kafka=kafka://127.0.0.1:{}\n",
            state.ports.kafka
        ));
        if state.zookeeper.is_some() {
            text.push_str(&format!(
                "  - zookeeper=zookeeper://127.0.0.1:{}\n",
                state.ports.zookeeper
            ));
        }
    }
    super::write(&config, &text)?;
    let rec = process::spawn(process::Spec {
        name: &name,
        program: &streamshield_binary()?,
        args: vec![
            "agent".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        cwd: &dir,
        log: state.logs_dir().join(format!("{name}.out")),
        out: state.logs_dir().join(format!("{name}.out")),
        env: vec![("STREAMSHIELD_LOG".into(), "info".into())],
        cgroup,
        exact: None,
    })?;
    state.agents.retain(|a| a.resource_id != resource_id);
    state.agents.push(AgentInfo {
        resource_id: resource_id.into(),
        plugin: format!("unix:{}", sock.display()),
        http: String::new(),
        process: rec.clone(),
    });
    state.save()?;
    let v = wait_info(&rec, &info, &name).await?;
    if let Some(a) = state
        .agents
        .iter_mut()
        .find(|a| a.resource_id == resource_id)
    {
        a.http = format!("http://{}", v["http"].as_str().unwrap_or("127.0.0.1:0"));
    }
    state.save()
}

/// An agent's `/healthz` (its view of its processes), or None when it does not answer.
pub(super) async fn agent_health(
    http: &reqwest::Client,
    agent: &AgentInfo,
) -> Option<crate::agent::http::Health> {
    let r = http
        .get(format!("{}/healthz", agent.http))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}
