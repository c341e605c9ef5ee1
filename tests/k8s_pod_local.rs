//! An injected TaskManager pod, run: no kubelet can run containers here, so the pod spec the real webhook wrote is
//! run as local processes — the plugin's init container and the agent sidecar with exactly the command, arguments
//! and environment the webhook put into the pod, the TaskManager with Flink's own scripts and the keys the webhook
//! put into the FlinkDeployment — with each volume mapped to a directory of the test. That proves the injected spec
//! works, not only that it is well-formed: the init container copies the plugin jar, Flink loads it from the mounted
//! plugin directory, the plugin links to the sidecar through the shared socket volume, the agent (named after the
//! pod, by the downward API) reports the TaskManager to the coordinator with the token from the Secret volume, and
//! the kubelet's probe of the sidecar answers.
//!
//! The only mappings, all written here: volume mount paths → directories, the image's files (`streamshield`, the
//! plugin jar) → the built ones, `0.0.0.0:<port>` → a free loopback port, the coordinator Service's name → the
//! loopback address of the test's coordinator, the downward API's `metadata.name` → the pod's name. What a real
//! cluster adds and this cannot (image pulls, the kubelet's probes and restarts, a separate pid namespace shared by
//! `shareProcessNamespace`, the Service's DNS) is in docs/install-kubernetes.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

mod common;

use common::control_plane::{flink_pod, Ca, Proc};
use common::standalone::{free_port, wait_for, Standalone};
use common::webhook::{https_client, patch_of, review, Webhook};
use common::BIN;

const POD: &str = "orders-taskmanager-1-1";
/// Where the image keeps the plugin jar (the webhook's `plugin-jar` default).
const IMAGE_JAR: &str = "/opt/streamshield/streamshield-plugin.jar";

/// The pod spec's volumes, each a directory of the test.
struct Volumes(BTreeMap<String, PathBuf>);

impl Volumes {
    /// A container's mount paths → directories, longest first (so a nested mount wins).
    fn mounts(&self, container: &Value) -> Vec<(String, PathBuf)> {
        let mut m: Vec<(String, PathBuf)> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let dir = self.0.get(v["name"].as_str()?)?;
                Some((v["mountPath"].as_str()?.to_string(), dir.clone()))
            })
            .collect();
        m.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        m
    }
}

/// `text` (a path, or `unix:<path>`) moved to where it is here when it lies under one of `mounts` (longest first), or
/// is the image's jar; anything else is unchanged.
fn map_paths(text: &str, mounts: &[(String, PathBuf)], jar: &Path) -> String {
    let (scheme, path) = match text.strip_prefix("unix:") {
        Some(p) => ("unix:", p),
        None => ("", text),
    };
    if path == IMAGE_JAR {
        return format!("{scheme}{}", jar.display());
    }
    for (mount, dir) in mounts {
        if let Some(rest) = path.strip_prefix(mount.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{scheme}{}{rest}", dir.display());
            }
        }
    }
    text.to_string()
}

/// The command line of a container: `streamshield` is the binary under test.
fn command_line(c: &Value, mounts: &[(String, PathBuf)], jar: &Path) -> Vec<String> {
    c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| {
            if a == "streamshield" {
                BIN.to_string()
            } else {
                map_paths(&a, mounts, jar)
            }
        })
        .collect()
}

fn container<'a>(containers: &'a Value, name: &str) -> &'a Value {
    containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {containers:#}"))
}

/// The webhook's answer to `review` at `path`, applied to `object`.
fn mutate(w: &Webhook, ca: &Ca, path: &str, review: Value, object: &Value) -> Value {
    let resp: Value = https_client(&ca.pem())
        .post(format!("{}{path}", w.admission))
        .json(&review)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resp["response"]["allowed"], true, "{resp:#}");
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(patch_of(&resp))).unwrap();
    let mut v = object.clone();
    json_patch::patch(&mut v, &patch).unwrap();
    v
}

#[test]
fn an_injected_taskmanager_pod_runs_as_local_processes() {
    let mut flink = Standalone::new("1.20.5", &[]);
    let root = flink.root.clone();
    let ca = Ca::new("pod-local");
    let w = Webhook::start(
        &root,
        &ca,
        &[
            "--coordinator",
            "streamshield-coordinator-{cluster-id}:9250",
            "--token-secret",
            "streamshield-agent-token",
        ],
    );

    // What the webhook writes: the TaskManager pod as the operator creates it, and its FlinkDeployment's keys.
    let pod = mutate(
        &w,
        &ca,
        "/mutate/pods/namespace",
        review("pod-1", "CREATE", "flink", flink_pod(POD, "taskmanager")),
        &flink_pod(POD, "taskmanager"),
    );
    let fd = json!({
        "apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment",
        "metadata": {"name": "orders", "namespace": "flink", "annotations": {"streamshield.io/enabled": "true"}},
        "spec": {"flinkVersion": "v1_20", "flinkConfiguration": {"taskmanager.numberOfTaskSlots": "1"}}
    });
    let mut fd_review = review("fd-1", "CREATE", "flink", fd.clone());
    fd_review["request"]["kind"] =
        json!({"group": "flink.apache.org", "version": "v1beta1", "kind": "FlinkDeployment"});
    fd_review["request"]["resource"] =
        json!({"group": "flink.apache.org", "version": "v1beta1", "resource": "flinkdeployments"});
    let fd = mutate(&w, &ca, "/mutate/flinkdeployments", fd_review, &fd);
    drop(w);
    let spec = &pod["spec"];
    assert_eq!(spec["shareProcessNamespace"], true, "{pod:#}");

    // Volumes → directories; the Secret's key `token` is the coordinator's agent token.
    let volumes = Volumes(
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let name = v["name"].as_str().unwrap().to_string();
                let dir = root.join("volumes").join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                (name, dir)
            })
            .collect(),
    );
    let token_volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "streamshield-agent-token")
        .expect("the token Secret is a volume")["name"]
        .as_str()
        .unwrap()
        .to_string();
    let flink_volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"].is_object())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let jar = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(streamshield::local::dist::ensure_plugin_jar(
            &streamshield::local::dist::cache_dir(),
            Path::new(env!("CARGO_MANIFEST_DIR")),
        ))
        .expect("the plugin jar");

    // The coordinator of the cluster (the Service `streamshield-coordinator-orders:9250` → its loopback address).
    let coordinator_addr = format!("127.0.0.1:{}", free_port());
    let info = root.join("coordinator.json");
    let mut coordinator = Proc::spawn(
        "streamshield coordinator",
        Command::new(BIN)
            .arg("coordinator")
            .args([
                "--agents-listen",
                &coordinator_addr,
                "--api-listen",
                "127.0.0.1:0",
            ])
            .arg("--agent-token-file")
            .arg(root.join("agent.token"))
            .arg("--api-token-file")
            .arg(root.join("api.token"))
            .args(["--flink-rest", &flink.rest])
            .arg("--info-file")
            .arg(&info),
        &root.join("coordinator.log"),
    );
    let api = wait_for(Duration::from_secs(20), "the coordinator", || {
        let v: Value = serde_json::from_slice(&std::fs::read(&info).ok()?).ok()?;
        Some(v["api"].as_str()?.to_string())
    });
    std::fs::copy(
        root.join("agent.token"),
        volumes.0[&token_volume].join("token"),
    )
    .unwrap();
    let api_token = std::fs::read_to_string(root.join("api.token")).unwrap();

    // 1. The init container copies the jar into the plugin volume, as the kubelet would run it, and exits 0.
    let init = &spec["initContainers"];
    let plugin = container(init, "streamshield-plugin");
    let pm = volumes.mounts(plugin);
    let argv = command_line(plugin, &pm, &jar);
    let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 2. The agent sidecar with its command, arguments and environment.
    let agent = container(init, "streamshield-agent");
    assert_eq!(agent["restartPolicy"], "Always", "a native sidecar");
    let am = volumes.mounts(agent);
    let mut agent_http = String::new();
    let mut env: Vec<(String, String)> = vec![];
    for e in agent["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            POD.to_string()
        } else if let Some(v) = e["value"].as_str() {
            if name == "STREAMSHIELD_AGENT_COORDINATOR" {
                assert_eq!(
                    v, "streamshield-coordinator-orders:9250",
                    "the pod's own cluster"
                );
                coordinator_addr.clone()
            } else if let Some(port) = v.strip_prefix("0.0.0.0:") {
                assert_eq!(port, agent["livenessProbe"]["httpGet"]["port"].to_string());
                agent_http = format!("127.0.0.1:{}", free_port());
                agent_http.clone()
            } else {
                map_paths(v, &am, &jar)
            }
        } else {
            panic!("an environment variable this test cannot map: {e}");
        };
        env.push((name, value));
    }
    let argv = command_line(agent, &am, &jar);
    let mut agent_proc = Proc::spawn(
        "the injected agent",
        Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env.clone()),
        &root.join("agent.log"),
    );
    let probe = format!(
        "http://{agent_http}{}",
        agent["startupProbe"]["httpGet"]["path"].as_str().unwrap()
    );
    wait_for(Duration::from_secs(20), "the agent's startup probe", || {
        reqwest::blocking::get(&probe)
            .ok()
            .filter(|r| r.status().is_success())
    });

    // 3. The TaskManager: Flink's own scripts, the FlinkDeployment's keys as the operator writes them into its
    //    configuration, the container's environment, and the plugin volume mounted at plugins/streamshield.
    let main = container(&spec["containers"], "flink-main-container");
    let fm = volumes.mounts(main);
    let keys: Vec<(String, String)> = fd["spec"]["flinkConfiguration"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), map_paths(v.as_str().unwrap(), &fm, &jar)))
        .collect();
    let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    flink.set_flink_keys(&keys);
    let plugins = flink.home.join("plugins");
    for (path, dir) in &fm {
        if let Some(sub) = path.strip_prefix("/opt/flink/plugins/") {
            std::os::unix::fs::symlink(dir, plugins.join(sub)).unwrap();
        }
    }
    assert!(
        std::fs::read_dir(plugins.join("streamshield"))
            .unwrap()
            .count()
            > 0,
        "the init container's jar is in the mounted plugin directory"
    );
    assert!(
        fm.iter().any(|(p, _)| p == "/opt/flink/conf") && volumes.0.contains_key(&flink_volume)
    );
    let main_env: Vec<(String, String)> = main["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                map_paths(e["value"].as_str().unwrap(), &fm, &jar),
            )
        })
        .collect();
    assert!(flink.script("jobmanager.sh", &["start"]).status.success());
    wait_for(Duration::from_secs(60), "Flink's REST API", || {
        flink.rest_get("/overview")
    });
    let out = common::standalone::run(
        Command::new(flink.home.join("bin/taskmanager.sh"))
            .arg("start")
            .envs(main_env)
            .current_dir(&root),
    );
    assert!(out.status.success());
    flink.wait_taskmanagers(1);
    let tm_id = flink.rest_get("/taskmanagers").unwrap()["taskmanagers"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The plugin linked to the sidecar, the sidecar reports the TaskManager to the coordinator under the pod's name.
    let client = reqwest::blocking::Client::new();
    let cluster = wait_for(
        Duration::from_secs(60),
        "the TaskManager at the coordinator",
        || {
            let v: Value = client
                .get(format!("{api}/v1/cluster"))
                .bearer_auth(api_token.trim())
                .send()
                .ok()?
                .json()
                .ok()?;
            let p = v["processes"]
                .as_array()?
                .iter()
                .find(|p| p["resource_id"] == tm_id.as_str())?;
            (p["status"]["plugin_connected"] == true && p["status"]["liveness"] == "alive")
                .then_some(v)
        },
    );
    let p = cluster["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["resource_id"] == tm_id.as_str())
        .unwrap();
    assert_eq!(p["agent"], POD, "the agent is named after its pod: {p:#}");
    assert_eq!(
        p["status"]["restartable"], false,
        "in a pod the agent only fences"
    );
    let page = reqwest::blocking::get(format!("http://{agent_http}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        page.contains(&format!(
            "streamshield_agent_plugin_connected{{resource_id=\"{tm_id}\"}} 1"
        )),
        "{page}"
    );
    eprintln!("injected pod run locally: TaskManager {tm_id} linked to agent {POD}, reported to the coordinator");
    // No churn while the sidecar waited for Flink: it kept its link with heartbeats.
    let log = std::fs::read_to_string(root.join("coordinator.log")).unwrap();
    assert!(!log.contains("Agent lost"), "{log}");
    agent_proc.stop();
    coordinator.stop();
    flink.stop_and_check();
}
