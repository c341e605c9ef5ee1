package io.streamshield.plugin;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.failure.FailureEnricher;
import org.apache.flink.core.failure.FailureEnricherFactory;

/** Creates {@link StreamShieldFailureEnricher}; list the enricher class in {@code jobmanager.failure-enrichers}. */
public class StreamShieldFailureEnricherFactory implements FailureEnricherFactory {
    @Override
    public FailureEnricher createFailureEnricher(Configuration conf) {
        return new StreamShieldFailureEnricher();
    }
}
