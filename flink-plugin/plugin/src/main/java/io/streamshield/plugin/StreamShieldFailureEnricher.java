package io.streamshield.plugin;

import io.streamshield.plugin.protocol.Frames;
import io.streamshield.plugin.protocol.Json;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;
import org.apache.flink.api.common.JobInfo;
import org.apache.flink.core.failure.FailureEnricher;

/**
 * Runs in the JobManager on every failure (task, global, TaskManager): sends a FAILURE message with type and
 * timestamp to the local agent, and labels the failure {@code streamshield.event=<pid>-<n>} so Flink's exception
 * history (REST {@code failureLabels}) and StreamShield's event log can be joined. It cannot change Flink's
 * decision and returns at once.
 *
 * <p>Enable with {@code jobmanager.failure-enrichers: io.streamshield.plugin.StreamShieldFailureEnricher}. Its link
 * settings are the metric reporter's ({@code metrics.reporter.streamshield.*}), then {@code STREAMSHIELD_*}.
 */
public class StreamShieldFailureEnricher implements FailureEnricher {
    static final String LABEL = "streamshield.event";

    private final Supplier<AgentLink> link;
    private final AtomicLong seq = new AtomicLong();

    /** With the environment's settings only ({@code STREAMSHIELD_*}); Flink uses the factory's constructor. */
    public StreamShieldFailureEnricher() {
        this(new Properties());
    }

    /**
     * With the metric reporter's settings ({@code metrics.reporter.streamshield.*} without the prefix, from Flink's
     * configuration, see {@link StreamShieldFailureEnricherFactory}), the environment filling in what they leave out.
     */
    StreamShieldFailureEnricher(Properties reporterSettings) {
        this(linkFrom(reporterSettings));
        warmUp();
    }

    /** The JVM's shared link with these settings, resolved once (the secret file is not reread in every failure). */
    private static Supplier<AgentLink> linkFrom(Properties settings) {
        return new Supplier<AgentLink>() {
            private LinkConfig resolved;

            @Override
            public synchronized AgentLink get() {
                if (resolved == null) {
                    resolved = LinkConfig.resolve(settings);
                }
                return AgentLink.shared(resolved);
            }
        };
    }

    /** The link this enricher reports to (tests). */
    AgentLink link() {
        return link.get();
    }

    /**
     * Links to the agent and loads what a failure needs now, when Flink creates the enricher for a job, instead of in
     * the first failure: {@link #processFailure} runs on the JobManager's main thread before the restart is decided,
     * and that first call (class loading, the link's start) took ~250 ms of the failover on a loaded machine
     * (kept JobManager log of a tm-kill drill round).
     */
    void warmUp() {
        try {
            link.get();
            Json.write(message(new RuntimeException("warm-up"), "", "", "TASK", "warm-up"));
        } catch (RuntimeException e) {
            // Never let the link disturb Flink: a failure will try again.
        }
    }

    StreamShieldFailureEnricher(Supplier<AgentLink> link) {
        this.link = link;
    }

    @Override
    public Set<String> getOutputKeys() {
        return Collections.singleton(LABEL);
    }

    @Override
    public CompletableFuture<Map<String, String>> processFailure(Throwable cause, Context context) {
        String id = ProcessHandle.current().pid() + "-" + seq.incrementAndGet();
        String jobId = "";
        String jobName = "";
        try {
            // Context.getJobInfo() is abstract in 1.20 and 2.x alike; the 1.x shortcuts getJobId()/getJobName()
            // (default methods over it) are gone in 2.x, so calling them would fail with NoSuchMethodError there.
            JobInfo job = context.getJobInfo();
            if (job != null) {
                jobId = job.getJobId() == null ? "" : job.getJobId().toString();
                jobName = job.getJobName() == null ? "" : job.getJobName();
            }
        } catch (RuntimeException | LinkageError e) {
            // A context without job information still reports the failure.
        }
        Map<String, Object> m = message(cause, jobId, jobName, String.valueOf(context.getFailureType()), id);
        try {
            link.get().offer(Frames.FAILURE, m);
        } catch (RuntimeException e) {
            // Never let the link disturb Flink's failure handling.
        }
        return CompletableFuture.completedFuture(Collections.singletonMap(LABEL, id));
    }

    private static Map<String, Object> message(
            Throwable cause, String jobId, String jobName, String failureType, String id) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("ts_ms", System.currentTimeMillis());
        m.put("job_id", jobId);
        m.put("job_name", jobName);
        m.put("failure_type", failureType);
        m.put("exception", cause == null ? "" : cause.getClass().getName());
        String msg = cause == null ? "" : String.valueOf(cause.getMessage());
        m.put("message", msg.length() > 2000 ? msg.substring(0, 2000) : msg);
        m.put("event", id);
        return m;
    }
}
