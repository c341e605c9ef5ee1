//! The admission webhook (`streamshield webhook`), first on its own (reviews over TLS, requests that are not
//! reviews, objects that do not parse, certificate rotation, bad configuration), then behind a real kube-apiserver
//! and etcd (built and cached by `scripts/kube-tools`) with the Flink Kubernetes Operator's real CRDs:
//! operator-shaped JobManager and TaskManager pods are injected only where opted in, an injected pod is left alone,
//! an annotated FlinkDeployment gets the plugin's keys and a bad annotation is a warning to its author, and with the
//! webhook down pods are still admitted. Every process is stopped by pid when a test ends, also after a failure.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{json, Value};

mod common;

use common::chart::{helm, named, of_kind, render};
use common::control_plane::{
    apply_rbac, create, create_cluster, flink_deployment, flink_pod, kubeconfig_for, write, Ca,
    ControlPlane,
};
use common::standalone::wait_for;
use common::webhook::{https_client, patch_of, review, Webhook, IMAGE};
use common::{promtool_check, streamshield};

/// One sample of `family` whose labels include every `labels` pair (0 when absent).
fn sample(page: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            &l[..name_end] == family
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_webhook_answers_reviews_over_tls_never_refuses_an_object_and_reloads_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("webhook-test-ca");
    let w = Webhook::start(tmp.path(), &ca, &[]);
    let client = https_client(&ca.pem());
    let post = |path: &str, body: Vec<u8>| {
        let r = client
            .post(format!("{}{path}", w.admission))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("the webhook answers");
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    let json_body = |v: &Value| serde_json::to_vec(v).unwrap();

    // A TaskManager through the namespace path: injected, with the request's uid.
    let (status, r) = post(
        "/mutate/pods/namespace",
        json_body(&review(
            "u-1",
            "CREATE",
            "flink",
            flink_pod("orders-taskmanager-1-1", "taskmanager"),
        )),
    );
    assert_eq!(status, 200);
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["response"]["uid"], "u-1");
    assert_eq!(r["response"]["allowed"], true);
    assert_eq!(r["response"]["patchType"], "JSONPatch");
    let patch = patch_of(&r);
    assert!(
        patch.iter().all(|op| op["op"] == "add"),
        "the patch only adds: {patch:?}"
    );
    let mut pod = flink_pod("orders-taskmanager-1-1", "taskmanager");
    let ops: json_patch::Patch = serde_json::from_value(Value::Array(patch)).unwrap();
    json_patch::patch(&mut pod, &ops).expect("the patch applies to the pod sent");
    assert_eq!(pod["spec"]["shareProcessNamespace"], true, "{pod:#}");
    assert_eq!(
        pod["spec"]["initContainers"][1]["name"],
        "streamshield-agent"
    );

    // The same pod through the label path, without the pod's own label: unchanged.
    let (status, r) = post(
        "/mutate/pods",
        json_body(&review(
            "u-2",
            "CREATE",
            "flink",
            flink_pod("orders-taskmanager-1-2", "taskmanager"),
        )),
    );
    assert_eq!(
        (status, r["response"]["allowed"].clone()),
        (200, json!(true))
    );
    assert!(r["response"]["patch"].is_null());

    // An object that does not parse as a pod: admitted unchanged, with a warning naming the problem.
    let mut broken = flink_pod("orders-taskmanager-1-3", "taskmanager");
    broken["spec"]["containers"] = json!("not a list");
    let (status, r) = post(
        "/mutate/pods/namespace",
        json_body(&review("u-3", "CREATE", "flink", broken)),
    );
    assert_eq!(status, 200);
    assert_eq!(r["response"]["uid"], "u-3");
    assert_eq!(r["response"]["allowed"], true);
    assert!(r["response"]["patch"].is_null());
    let warning = r["response"]["warnings"][0].as_str().unwrap_or("");
    assert!(warning.contains("did not inject"), "a warning says so: {r}");

    // Not an AdmissionReview v1: HTTP 400 and a message saying what was expected.
    let (status, r) = post("/mutate/pods", b"{not json".to_vec());
    assert_eq!(status, 400);
    assert_eq!(r["response"]["allowed"], false);
    let mut old = review("u-4", "CREATE", "flink", flink_pod("p", "taskmanager"));
    old["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (status, r) = post("/mutate/pods", json_body(&old));
    assert_eq!(status, 400);
    let message = r["response"]["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("admissionReviewVersions"),
        "the message names the fix: {r}"
    );
    // A body larger than any review: refused without being buffered whole.
    let r = client
        .post(format!("{}/mutate/pods", w.admission))
        .body(vec![b' '; 5 << 20])
        .send()
        .expect("the webhook answers");
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close"),
        "the client is told not to reuse the connection"
    );
    drop(r);
    // A client that speaks plain HTTP to the TLS port, then a proper client: still served.
    {
        use std::io::{Read, Write};
        let addr = w.admission.trim_start_matches("https://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    }
    let (status, _) = post(
        "/mutate/pods/namespace",
        json_body(&review(
            "u-5",
            "CREATE",
            "flink",
            flink_pod("orders-jobmanager-1", "jobmanager"),
        )),
    );
    assert_eq!(status, 200);

    let page = w.metrics();
    promtool_check(&page, "webhook's /metrics");
    let admissions = "streamshield_webhook_admissions_total";
    assert_eq!(
        sample(
            &page,
            admissions,
            &[("resource", "pods"), ("outcome", "injected")]
        ),
        2.0,
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            admissions,
            &[("outcome", "unchanged"), ("reason", "not-opted-in")]
        ),
        1.0
    );
    assert_eq!(sample(&page, admissions, &[("outcome", "error")]), 1.0);
    let bad = "streamshield_webhook_bad_requests_total";
    assert_eq!(sample(&page, bad, &[("reason", "not-json")]), 1.0);
    assert_eq!(sample(&page, bad, &[("reason", "wrong-version")]), 1.0);

    // Rotation: a certificate from another CA replaces the files; within the reload period the webhook serves it.
    let ca2 = Ca::new("webhook-test-ca-2");
    let (cert2, key2) = ca2.issue(&["127.0.0.1"]);
    // The key first, then the certificate: a reload between the two sees a mismatch and keeps the old pair.
    write(&w.key, &key2);
    write(&w.cert, &cert2);
    let new_client = https_client(&ca2.pem());
    let start = Instant::now();
    wait_for(Duration::from_secs(30), "the rotated certificate", || {
        new_client
            .get(format!("{}/mutate/pods", w.admission))
            .send()
            .ok()
    });
    eprintln!(
        "rotated certificate served after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(sample(&w.metrics(), "streamshield_webhook_tls_reloads_total", &[]) >= 1.0);
    // A broken certificate file: the old certificate stays, the failure is counted (the key-then-certificate write
    // above may already have counted one, so the count must grow from here).
    let failures = "streamshield_webhook_tls_reload_failures_total";
    let before = sample(&w.metrics(), failures, &[]);
    write(
        &w.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    wait_for(
        Duration::from_secs(30),
        "the broken certificate file to be noticed",
        || (sample(&w.metrics(), failures, &[]) > before).then_some(()),
    );
    assert!(
        new_client
            .get(format!("{}/mutate/pods", w.admission))
            .send()
            .is_ok(),
        "the last good certificate is still served"
    );
}

#[test]
fn bad_webhook_configuration_is_refused_before_it_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("webhook-config-ca");
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let cert_file = tmp.path().join("tls.crt");
    let key_file = tmp.path().join("tls.key");
    write(&cert_file, &cert);
    write(&key_file, &key);
    let run = |args: &[&str]| {
        let out = streamshield(&[&["webhook"], args].concat());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let c = cert_file.to_str().unwrap();
    let k = key_file.to_str().unwrap();

    let (code, err) = run(&["--tls-cert-file", c, "--tls-key-file", k]);
    assert_eq!(code, Some(64));
    assert!(err.contains("image"), "names the missing key: {err}");

    let file = tmp.path().join("webhook.yaml");
    write(
        &file,
        &format!("tls-cert-file: {c}\ntls-key-file: {k}\nimage: x\nimagee: y\n"),
    );
    let (code, err) = run(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, Some(64));
    assert!(
        err.contains("imagee") && err.contains("webhook.yaml"),
        "{err}"
    );

    let missing = tmp.path().join("absent.crt");
    let (code, err) = run(&[
        "--tls-cert-file",
        missing.to_str().unwrap(),
        "--tls-key-file",
        k,
        "--image",
        "x",
    ]);
    assert_eq!(code, Some(64));
    assert!(err.contains("absent.crt"), "{err}");

    // A key that is not the certificate's.
    let (_, other_key) = ca.issue(&["127.0.0.1"]);
    let other = tmp.path().join("other.key");
    write(&other, &other_key);
    let (code, err) = run(&[
        "--tls-cert-file",
        c,
        "--tls-key-file",
        other.to_str().unwrap(),
        "--image",
        "x",
    ]);
    assert_eq!(code, Some(64));
    assert!(err.contains("match"), "{err}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let (code, err) = run(&[
        "--tls-cert-file",
        c,
        "--tls-key-file",
        k,
        "--image",
        "x",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(64));
    assert!(err.contains(&port.to_string()), "{err}");
}

fn injected(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref().unwrap();
    let agents = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.name == "streamshield-agent")
        .count();
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("streamshield.io/injected"));
    assert!(agents <= 1, "one agent at most: {pod:?}");
    assert_eq!(agents == 1, annotated, "the annotation says what was done");
    agents == 1
}

/// Runs the cached `helm` with `args` in the repository; (success, stdout, stderr).
/// Creates a TaskManager pod `name` in the opted-in namespace, checks it was admitted without injection and returns
/// how long its admission took (`when` says under which conditions, for the log).
async fn admitted_unchanged(client: &kube::Client, name: &str, when: &str) -> Duration {
    let started = Instant::now();
    let p = create::<Pod>(client, Some("flink-in"), flink_pod(name, "taskmanager")).await;
    let took = started.elapsed();
    assert!(!injected(&p));
    eprintln!("pod admitted {when} in {:.3} s", took.as_secs_f64());
    took
}

/// The chart's MutatingWebhookConfiguration, its entries pointed at a webhook on loopback (the API server here has
/// no Service network) with the test's CA: the test registers exactly what `helm install` registers.
fn webhook_configuration(admission: &str, ca_pem: &str) -> Value {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let objects = render(&[]);
    let mut mwc = of_kind(&objects, "MutatingWebhookConfiguration")[0].clone();
    for w in mwc["webhooks"].as_array_mut().unwrap() {
        let path = w["clientConfig"]["service"]["path"]
            .as_str()
            .unwrap()
            .to_string();
        w["clientConfig"] = json!({"url": format!("{admission}{path}"), "caBundle": ca});
    }
    mwc
}

#[test]
fn the_chart_lints_and_renders_what_the_webhook_reads() {
    let (ok, out, err) = helm(&["lint", "--strict", "helm/streamshield"]);
    assert!(ok, "helm lint: {out}{err}");
    let objects = render(&[]);
    let kinds: std::collections::BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "MutatingWebhookConfiguration",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount"
        ]
    );
    let mwc = of_kind(&objects, "MutatingWebhookConfiguration")[0];
    let secret = of_kind(&objects, "Secret")[0];
    for w in mwc["webhooks"].as_array().unwrap() {
        assert_eq!(w["failurePolicy"], "Ignore", "{w}");
        assert_eq!(w["timeoutSeconds"], 5);
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(
            w["clientConfig"]["caBundle"], secret["data"]["ca.crt"],
            "the CA that signed the Secret"
        );
    }
    // Every variable the Deployment sets is one the webhook reads.
    // (docs/configuration.md lists exactly the webhook's keys: a unit test in src/kube/config.rs checks that.)
    let reference = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let deployment = of_kind(&objects, "Deployment")[0];
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    for e in env {
        let name = e["name"].as_str().unwrap();
        // POD_NAME: the Events' reporting instance.
        assert!(
            name == "POD_NAME"
                || name.starts_with("STREAMSHIELD_WEBHOOK_")
                    && reference.contains(&format!(" | `{name}` | ")),
            "{name} is not a webhook key"
        );
    }
    assert_eq!(deployment["spec"]["replicas"], 2);
    // Its only API access: writing Events (a ClusterRole with exactly that); none at all without them.
    assert_eq!(
        deployment["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true
    );
    assert_eq!(
        of_kind(&objects, "ClusterRole")[0]["rules"],
        json!([{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}])
    );
    let quiet = render(&["webhook.events=false"]);
    assert!(
        of_kind(&quiet, "ClusterRole").is_empty()
            && of_kind(&quiet, "ClusterRoleBinding").is_empty()
    );
    assert_eq!(
        of_kind(&quiet, "Deployment")[0]["spec"]["template"]["spec"]
            ["automountServiceAccountToken"],
        false
    );

    // cert-manager: a Certificate and its CA injected by cert-manager; no Secret from the chart.
    let cm = render(&["webhook.tls.certManager.enabled=true"]);
    assert!(of_kind(&cm, "Secret").is_empty());
    assert_eq!(of_kind(&cm, "Certificate").len(), 1);
    assert_eq!(
        of_kind(&cm, "Issuer").len(),
        1,
        "self-signed when no issuer is named"
    );
    let mwc = of_kind(&cm, "MutatingWebhookConfiguration")[0];
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "streamshield/t-streamshield-webhook"
    );
    let named = render(&[
        "webhook.tls.certManager.enabled=true",
        "webhook.tls.certManager.issuerRef.name=corp-ca",
        "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(of_kind(&named, "Issuer").is_empty());
    assert_eq!(
        of_kind(&named, "Certificate")[0]["spec"]["issuerRef"]["kind"],
        "ClusterIssuer"
    );
    // Options.
    let one = render(&["webhook.replicas=1", "serviceMonitor.enabled=true"]);
    assert!(
        of_kind(&one, "PodDisruptionBudget").is_empty(),
        "no PDB for one replica"
    );
    assert_eq!(of_kind(&one, "ServiceMonitor").len(), 1);

    // Bad values: named, nothing rendered.
    for (set, expect) in [
        ("inject.coordinator=c:9251", "inject.tokenSecret"),
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("webhook.timeoutSeconds=60", "timeoutSeconds"),
        ("webhook.replicas=two", "replicas"),
    ] {
        let (ok, _, err) = helm(&["template", "t", "helm/streamshield", "--set", set]);
        assert!(!ok && err.contains(expect), "--set {set}: {err}");
    }

    // Every value is in the reference.
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/helm-values.md"))
            .unwrap();
    let values: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/streamshield/values.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&p, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut keys = vec![];
    leaves("", &values, &mut keys);
    for k in keys {
        assert!(
            doc.contains(&format!("| `{k}` |")),
            "docs/helm-values.md lacks {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_behind_a_real_api_server() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start)
        .await
        .unwrap();
    let client = cp.client().await;

    // The operator's CRDs, as its API jar carries them.
    cp.install_flink_crd(&client).await;

    // The webhook writes its Events as the chart's webhook service account, with exactly the chart's RBAC.
    create_cluster::<Namespace>(
        &client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "streamshield"}}),
    )
    .await;
    let chart = tokio::task::block_in_place(|| render(&[]));
    let account = "t-streamshield-webhook";
    apply_rbac(
        &client,
        &[
            named(&chart, "ClusterRole", account).clone(),
            named(&chart, "ClusterRoleBinding", account).clone(),
        ],
    )
    .await;
    let webhook_kubeconfig = kubeconfig_for(&cp, &client, "streamshield", account).await;
    let dir = cp.dir.path().to_path_buf();
    let mut w = tokio::task::block_in_place(|| {
        Webhook::start_with_env(
            &dir,
            &cp.ca,
            &[
                "--coordinator",
                "streamshield-coordinator.streamshield.svc:9251",
                "--token-secret",
                "streamshield-agent-token",
                "--events",
                "true",
            ],
            &[("KUBECONFIG", &webhook_kubeconfig)],
        )
    });
    // Without the permission (a service account with no RBAC): it says which one at start-up and serves without
    // Events.
    let bare = kubeconfig_for(&cp, &client, "streamshield", "no-rights").await;
    let bare_dir = dir.join("no-rights");
    std::fs::create_dir_all(&bare_dir).unwrap();
    tokio::task::block_in_place(|| {
        let mut b = Webhook::start_with_env(
            &bare_dir,
            &cp.ca,
            &["--events", "true"],
            &[("KUBECONFIG", &bare)],
        );
        assert_eq!(
            sample(&b.metrics(), "streamshield_webhook_events_enabled", &[]),
            0.0
        );
        b.proc.stop();
        let log = std::fs::read_to_string(bare_dir.join("webhook.log")).unwrap();
        assert!(
            log.contains("create events.k8s.io/events (cluster-wide)")
                && log.contains("they are off"),
            "the missing permission is named: {log}"
        );
    });
    assert_eq!(
        tokio::task::block_in_place(|| sample(
            &w.metrics(),
            "streamshield_webhook_events_enabled",
            &[]
        )),
        1.0
    );
    create_cluster::<MutatingWebhookConfiguration>(
        &client,
        webhook_configuration(&w.admission, &cp.ca.pem()),
    )
    .await;

    // Two namespaces: one opted in by its label, one not. No controller manager runs, so their default service
    // accounts are made here.
    for (ns, labels) in [
        ("flink-in", json!({"streamshield.io/inject": "enabled"})),
        ("flink-out", json!({})),
    ] {
        create_cluster::<Namespace>(&client, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})).await;
        for sa in ["default", "flink"] {
            create::<ServiceAccount>(
                &client,
                Some(ns),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}),
            )
            .await;
        }
    }
    // Registration takes effect within the API server's webhook configuration refresh; wait for the first pod to be
    // injected (a pod created before is admitted unchanged and so is deleted again).
    let pods_in: Api<Pod> = Api::namespaced(client.clone(), "flink-in");
    let start = Instant::now();
    let tm = loop {
        let p = create::<Pod>(
            &client,
            Some("flink-in"),
            flink_pod("orders-taskmanager-1-1", "taskmanager"),
        )
        .await;
        if injected(&p) {
            break p;
        }
        pods_in
            .delete(
                "orders-taskmanager-1-1",
                &kube::api::DeleteParams::default(),
            )
            .await
            .unwrap();
        while pods_in
            .get_opt("orders-taskmanager-1-1")
            .await
            .unwrap()
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no pod injected within 30 s; webhook log:\n{}",
            std::fs::read_to_string(dir.join("webhook.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // What the API server stored: the agent as a native sidecar, the jar's init container first, the socket and the
    // plugin directory mounted into Flink's container, and the process namespace shared.
    let spec = tm.spec.clone().unwrap();
    assert_eq!(spec.share_process_namespace, Some(true));
    let init = spec.init_containers.clone().unwrap();
    assert_eq!(
        init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["streamshield-plugin", "streamshield-agent"]
    );
    assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
    assert_eq!(init[1].image.as_deref(), Some(IMAGE));
    assert!(init[1].startup_probe.is_some() && init[1].liveness_probe.is_some());
    let env = |name: &str| {
        init[1]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .map(|e| e.value.clone().unwrap_or_default())
    };
    assert_eq!(env("STREAMSHIELD_AGENT_ROLES").as_deref(), Some("tm"));
    assert_eq!(
        env("STREAMSHIELD_AGENT_COORDINATOR").as_deref(),
        Some("streamshield-coordinator.streamshield.svc:9251")
    );
    let main = &spec.containers[0];
    assert!(main
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path == "/opt/flink/plugins/streamshield"));
    assert!(main
        .env
        .iter()
        .flatten()
        .any(|e| e.name == "STREAMSHIELD_AGENT_ADDRESS"));
    // The service account admission ran before the webhook; its token volume is still there.
    assert!(spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name.starts_with("kube-api-access-")));

    // A JobManager in the same namespace: its agent watches role jm.
    let jm = create::<Pod>(
        &client,
        Some("flink-in"),
        flink_pod("orders-jm", "jobmanager"),
    )
    .await;
    assert!(injected(&jm));
    // Not Flink's pods (no type label), a pod that opted out, and the opted-out namespace: left alone.
    let mut other = flink_pod("not-flink", "taskmanager");
    other["metadata"]["labels"] = json!({"app": "web", "component": "taskmanager"});
    assert!(!injected(
        &create::<Pod>(&client, Some("flink-in"), other).await
    ));
    let mut out = flink_pod("opted-out", "taskmanager");
    out["metadata"]["labels"]["streamshield.io/inject"] = json!("disabled");
    assert!(!injected(
        &create::<Pod>(&client, Some("flink-in"), out).await
    ));
    assert!(!injected(
        &create::<Pod>(
            &client,
            Some("flink-out"),
            flink_pod("orders-taskmanager-1-1", "taskmanager")
        )
        .await
    ));
    // In the other namespace, a pod whose own label opts it in (what an enabled FlinkDeployment's pods carry).
    let mut labelled = flink_pod("orders-taskmanager-1-2", "taskmanager");
    labelled["metadata"]["labels"]["streamshield.io/inject"] = json!("enabled");
    assert!(injected(
        &create::<Pod>(&client, Some("flink-out"), labelled).await
    ));
    // An already injected pod (a copy of the stored one) is created as it is: one agent, not two.
    let mut again = serde_json::to_value(&tm).unwrap();
    again["metadata"] = json!({"name": "copy", "labels": tm.metadata.labels, "annotations": tm.metadata.annotations});
    again["spec"]["volumes"] = Value::Array(
        again["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| !v["name"].as_str().unwrap().starts_with("kube-api-access-"))
            .cloned()
            .collect(),
    );
    for list in ["containers", "initContainers"] {
        for c in again["spec"][list].as_array_mut().unwrap() {
            if let Some(m) = c["volumeMounts"].as_array_mut() {
                m.retain(|m| !m["name"].as_str().unwrap().starts_with("kube-api-access-"));
            }
        }
    }
    let copy = create::<Pod>(&client, Some("flink-in"), again).await;
    assert!(injected(&copy));
    assert_eq!(
        copy.spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap()
            .len(),
        2
    );

    // A FlinkDeployment annotated enabled: the plugin's keys and the pods' label; a malformed annotation is a warning
    // its author sees (kubectl prints the API server's Warning headers). Sent raw to read the headers.
    let http = tokio::task::block_in_place(|| https_client(&cp.ca.pem()));
    let fd_url = format!(
        "{}/apis/flink.apache.org/v1beta1/namespaces/flink-out/flinkdeployments",
        cp.url
    );
    let token = "streamshield-test-admin";
    let body = flink_deployment(
        "orders",
        json!({"streamshield.io/enabled": "true", "streamshield.io/failover": "sometimes",
               "streamshield.io/failovr": "true"}),
    );
    let (status, warnings, stored) = tokio::task::spawn_blocking({
        let http = http.clone();
        let fd_url = fd_url.clone();
        move || {
            let r = http
                .post(&fd_url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .unwrap();
            let warnings: Vec<String> = r
                .headers()
                .get_all("warning")
                .iter()
                .map(|v| v.to_str().unwrap_or("").to_string())
                .collect();
            (r.status().as_u16(), warnings, r.json::<Value>().unwrap())
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 201, "{stored}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("streamshield.io/failover")),
        "the bad annotation is a warning: {warnings:?}"
    );
    let conf = &stored["spec"]["flinkConfiguration"];
    assert_eq!(
        conf["metrics.reporter.streamshield.factory.class"],
        "io.streamshield.plugin.StreamShieldMetricReporterFactory"
    );
    assert_eq!(
        conf["taskmanager.numberOfTaskSlots"], "2",
        "the user's keys are kept"
    );
    assert_eq!(
        conf["jobmanager.failure-enrichers"],
        "io.streamshield.plugin.StreamShieldFailureEnricher"
    );
    assert_eq!(
        stored["spec"]["podTemplate"]["metadata"]["labels"]["streamshield.io/inject"],
        "enabled"
    );
    // ...and a Warning Event on the FlinkDeployment, for whoever watches the namespace: the bad value, and the
    // unknown key with the valid ones.
    let event = webhook_event(
        &client,
        "flink-out",
        "AdmissionWarnings",
        "FlinkDeployment",
        "orders",
        &dir.join("webhook.log"),
    )
    .await;
    let note = event.note.clone().unwrap_or_default();
    assert!(
        note.contains("streamshield.io/failover: \"sometimes\"")
            && note.contains("streamshield.io/failovr")
            && note.contains("failover, hang-tolerance"),
        "{note}"
    );
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.uid.clone()),
        None,
        "a created object has no uid yet"
    );
    let generation = stored["metadata"]["generation"].clone();
    // Changing a policy annotation changes no spec: the operator does not upgrade (restart) the job for it.
    let fds: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "flink-out",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "flink.apache.org",
            "v1beta1",
            "FlinkDeployment",
        )),
    );
    let mut fd = fds.get("orders").await.unwrap();
    fd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("streamshield.io/failover".into(), "observe".into());
    let updated = fds
        .replace("orders", &PostParams::default(), &fd)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(updated.metadata.generation).unwrap(),
        generation,
        "an annotation change is not a spec change"
    );
    // Not enabled: untouched.
    let plain = tokio::task::spawn_blocking(move || {
        http.post(&fd_url)
            .bearer_auth(token)
            .json(&flink_deployment("plain", json!({})))
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(plain["spec"]["flinkConfiguration"]
        .get("metrics.reporter.streamshield.factory.class")
        .is_none());
    // In the opted-in namespace a FlinkDeployment needs no annotation: its pods get the agent, so Flink gets the keys.
    let fds_in: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "flink-in",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "flink.apache.org",
            "v1beta1",
            "FlinkDeployment",
        )),
    );
    let fd_in: DynamicObject =
        serde_json::from_value(flink_deployment("in-ns", json!({}))).unwrap();
    let stored_in = fds_in.create(&PostParams::default(), &fd_in).await.unwrap();
    assert_eq!(
        stored_in.data["spec"]["flinkConfiguration"]["metrics.reporter.streamshield.factory.class"],
        "io.streamshield.plugin.StreamShieldMetricReporterFactory"
    );

    // A pod the webhook cannot handle (sent to it directly: the API server only sends valid pods) is admitted
    // unchanged and is a Warning Event in its namespace, related to its controller; the same again counts on it.
    let mut broken = flink_pod("orders-taskmanager-9-9", "taskmanager");
    broken["spec"]["containers"] = json!("not a list");
    broken["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
        "name": "orders", "uid": "0b9c1a52-0000-4000-8000-000000000001", "controller": true}]);
    let admission = w.admission.clone();
    let ca_pem = cp.ca.pem();
    tokio::task::spawn_blocking(move || {
        let http = https_client(&ca_pem);
        for uid in ["broken-1", "broken-2"] {
            let r: Value = http
                .post(format!("{admission}/mutate/pods/namespace"))
                .json(&review(uid, "CREATE", "flink-in", broken.clone()))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(r["response"]["allowed"], true, "{r}");
        }
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let e = webhook_event(
            &client,
            "flink-in",
            "NotInjected",
            "Pod",
            "orders-taskmanager-9-9",
            &dir.join("webhook.log"),
        )
        .await;
        if e.series.as_ref().map(|s| s.count) == Some(2) {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "the repeat is counted on the first Event: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or("")
            .contains("admitted it unchanged"),
        "{event:?}"
    );
    assert_eq!(
        event.related.as_ref().and_then(|r| r.name.as_deref()),
        Some("orders")
    );

    let page = tokio::task::block_in_place(|| w.metrics());
    promtool_check(&page, "webhook's /metrics");
    assert!(
        sample(
            &page,
            "streamshield_webhook_events_total",
            &[("outcome", "written")]
        ) >= 2.0
            && sample(
                &page,
                "streamshield_webhook_events_total",
                &[("outcome", "repeated")]
            ) == 1.0
            && sample(
                &page,
                "streamshield_webhook_events_total",
                &[("outcome", "failed")]
            ) == 0.0,
        "{page}"
    );
    assert!(
        sample(
            &page,
            "streamshield_webhook_admissions_total",
            &[("resource", "pods"), ("outcome", "injected")]
        ) >= 3.0,
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            "streamshield_webhook_admissions_total",
            &[("resource", "flinkdeployments"), ("outcome", "injected")]
        ),
        2.0,
        "{page}"
    );

    // The webhook down: pods are still admitted (failurePolicy Ignore), unchanged, without waiting for a timeout.
    tokio::task::block_in_place(|| w.proc.stop());
    let took = admitted_unchanged(&client, "orders-taskmanager-2-1", "with the webhook down").await;
    assert!(
        took < Duration::from_secs(5),
        "admitted before the webhook's timeout: {took:?}"
    );

    // `helm install` of the chart into the real API server: what it registers is there, with the CA of the Secret
    // it made. Nothing runs the webhook's pods here (no kubelet), so the registered Service has no endpoints: pods are
    // still admitted, unchanged, within the entry's timeout. `helm uninstall` takes the registration away again.
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_string();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        helm(&[
            "install",
            "ss",
            "helm/streamshield",
            "--namespace",
            "streamshield",
            "--create-namespace",
            "--kubeconfig",
            &kubeconfig,
        ])
    });
    assert!(ok, "helm install: {out}{err}");
    eprintln!(
        "$ helm install ss helm/streamshield --namespace streamshield --create-namespace\n{out}"
    );
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let registered = mwcs.get("ss-streamshield-webhook").await.unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "streamshield");
    let tls = secrets.get("ss-streamshield-webhook-tls").await.unwrap();
    let ca = tls.data.unwrap()["ca.crt"].0.clone();
    for w in registered.webhooks.unwrap() {
        assert_eq!(
            w.client_config.ca_bundle.unwrap().0,
            ca,
            "the CA of the chart's Secret"
        );
        assert_eq!(
            w.client_config.service.unwrap().name,
            "ss-streamshield-webhook"
        );
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "streamshield");
    assert_eq!(
        deployments
            .get("ss-streamshield-webhook")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(2)
    );
    // An upgrade keeps the certificate (the Secret is looked up, not made again).
    let (ok, out, err) = tokio::task::block_in_place(|| {
        helm(&[
            "upgrade",
            "ss",
            "helm/streamshield",
            "--namespace",
            "streamshield",
            "--kubeconfig",
            &kubeconfig,
        ])
    });
    assert!(ok, "helm upgrade: {out}{err}");
    let again = secrets.get("ss-streamshield-webhook-tls").await.unwrap();
    assert_eq!(
        again.data.unwrap()["ca.crt"].0,
        ca,
        "the upgrade kept the CA"
    );
    let took = admitted_unchanged(
        &client,
        "orders-taskmanager-3-1",
        "with the chart's webhook registered but not running (timeoutSeconds 5)",
    )
    .await;
    assert!(
        took < Duration::from_secs(12),
        "bounded by the timeout: {took:?}"
    );
    let (ok, out, err) = tokio::task::block_in_place(|| {
        helm(&[
            "uninstall",
            "ss",
            "--namespace",
            "streamshield",
            "--kubeconfig",
            &kubeconfig,
        ])
    });
    assert!(ok, "helm uninstall: {out}{err}");
    assert!(mwcs
        .get_opt("ss-streamshield-webhook")
        .await
        .unwrap()
        .is_none());
}

/// The webhook's Event in `namespace` with `reason` regarding `kind` `name`, waited for (written asynchronously).
async fn webhook_event(
    client: &kube::Client,
    namespace: &str,
    reason: &str,
    kind: &str,
    name: &str,
    log: &Path,
) -> k8s_openapi::api::events::v1::Event {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if let Some(e) = list.items.iter().find(|e| {
            e.reporting_controller.as_deref() == Some("streamshield-webhook")
                && e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
        }) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event about {kind} {namespace}/{name} from the webhook within 10 s; there are: {:?}; webhook log:\n{}",
            list.items.iter().map(|e| (&e.reason, &e.note)).collect::<Vec<_>>(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_init_container_s_plugin_jar_copy_is_whole_or_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let jar = tmp.path().join("streamshield-plugin.jar");
    std::fs::write(&jar, b"PK\x03\x04 a jar's bytes").unwrap();
    let to = tmp.path().join("plugins/streamshield");
    let (jar_arg, to_arg) = (jar.to_str().unwrap(), to.to_str().unwrap());
    let out = streamshield(&["plugin-jar", "--from", jar_arg, "--to", to_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(to.join("streamshield-plugin.jar")).unwrap(),
        std::fs::read(&jar).unwrap()
    );
    let names: Vec<_> = std::fs::read_dir(&to)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left behind: {names:?}");
    // Not the StreamShield image: the missing jar is named, the exit code says failure.
    let out = streamshield(&[
        "plugin-jar",
        "--from",
        "/nonexistent/streamshield-plugin.jar",
        "--to",
        to_arg,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("/nonexistent/streamshield-plugin.jar"),
        "{err}"
    );
}
