package io.streamshield.plugin;

import io.streamshield.plugin.protocol.Frames;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.flink.metrics.MetricConfig;
import org.apache.flink.traces.Span;
import org.apache.flink.traces.reporter.TraceReporter;

/**
 * Forwards Flink's spans (1.19+: Checkpoint, JobInitialization with its restore phases, JobFailure, ...) to the
 * local agent as SPAN messages. Attribute values are sent as numbers when they are numbers, else as text.
 */
public class StreamShieldTraceReporter implements TraceReporter {
    private final StreamShieldMetricReporter.LinkFactory linkFactory;
    private AgentLink link;

    public StreamShieldTraceReporter() {
        this(config -> AgentLink.shared(LinkConfig.resolve(config)));
    }

    StreamShieldTraceReporter(StreamShieldMetricReporter.LinkFactory linkFactory) {
        this.linkFactory = linkFactory;
    }

    @Override
    public void open(MetricConfig config) {
        link = linkFactory.create(config);
    }

    @Override
    public void close() {}

    @Override
    public void notifyOfAddedSpan(Span span) {
        if (link == null) {
            return;
        }
        Map<String, Object> attrs = new LinkedHashMap<>();
        for (Map.Entry<String, Object> a : span.getAttributes().entrySet()) {
            Object v = a.getValue();
            attrs.put(a.getKey(), v instanceof Number || v instanceof Boolean ? v : String.valueOf(v));
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("scope", span.getScope());
        m.put("name", span.getName());
        m.put("start_ms", span.getStartTsMillis());
        m.put("end_ms", span.getEndTsMillis());
        m.put("attributes", attrs);
        link.offer(Frames.SPAN, m);
    }
}
