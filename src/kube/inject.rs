//! What the admission webhook changes, as pure functions of the object under admission: the agent sidecar and the
//! plugin jar in a Flink JobManager or TaskManager pod, and the plugin's keys and the pods' opt-in label in a
//! FlinkDeployment. Each returns a JSON patch (RFC 6902) or the reason it changes nothing; nothing here talks to the
//! API server, so admission stays fast and needs no permissions.
//!
//! Patches are computed as the difference between the object as parsed and the object as changed, both through
//! the same typed model, and every change appends (containers, volumes, mounts, environment) or sets a field that
//! was absent: the patch never touches what the pod already had, including fields newer than this build's model.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Pod, Probe, ResourceRequirements, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use thiserror::Error;

use crate::coordinator::policy::keys::{self as policy_keys, Source};
use crate::flink::plugin;

/// The annotation and label prefix on Kubernetes (the job keys' `streamshield.` becomes `streamshield.io/`).
pub const ANNOTATION_PREFIX: &str = "streamshield.io/";
/// Namespace label (`enabled`) and pod label (`enabled` / `disabled`) that opt in or out.
pub const INJECT_LABEL: &str = "streamshield.io/inject";
/// FlinkDeployment annotation (`"true"`) that opts its pods in.
pub const ENABLED_ANNOTATION: &str = "streamshield.io/enabled";
/// Set on every injected pod; its presence makes injection a no-op.
pub const INJECTED_ANNOTATION: &str = "streamshield.io/injected";
/// The name of the Flink container in the pods the operator and Flink's native integration create.
pub const FLINK_CONTAINER: &str = "flink-main-container";
pub const AGENT_CONTAINER: &str = "streamshield-agent";
pub const PLUGIN_CONTAINER: &str = "streamshield-plugin";
const RUN_VOLUME: &str = "streamshield-run";
const PLUGIN_VOLUME: &str = "streamshield-plugin";
const TOKEN_VOLUME: &str = "streamshield-token";
const TOKEN_DIR: &str = "/var/run/secrets/streamshield";
/// Where the plugin jar is copied to inside the init container (the plugin volume's mount point there).
const PLUGIN_STAGING: &str = "/streamshield/plugin";
/// The `type` label values of Flink's own Kubernetes integrations (native, and the operator's standalone mode).
const FLINK_TYPES: [&str; 2] = ["flink-native-kubernetes", "flink-standalone-kubernetes"];
/// The Flink image's default user (flink, uid 9999): the agent runs as the Flink process's user, so that the
/// plugin may use its 0600 socket and the agent may read its /proc entries and signal it.
const FLINK_IMAGE_UID: i64 = 9999;

/// What the injection needs to know, resolved from the webhook's configuration (docs/configuration.md).
#[derive(Debug, Clone, PartialEq)]
pub struct InjectSettings {
    /// The image with the `streamshield` binary and the plugin jar.
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// The plugin jar inside `image`.
    pub plugin_jar: String,
    /// Where Flink looks for plugins in the Flink image (the jar's volume is mounted at `<dir>/streamshield`).
    pub flink_plugins_dir: String,
    /// The socket directory shared by the agent and Flink.
    pub socket_dir: String,
    /// The agent's HTTP port (`/metrics`, `/healthz`).
    pub agent_http_port: u16,
    /// The coordinator's agent address (`host:port`); none: agents watch and export metrics only.
    pub coordinator: Option<String>,
    /// A Secret in the pod's namespace holding the coordinator's agent token under the key `token`.
    pub token_secret: Option<String>,
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
}

/// The Flink process a pod runs, from its `component` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    JobManager,
    TaskManager,
}

impl Component {
    fn agent_role(self) -> &'static str {
        match self {
            Component::JobManager => "jm",
            Component::TaskManager => "tm",
        }
    }
}

/// Why an object was admitted unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not a JobManager or TaskManager pod of Flink's Kubernetes integrations (labels `type`, `component`, `app`).
    NotFlink,
    /// Neither its namespace nor its pod template opted in.
    NotOptedIn,
    /// Labelled `streamshield.io/inject: disabled`.
    OptedOut,
    AlreadyInjected,
    /// A Flink pod without a container named `flink-main-container`.
    NoFlinkContainer,
    /// A FlinkDeployment without `streamshield.io/enabled: "true"`.
    NotEnabled,
    /// A FlinkDeployment that already has everything injection would add.
    UpToDate,
}

impl Skip {
    /// The reason as a metric label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Skip::NotFlink => "not-flink",
            Skip::NotOptedIn => "not-opted-in",
            Skip::OptedOut => "opted-out",
            Skip::AlreadyInjected => "already-injected",
            Skip::NoFlinkContainer => "no-flink-container",
            Skip::NotEnabled => "not-enabled",
            Skip::UpToDate => "up-to-date",
        }
    }
}

/// The webhook's verdict on one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Apply `patch`; `warnings` go back to whoever created the object.
    Patch {
        patch: json_patch::Patch,
        warnings: Vec<String>,
    },
    Unchanged {
        skip: Skip,
        warnings: Vec<String>,
    },
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("the object is not a valid {kind}: {message}")]
    Malformed { kind: &'static str, message: String },
    #[error("cannot serialise the changed {kind}: {0}", kind = "object")]
    Serialise(#[from] serde_json::Error),
}

/// Recognises a Flink JobManager or TaskManager pod by the labels Flink's Kubernetes integrations give it.
pub fn flink_component(labels: &BTreeMap<String, String>) -> Option<Component> {
    let typed = labels
        .get("type")
        .is_some_and(|t| FLINK_TYPES.contains(&t.as_str()));
    if !typed || labels.get("app").is_none_or(|a| a.is_empty()) {
        return None;
    }
    match labels.get("component").map(String::as_str) {
        Some("jobmanager") => Some(Component::JobManager),
        Some("taskmanager") => Some(Component::TaskManager),
        _ => None,
    }
}

/// The patch that injects the agent and the plugin into `pod`, if it is a Flink pod that opted in
/// (`namespace_opted_in`: the request came through the webhook entry whose namespace selector matches opted-in
/// namespaces; otherwise the pod's own `streamshield.io/inject: enabled` label, which the FlinkDeployment's
/// injection puts into its pod template, opts it in).
pub fn pod(object: &Value, namespace_opted_in: bool, s: &InjectSettings) -> Result<Outcome, Error> {
    let parsed: Pod = serde_json::from_value(object.clone()).map_err(|e| Error::Malformed {
        kind: "Pod",
        message: e.to_string(),
    })?;
    let unchanged = |skip| {
        Ok(Outcome::Unchanged {
            skip,
            warnings: vec![],
        })
    };
    let meta = &parsed.metadata;
    let labels = meta.labels.clone().unwrap_or_default();
    let Some(component) = flink_component(&labels) else {
        return unchanged(Skip::NotFlink);
    };
    match labels.get(INJECT_LABEL).map(String::as_str) {
        Some("disabled") => return unchanged(Skip::OptedOut),
        Some("enabled") => {}
        _ if namespace_opted_in => {}
        _ => return unchanged(Skip::NotOptedIn),
    }
    let injected = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION));
    let Some(spec) = parsed.spec.as_ref() else {
        return Err(Error::Malformed {
            kind: "Pod",
            message: "it has no spec".into(),
        });
    };
    let has_agent = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == AGENT_CONTAINER || c.name == PLUGIN_CONTAINER);
    if injected || has_agent {
        return unchanged(Skip::AlreadyInjected);
    }
    let Some(main) = spec
        .containers
        .iter()
        .position(|c| c.name == FLINK_CONTAINER)
    else {
        return unchanged(Skip::NoFlinkContainer);
    };
    let mut warnings = vec![];
    let mut changed = parsed.clone();
    let spec = changed.spec.as_mut().expect("checked above");
    if spec.host_pid == Some(true) {
        warnings.push(
            "the pod shares the host's process namespace (hostPID): its agent sees every process of the node"
                .into(),
        );
    } else if spec.share_process_namespace != Some(true) {
        spec.share_process_namespace = Some(true);
    }
    let uid = spec.containers[main]
        .security_context
        .as_ref()
        .and_then(|c| c.run_as_user)
        .or_else(|| spec.security_context.as_ref().and_then(|c| c.run_as_user))
        .unwrap_or(FLINK_IMAGE_UID);
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for name in [RUN_VOLUME, PLUGIN_VOLUME] {
        volumes.push(Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    if let Some(secret) = &s.token_secret {
        volumes.push(Volume {
            name: TOKEN_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let socket = format!("unix:{}/agent.sock", s.socket_dir.trim_end_matches('/'));
    let flink = &mut spec.containers[main];
    let mounts = flink.volume_mounts.get_or_insert_with(Vec::new);
    mounts.push(mount(RUN_VOLUME, &s.socket_dir, false));
    mounts.push(mount(
        PLUGIN_VOLUME,
        &format!("{}/streamshield", s.flink_plugins_dir.trim_end_matches('/')),
        true,
    ));
    let env = flink.env.get_or_insert_with(Vec::new);
    if env.iter().any(|e| e.name == "STREAMSHIELD_AGENT_ADDRESS") {
        warnings.push(
            "flink-main-container already sets STREAMSHIELD_AGENT_ADDRESS; it is kept, so the plugin may not reach its sidecar".into(),
        );
    } else {
        env.push(plain_env("STREAMSHIELD_AGENT_ADDRESS", &socket));
    }
    let init = spec.init_containers.get_or_insert_with(Vec::new);
    init.push(plugin_container(s));
    let cluster_id = labels.get("app").map(String::as_str).unwrap_or_default();
    init.push(agent_container(s, component, cluster_id, &socket, uid));
    let annotations = changed
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(INJECTED_ANNOTATION.into(), s.image.clone());
    Ok(Outcome::Patch {
        patch: diff(&parsed, &changed)?,
        warnings,
    })
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn plugin_container(s: &InjectSettings) -> Container {
    Container {
        name: PLUGIN_CONTAINER.into(),
        image: Some(s.image.clone()),
        image_pull_policy: s.image_pull_policy.clone(),
        command: Some(vec![
            "streamshield".into(),
            "plugin-jar".into(),
            "--from".into(),
            s.plugin_jar.clone(),
            "--to".into(),
            PLUGIN_STAGING.into(),
        ]),
        volume_mounts: Some(vec![mount(PLUGIN_VOLUME, PLUGIN_STAGING, false)]),
        resources: Some(resources(s)),
        ..Default::default()
    }
}

/// The agent as a native sidecar (an init container that keeps running: Kubernetes 1.29 and later), so that it is
/// up before Flink starts and stops after it.
/// Where a coordinator address says the pod's Flink cluster: each FlinkDeployment has its own coordinator.
pub const CLUSTER_ID_PLACEHOLDER: &str = "{cluster-id}";

fn agent_container(
    s: &InjectSettings,
    c: Component,
    cluster_id: &str,
    socket: &str,
    uid: i64,
) -> Container {
    let mut env = vec![
        EnvVar {
            name: "STREAMSHIELD_AGENT_ID".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        plain_env("STREAMSHIELD_AGENT_LISTEN", socket),
        plain_env(
            "STREAMSHIELD_AGENT_HTTP",
            &format!("0.0.0.0:{}", s.agent_http_port),
        ),
        plain_env("STREAMSHIELD_AGENT_ROLES", c.agent_role()),
        // In a pod the kubelet and Flink's resource manager own restarts: the agent fences only.
        plain_env("STREAMSHIELD_AGENT_RESTART", "never"),
    ];
    let mut mounts = vec![mount(RUN_VOLUME, &s.socket_dir, false)];
    if let Some(coordinator) = &s.coordinator {
        env.push(plain_env(
            "STREAMSHIELD_AGENT_COORDINATOR",
            &coordinator.replace(CLUSTER_ID_PLACEHOLDER, cluster_id),
        ));
    }
    if s.token_secret.is_some() {
        env.push(plain_env(
            "STREAMSHIELD_AGENT_TOKEN_FILE",
            &format!("{TOKEN_DIR}/token"),
        ));
        mounts.push(mount(TOKEN_VOLUME, TOKEN_DIR, true));
    }
    let probe = |failure_threshold| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::Int(i32::from(s.agent_http_port)),
            ..Default::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    };
    Container {
        name: AGENT_CONTAINER.into(),
        image: Some(s.image.clone()),
        image_pull_policy: s.image_pull_policy.clone(),
        command: Some(vec!["streamshield".into(), "agent".into()]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("ss-metrics".into()),
            container_port: i32::from(s.agent_http_port),
            ..Default::default()
        }]),
        volume_mounts: Some(mounts),
        resources: Some(resources(s)),
        restart_policy: Some("Always".into()),
        startup_probe: Some(probe(30)),
        liveness_probe: Some(probe(5)),
        security_context: Some(SecurityContext {
            run_as_user: Some(uid),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn resources(s: &InjectSettings) -> ResourceRequirements {
    let q = |v: &str| Quantity(v.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q(&s.cpu_request)),
            ("memory".to_string(), q(&s.memory_request)),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), q(&s.memory_limit))])),
        ..Default::default()
    }
}

fn diff<T: serde::Serialize>(before: &T, after: &T) -> Result<json_patch::Patch, Error> {
    Ok(json_patch::diff(
        &serde_json::to_value(before)?,
        &serde_json::to_value(after)?,
    ))
}

/// The plugin's keys a FlinkDeployment gets (its `spec.flinkConfiguration`), which the operator renders into the
/// configuration of its JobManager and TaskManagers; the agent address comes from the pod's environment.
pub fn plugin_keys() -> [(&'static str, &'static str); 4] {
    [
        plugin::METRIC_REPORTER,
        plugin::REPORTER_INTERVAL,
        plugin::TRACE_REPORTER,
        plugin::PLANNED_STOP_WAIT,
    ]
}
const FAILURE_ENRICHERS: &str = plugin::FAILURE_ENRICHERS;
const ENRICHER: &str = plugin::FAILURE_ENRICHER;

/// The patch for a FlinkDeployment: with `streamshield.io/enabled: "true"` (or without the annotation in a namespace
/// labelled `streamshield.io/inject: enabled`: `namespace_opted_in`; `"false"` opts out there) its `spec.flinkConfiguration` gets the
/// plugin's keys (a key the user set is kept, with a warning) and its pod template the opt-in label, so that the
/// pods the operator creates are injected. Nothing is changed once both are there: an unchanged spec does not make
/// the operator upgrade the job. Its `streamshield.io/<key>` annotations are checked against the policy keys and
/// each problem is a warning (the coordinator reads them from the FlinkDeployment; they are not copied into the
/// spec, so changing one never restarts the job).
pub fn flink_deployment(object: &Value, namespace_opted_in: bool) -> Result<Outcome, Error> {
    let malformed = |message: String| Error::Malformed {
        kind: "FlinkDeployment",
        message,
    };
    let Some(obj) = object.as_object() else {
        return Err(malformed("it is not a JSON object".into()));
    };
    let annotations: BTreeMap<String, String> =
        match obj.get("metadata").and_then(|m| m.get("annotations")) {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(a) => serde_json::from_value(a.clone())
                .map_err(|e| malformed(format!("metadata.annotations: {e}")))?,
        };
    let mut warnings = annotation_warnings(&annotations);
    let enabled = match annotations.get(ENABLED_ANNOTATION).map(|v| v.trim()) {
        // In a namespace labelled streamshield.io/inject: enabled its pods get the agent, so Flink needs the keys.
        None => namespace_opted_in,
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            warnings.push(format!(
                "{ENABLED_ANNOTATION}: {other:?} is not \"true\" or \"false\"; StreamShield is not enabled for this FlinkDeployment"
            ));
            false
        }
    };
    if !enabled {
        return Ok(Outcome::Unchanged {
            skip: Skip::NotEnabled,
            warnings,
        });
    }
    let mut changed = object.clone();
    let spec = changed
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| malformed("it has no spec object".into()))?;
    let conf = spec
        .entry("flinkConfiguration")
        .or_insert_with(|| Value::Object(Default::default()));
    if conf.is_null() {
        *conf = Value::Object(Default::default());
    }
    let conf = conf
        .as_object_mut()
        .ok_or_else(|| malformed("spec.flinkConfiguration is not a map".into()))?;
    for (k, v) in plugin_keys() {
        match conf.get(k) {
            None => {
                conf.insert(k.into(), Value::String(v.into()));
            }
            Some(Value::String(have)) if have == v => {}
            Some(have) => warnings.push(format!(
                "spec.flinkConfiguration sets {k} to {have}; StreamShield's {v:?} is not applied"
            )),
        }
    }
    match conf.get(FAILURE_ENRICHERS) {
        None => {
            conf.insert(FAILURE_ENRICHERS.into(), Value::String(ENRICHER.into()));
        }
        Some(Value::String(list)) if plugin::list_names(list, ENRICHER) => {}
        Some(Value::String(list)) => {
            let joined = if list.trim().is_empty() {
                ENRICHER.to_string()
            } else {
                format!("{list},{ENRICHER}")
            };
            conf.insert(FAILURE_ENRICHERS.into(), Value::String(joined));
        }
        Some(other) => warnings.push(format!(
            "spec.flinkConfiguration.{FAILURE_ENRICHERS} is {other}, not a list of class names; StreamShield's failure enricher is not added"
        )),
    }
    let template = spec
        .entry("podTemplate")
        .or_insert_with(|| Value::Object(Default::default()));
    if template.is_null() {
        *template = Value::Object(Default::default());
    }
    let labels = object_at(template, &["metadata", "labels"])
        .ok_or_else(|| malformed("spec.podTemplate.metadata.labels is not a map".into()))?;
    match labels.get(INJECT_LABEL) {
        None => {
            labels.insert(INJECT_LABEL.into(), Value::String("enabled".into()));
        }
        Some(Value::String(v)) if v == "enabled" => {}
        Some(v) => warnings.push(format!(
            "spec.podTemplate sets the label {INJECT_LABEL} to {v}; its pods are injected only in a namespace labelled {INJECT_LABEL}: enabled"
        )),
    }
    let patch = json_patch::diff(object, &changed);
    if patch.0.is_empty() {
        return Ok(Outcome::Unchanged {
            skip: Skip::UpToDate,
            warnings,
        });
    }
    Ok(Outcome::Patch { patch, warnings })
}

/// The map at `path` under `v`, created where absent; None where something on the way is not a map.
fn object_at<'a>(
    v: &'a mut Value,
    path: &[&str],
) -> Option<&'a mut serde_json::Map<String, Value>> {
    let mut cur = v;
    for key in path {
        let map = cur.as_object_mut()?;
        let next = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if next.is_null() {
            *next = Value::Object(Default::default());
        }
        cur = next;
    }
    cur.as_object_mut()
}

/// Warnings for `streamshield.io/<key>` annotations that are not policy keys or whose value does not parse.
pub fn annotation_warnings(annotations: &BTreeMap<String, String>) -> Vec<String> {
    let own = [ENABLED_ANNOTATION, INJECT_LABEL, INJECTED_ANNOTATION];
    let keys: BTreeMap<String, String> = annotations
        .iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX) && !own.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                format!("{}{}", policy_keys::PREFIX, &k[ANNOTATION_PREFIX.len()..]),
                v.clone(),
            )
        })
        .collect();
    if keys.is_empty() {
        return vec![];
    }
    let resolved = policy_keys::resolve(&[(Source::Job, &keys)], &Default::default());
    resolved
        .problems
        .iter()
        .map(|p| {
            let name = p.key.strip_prefix(policy_keys::PREFIX).unwrap_or(&p.key);
            format!(
                "annotation {ANNOTATION_PREFIX}{name}: {:?}: {}",
                p.value, p.problem
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
