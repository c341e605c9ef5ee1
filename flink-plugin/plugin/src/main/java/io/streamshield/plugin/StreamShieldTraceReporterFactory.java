package io.streamshield.plugin;

import java.util.Properties;
import org.apache.flink.traces.reporter.TraceReporter;
import org.apache.flink.traces.reporter.TraceReporterFactory;

/** {@code traces.reporter.streamshield.factory.class: io.streamshield.plugin.StreamShieldTraceReporterFactory}. */
public class StreamShieldTraceReporterFactory implements TraceReporterFactory {
    @Override
    public TraceReporter createTraceReporter(Properties properties) {
        return new StreamShieldTraceReporter();
    }
}
