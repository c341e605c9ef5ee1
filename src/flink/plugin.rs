//! The StreamShield plugin's keys in Flink's configuration, written once for everything that adds them:
//! `streamshield install` (a Flink home's config.yaml) and the Kubernetes webhook (a FlinkDeployment's
//! `spec.flinkConfiguration`). docs/configuration.md (Plugin) explains each.

/// The metric reporter that carries Flink's metrics, heartbeats and planned stops to the agent.
pub const METRIC_REPORTER: (&str, &str) = (
    "metrics.reporter.streamshield.factory.class",
    "io.streamshield.plugin.StreamShieldMetricReporterFactory",
);
/// How often the reporter reports (its heartbeat to the agent is separate and faster).
pub const REPORTER_INTERVAL: (&str, &str) = ("metrics.reporter.streamshield.interval", "1 s");
/// How long a held SIGTERM waits for the coordinator's checkpoint before Flink's shutdown goes on.
pub const PLANNED_STOP_WAIT: (&str, &str) = (
    "metrics.reporter.streamshield.planned-stop-wait-ms",
    "10000",
);
/// The trace reporter (Flink's checkpoint and recovery spans).
pub const TRACE_REPORTER: (&str, &str) = (
    "traces.reporter.streamshield.factory.class",
    "io.streamshield.plugin.StreamShieldTraceReporterFactory",
);
/// The list key the failure enricher is added to, and the enricher.
pub const FAILURE_ENRICHERS: &str = "jobmanager.failure-enrichers";
pub const FAILURE_ENRICHER: &str = "io.streamshield.plugin.StreamShieldFailureEnricher";
/// Where the agent address goes when it is not in the process's environment (`STREAMSHIELD_AGENT_ADDRESS`).
pub const METRIC_AGENT_ADDRESS: &str = "metrics.reporter.streamshield.agent-address";
pub const TRACE_AGENT_ADDRESS: &str = "traces.reporter.streamshield.agent-address";

/// True when `list` (Flink's comma- or semicolon-separated class list) already names `class`.
pub fn list_names(list: &str, class: &str) -> bool {
    list.split([',', ';']).any(|e| e.trim() == class)
}
