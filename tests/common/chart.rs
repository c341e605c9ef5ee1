//! The Helm chart (`helm/streamshield/`) as the tests render it: with the real `helm` binary that
//! `scripts/kube-tools` builds, into JSON objects.

use serde_json::Value;
use std::process::Command;

/// Runs the helm binary `scripts/kube-tools` builds, in the repository.
pub fn helm(args: &[&str]) -> (bool, String, String) {
    let bin = super::control_plane::kube_tools().join("bin/helm");
    let out = Command::new(bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` of the chart with `sets`, as JSON objects.
pub fn render(sets: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "t",
        "helm/streamshield",
        "--namespace",
        "streamshield",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm template failed: {err}");
    serde_yaml_ng::Deserializer::from_str(&out)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The object of `kind` named `name` in a rendering (the test fails when there is none).
pub fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the rendering has no {kind} {name}"))
}
