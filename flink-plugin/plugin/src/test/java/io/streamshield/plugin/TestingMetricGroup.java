package io.streamshield.plugin;

import java.util.Map;
import org.apache.flink.metrics.CharacterFilter;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.Histogram;
import org.apache.flink.metrics.Meter;
import org.apache.flink.metrics.MetricGroup;

/** A metric group with fixed scope and variables; registration methods are not used by reporters. */
final class TestingMetricGroup implements MetricGroup {
    private final String[] scope;
    private final Map<String, String> variables;

    TestingMetricGroup(String scope, Map<String, String> variables) {
        this.scope = scope.split("\\.");
        this.variables = variables;
    }

    @Override
    public Counter counter(String name) {
        throw new IllegalStateException("reporters do not register metrics");
    }

    @Override
    public <C extends Counter> C counter(String name, C counter) {
        throw new IllegalStateException("reporters do not register metrics");
    }

    @Override
    public <T, G extends Gauge<T>> G gauge(String name, G gauge) {
        throw new IllegalStateException("reporters do not register metrics");
    }

    @Override
    public <H extends Histogram> H histogram(String name, H histogram) {
        throw new IllegalStateException("reporters do not register metrics");
    }

    @Override
    public <M extends Meter> M meter(String name, M meter) {
        throw new IllegalStateException("reporters do not register metrics");
    }

    @Override
    public MetricGroup addGroup(String name) {
        throw new IllegalStateException("reporters do not add groups");
    }

    @Override
    public MetricGroup addGroup(String key, String value) {
        throw new IllegalStateException("reporters do not add groups");
    }

    @Override
    public String[] getScopeComponents() {
        return scope;
    }

    @Override
    public Map<String, String> getAllVariables() {
        return variables;
    }

    @Override
    public String getMetricIdentifier(String metricName) {
        return String.join(".", scope) + "." + metricName;
    }

    @Override
    public String getMetricIdentifier(String metricName, CharacterFilter filter) {
        return getMetricIdentifier(metricName);
    }
}
