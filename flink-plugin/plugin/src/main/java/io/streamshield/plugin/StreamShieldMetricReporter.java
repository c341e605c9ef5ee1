package io.streamshield.plugin;

import io.streamshield.plugin.protocol.Frames;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.Meter;
import org.apache.flink.metrics.Metric;
import org.apache.flink.metrics.MetricConfig;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.metrics.reporter.MetricReporter;
import org.apache.flink.metrics.reporter.Scheduled;

/**
 * Forwards a curated set of Flink metrics (plus configured patterns) to the local agent, as one METRICS message per
 * report interval ({@code metrics.reporter.streamshield.interval}, 1 s in StreamShield's profiles). Counters,
 * numeric gauges and meters (their rate) are sent; histograms and non-numeric or non-finite values are skipped.
 *
 * <p>{@code metrics.reporter.streamshield.include}: extra comma-separated regular expressions matched against the
 * metric name.
 *
 * <p>In a TaskManager without a configured resource id, the first metric that carries Flink's id for it ({@code
 * <tm_id>}) tells the link which id to say HELLO with (see {@link LinkConfig}).
 */
public class StreamShieldMetricReporter implements MetricReporter, Scheduled {

    /** What the agent and coordinator use: job health, checkpoints, pressure, throughput, JVM, source lag. */
    static final Set<String> CURATED =
            Collections.unmodifiableSet(
                    new HashSet<>(
                            Arrays.asList(
                                    "numRestarts",
                                    "uptime",
                                    "downtime",
                                    "restartingTime",
                                    "runningTime",
                                    "numberOfCompletedCheckpoints",
                                    "numberOfFailedCheckpoints",
                                    "numberOfInProgressCheckpoints",
                                    "lastCheckpointDuration",
                                    "lastCheckpointSize",
                                    "lastCheckpointRestoreTimestamp",
                                    "backPressuredTimeMsPerSecond",
                                    "busyTimeMsPerSecond",
                                    "idleTimeMsPerSecond",
                                    "numRecordsInPerSecond",
                                    "numRecordsOutPerSecond",
                                    "numRecordsIn",
                                    "numRecordsOut",
                                    "pendingRecords",
                                    "records-lag-max",
                                    "currentEmitEventTimeLag",
                                    "taskSlotsAvailable",
                                    "taskSlotsTotal",
                                    "numRegisteredTaskManagers",
                                    "numRunningJobs",
                                    "Load",
                                    "Time",
                                    "Used",
                                    "Max",
                                    "Count")));

    /** Scope groups whose metrics {@code Load/Time/Used/Max/Count} are the JVM's (CPU, heap, GC). */
    private static final Pattern JVM_SCOPE = Pattern.compile(".*Status\\.JVM\\.(CPU|Memory\\.Heap|GarbageCollector\\..*)");

    /** Labels forwarded; others (host, tm_id of a TM's own metrics) add cardinality without information. */
    static final Set<String> LABELS =
            Collections.unmodifiableSet(
                    new HashSet<>(
                            Arrays.asList(
                                    "job_id", "job_name", "task_name", "subtask_index", "operator_name", "tm_id")));

    private final Map<Metric, Entry> metrics = new ConcurrentHashMap<>();
    private final LinkFactory linkFactory;
    private volatile AgentLink link;
    private List<Pattern> include = new ArrayList<>();

    /** How the reporter obtains its link; tests pass their own. */
    interface LinkFactory {
        AgentLink create(MetricConfig config);
    }

    public StreamShieldMetricReporter() {
        this(config -> AgentLink.shared(LinkConfig.resolve(config)));
    }

    StreamShieldMetricReporter(LinkFactory linkFactory) {
        this.linkFactory = linkFactory;
    }

    private static final class Entry {
        final String name;
        final Map<String, String> labels;

        Entry(String name, Map<String, String> labels) {
            this.name = name;
            this.labels = labels;
        }
    }

    @Override
    public void open(MetricConfig config) {
        String patterns = config.getString("include", "");
        for (String p : patterns.split(",")) {
            if (!p.trim().isEmpty()) {
                include.add(Pattern.compile(p.trim()));
            }
        }
        link = linkFactory.create(config);
        // From this reporter's own settings: the JVM's shared link may have been created by the trace reporter,
        // whose settings do not carry planned-stop-wait-ms.
        LinkConfig lc = LinkConfig.resolve(config);
        if (lc.role.equals("tm") && lc.plannedStopWaitMs > 0) {
            PlannedStop.install(link, lc.plannedStopWaitMs);
        }
    }

    @Override
    public void close() {
        metrics.clear();
    }

    boolean wanted(String name, MetricGroup group) {
        for (Pattern p : include) {
            if (p.matcher(name).matches()) {
                return true;
            }
        }
        if (!CURATED.contains(name)) {
            return false;
        }
        switch (name) {
            case "Load":
            case "Time":
            case "Used":
            case "Max":
            case "Count":
                return JVM_SCOPE.matcher(String.join(".", group.getScopeComponents())).matches();
            default:
                return true;
        }
    }

    /** The metric variable that carries Flink's id of the TaskManager (its ResourceID), in 1.20 and 2.x alike. */
    static final String TM_ID = "<tm_id>";

    @Override
    public void notifyOfAddedMetric(Metric metric, String name, MetricGroup group) {
        AgentLink l = link;
        if (l != null && l.wantsResourceId()) {
            // Only until the link has it: a map lookup on the registering thread, nothing that waits.
            try {
                l.learnResourceId(group.getAllVariables().get(TM_ID));
            } catch (RuntimeException e) {
                // a group that cannot say; a later metric will
            }
        }
        if (!wanted(name, group)) {
            return;
        }
        String full = name;
        String scope = String.join(".", group.getScopeComponents());
        int jvm = scope.indexOf("Status.JVM.");
        if (jvm >= 0) {
            full = scope.substring(jvm) + "." + name;
        }
        Map<String, String> labels = new LinkedHashMap<>();
        for (Map.Entry<String, String> v : group.getAllVariables().entrySet()) {
            String k = v.getKey().replace("<", "").replace(">", "");
            if (LABELS.contains(k)) {
                labels.put(k, v.getValue());
            }
        }
        metrics.put(metric, new Entry(full, labels));
    }

    @Override
    public void notifyOfRemovedMetric(Metric metric, String name, MetricGroup group) {
        metrics.remove(metric);
    }

    /** The numeric value of a metric, or null when it has none worth sending. */
    static Double valueOf(Metric m) {
        double v;
        if (m instanceof Counter) {
            v = ((Counter) m).getCount();
        } else if (m instanceof Meter) {
            v = ((Meter) m).getRate();
        } else if (m instanceof Gauge) {
            Object o;
            try {
                o = ((Gauge<?>) m).getValue();
            } catch (RuntimeException e) {
                return null;
            }
            if (o instanceof Number) {
                v = ((Number) o).doubleValue();
            } else if (o instanceof Boolean) {
                v = ((Boolean) o) ? 1 : 0;
            } else {
                return null;
            }
        } else {
            return null;
        }
        return Double.isFinite(v) ? v : null;
    }

    @Override
    public void report() {
        if (link == null) {
            return;
        }
        List<Object> list = new ArrayList<>();
        for (Map.Entry<Metric, Entry> e : metrics.entrySet()) {
            Double v = valueOf(e.getKey());
            if (v == null) {
                continue;
            }
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", e.getValue().name);
            m.put("value", v);
            m.put("labels", e.getValue().labels);
            list.add(m);
        }
        Map<String, Object> batch = new LinkedHashMap<>();
        batch.put("ts_ms", System.currentTimeMillis());
        batch.put("dropped", link.dropped());
        batch.put("metrics", list);
        link.offer(Frames.METRICS, batch);
    }

    int tracked() {
        return metrics.size();
    }
}
