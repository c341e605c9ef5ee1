use super::*;
use serde_json::json;

fn settings() -> InjectSettings {
    InjectSettings {
        image: "registry.example/streamshield:0.1.0".into(),
        image_pull_policy: None,
        plugin_jar: "/opt/streamshield/streamshield-plugin.jar".into(),
        flink_plugins_dir: "/opt/flink/plugins".into(),
        socket_dir: "/run/streamshield".into(),
        agent_http_port: 9252,
        coordinator: Some("streamshield-coordinator.streamshield.svc:9251".into()),
        token_secret: Some("streamshield-agent-token".into()),
        cpu_request: "20m".into(),
        memory_request: "32Mi".into(),
        memory_limit: "64Mi".into(),
    }
}

/// A TaskManager pod as Flink's native Kubernetes integration (and so the operator) creates it.
fn tm_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "orders-taskmanager-1-1",
            "labels": {"app": "orders", "component": "taskmanager", "type": "flink-native-kubernetes"},
            "annotations": {"user": "kept"}
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "flink-main-container",
                "image": "flink:1.20",
                "args": ["bash", "-c", "kubernetes-taskmanager.sh"],
                "env": [{"name": "ENABLE_BUILT_IN_PLUGINS", "value": "x.jar"}],
                "volumeMounts": [{"name": "flink-config-volume", "mountPath": "/opt/flink/conf"}],
                "someFieldFromTheFuture": {"kept": true}
            }],
            "volumes": [{"name": "flink-config-volume", "configMap": {"name": "flink-config-orders"}}]
        }
    })
}

fn apply(pod: &Value, outcome: &Outcome) -> Value {
    let Outcome::Patch { patch, .. } = outcome else {
        panic!("expected a patch, got {outcome:?}");
    };
    let mut v = pod.clone();
    json_patch::patch(&mut v, patch).expect("the patch applies to the original object");
    v
}

#[test]
fn an_opted_in_taskmanager_gets_the_agent_the_jar_and_the_socket() {
    let pod = tm_pod();
    let out = pod_outcome(&pod, true);
    let v = apply(&pod, &out);
    let spec = &v["spec"];
    assert_eq!(spec["shareProcessNamespace"], true);
    let init = spec["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    assert_eq!(init[0]["name"], PLUGIN_CONTAINER);
    assert_eq!(init[1]["name"], AGENT_CONTAINER);
    assert_eq!(init[1]["restartPolicy"], "Always");
    assert_eq!(init[1]["securityContext"]["runAsUser"], 9999);
    let env: Vec<(String, Value)> = init[1]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
        .collect();
    assert!(env.contains(&("STREAMSHIELD_AGENT_ROLES".into(), json!("tm"))));
    assert!(env.contains(&("STREAMSHIELD_AGENT_RESTART".into(), json!("never"))));
    assert!(env.contains(&(
        "STREAMSHIELD_AGENT_LISTEN".into(),
        json!("unix:/run/streamshield/agent.sock")
    )));
    assert!(env.contains(&(
        "STREAMSHIELD_AGENT_TOKEN_FILE".into(),
        json!("/var/run/secrets/streamshield/token")
    )));
    let main = &spec["containers"][0];
    assert_eq!(main["someFieldFromTheFuture"], json!({"kept": true}));
    assert_eq!(main["env"][0]["name"], "ENABLE_BUILT_IN_PLUGINS");
    assert_eq!(main["env"][1]["name"], "STREAMSHIELD_AGENT_ADDRESS");
    assert_eq!(main["env"][1]["value"], "unix:/run/streamshield/agent.sock");
    let mounts: Vec<&str> = main["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        [
            "/opt/flink/conf",
            "/run/streamshield",
            "/opt/flink/plugins/streamshield"
        ]
    );
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "flink-config-volume",
            "streamshield-run",
            "streamshield-plugin",
            "streamshield-token"
        ]
    );
    assert_eq!(v["metadata"]["annotations"]["user"], "kept");
    assert_eq!(
        v["metadata"]["annotations"][INJECTED_ANNOTATION],
        "registry.example/streamshield:0.1.0"
    );
}

fn pod_outcome(pod: &Value, ns: bool) -> Outcome {
    super::pod(pod, ns, &settings()).unwrap()
}

#[test]
fn the_patch_only_adds() {
    let Outcome::Patch { patch, .. } = pod_outcome(&tm_pod(), true) else {
        panic!()
    };
    for op in &patch.0 {
        assert!(
            matches!(op, json_patch::PatchOperation::Add(_)),
            "only additions expected, got {op:?}"
        );
    }
}

#[test]
fn an_injected_pod_is_left_alone() {
    let pod = tm_pod();
    let once = apply(&pod, &pod_outcome(&pod, true));
    assert_eq!(
        pod_outcome(&once, true),
        Outcome::Unchanged {
            skip: Skip::AlreadyInjected,
            warnings: vec![]
        }
    );
}

#[test]
fn who_is_injected() {
    let skip = |v: &Value, ns| match pod_outcome(v, ns) {
        Outcome::Unchanged { skip, .. } => Some(skip),
        Outcome::Patch { .. } => None,
    };
    let pod = tm_pod();
    assert_eq!(skip(&pod, false), Some(Skip::NotOptedIn));
    let mut labelled = pod.clone();
    labelled["metadata"]["labels"][INJECT_LABEL] = json!("enabled");
    assert_eq!(skip(&labelled, false), None);
    let mut out = pod.clone();
    out["metadata"]["labels"][INJECT_LABEL] = json!("disabled");
    assert_eq!(skip(&out, true), Some(Skip::OptedOut));
    let mut jm = pod.clone();
    jm["metadata"]["labels"]["component"] = json!("jobmanager");
    assert_eq!(skip(&jm, true), None);
    let mut standalone = pod.clone();
    standalone["metadata"]["labels"]["type"] = json!("flink-standalone-kubernetes");
    assert_eq!(skip(&standalone, true), None);
    for (label, value) in [
        ("type", json!("something-else")),
        ("component", json!("history-server")),
        ("app", json!("")),
    ] {
        let mut other = pod.clone();
        other["metadata"]["labels"][label] = value;
        assert_eq!(skip(&other, true), Some(Skip::NotFlink), "{label}");
    }
    let mut renamed = pod.clone();
    renamed["spec"]["containers"][0]["name"] = json!("flink");
    assert_eq!(skip(&renamed, true), Some(Skip::NoFlinkContainer));
}

#[test]
fn the_jobmanager_s_agent_watches_the_jobmanager_as_its_user() {
    let mut pod = tm_pod();
    pod["metadata"]["labels"]["component"] = json!("jobmanager");
    pod["spec"]["securityContext"] = json!({"runAsUser": 1234});
    let v = apply(&pod, &pod_outcome(&pod, true));
    let agent = &v["spec"]["initContainers"][1];
    assert_eq!(agent["securityContext"]["runAsUser"], 1234);
    assert!(agent["env"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "STREAMSHIELD_AGENT_ROLES", "value": "jm"})));
}

#[test]
fn a_malformed_pod_is_an_error_not_a_panic() {
    for bad in [
        json!("a string"),
        json!({"metadata": {"labels": "not a map"}}),
        json!({"metadata": {"labels": {"app": "a", "component": "taskmanager", "type": "flink-native-kubernetes"}}}),
        json!({"spec": {"containers": 3}}),
    ] {
        assert!(super::pod(&bad, true, &settings()).is_err(), "{bad}");
    }
}

fn deployment(annotations: Value) -> Value {
    json!({
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {"name": "orders", "annotations": annotations},
        "spec": {
            "image": "flink:1.20",
            "flinkVersion": "v1_20",
            "flinkConfiguration": {"taskmanager.numberOfTaskSlots": "2", "jobmanager.failure-enrichers": "com.acme.Mine"},
            "jobManager": {"resource": {"memory": "2048m", "cpu": 1}},
            "taskManager": {"resource": {"memory": "2048m", "cpu": 1}}
        }
    })
}

#[test]
fn an_enabled_flinkdeployment_gets_the_plugin_keys_and_the_pod_label_once() {
    let fd = deployment(json!({ENABLED_ANNOTATION: "true", "streamshield.io/failover": "true"}));
    let out = flink_deployment(&fd, false).unwrap();
    let Outcome::Patch { ref warnings, .. } = out else {
        panic!("{out:?}")
    };
    assert!(warnings.is_empty(), "{warnings:?}");
    let v = apply(&fd, &out);
    let conf = &v["spec"]["flinkConfiguration"];
    assert_eq!(conf["taskmanager.numberOfTaskSlots"], "2");
    assert_eq!(
        conf["metrics.reporter.streamshield.factory.class"],
        "io.streamshield.plugin.StreamShieldMetricReporterFactory"
    );
    assert_eq!(
        conf["jobmanager.failure-enrichers"],
        "com.acme.Mine,io.streamshield.plugin.StreamShieldFailureEnricher"
    );
    assert!(
        conf.get("streamshield.failover").is_none(),
        "annotations are not copied into the spec"
    );
    assert_eq!(
        v["spec"]["podTemplate"]["metadata"]["labels"][INJECT_LABEL],
        "enabled"
    );
    assert_eq!(
        flink_deployment(&v, false).unwrap(),
        Outcome::Unchanged {
            skip: Skip::UpToDate,
            warnings: vec![]
        }
    );
}

#[test]
fn annotations_are_checked_against_the_policy_keys() {
    let fd = deployment(json!({
        "streamshield.io/failvoer": "true",
        "streamshield.io/hang-tolerance": "soon",
        "streamshield.io/gc-tolerance": "40 s",
    }));
    let Outcome::Unchanged { skip, warnings } = flink_deployment(&fd, false).unwrap() else {
        panic!()
    };
    assert_eq!(skip, Skip::NotEnabled);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("streamshield.io/failvoer")
            && warnings[0].contains("failover, hang-tolerance"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("streamshield.io/hang-tolerance"),
        "{warnings:?}"
    );
    let bad = deployment(json!({ENABLED_ANNOTATION: "yes"}));
    let Outcome::Unchanged { warnings, .. } = flink_deployment(&bad, false).unwrap() else {
        panic!()
    };
    assert!(warnings[0].contains("is not \"true\""), "{warnings:?}");
}

#[test]
fn a_user_s_own_values_are_kept_and_named() {
    let mut fd = deployment(json!({ENABLED_ANNOTATION: "true"}));
    fd["spec"]["flinkConfiguration"]["metrics.reporter.streamshield.interval"] = json!("10 s");
    let out = flink_deployment(&fd, false).unwrap();
    let Outcome::Patch { ref warnings, .. } = out else {
        panic!()
    };
    assert_eq!(warnings.len(), 1);
    let v = apply(&fd, &out);
    assert_eq!(
        v["spec"]["flinkConfiguration"]["metrics.reporter.streamshield.interval"],
        "10 s"
    );
    let enabled = json!({"annotations": {ENABLED_ANNOTATION: "true"}});
    for bad in [
        json!([]),
        json!({"metadata": {"annotations": "not a map"}}),
        json!({"metadata": enabled, "spec": 1}),
        json!({"metadata": enabled, "spec": {"flinkConfiguration": []}}),
        json!({"metadata": enabled, "spec": {"podTemplate": {"metadata": {"labels": 7}}}}),
    ] {
        assert!(flink_deployment(&bad, false).is_err(), "{bad}");
    }
}

#[test]
fn a_flinkdeployment_in_an_opted_in_namespace_needs_no_annotation() {
    let fd = json!({
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {"name": "orders"},
        "spec": {"flinkConfiguration": {"taskmanager.numberOfTaskSlots": "2"}}
    });
    assert!(matches!(
        flink_deployment(&fd, true).unwrap(),
        Outcome::Patch { .. }
    ));
    assert!(matches!(
        flink_deployment(&fd, false).unwrap(),
        Outcome::Unchanged {
            skip: Skip::NotEnabled,
            ..
        }
    ));
    let mut off = fd.clone();
    off["metadata"]["annotations"] = json!({"streamshield.io/enabled": "false"});
    assert!(matches!(
        flink_deployment(&off, true).unwrap(),
        Outcome::Unchanged {
            skip: Skip::NotEnabled,
            ..
        }
    ));
}

#[test]
fn the_coordinator_address_names_the_pod_s_own_cluster() {
    let s = InjectSettings {
        coordinator: Some(format!(
            "streamshield-coordinator-{CLUSTER_ID_PLACEHOLDER}:9250"
        )),
        ..settings()
    };
    let pod = tm_pod();
    let v = apply(&pod, &super::pod(&pod, true, &s).unwrap());
    let agent = &v["spec"]["initContainers"][1];
    let coordinator = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "STREAMSHIELD_AGENT_COORDINATOR")
        .map(|e| e["value"].clone());
    assert_eq!(
        coordinator,
        Some(json!("streamshield-coordinator-orders:9250"))
    );
}
