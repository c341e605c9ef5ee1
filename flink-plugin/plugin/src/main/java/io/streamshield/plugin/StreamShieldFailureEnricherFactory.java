package io.streamshield.plugin;

import java.util.Map;
import java.util.Properties;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.failure.FailureEnricher;
import org.apache.flink.core.failure.FailureEnricherFactory;

/**
 * Creates {@link StreamShieldFailureEnricher}; list the enricher class in {@code jobmanager.failure-enrichers}.
 *
 * <p>The enricher links with the metric reporter's settings ({@code metrics.reporter.streamshield.*}), read here from
 * Flink's configuration: a JobManager configured only through config.yaml links the same whether the reporter or the
 * enricher creates the JVM's link first (or the reporter is not configured at all).
 */
public class StreamShieldFailureEnricherFactory implements FailureEnricherFactory {
    /** The metric reporter's name in StreamShield's profiles (deploy/local/profiles/shield.yaml). */
    static final String REPORTER_PREFIX = "metrics.reporter.streamshield.";

    @Override
    public FailureEnricher createFailureEnricher(Configuration conf) {
        return new StreamShieldFailureEnricher(reporterSettings(conf));
    }

    /**
     * The metric reporter's settings without their prefix, as the reporter itself gets them. {@code toMap()} (in 1.20
     * and 2.x alike) gives every value as text, also those config.yaml typed as numbers.
     */
    static Properties reporterSettings(Configuration conf) {
        Properties settings = new Properties();
        if (conf == null) {
            return settings;
        }
        for (Map.Entry<String, String> e : conf.toMap().entrySet()) {
            String key = e.getKey();
            if (key.startsWith(REPORTER_PREFIX) && key.length() > REPORTER_PREFIX.length() && e.getValue() != null) {
                settings.setProperty(key.substring(REPORTER_PREFIX.length()), e.getValue());
            }
        }
        return settings;
    }
}
