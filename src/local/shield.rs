//! Launching StreamShield's own processes (shield profile): the coordinator, and one agent per Flink process,
//! both subcommands of this very binary; and an agent's `/healthz`.

use std::path::{Path, PathBuf};

use super::wait::wait_info;
use super::{config, io, say, AgentInfo, CoordinatorInfo, Result, RunState};
use crate::host::process;

/// This very binary: agents and the coordinator are `streamshield` subcommands.
fn streamshield_binary() -> Result<PathBuf> {
    std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))
}

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
    // The policy comes from the Flink configuration (profile + overrides): `streamshield.failover`,
    // `streamshield.hang-tolerance`, `streamshield.gc-tolerance`.
    let conf = std::fs::read_to_string(state.conf_dir().join("config.yaml")).unwrap_or_default();
    let mut policy = vec![
        "coordinator".to_string(),
        "--epoch-file".to_string(),
        dir.join("epoch").display().to_string(),
    ];
    if config::lookup(&conf, "streamshield.failover") == Some("true") {
        policy.push("--failover".into());
    }
    for (key, flag) in [
        ("streamshield.hang-tolerance", "--hang-tolerance"),
        ("streamshield.gc-tolerance", "--gc-tolerance"),
    ] {
        if let Some(v) = config::lookup(&conf, key) {
            policy.extend([flag.to_string(), v.replace(' ', "")]);
        }
    }
    let rec = process::spawn(process::Spec {
        name: "coordinator",
        program: &streamshield_binary()?,
        args: policy
            .into_iter()
            .chain([
                "--agents-listen".into(),
                format!("127.0.0.1:{}", state.ports.coordinator_agents),
                "--api".into(),
                format!("127.0.0.1:{}", state.ports.coordinator_api),
                "--agent-token-file".into(),
                agent_token_file.display().to_string(),
                "--api-token-file".into(),
                api_token_file.display().to_string(),
                "--flink-rest".into(),
                state.rest_url(),
                "--info-file".into(),
                info.display().to_string(),
            ])
            .collect(),
        cwd: &dir,
        log: state.logs_dir().join("coordinator.out"),
        out: state.logs_dir().join("coordinator.out"),
        env: vec![("STREAMSHIELD_LOG".into(), "info".into())],
        cgroup: None,
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

/// Starts the agent for `resource_id` (before its Flink process, so the plugin finds it at once) and records it.
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
    let rec = process::spawn(process::Spec {
        name: &name,
        program: &streamshield_binary()?,
        args: vec![
            "agent".into(),
            "--listen".into(),
            format!("unix:{}", sock.display()),
            "--resource-id".into(),
            resource_id.into(),
            "--watches".into(),
            watches.into(),
            "--coordinator".into(),
            coord.agents.clone(),
            "--token-file".into(),
            coord.agent_token_file.display().to_string(),
            "--info-file".into(),
            info.display().to_string(),
            "--restart-spec".into(),
            dir.join("restart.json").display().to_string(),
            "--jobmanager".into(),
            format!("127.0.0.1:{}", state.ports.jm_rpc),
        ],
        cwd: &dir,
        log: state.logs_dir().join(format!("{name}.out")),
        out: state.logs_dir().join(format!("{name}.out")),
        env: vec![("STREAMSHIELD_LOG".into(), "info".into())],
        cgroup,
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

/// An agent's `/healthz` (its view of its process), or None when it does not answer.
pub(super) async fn agent_health(
    http: &reqwest::Client,
    agent: &AgentInfo,
) -> Option<serde_json::Value> {
    let r = http
        .get(format!("{}/healthz", agent.http))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}
