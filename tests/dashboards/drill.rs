//! The drill: a real Prometheus scraping `streamshield local up --profile shield` under load while connections are
//! refused and a TaskManager is killed; every panel query, variable and alert rule evaluated against it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::control_plane::Proc;
use super::common::standalone::wait_for;
use super::common::{streamshield, wait_no_process_naming, Cluster, BIN};
use super::prometheus::Prometheus;
use super::{alert_rules, dashboard, promql, render, repo, targets, DASHBOARDS, RULES};

/// Keeps this test's cluster off the ports of the other end-to-end tests.
const PORT_OFFSET: &str = "23000";
/// The scrape settings of the test's Prometheus, and Grafana's `$__rate_interval` for them (4 scrape intervals).
const SCRAPE_SECONDS: u64 = 1;
const RATE_INTERVAL: &str = "4s";
/// Series Prometheus makes itself for every target (not exported by it).
const SYNTHETIC: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Connections to a plugin socket that send garbage (each is refused).
const GARBAGE_CONNECTIONS: usize = 3;
/// Every series of the scraped targets.
const TARGETS: &str = r#"{job=~"streamshield-agent|streamshield-coordinator"}"#;
/// Metrics the alert rules name that the drill cannot make exist (see where it is used); `up` is Prometheus' own.
const NOT_IN_THE_DRILL: [&str; 5] = [
    "up",
    "streamshield_webhook_admissions_total",
    "streamshield_webhook_bad_requests_total",
    "streamshield_webhook_tls_reload_failures_total",
    "streamshield_agent_protocol_errors_total",
];

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A key of one of the YAML files `local up` wrote.
fn yaml_key(path: &Path, key: &str) -> String {
    let v: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {}", path.display()))
        .to_string()
}

/// The value of a dashboard's variables for the test: the label values of each query variable as Grafana would
/// select them all (a regex of exactly those values), a textbox's default, and Grafana's interval variables.
fn variables(
    name: &str,
    d: &Value,
    prom: &Prometheus,
    builtins: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
    queries: &mut Vec<(String, String)>,
) -> BTreeMap<String, String> {
    let mut vars = builtins.clone();
    for v in d["templating"]["list"].as_array().unwrap() {
        let var = v["name"].as_str().unwrap().to_string();
        let value = match v["type"].as_str() {
            Some("datasource") => "prometheus".to_string(),
            Some("textbox") | Some("custom") => v["query"].as_str().unwrap().to_string(),
            Some("query") => {
                let q = v["query"]["query"].as_str().unwrap();
                let (metric, label) = promql::label_values_query(q).unwrap();
                queries.push((format!("{name} / variable {var}"), metric.clone()));
                match prom.label_values(&label, &metric) {
                    Ok(values) if !values.is_empty() => promql::regex_of(&values),
                    Ok(_) => {
                        problems.push(format!("{name}: variable {var} ({q}) has no values"));
                        ".*".into()
                    }
                    Err(e) => {
                        problems.push(format!("{name}: variable {var} ({q}): {e}"));
                        ".*".into()
                    }
                }
            }
            other => panic!("{name}: variable {var} of type {other:?}"),
        };
        vars.insert(var, value);
    }
    vars
}

#[test]
fn every_panel_query_returns_data_from_a_real_prometheus_during_a_drill() {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("ss-dashboards-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    let cluster = Cluster(dir.clone());
    let up = streamshield(&[
        "local",
        "up",
        "--dir",
        d,
        "--profile",
        "shield",
        "--port-offset",
        PORT_OFFSET,
    ]);
    assert!(up.status.success(), "local up --profile shield failed");
    let up_took = started.elapsed();
    let status = json(&streamshield(&["local", "status", "--json", "--dir", d]));
    let agents: Vec<(String, String)> = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let url = a["metrics_url"].as_str().unwrap();
            let hostport = url
                .trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .to_string();
            (a["resource_id"].as_str().unwrap().to_string(), hostport)
        })
        .collect();
    assert_eq!(agents.len(), 4, "an agent per Flink process: {agents:?}");
    let api = status["coordinator"]["api"].as_str().unwrap();
    let api_hostport = api.trim_start_matches("http://");
    let token_file = status["coordinator"]["api_token_file"].as_str().unwrap();

    // Prometheus scraping every agent and the coordinator (its /metrics wants the API token) every second, with the
    // alert rules loaded.
    let agent_targets: Vec<String> = agents.iter().map(|(_, t)| format!("'{t}'")).collect();
    let config = format!(
        r#"global:
  scrape_interval: {SCRAPE_SECONDS}s
  scrape_timeout: {SCRAPE_SECONDS}s
  evaluation_interval: 1s
rule_files:
  - '{rules}'
scrape_configs:
  - job_name: streamshield-coordinator
    authorization:
      credentials_file: '{token_file}'
    static_configs:
      - targets: ['{api_hostport}']
  - job_name: streamshield-agent
    static_configs:
      - targets: [{agent_targets}]
"#,
        rules = repo().join(RULES).display(),
        agent_targets = agent_targets.join(", ")
    );
    let prom = Prometheus::start(&tmp.path().join("prometheus"), &config);
    let prom_start = now();
    wait_for(Duration::from_secs(20), "every target scraped", || {
        let t = prom.targets();
        (t.len() == agents.len() + 1 && t.iter().all(|(_, h, _)| h == "up")).then_some(())
    });

    // Load: 1,000 records/s through the sequence job.
    let mut producer = Proc::spawn(
        "workload produce",
        Command::new(BIN).args([
            "workload",
            "produce",
            "--dir",
            d,
            "--rate",
            "1000",
            "--keys",
            "50",
            "--duration",
            "150s",
            "--run",
            "dashboards",
        ]),
        &tmp.path().join("produce.log"),
    );

    // Refused connections: an agent with a wrong token at the coordinator, garbage at tm-3's plugin socket.
    let hostile_at = now();
    let impostor_dir = tmp.path().join("impostor");
    std::fs::create_dir_all(&impostor_dir).unwrap();
    let bad_token = impostor_dir.join("agent.token");
    std::fs::write(&bad_token, "not-the-token\n").unwrap();
    std::fs::set_permissions(
        &bad_token,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let coordinator_agents = yaml_key(&dir.join("coordinator/coordinator.yaml"), "agents-listen");
    let mut impostor = Proc::spawn(
        "impostor agent",
        Command::new(BIN)
            .args(["agent", "--id", "impostor", "--http", "127.0.0.1:0"])
            .arg("--listen")
            .arg(format!(
                "unix:{}",
                impostor_dir.join("agent.sock").display()
            ))
            .args(["--coordinator", &coordinator_agents])
            .arg("--token-file")
            .arg(&bad_token),
        &impostor_dir.join("agent.log"),
    );
    let tm3_socket = yaml_key(&dir.join("agents/tm-3/agent.yaml"), "listen");
    let tm3_socket = tm3_socket.trim_start_matches("unix:").to_string();
    for _ in 0..GARBAGE_CONNECTIONS {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&tm3_socket).unwrap();
        // Read as the length of an enormous frame: refused as oversized_frame.
        s.write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    }
    impostor.stop();

    // Output flows; then kill -9 of an active TaskManager, 20 s into the scrapes.
    wait_for(
        Duration::from_secs(30),
        "records out of the job's sink",
        || {
            let s = prom
            .query(
                r#"sum(rate(streamshield_flink_num_records_out{operator_name=~".+: Writer"}[4s])) > 100"#,
                now(),
            )
            .ok()?;
            (!s.is_empty()).then_some(())
        },
    );
    let until = prom_start + 20.0;
    if now() < until {
        std::thread::sleep(Duration::from_secs_f64(until - now()));
    }
    let tm1 = status["taskmanagers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resource_id"] == "tm-1")
        .unwrap()
        .clone();
    assert_eq!(tm1["role"], "active");
    let killed_at = now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tm1["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eprintln!(
        "kill -9 of tm-1 at +{:.1} s of the scrapes",
        killed_at - prom_start
    );
    // The coordinator acts, Flink runs the job again, the agent restarts tm-1 in place and its plugin links again.
    wait_for(
        Duration::from_secs(60),
        "a failover recovery observed",
        || {
            let s = prom
                .query(
                    "sum(streamshield_failover_recovery_seconds_count) > 0",
                    now(),
                )
                .ok()?;
            (!s.is_empty()).then_some(())
        },
    );
    wait_for(Duration::from_secs(60), "tm-1 alive again", || {
        let s = prom
            .query(
                r#"streamshield_coordinator_agent_liveness{resource_id="tm-1", state="alive"} and on () streamshield_agent_plugin_connected{resource_id="tm-1"} == 1"#,
                now(),
            )
            .ok()?;
        (!s.is_empty()).then_some(())
    });
    // Some data after the recovery, for the rates and the rules.
    std::thread::sleep(Duration::from_secs(8));
    let at = now();
    eprintln!("queries at +{:.1} s of the scrapes", at - prom_start);

    // Every panel's query, at one instant: Ok, and at least one finite value.
    let builtins: BTreeMap<String, String> = [
        ("__rate_interval", RATE_INTERVAL.to_string()),
        ("__interval", format!("{SCRAPE_SECONDS}s")),
        ("__range", format!("{}s", (at - prom_start).floor() as u64)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut problems = Vec::new();
    let mut queries = Vec::new();
    let mut pages = Vec::new();
    let mut evaluated = 0;
    for name in DASHBOARDS {
        let dash = dashboard(name);
        let vars = variables(name, &dash, &prom, &builtins, &mut problems, &mut queries);
        for (what, expr, _, _) in targets(name, &dash) {
            let e = promql::substitute(&expr, &vars).unwrap();
            evaluated += 1;
            match prom.query(&e, at) {
                Err(err) => problems.push(format!("{what}: {err}: {e}")),
                Ok(s) if s.is_empty() => problems.push(format!("{what}: no data: {e}")),
                Ok(s) if !s.iter().any(|s| s.value.is_finite()) => {
                    problems.push(format!("{what}: no finite value ({s:?}): {e}"))
                }
                Ok(_) => {}
            }
            queries.push((what, e));
        }
        pages.push((name, dash, vars));
    }

    // What the drill did is counted on the panels that count it: one kill -9 (one acted decision, one restart order
    // carried out, one in-place restart, one Flink restart), the garbage connections and the impostor's attempts.
    // Each counter with labels is born with the first event it counts, which increase() alone does not see; and
    // increase() extrapolates to the window's edges, so the counts are compared rounded.
    let count = |dash: &str, title: &str, want: &[(&str, &str)]| -> Option<f64> {
        let (_, d, vars) = pages.iter().find(|(n, _, _)| *n == dash)?;
        let p = d["panels"]
            .as_array()?
            .iter()
            .find(|p| p["title"] == title)?;
        let e = promql::substitute(p["targets"][0]["expr"].as_str()?, vars).ok()?;
        prom.query(&e, at)
            .ok()?
            .iter()
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .reduce(f64::max)
    };
    let one: &[(&str, &str)] = &[];
    for (dash, title, want, at_least) in [
        ("streamshield-fleet", "Failovers (range)", one, 1),
        (
            "streamshield-fleet",
            "Decisions in range",
            &[("kind", "tm-dead"), ("mode", "acted")],
            1,
        ),
        (
            "streamshield-fleet",
            "In-place restarts by process (range)",
            &[("resource_id", "tm-1")],
            1,
        ),
        (
            "streamshield-agent",
            "Orders carried out (range)",
            &[
                ("agent", "agent-tm-1"),
                ("action", "restart"),
                ("outcome", "done"),
            ],
            1,
        ),
        (
            "streamshield-agent",
            "Plugin connections refused (range)",
            one,
            GARBAGE_CONNECTIONS,
        ),
        (
            "streamshield-agent",
            "Agent connections refused (range)",
            one,
            1,
        ),
        ("streamshield-job", "Restarts (range)", one, 1),
    ] {
        match count(dash, title, want) {
            Some(v) if v.round() >= at_least as f64 => {}
            other => problems.push(format!(
                "{dash} / {title} {want:?}: {other:?}, not at least {at_least} (what the drill did)"
            )),
        }
    }

    // Every metric a query names is one the targets export (as Prometheus ingested them during the run).
    let exported: BTreeSet<String> = prom
        .label_values("__name__", TARGETS)
        .unwrap()
        .into_iter()
        .filter(|n| !SYNTHETIC.contains(&n.as_str()))
        .collect();
    assert!(
        exported.contains("streamshield_coordinator_epoch")
            && exported.contains("streamshield_agent_liveness"),
        "{exported:?}"
    );
    problems.extend(promql::unexported(&queries, &exported).unwrap());
    // The alert rules' metrics too, but for those the drill cannot make: the webhook's (not part of `local`) and
    // the agents' protocol errors (a labelled counter, born with its first error, which a real plugin never makes).
    let rule_queries: Vec<(String, String)> = alert_rules()
        .into_iter()
        .map(|(alert, expr, _)| (format!("rule {alert}"), expr))
        .collect();
    let missing = promql::unexported(&rule_queries, &exported).unwrap();
    problems.extend(missing.into_iter().filter(|m| {
        !NOT_IN_THE_DRILL
            .iter()
            .any(|n| m.contains(&format!(": {n} is not exported")))
    }));
    // Every label a query or rule matches on is one its metric carries, every `label="value"` a value it had.
    let mut labels = promql::Labels::new();
    for series in prom.series(TARGETS, prom_start, at).unwrap() {
        let metric = labels.entry(series["__name__"].clone()).or_default();
        for (k, v) in series {
            metric.entry(k).or_default().insert(v);
        }
    }
    problems.extend(promql::unmatched(&queries, &labels).unwrap());
    problems.extend(promql::unmatched(&rule_queries, &labels).unwrap());

    // The alert rules evaluate in that Prometheus without error, and the drill's refusals fire theirs.
    let loaded = prom.rules();
    let rules = alert_rules();
    assert_eq!(loaded.len(), rules.len(), "every rule loaded");
    for r in &loaded {
        if r["health"] != "ok" {
            problems.push(format!(
                "rule {}: health {} {}",
                r["name"], r["health"], r["lastError"]
            ));
        }
    }
    let state = |name: &str| {
        loaded
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    for (alert, expected) in [
        ("StreamShieldAgentConnectionsRefused", "firing"),
        ("StreamShieldPluginConnectionsRefused", "firing"),
        ("StreamShieldFlinkUnreachable", "inactive"),
        ("StreamShieldCoordinatorDown", "inactive"),
        ("StreamShieldAgentDisconnected", "inactive"),
    ] {
        if state(alert) != expected {
            problems.push(format!("{alert} is {:?}, not {expected}", state(alert)));
        }
    }
    eprintln!(
        "{evaluated} panel queries evaluated, {} metric names exported, {} rules loaded",
        exported.len(),
        loaded.len()
    );

    // The pictures, from the same queries over the drill.
    if let Ok(out_dir) = std::env::var("STREAMSHIELD_RENDER_DASHBOARDS") {
        let out_dir = repo().join(out_dir);
        std::fs::create_dir_all(&out_dir).unwrap();
        let start = prom_start + SCRAPE_SECONDS as f64;
        let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        for (name, dash, vars) in &pages {
            let mut panels = Vec::new();
            for p in dash["panels"].as_array().unwrap() {
                let mut lines = Vec::new();
                let mut values = Vec::new();
                for t in p["targets"].as_array().unwrap() {
                    let e = promql::substitute(t["expr"].as_str().unwrap(), vars).unwrap();
                    let legend = t["legendFormat"].as_str().unwrap_or("");
                    if t["instant"] != true {
                        for s in prom.query_range(&e, start, at, 1.0).unwrap() {
                            lines.push(render::Line {
                                name: promql::legend(legend, &s.labels),
                                points: s.points,
                            });
                        }
                    }
                    for s in prom.query(&e, at).unwrap() {
                        values.push((promql::legend(legend, &s.labels), s.value));
                    }
                }
                lines.sort_by(|a, b| a.name.cmp(&b.name));
                values.sort_by(|a, b| a.0.cmp(&b.0));
                panels.push(render::Panel {
                    json: p.clone(),
                    lines,
                    values,
                });
            }
            let page = render::Page {
                title: dash["title"].as_str().unwrap().to_string(),
                subtitle: format!(
                    "deploy/grafana/{name}.json, every panel from its own queries against a real Prometheus (1 s scrapes) of `streamshield local up --profile shield` (Flink 1.20.5, 1,000 records/s), {when}: garbage at a plugin socket and a wrong-token agent at +{:.0} s, kill -9 of tm-1 at +{:.0} s. tests/dashboards_e2e.rs",
                    hostile_at - start,
                    killed_at - start
                ),
                start,
                end: at,
                markers: vec![
                    (hostile_at, "refused connections".into()),
                    (killed_at, "kill -9 tm-1".into()),
                ],
                panels,
            };
            let file = out_dir.join(format!("{name}.svg"));
            std::fs::write(&file, page.svg()).unwrap();
            eprintln!("wrote {}", file.display());
        }
    }

    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\nprometheus log:\n{}",
        problems.len(),
        problems.join("\n"),
        prom.log()
    );

    producer.stop();
    let down = streamshield(&["local", "down", "--dir", d]);
    assert!(down.status.success());
    assert!(
        wait_no_process_naming(&dir, Duration::from_secs(10)),
        "processes of the run remain"
    );
    let prom_pid = prom.pid();
    drop(prom);
    assert!(
        streamshield::host::procfs::stat(prom_pid).is_none(),
        "prometheus (pid {prom_pid}) still runs"
    );
    drop(cluster);
    let root: PathBuf = tmp.path().to_path_buf();
    drop(tmp);
    assert!(!root.exists(), "{} left behind", root.display());
    eprintln!(
        "wall time {:.1} s (local up {:.1} s)",
        started.elapsed().as_secs_f64(),
        up_took.as_secs_f64()
    );
}
