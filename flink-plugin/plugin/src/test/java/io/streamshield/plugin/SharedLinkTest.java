package io.streamshield.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.streamshield.plugin.protocol.Frames;
import io.streamshield.plugin.protocol.Json;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Map;
import java.util.Properties;
import org.apache.flink.api.common.JobID;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.failure.FailureEnricher;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The JVM's shared link as the factories create it: from Flink's configuration, in whatever order. */
class SharedLinkTest {

    private static Configuration jobManagerConfig(String address) {
        Configuration conf = new Configuration();
        String factory = StreamShieldMetricReporterFactory.class.getName();
        conf.set(text("metrics.reporter.streamshield.factory.class"), factory);
        if (address != null) {
            conf.set(text("metrics.reporter.streamshield.agent-address"), address);
        }
        // config.yaml types a bare number as one.
        String interval = "metrics.reporter.streamshield.heartbeat-interval-ms";
        conf.set(ConfigOptions.key(interval).intType().noDefaultValue(), 50);
        conf.set(text("metrics.reporter.other.agent-address"), "tcp:1.2.3.4:5");
        conf.set(text("traces.reporter.streamshield.agent-address"), "tcp:127.0.0.1:7");
        conf.set(text("jobmanager.failure-enrichers"), StreamShieldFailureEnricher.class.getName());
        return conf;
    }

    private static org.apache.flink.configuration.ConfigOption<String> text(String key) {
        return ConfigOptions.key(key).stringType().noDefaultValue();
    }

    @Test
    void theEnricherReadsTheMetricReportersKeysFromFlinksConfiguration() {
        Properties p = StreamShieldFailureEnricherFactory.reporterSettings(jobManagerConfig("unix:/run/x.sock"));
        assertEquals("unix:/run/x.sock", p.getProperty("agent-address"));
        assertEquals("50", p.getProperty("heartbeat-interval-ms"), "a number arrives as text");
        assertEquals(StreamShieldMetricReporterFactory.class.getName(), p.getProperty("factory.class"));
        assertEquals(3, p.size(), "only metrics.reporter.streamshield.*: " + p);
        assertTrue(StreamShieldFailureEnricherFactory.reporterSettings(null).isEmpty());
        LinkConfig c =
                LinkConfig.resolve(
                        p, Map.of(), "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint", 3, "x");
        assertEquals("unix:/run/x.sock", c.address);
        assertEquals(50, c.heartbeatIntervalMs);
        assertEquals("jm", c.role);
        assertEquals("jobmanager", c.resourceId);
    }

    @Test
    void anEnricherCreatedFirstLinksFromConfigYamlAlone(@TempDir Path dir) throws Exception {
        try (FakeAgent agent = FakeAgent.unix(dir.resolve("plugin.sock"))) {
            FailureEnricher created =
                    new StreamShieldFailureEnricherFactory().createFailureEnricher(jobManagerConfig(agent.address));
            StreamShieldFailureEnricher e = (StreamShieldFailureEnricher) created;
            AgentLink link = e.link();
            try {
                // Created and linked when Flink creates the enricher, before any failure.
                AgentLinkTest.await(link::connected, 5_000, "the enricher's link");
                Map<String, Object> hello = agent.hellos.get(0);
                assertEquals("jm", hello.get("role"));
                assertEquals("jobmanager", hello.get("resource_id"));
                assertEquals(50, link.config().heartbeatIntervalMs);
                FailureEnricher.Context context = new ReportersTest.TestingContext(new JobID());
                Map<String, String> labels = e.processFailure(new IllegalStateException("lost"), context).get();
                String id = labels.get(StreamShieldFailureEnricher.LABEL);
                Frames.Frame f = agent.next(Frames.FAILURE, 5_000);
                assertNotNull(f, "the failure reaches the agent");
                Map<?, ?> m = (Map<?, ?>) Json.parse(new String(f.payload, StandardCharsets.UTF_8));
                assertEquals(id, m.get("event"));
                assertEquals("lost", m.get("message"));
                // The metric reporter, opened later in the same JVM, shares the link: one connection.
                assertSame(link, AgentLink.shared(LinkConfig.resolve(new Properties())));
                assertEquals(1, agent.hellos.size());
            } finally {
                link.close();
            }
        }
    }

    @Test
    void aLinkCreatedWithoutAnAddressTakesTheFirstSettingsThatHaveOne(@TempDir Path dir) throws Exception {
        try (FakeAgent agent = FakeAgent.unix(dir.resolve("plugin.sock"))) {
            // The trace reporter's settings (traces.reporter.streamshield.*) name no agent.
            AgentLink first = AgentLink.shared(AgentLinkTest.config(null, null, 64));
            try {
                first.offer(Frames.SPAN, Map.of("name", "early"));
                Thread.sleep(100);
                assertFalse(first.connected());
                AgentLink second = AgentLink.shared(AgentLinkTest.config(agent.address, null, 64));
                assertSame(first, second, "one link per JVM");
                AgentLinkTest.await(first::connected, 5_000, "the link once an address is known");
                assertNotNull(agent.next(Frames.SPAN, 5_000), "what was queued before goes out");
                // A third caller with another address changes nothing: the first address wins.
                AgentLink third = AgentLink.shared(AgentLinkTest.config("tcp:127.0.0.1:1", "s", 64));
                assertSame(first, third);
                assertEquals(agent.address, third.config().address);
                Thread.sleep(100);
                assertEquals(1, agent.hellos.size());
            } finally {
                first.close();
            }
        }
    }
}
