package io.streamshield.plugin;

import io.streamshield.plugin.protocol.Frames;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;
import org.apache.flink.core.failure.FailureEnricher;

/**
 * Runs in the JobManager on every failure (task, global, TaskManager): sends a FAILURE message with type and
 * timestamp to the local agent, and labels the failure {@code streamshield.event=<pid>-<n>} so Flink's exception
 * history (REST {@code failureLabels}) and StreamShield's event log can be joined. It cannot change Flink's
 * decision and returns at once.
 *
 * <p>Enable with {@code jobmanager.failure-enrichers: io.streamshield.plugin.StreamShieldFailureEnricher}.
 */
public class StreamShieldFailureEnricher implements FailureEnricher {
    static final String LABEL = "streamshield.event";

    private final Supplier<AgentLink> link;
    private final AtomicLong seq = new AtomicLong();

    public StreamShieldFailureEnricher() {
        this(() -> AgentLink.shared(LinkConfig.resolve(new Properties())));
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
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("ts_ms", System.currentTimeMillis());
        m.put("job_id", context.getJobId() == null ? "" : context.getJobId().toString());
        m.put("job_name", context.getJobName() == null ? "" : context.getJobName());
        m.put("failure_type", String.valueOf(context.getFailureType()));
        m.put("exception", cause == null ? "" : cause.getClass().getName());
        String msg = cause == null ? "" : String.valueOf(cause.getMessage());
        m.put("message", msg.length() > 2000 ? msg.substring(0, 2000) : msg);
        m.put("event", id);
        try {
            link.get().offer(Frames.FAILURE, m);
        } catch (RuntimeException e) {
            // Never let the link disturb Flink's failure handling.
        }
        return CompletableFuture.completedFuture(Collections.singletonMap(LABEL, id));
    }
}
