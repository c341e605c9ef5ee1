//! A real Kubernetes control plane for the tests: etcd and kube-apiserver as processes (built and cached by
//! `scripts/kube-tools`), on loopback ports of their own, TLS from a CA made per run, one static token in
//! `system:masters`, RBAC on. No scheduler, controller manager or kubelet: pods are admitted and stored, never run.
//! Everything is stopped (by pid) and removed when the [`ControlPlane`] is dropped, also after a failed assertion.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};

/// The directory `scripts/kube-tools` cached the binaries and CRDs in (building them if needed, minutes when cold).
pub fn kube_tools() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kube-tools");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/kube-tools");
    assert!(
        out.status.success(),
        "scripts/kube-tools failed ({}); see its output above",
        out.status
    );
    let dir = String::from_utf8(out.stdout).expect("a path");
    PathBuf::from(
        dir.lines()
            .last()
            .expect("kube-tools prints its directory")
            .trim(),
    )
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A CA made for one run, and serving certificates it signs.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A serving certificate for `names` (DNS names or IP addresses): (certificate PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A started process, killed and reaped when dropped.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name, child }
    }

    /// Stops it now (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// etcd + kube-apiserver, with a kubeconfig for a cluster admin.
pub struct ControlPlane {
    // Dropped in declaration order: the API server, its etcd, then their directory.
    apiserver: Proc,
    _etcd: Proc,
    pub ca: Ca,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub crds: PathBuf,
    pub dir: tempfile::TempDir,
}

/// The admin's bearer token (the token file's only line).
const ADMIN_TOKEN: &str = "streamshield-test-admin";

impl ControlPlane {
    pub fn start() -> ControlPlane {
        let tools = kube_tools();
        let bin = tools.join("bin");
        let dir = tempfile::Builder::new()
            .prefix("streamshield-kube-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let ca = Ca::new("streamshield-test-ca");
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
        write(&d.join("apiserver.crt"), &cert);
        write(&d.join("apiserver.key"), &key);
        write(&d.join("ca.crt"), &ca.pem());
        // The service accounts' signing key: ECDSA P-256 (the API server takes ES256 keys as well as RSA).
        let sa = KeyPair::generate().unwrap();
        write(&d.join("sa.key"), &sa.serialize_pem());
        write(&d.join("sa.pub"), &sa.public_key_pem());
        write(
            &d.join("tokens.csv"),
            &format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        );

        let (client, peer) = (free_port(), free_port());
        let etcd = Proc::spawn(
            "etcd",
            Command::new(bin.join("etcd"))
                .arg("--data-dir")
                .arg(d.join("etcd"))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args([
                    "--initial-cluster",
                    &format!("default=http://127.0.0.1:{peer}"),
                ])
                .args(["--log-level", "warn"]),
            &d.join("etcd.log"),
        );
        let secure = free_port();
        let apiserver = Proc::spawn(
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver"))
                .args(["--etcd-servers", &format!("http://127.0.0.1:{client}")])
                .args(["--bind-address", "127.0.0.1"])
                .args(["--advertise-address", "127.0.0.1"])
                .args(["--secure-port", &secure.to_string()])
                .arg("--tls-cert-file")
                .arg(d.join("apiserver.crt"))
                .arg("--tls-private-key-file")
                .arg(d.join("apiserver.key"))
                .arg("--cert-dir")
                .arg(d.join("certs"))
                .args(["--service-account-issuer", "https://kubernetes.default.svc"])
                .arg("--service-account-key-file")
                .arg(d.join("sa.pub"))
                .arg("--service-account-signing-key-file")
                .arg(d.join("sa.key"))
                .arg("--token-auth-file")
                .arg(d.join("tokens.csv"))
                .args(["--authorization-mode", "RBAC"])
                .args(["--service-cluster-ip-range", "10.0.0.0/24"])
                .args(["--v", "1"]),
            &d.join("kube-apiserver.log"),
        );
        let url = format!("https://127.0.0.1:{secure}");
        let kubeconfig = d.join("kubeconfig");
        write(
            &kubeconfig,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
                 certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n\
                 contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n    namespace: default\n\
                 current-context: test\n",
                d.join("ca.crt").display()
            ),
        );
        let mut cp = ControlPlane {
            ca,
            url,
            kubeconfig,
            crds: tools.join("crds"),
            apiserver,
            _etcd: etcd,
            dir,
        };
        cp.wait_ready(Duration::from_secs(90));
        cp
    }

    fn wait_ready(&mut self, within: Duration) {
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.apiserver.child.try_wait() {
                panic!(
                    "kube-apiserver exited ({status}) before it was ready:\n{}",
                    self.log_tail("kube-apiserver.log")
                );
            }
            let ready = client
                .get(format!("{}/readyz", self.url))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                eprintln!(
                    "kube-apiserver ready at {} after {:.1} s",
                    self.url,
                    start.elapsed().as_secs_f64()
                );
                return;
            }
            assert!(
                start.elapsed() < within,
                "kube-apiserver not ready within {within:?}:\n{}",
                self.log_tail("kube-apiserver.log")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of one of the control plane's logs.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Installs the operator's FlinkDeployment CRD (as its API jar carries it) and waits until it is established.
    pub async fn install_flink_crd(&self, client: &kube::Client) {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let text =
            std::fs::read_to_string(self.crds.join("flinkdeployments.flink.apache.org-v1.yml"))
                .unwrap();
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
        let start = Instant::now();
        loop {
            let c = crds.get("flinkdeployments.flink.apache.org").await.unwrap();
            let established = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the CRD was not established"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A kube-rs client for the admin.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }
}

pub fn write(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
}

/// A TaskManager (or JobManager) pod as Flink's native Kubernetes integration, and so the operator, creates it.
pub fn flink_pod(name: &str, component: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "orders", "component": component, "type": "flink-native-kubernetes"}
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "flink-main-container",
                "image": "flink:1.20",
                "args": ["bash", "-c", format!("kubernetes-{component}.sh")],
                "volumeMounts": [{"name": "flink-config-volume", "mountPath": "/opt/flink/conf"}]
            }],
            "volumes": [{"name": "flink-config-volume", "configMap": {"name": "flink-config-orders"}}]
        }
    })
}

/// Creates `object` (JSON) of kind `K` in `namespace` (None: cluster-scoped).
pub async fn create<K>(client: &kube::Client, namespace: Option<&str>, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace.unwrap_or("default"));
    let k: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &k)
        .await
        .unwrap_or_else(|e| panic!("create {k:?}: {e}"))
}

pub async fn create_cluster<K>(client: &kube::Client, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    let k: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &k)
        .await
        .unwrap_or_else(|e| panic!("create {k:?}: {e}"))
}

/// A FlinkDeployment as a user writes it for the operator.
pub fn flink_deployment(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "image": "flink:1.20",
            "flinkVersion": "v1_20",
            "serviceAccount": "flink",
            "flinkConfiguration": {"taskmanager.numberOfTaskSlots": "2"},
            "jobManager": {"resource": {"memory": "1024m", "cpu": 1}},
            "taskManager": {"resource": {"memory": "1024m", "cpu": 1}},
            "job": {"jarURI": "local:///opt/flink/examples/streaming/StateMachineExample.jar", "parallelism": 2, "upgradeMode": "stateless"}
        }
    })
}

/// The coordinator's permissions, as docs/install-kubernetes.md lists them (the chart's RBAC has the same rules).
pub fn coordinator_rbac(ns: &str, sa: &str) -> [Value; 4] {
    [
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": sa, "namespace": ns},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"]},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
                {"apiGroups": ["flink.apache.org"], "resources": ["flinkdeployments"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": sa, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": sa},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
        }),
    ]
}

/// A kubeconfig for service account `sa` of namespace `ns`, made when missing (a token from the TokenRequest API).
pub async fn kubeconfig_for(
    cp: &ControlPlane,
    client: &kube::Client,
    ns: &str,
    sa: &str,
) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    // The account may exist already (a chart made it).
    match sas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap(),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create service account {sa}: {e}"),
    }
    let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}});
    let resp: Value = sas
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await
        .unwrap();
    let token = resp["status"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let path = cp.dir.path().join(format!("{sa}.kubeconfig"));
    write(
        &path,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: {sa}\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: {sa}\n\
             current-context: test\n",
            cp.url,
            cp.dir.path().join("ca.crt").display()
        ),
    );
    path
}

/// Creates RBAC objects (Role, RoleBinding: in their metadata's namespace; ClusterRole, ClusterRoleBinding).
pub async fn apply_rbac(client: &kube::Client, objects: &[Value]) {
    for o in objects {
        let kind = o["kind"].as_str().unwrap().to_string();
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "rbac.authorization.k8s.io",
            "v1",
            &kind,
        ));
        let api: Api<DynamicObject> = match o["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        api.create(
            &PostParams::default(),
            &serde_json::from_value(o.clone()).unwrap(),
        )
        .await
        .unwrap();
    }
}

/// The JSON a daemon writes to its `--info-file` once it serves, waited for (the assertion names `what` and shows
/// the end of `log`).
pub fn wait_info_file(info: &Path, log: &Path, within: Duration, what: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(v) = std::fs::read(info)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "{what} did not write {} within {within:?}:\n{}",
            info.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
