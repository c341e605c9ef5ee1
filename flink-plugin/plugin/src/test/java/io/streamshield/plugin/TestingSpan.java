package io.streamshield.plugin;

import java.util.List;
import java.util.Map;
import org.apache.flink.traces.Span;

/**
 * A span as Flink 2.x can hand it over, with children. Compiled against 1.20 (whose Span has no getChildren) it is an
 * extra method; on 2.x it implements the interface's.
 */
final class TestingSpan implements Span {
    private final String name;
    private final long start;
    private final long end;
    private final Map<String, Object> attributes;
    private final List<Span> children;

    TestingSpan(String name, long start, long end, Map<String, Object> attributes, List<Span> children) {
        this.name = name;
        this.start = start;
        this.end = end;
        this.attributes = attributes;
        this.children = children;
    }

    @Override
    public String getScope() {
        return "org.apache.flink.runtime.checkpoint.CheckpointStatsTracker";
    }

    @Override
    public String getName() {
        return name;
    }

    @Override
    public long getStartTsMillis() {
        return start;
    }

    @Override
    public long getEndTsMillis() {
        return end;
    }

    @Override
    public Map<String, Object> getAttributes() {
        return attributes;
    }

    public List<Span> getChildren() {
        return children;
    }
}
