package io.streamshield.plugin;

import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Map;
import java.util.Properties;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where the local agent is and who this process is. Resolved from, in order: the reporter's configuration
 * ({@code metrics.reporter.streamshield.<key>}), the environment ({@code STREAMSHIELD_*}, what the local launcher
 * and the Kubernetes sidecar injector set), and the JVM's own command line.
 *
 * <ul>
 *   <li>{@code agent-address} / {@code STREAMSHIELD_AGENT_ADDRESS}: {@code unix:/path/plugin.sock} or {@code
 *       tcp:127.0.0.1:PORT}. Unset: the link is disabled (one log line, Flink unaffected).
 *   <li>{@code agent-secret-file} / {@code STREAMSHIELD_AGENT_SECRET_FILE}: the agent's secret, required for TCP.
 *   <li>{@code role} / {@code STREAMSHIELD_ROLE}: {@code tm} or {@code jm}; default from the main class.
 *   <li>{@code resource-id} / {@code STREAMSHIELD_RESOURCE_ID}: a JobManager is {@code jobmanager}; a TaskManager
 *       without one uses Flink's own id for it, the {@code <tm_id>} variable of its metrics (a standalone TaskManager
 *       started without {@code taskmanager.resource-id} gets a generated one, e.g. {@code 127.0.0.1:40123-a1b2c3},
 *       which only Flink knows): its link waits for the metric reporter to see it, at most {@code
 *       resource-id-wait-ms} (default 10000), and then falls back to {@code taskmanager.resource-id} from the command
 *       line, else {@code host-pid}.
 *   <li>{@code heartbeat-interval-ms} / {@code STREAMSHIELD_HEARTBEAT_INTERVAL_MS}: default 100.
 *   <li>{@code queue-capacity}: messages buffered while the agent is slow or away (default 1024; oldest dropped).
 * </ul>
 */
public final class LinkConfig {
    final String address;
    final String secret;
    final String role;
    /** The resource id; for a TaskManager that takes Flink's (see {@link #resourceIdFromFlink}) only the fallback. */
    final String resourceId;
    /** Whether the link waits for Flink's id for this TaskManager ({@code <tm_id>}) before its HELLO. */
    final boolean resourceIdFromFlink;
    /** How long it waits at most; then {@link #resourceId}. */
    final long resourceIdWaitMs;
    final long pid;
    final String flinkVersion;
    final long heartbeatIntervalMs;
    final int queueCapacity;
    /** How long a TaskManager holds a SIGTERM for the coordinator's checkpoint (0: not at all). */
    final long plannedStopWaitMs;

    LinkConfig(
            String address,
            String secret,
            String role,
            String resourceId,
            long pid,
            String flinkVersion,
            long heartbeatIntervalMs,
            int queueCapacity,
            long plannedStopWaitMs,
            boolean resourceIdFromFlink,
            long resourceIdWaitMs) {
        this.address = address;
        this.secret = secret;
        this.role = role;
        this.resourceId = resourceId;
        this.pid = pid;
        this.flinkVersion = flinkVersion;
        this.heartbeatIntervalMs = heartbeatIntervalMs;
        this.queueCapacity = queueCapacity;
        this.plannedStopWaitMs = plannedStopWaitMs;
        this.resourceIdFromFlink = resourceIdFromFlink;
        this.resourceIdWaitMs = resourceIdWaitMs;
    }

    /** Resolves the configuration of this JVM. */
    public static LinkConfig resolve(Properties reporterConfig) {
        return resolve(
                reporterConfig,
                System.getenv(),
                System.getProperty("sun.java.command", ""),
                ProcessHandle.current().pid(),
                flinkVersion());
    }

    static LinkConfig resolve(
            Properties conf, Map<String, String> env, String javaCommand, long pid, String flinkVersion) {
        String address = pick(conf, "agent-address", env, "STREAMSHIELD_AGENT_ADDRESS", null);
        String secretFile = pick(conf, "agent-secret-file", env, "STREAMSHIELD_AGENT_SECRET_FILE", null);
        String secret = null;
        if (secretFile != null) {
            try {
                secret = new String(Files.readAllBytes(Paths.get(secretFile)), StandardCharsets.UTF_8).trim();
            } catch (Exception e) {
                throw new IllegalArgumentException(
                        "cannot read the StreamShield agent secret from " + secretFile + ": " + e, e);
            }
        }
        String detectedRole = javaCommand.contains("TaskManagerRunner") ? "tm" : "jm";
        String role = pick(conf, "role", env, "STREAMSHIELD_ROLE", detectedRole);
        if (!role.equals("tm") && !role.equals("jm")) {
            throw new IllegalArgumentException("StreamShield role must be tm or jm, got " + role);
        }
        String explicitId = pick(conf, "resource-id", env, "STREAMSHIELD_RESOURCE_ID", null);
        boolean fromFlink = explicitId == null && role.equals("tm");
        String resourceId =
                explicitId != null ? explicitId : role.equals("jm") ? "jobmanager" : fromCommand(javaCommand, pid);
        long idWait =
                Long.parseLong(pick(conf, "resource-id-wait-ms", env, "STREAMSHIELD_RESOURCE_ID_WAIT_MS", "10000"));
        if (idWait < 0 || idWait > 600_000) {
            throw new IllegalArgumentException("resource-id-wait-ms must be 0..600000, got " + idWait);
        }
        long hb = Long.parseLong(pick(conf, "heartbeat-interval-ms", env, "STREAMSHIELD_HEARTBEAT_INTERVAL_MS", "100"));
        if (hb < 10 || hb > 60_000) {
            throw new IllegalArgumentException("heartbeat-interval-ms must be 10..60000, got " + hb);
        }
        String queue = text(conf, "queue-capacity");
        int capacity = Integer.parseInt(queue == null ? "1024" : queue.trim());
        if (capacity < 16) {
            throw new IllegalArgumentException("queue-capacity must be >= 16, got " + capacity);
        }
        long stopWait =
                Long.parseLong(pick(conf, "planned-stop-wait-ms", env, "STREAMSHIELD_PLANNED_STOP_WAIT_MS", "0"));
        if (stopWait < 0 || stopWait > 600_000) {
            throw new IllegalArgumentException("planned-stop-wait-ms must be 0..600000, got " + stopWait);
        }
        return new LinkConfig(
                address, secret, role, resourceId, pid, flinkVersion, hb, capacity, stopWait, fromFlink, idWait);
    }

    private static String pick(Properties conf, String key, Map<String, String> env, String envKey, String dflt) {
        String v = text(conf, key);
        if (v == null || v.isEmpty()) {
            v = env.get(envKey);
        }
        return v == null || v.isEmpty() ? dflt : v.trim();
    }

    /**
     * A reporter setting as text. Flink 1.19+ reads config.yaml as YAML, so {@code planned-stop-wait-ms: 10000} reaches
     * the reporter's Properties as an Integer, which {@link Properties#getProperty} does not return.
     */
    private static String text(Properties conf, String key) {
        Object v = conf.get(key);
        return v == null ? null : String.valueOf(v);
    }

    private static final Pattern RESOURCE_ID = Pattern.compile("taskmanager\\.resource-id=(\\S+)");

    private static String fromCommand(String javaCommand, long pid) {
        Matcher m = RESOURCE_ID.matcher(javaCommand);
        if (m.find()) {
            return m.group(1);
        }
        String host = ManagementFactory.getRuntimeMXBean().getName();
        int at = host.indexOf('@');
        return (at >= 0 ? host.substring(at + 1) : "localhost") + "-" + pid;
    }

    private static String flinkVersion() {
        try {
            Object v =
                    Class.forName("org.apache.flink.runtime.util.EnvironmentInformation")
                            .getMethod("getVersion")
                            .invoke(null);
            return String.valueOf(v);
        } catch (Exception | LinkageError e) {
            return "unknown";
        }
    }

    @Override
    public String toString() {
        String id = resourceIdFromFlink ? "(Flink's <tm_id>, else " + resourceId + ")" : resourceId;
        return "agent " + (address == null ? "(none)" : address) + ", " + role + " " + id + ", pid " + pid;
    }
}
