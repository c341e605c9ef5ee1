package io.streamshield.plugin;

import java.util.Properties;
import org.apache.flink.metrics.reporter.MetricReporter;
import org.apache.flink.metrics.reporter.MetricReporterFactory;

/** {@code metrics.reporter.streamshield.factory.class: io.streamshield.plugin.StreamShieldMetricReporterFactory}. */
public class StreamShieldMetricReporterFactory implements MetricReporterFactory {
    @Override
    public MetricReporter createMetricReporter(Properties properties) {
        return new StreamShieldMetricReporter();
    }
}
