package io.streamshield.plugin;

import io.streamshield.plugin.protocol.Frames;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.metrics.MetricConfig;
import org.apache.flink.traces.Span;
import org.apache.flink.traces.reporter.TraceReporter;

/**
 * Forwards Flink's spans (1.19+: Checkpoint, JobInitialization with its restore phases, JobFailure, ...) to the
 * local agent as SPAN messages. Attribute values are sent as numbers (and booleans) when they are, else as text.
 *
 * <p>Flink 2.x spans can have child spans ({@code Span.getChildren()}, absent in 1.x: reached by reflection so that
 * one jar serves both); they travel inside their parent's message as {@code children}, each of the same shape.
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
        link.offer(Frames.SPAN, message(span, 0));
    }

    /** Flink 2.x spans can nest ({@code Span.getChildren()}); 1.x has no such method. Null on 1.x. */
    private static final Method CHILDREN = childrenMethod();

    /** Deeper children than this are left out (a span tree is small; this only bounds a pathological one). */
    static final int MAX_DEPTH = 8;

    private static Method childrenMethod() {
        try {
            return Span.class.getMethod("getChildren");
        } catch (NoSuchMethodException | SecurityException e) {
            return null;
        }
    }

    static boolean spansNest() {
        return CHILDREN != null;
    }

    static Map<String, Object> message(Span span, int depth) {
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
        List<Object> children = children(span, depth);
        if (!children.isEmpty()) {
            m.put("children", children);
        }
        return m;
    }

    private static List<Object> children(Span span, int depth) {
        if (CHILDREN == null || depth >= MAX_DEPTH) {
            return Collections.emptyList();
        }
        Object found;
        try {
            found = CHILDREN.invoke(span);
        } catch (ReflectiveOperationException | RuntimeException e) {
            return Collections.emptyList();
        }
        if (!(found instanceof List) || ((List<?>) found).isEmpty()) {
            return Collections.emptyList();
        }
        List<Object> out = new ArrayList<>();
        for (Object child : (List<?>) found) {
            if (child instanceof Span) {
                out.add(message((Span) child, depth + 1));
            }
        }
        return out;
    }
}
