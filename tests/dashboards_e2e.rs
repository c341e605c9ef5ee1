//! The Grafana dashboards (`deploy/grafana/`) and the alert rules (`deploy/prometheus/`), tested for real:
//!
//! - every panel's PromQL, read out of the dashboards' JSON, is evaluated by a real Prometheus
//!   (`/usr/bin/prometheus`) that scrapes the real agents and coordinator of `streamshield local up --profile
//!   shield` on real Flink while the sequence job runs under load, a TaskManager is killed (`kill -9`, so failover
//!   metrics have data), an agent with a wrong token knocks at the coordinator and garbage arrives at a plugin
//!   socket: every query must return a finite value, every metric a query names must be one the scraped targets
//!   export and every label it matches on one that metric carries (a misspelt name or label fails even behind
//!   `or vector(0)`), and the panels that count events must count what the drill did (tests/dashboards/drill.rs);
//! - the alert rules pass `promtool check rules` and their own `promtool test rules` cases, are loaded into that
//!   same Prometheus and evaluate without error, and the refused-connection alerts fire on the drill's refusals;
//! - the Helm chart ships byte-identical copies of both (deploy/ is the source; the test says how to copy) as
//!   ConfigMaps for Grafana's sidecar and a PrometheusRule (tests/dashboards/chart.rs).
//!
//! With `STREAMSHIELD_RENDER_DASHBOARDS=<dir>` the drill test also draws each dashboard from the same queries over
//! the drill into `<dir>/<dashboard>.svg` (docs/dashboards/ holds a committed run).
//!
//! Every process the test starts (Prometheus, the load generator, the impostor agent, the cluster) is stopped by pid
//! and the temp dir removed when the test ends, also when it fails or panics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;
#[path = "dashboards/prometheus.rs"]
mod prometheus;
#[path = "dashboards/promql.rs"]
mod promql;
#[path = "dashboards/render.rs"]
mod render;

#[path = "dashboards/chart.rs"]
mod chart;
#[path = "dashboards/drill.rs"]
mod drill;

const DASHBOARDS: [&str; 3] = [
    "streamshield-fleet",
    "streamshield-job",
    "streamshield-agent",
];
const RULES: &str = "deploy/prometheus/streamshield-alerts.yaml";
const RULE_TESTS: &str = "deploy/prometheus/streamshield-alerts.test.yaml";
const RUNBOOK: &str = "https://github.com/streamshield/streamshield/blob/main/docs/dashboards.md#";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn dashboard(name: &str) -> Value {
    let rel = format!("deploy/grafana/{name}.json");
    serde_json::from_str(&read(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The PromQL targets of a dashboard: (what, expr, legend, instant), `what` naming the dashboard and panel.
fn targets(name: &str, d: &Value) -> Vec<(String, String, String, bool)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("{name} / {} / {}", p["title"].as_str().unwrap(), t["refId"]),
                t["expr"].as_str().unwrap_or_default().to_string(),
                t["legendFormat"].as_str().unwrap_or_default().to_string(),
                t["instant"] == true,
            ));
        }
    }
    out
}

/// The alerting rules of the rules file: (name, expr, rule).
fn alert_rules() -> Vec<(String, String, Value)> {
    let v: Value = serde_yaml_ng::from_str(&read(RULES)).unwrap();
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| {
            (
                r["alert"].as_str().unwrap_or_default().to_string(),
                r["expr"].as_str().unwrap_or_default().to_string(),
                r,
            )
        })
        .collect()
}

/// Every `name` written in backticks in docs/metrics.md.
fn documented_metrics() -> BTreeSet<String> {
    let doc = read("docs/metrics.md");
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

/// Whether docs/metrics.md documents `name`: by name, as a histogram's `_bucket`/`_sum`/`_count` series, or as a
/// forwarded Flink metric (`streamshield_flink_*`, documented as a rule; the live test checks those are exported).
fn documented(name: &str, docs: &BTreeSet<String>) -> bool {
    docs.contains(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|b| docs.contains(b)))
        || name.starts_with("streamshield_flink_")
}

/// GitHub's anchors of the headings of a Markdown text.
fn anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

fn promtool(args: &[&str]) -> Output {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .expect("promtool (scripts/prereqs installs Debian's prometheus package)");
    eprintln!(
        "$ promtool {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn dashboards_and_alert_rules_are_well_formed_documented_and_pass_promtool() {
    let docs = documented_metrics();
    let mut uids = BTreeSet::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        assert!(
            (39..=41).contains(&d["schemaVersion"].as_u64().unwrap()),
            "{name}: schemaVersion"
        );
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{name}: uid"
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["type"], "datasource");
        assert_eq!(ds["query"], "prometheus");
        let mut defined: BTreeMap<String, String> = ["__rate_interval", "__interval", "__range"]
            .iter()
            .map(|v| (v.to_string(), "1m".to_string()))
            .collect();
        for v in vars {
            defined.insert(v["name"].as_str().unwrap().to_string(), ".*".into());
            if v["type"] == "query" {
                assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}: {v}");
                let q = v["query"]["query"].as_str().unwrap();
                let (metric, _) = promql::label_values_query(q)
                    .unwrap_or_else(|| panic!("{name}: {q} is not label_values(metric, label)"));
                assert!(documented(&metric, &docs), "{name}: {metric} undocumented");
            }
        }
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap();
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: id of {title}"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: {title}");
            let g = &p["gridPos"];
            assert!(
                g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                "{name}: {title} is wider than the grid"
            );
            assert!(
                !p["description"].as_str().unwrap_or("").is_empty(),
                "{name}: {title} has no description"
            );
            let ts = p["targets"].as_array().unwrap();
            assert!(!ts.is_empty(), "{name}: {title} has no query");
            for t in ts {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title}");
                let expr = t["expr"].as_str().unwrap();
                let e = promql::substitute(expr, &defined)
                    .unwrap_or_else(|e| panic!("{name}: {title}: {e}"));
                for m in promql::metric_names(&e).unwrap() {
                    assert!(
                        documented(&m, &docs),
                        "{name}: {title}: {m} is not in docs/metrics.md"
                    );
                }
            }
        }
    }

    // The alert rules: promtool, annotations, runbooks that exist, documented metrics.
    let out = promtool(&["check", "rules", RULES]);
    assert!(out.status.success(), "promtool check rules");
    let out = promtool(&["test", "rules", RULE_TESTS]);
    assert!(out.status.success(), "promtool test rules");
    let dashboards_doc = anchors(&read("docs/dashboards.md"));
    let rules = alert_rules();
    assert!(!rules.is_empty());
    let mut names = BTreeSet::new();
    for (alert, expr, r) in &rules {
        assert!(names.insert(alert.clone()), "{alert} twice");
        assert!(
            ["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap_or("")),
            "{alert}: severity"
        );
        for a in ["summary", "description", "runbook_url"] {
            assert!(
                !r["annotations"][a].as_str().unwrap_or("").is_empty(),
                "{alert}: no {a}"
            );
        }
        let runbook = r["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = runbook
            .strip_prefix(RUNBOOK)
            .unwrap_or_else(|| panic!("{alert}: runbook {runbook} is not in docs/dashboards.md"));
        assert!(
            dashboards_doc.contains(anchor),
            "{alert}: docs/dashboards.md has no section #{anchor}"
        );
        for m in promql::metric_names(expr).unwrap() {
            assert!(
                m == "up" || documented(&m, &docs),
                "{alert}: {m} is not in docs/metrics.md"
            );
        }
    }
    // The unit tests exercise rules of this file (and fail on a wrong expectation: see promtool's own tests).
    let tests = read(RULE_TESTS);
    let tested: BTreeSet<&str> = rules
        .iter()
        .map(|(a, _, _)| a.as_str())
        .filter(|a| tests.contains(&format!("alertname: {a}\n")))
        .collect();
    assert!(tested.len() >= 2, "promtool unit tests cover {tested:?}");
}

#[test]
fn the_metric_check_finds_names_that_are_not_exported() {
    let names = |e: &str| -> Vec<String> { promql::metric_names(e).unwrap().into_iter().collect() };
    assert_eq!(
        names(
            r#"histogram_quantile(0.9, sum by (le) (increase(streamshield_failover_recovery_seconds_bucket{job=~"a|b"}[5m])))"#
        ),
        ["streamshield_failover_recovery_seconds_bucket"]
    );
    assert_eq!(
        names(
            r#"rate(process_cpu_seconds_total[4s]) * on (job, instance) group_left (agent) (0 * streamshield_agent_coordinator_connected{agent=~".*"} + 1)"#
        ),
        [
            "process_cpu_seconds_total",
            "streamshield_agent_coordinator_connected"
        ]
    );
    assert_eq!(
        names(
            r#"count(x_total{state!="alive"} == 1) or vector(0) unless {__name__="y", a="}"} offset 5m"#
        ),
        ["x_total", "y"]
    );
    assert_eq!(
        names(
            r#"time() - max_over_time(timestamp(sum without (a) (rate(m[1m])) > 0)[1h:15s]) and bool ignoring (b) n"#
        ),
        ["m", "n"]
    );
    assert!(promql::metric_names(r#"{__name__=~"streamshield_.*"}"#).is_err());

    // A deliberately wrong name (a typo of streamshield_agent_frames_total) is reported, with its query, even where
    // the query would still return data (or vector(0)); the right one is not.
    let exported: BTreeSet<String> = [
        "streamshield_agent_frames_total",
        "process_cpu_seconds_total",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let queries = vec![
        (
            "good".to_string(),
            "sum by (kind) (rate(streamshield_agent_frames_total[1m]))".to_string(),
        ),
        (
            "typo".to_string(),
            "sum(rate(streamshield_agent_frame_total[1m])) or vector(0)".to_string(),
        ),
    ];
    let missing = promql::unexported(&queries, &exported).unwrap();
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].starts_with("typo: streamshield_agent_frame_total is not exported"),
        "{missing:?}"
    );
    assert!(promql::unexported(&queries[..1], &exported)
        .unwrap()
        .is_empty());

    // A misspelt label, or a value no series has, is reported even behind `or vector(0)`; `label=""` is not.
    assert_eq!(
        promql::selectors(r#"sum(rate(a_total{x="1", y=~"$v"}[1m])) or {__name__="b", z!=""} * c"#)
            .unwrap(),
        [
            promql::Selector {
                name: "a_total".into(),
                matchers: vec![
                    promql::Matcher {
                        label: "x".into(),
                        op: "=".into(),
                        value: "1".into()
                    },
                    promql::Matcher {
                        label: "y".into(),
                        op: "=~".into(),
                        value: "$v".into()
                    },
                ],
            },
            promql::Selector {
                name: "b".into(),
                matchers: vec![promql::Matcher {
                    label: "z".into(),
                    op: "!=".into(),
                    value: "".into()
                }],
            },
            promql::Selector {
                name: "c".into(),
                matchers: vec![]
            },
        ]
    );
    let mut labels = promql::Labels::new();
    let liveness = labels
        .entry("streamshield_agent_liveness".into())
        .or_default();
    liveness.insert("resource_id".into(), ["tm-1".to_string()].into());
    liveness.insert(
        "state".into(),
        ["alive".to_string(), "dead".to_string()].into(),
    );
    // The coordinator's gauge has a series for the current state only; a state seen on the agent's is one it has.
    let current = labels
        .entry("streamshield_coordinator_agent_liveness".into())
        .or_default();
    current.insert("state".into(), ["alive".to_string()].into());
    let check =
        |expr: &str| promql::unmatched(&[("q".to_string(), expr.to_string())], &labels).unwrap();
    assert!(check(
        r#"count(streamshield_agent_liveness{state="dead", resource_id=~"tm-.*", gone=""} == 1)"#
    )
    .is_empty());
    assert!(
        check(r#"count(streamshield_coordinator_agent_liveness{state="dead"} == 1)"#).is_empty()
    );
    let typo =
        check(r#"count(streamshield_agent_liveness{resourceid=~"tm-.*"} == 1) or vector(0)"#);
    assert!(
        typo.len() == 1 && typo[0].contains("has no label resourceid"),
        "{typo:?}"
    );
    let value =
        check(r#"count(streamshield_coordinator_agent_liveness{state="daed"} == 1) or vector(0)"#);
    assert!(
        value.len() == 1 && value[0].contains(r#"no series has state="daed""#),
        "{value:?}"
    );
    assert!(
        check("other_metric{anything=\"x\"}").is_empty(),
        "left to unexported"
    );

    // Grafana's variables.
    let vars: BTreeMap<String, String> = [("job", "(a|b)"), ("__rate_interval", "4s")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        promql::substitute(r#"rate(m{job_name=~"$job"}[${__rate_interval}])"#, &vars).unwrap(),
        r#"rate(m{job_name=~"(a|b)"}[4s])"#
    );
    assert!(promql::substitute("m{a=~\"$nope\"}", &vars).is_err());
    assert_eq!(
        promql::regex_of(&["tm-1".into(), "a.b".into()]),
        r"(tm-1|a\.b)"
    );
}
