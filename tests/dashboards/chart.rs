//! The Helm chart's copies of the dashboards and alert rules: byte-identical to deploy/, shipped as ConfigMaps for
//! Grafana's sidecar and a PrometheusRule, off by default, their values checked by the chart's schema.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use super::{read, repo, DASHBOARDS, RULES};

/// `helm` as scripts/kube-tools built it, in the repository.
fn helm(args: &[&str]) -> (bool, String, String) {
    let bin = super::common::control_plane::kube_tools().join("bin/helm");
    let out = Command::new(bin)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn render_chart(sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "t", "helm/streamshield", "--namespace", "obs"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm template {sets:?}: {err}");
    serde_yaml_ng::Deserializer::from_str(&out)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[test]
fn the_chart_ships_the_same_dashboards_and_alerts_as_configmaps_and_a_prometheusrule() {
    // One source of truth: deploy/. The chart can only read its own directory, so it carries copies, byte for byte.
    let copy = "cp deploy/grafana/*.json helm/streamshield/dashboards/ && cp deploy/prometheus/streamshield-alerts.yaml helm/streamshield/alerts/";
    let chart_files = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(repo().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let expected: BTreeSet<String> = DASHBOARDS.iter().map(|d| format!("{d}.json")).collect();
    assert_eq!(
        chart_files("helm/streamshield/dashboards"),
        expected,
        "the chart's dashboards are deploy/grafana's ({copy})"
    );
    assert_eq!(
        chart_files("helm/streamshield/alerts"),
        BTreeSet::from(["streamshield-alerts.yaml".to_string()])
    );
    for d in DASHBOARDS {
        assert!(
            std::fs::read(repo().join(format!("deploy/grafana/{d}.json"))).unwrap()
                == std::fs::read(repo().join(format!("helm/streamshield/dashboards/{d}.json")))
                    .unwrap(),
            "helm/streamshield/dashboards/{d}.json differs from deploy/grafana/{d}.json: {copy}"
        );
    }
    assert!(
        std::fs::read(repo().join(RULES)).unwrap()
            == std::fs::read(repo().join("helm/streamshield/alerts/streamshield-alerts.yaml"))
                .unwrap(),
        "helm/streamshield/alerts/streamshield-alerts.yaml differs from {RULES}: {copy}"
    );

    // Off by default.
    let plain = render_chart(&[]);
    assert!(
        !plain
            .iter()
            .any(|o| o["kind"] == "PrometheusRule" || o["kind"] == "ConfigMap"),
        "nothing of the dashboards or alerts by default"
    );
    let (ok, out, err) = helm(&[
        "lint",
        "--strict",
        "helm/streamshield",
        "--set",
        "dashboards.enabled=true",
        "--set",
        "alerts.enabled=true",
    ]);
    assert!(ok, "helm lint: {out}{err}");

    // On: one ConfigMap per dashboard with the sidecar's label, holding the file; the rules as a PrometheusRule.
    let on = render_chart(&["dashboards.enabled=true", "alerts.enabled=true"]);
    let maps: Vec<&Value> = on.iter().filter(|o| o["kind"] == "ConfigMap").collect();
    assert_eq!(maps.len(), DASHBOARDS.len());
    for d in DASHBOARDS {
        let file = format!("{d}.json");
        let m = maps
            .iter()
            .find(|m| m["data"].get(&file).is_some())
            .unwrap_or_else(|| panic!("no ConfigMap holds {file}"));
        assert_eq!(m["metadata"]["labels"]["grafana_dashboard"], "1", "{m}");
        assert_eq!(m["metadata"]["namespace"], "obs");
        assert_eq!(
            m["data"][&file].as_str().unwrap(),
            read(&format!("deploy/grafana/{file}")),
            "{file} in its ConfigMap, byte for byte"
        );
    }
    let rules: Vec<&Value> = on
        .iter()
        .filter(|o| o["kind"] == "PrometheusRule")
        .collect();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["apiVersion"], "monitoring.coreos.com/v1");
    let file: Value = serde_yaml_ng::from_str(&read(RULES)).unwrap();
    assert_eq!(
        rules[0]["spec"]["groups"], file["groups"],
        "the PrometheusRule's groups are the rules file's"
    );

    // The sidecar's label, namespaces, annotations and the rule's labels are values.
    let custom = render_chart(&[
        "dashboards.enabled=true",
        "dashboards.label=grafana.example/dashboard",
        "dashboards.labelValue=streamshield",
        "dashboards.namespace=grafana",
        "dashboards.annotations.grafana_folder=StreamShield",
        "alerts.enabled=true",
        "alerts.labels.release=kube-prometheus-stack",
        "alerts.namespace=monitoring",
    ]);
    for m in custom.iter().filter(|o| o["kind"] == "ConfigMap") {
        assert_eq!(
            m["metadata"]["labels"]["grafana.example/dashboard"],
            "streamshield"
        );
        assert!(m["metadata"]["labels"].get("grafana_dashboard").is_none());
        assert_eq!(m["metadata"]["namespace"], "grafana");
        assert_eq!(
            m["metadata"]["annotations"]["grafana_folder"],
            "StreamShield"
        );
    }
    let r = custom
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .unwrap();
    assert_eq!(r["metadata"]["labels"]["release"], "kube-prometheus-stack");
    assert_eq!(r["metadata"]["namespace"], "monitoring");

    // A value that cannot be a label is refused, named.
    for (set, expect) in [
        ("dashboards.labelValue=not a label", "labelValue"),
        ("dashboards.enabled=yes", "enabled"),
    ] {
        let (ok, _, err) = helm(&["template", "t", "helm/streamshield", "--set", set]);
        assert!(!ok && err.contains(expect), "--set {set}: {err}");
    }
}
