package io.streamshield.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.streamshield.plugin.protocol.Frames;
import io.streamshield.plugin.protocol.Json;
import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executor;
import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.JobInfo;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.MetricConfig;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.metrics.SimpleCounter;
import org.apache.flink.traces.Span;
import org.apache.flink.core.failure.FailureEnricher;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The reporters and the enricher against a link that is not started: what they offer is what would be sent. */
class ReportersTest {

    private static AgentLink idleLink() {
        return new AgentLink(AgentLinkTest.config(null, null, 64));
    }

    private static Map<?, ?> only(AgentLink link, int kind) throws Exception {
        List<byte[]> frames = link.drain();
        assertEquals(1, frames.size());
        Frames.Frame f = Frames.read(new ByteArrayInputStream(frames.get(0)), Frames.MAX_FRAME);
        assertEquals(kind, f.kind);
        return (Map<?, ?>) Json.parse(new String(f.payload, StandardCharsets.UTF_8));
    }

    @Test
    void metricReporterForwardsTheCuratedSetWithLabels() throws Exception {
        AgentLink link = idleLink();
        StreamShieldMetricReporter r = new StreamShieldMetricReporter(c -> link);
        MetricConfig conf = new MetricConfig();
        conf.setProperty("include", "myCustom.*");
        r.open(conf);
        MetricGroup job =
                new TestingMetricGroup(
                        "localhost.jobmanager.seq", Map.of("<job_id>", "j1", "<job_name>", "seq", "<host>", "h"));
        SimpleCounter restarts = new SimpleCounter();
        restarts.inc(3);
        r.notifyOfAddedMetric(restarts, "numRestarts", job);
        r.notifyOfAddedMetric((Gauge<Double>) () -> Double.NaN, "lastCheckpointDuration", job);
        r.notifyOfAddedMetric((Gauge<String>) () -> "text", "uptime", job);
        r.notifyOfAddedMetric(new SimpleCounter(), "notCurated", job);
        r.notifyOfAddedMetric((Gauge<Long>) () -> 5L, "myCustomThing", job);
        MetricGroup heap = new TestingMetricGroup("localhost.taskmanager.tm-1.Status.JVM.Memory.Heap", Map.of());
        r.notifyOfAddedMetric((Gauge<Long>) () -> 1024L, "Used", heap);
        MetricGroup other = new TestingMetricGroup("localhost.taskmanager.tm-1.Status.Network", Map.of());
        r.notifyOfAddedMetric((Gauge<Long>) () -> 1L, "Used", other);
        assertEquals(5, r.tracked(), "numRestarts, lastCheckpointDuration, uptime, myCustomThing, heap Used");

        r.report();
        Map<?, ?> batch = only(link, Frames.METRICS);
        List<?> metrics = (List<?>) batch.get("metrics");
        assertEquals(3, metrics.size(), "NaN and text gauges are skipped: " + metrics);
        Map<String, Double> byName = new java.util.HashMap<>();
        for (Object o : metrics) {
            Map<?, ?> m = (Map<?, ?>) o;
            byName.put((String) m.get("name"), (Double) m.get("value"));
            if (m.get("name").equals("numRestarts")) {
                assertEquals(Map.of("job_id", "j1", "job_name", "seq"), m.get("labels"), "host is not a label");
            }
        }
        assertEquals(3.0, byName.get("numRestarts"));
        assertEquals(1024.0, byName.get("Status.JVM.Memory.Heap.Used"));
        assertEquals(5.0, byName.get("myCustomThing"));

        r.notifyOfRemovedMetric(restarts, "numRestarts", job);
        assertEquals(4, r.tracked());
    }

    @Test
    void theFirstMetricWithATaskManagerIdTellsTheLinkFlinksId() {
        AgentLink link = new AgentLink(AgentLinkTest.taskManagerWithoutId(null, 10_000));
        StreamShieldMetricReporter r = new StreamShieldMetricReporter(c -> link);
        r.open(new MetricConfig());
        // The process's metrics (no <tm_id>) come and go unnoticed.
        r.notifyOfAddedMetric(new SimpleCounter(), "numRestarts", new TestingMetricGroup("h.x", Map.of("<host>", "h")));
        assertTrue(link.wantsResourceId());
        // Any metric of the TaskManager's group carries it, curated or not.
        MetricGroup tm =
                new TestingMetricGroup(
                        "127.0.0.1.taskmanager.127_0_0_1:40123-a1b2c3.Status.Network",
                        Map.of("<host>", "127.0.0.1", "<tm_id>", "127.0.0.1:40123-a1b2c3"));
        r.notifyOfAddedMetric(new SimpleCounter(), "TotalMemorySegments", tm);
        assertFalse(link.wantsResourceId());
        assertEquals("127.0.0.1:40123-a1b2c3", link.learntResourceId());
        r.notifyOfAddedMetric(
                new SimpleCounter(), "numRecordsIn", new TestingMetricGroup("x", Map.of("<tm_id>", "other")));
        assertEquals("127.0.0.1:40123-a1b2c3", link.learntResourceId(), "the first one counts");
    }

    @Test
    void aReporterConfiguredWithAnIdOrInAJobManagerLearnsNothing() {
        MetricGroup tm = new TestingMetricGroup("h.taskmanager.t", Map.of("<tm_id>", "127.0.0.1:40123-a1b2c3"));
        MetricConfig named = new MetricConfig();
        named.setProperty("resource-id", "tm-1");
        named.setProperty("role", "tm");
        AgentLink explicit = new AgentLink(LinkConfig.resolve(named, Map.of(), "", 1, "x"));
        StreamShieldMetricReporter r = new StreamShieldMetricReporter(c -> explicit);
        r.open(named);
        r.notifyOfAddedMetric(new SimpleCounter(), "numRecordsIn", tm);
        assertFalse(explicit.wantsResourceId());
        assertNull(explicit.learntResourceId());
        MetricConfig jmConf = new MetricConfig();
        jmConf.setProperty("role", "jm");
        AgentLink jm = new AgentLink(LinkConfig.resolve(jmConf, Map.of(), "", 1, "x"));
        assertFalse(jm.wantsResourceId());
    }

    @Test
    void aTaskManagersReporterLinksWithFlinksIdEndToEnd(@TempDir Path dir) throws Exception {
        try (FakeAgent agent = FakeAgent.unix(dir.resolve("plugin.sock"))) {
            MetricConfig conf = new MetricConfig();
            conf.setProperty("agent-address", agent.address);
            conf.setProperty("role", "tm");
            AgentLink[] made = new AgentLink[1];
            StreamShieldMetricReporter r =
                    new StreamShieldMetricReporter(
                            c -> {
                                made[0] = new AgentLink(LinkConfig.resolve(c));
                                made[0].start();
                                return made[0];
                            });
            try {
                r.open(conf);
                Thread.sleep(100);
                assertTrue(agent.hellos.isEmpty(), "the link waits for Flink's id");
                r.notifyOfAddedMetric(
                        (Gauge<Long>) () -> 1L,
                        "Used",
                        new TestingMetricGroup(
                                "localhost.taskmanager.localhost:33417-6a0e1f.Status.JVM.Memory.Heap",
                                Map.of("<host>", "localhost", "<tm_id>", "localhost:33417-6a0e1f")));
                AgentLinkTest.await(made[0]::connected, 5_000, "the handshake");
                assertEquals("localhost:33417-6a0e1f", agent.hellos.get(0).get("resource_id"));
                assertEquals("tm", agent.hellos.get(0).get("role"));
                r.report();
                Frames.Frame batch = agent.next(Frames.METRICS, 5_000);
                assertNotNull(batch);
                Map<?, ?> m = (Map<?, ?>) Json.parse(new String(batch.payload, StandardCharsets.UTF_8));
                Map<?, ?> heap = (Map<?, ?>) ((List<?>) m.get("metrics")).get(0);
                assertEquals("Status.JVM.Memory.Heap.Used", heap.get("name"));
                assertEquals(Map.of("tm_id", "localhost:33417-6a0e1f"), heap.get("labels"));
            } finally {
                made[0].close();
            }
        }
    }

    @Test
    void valuesOfEveryMetricKind() {
        assertEquals(1.0, StreamShieldMetricReporter.valueOf((Gauge<Boolean>) () -> true));
        assertNull(StreamShieldMetricReporter.valueOf((Gauge<Object>) () -> null));
        assertNull(
                StreamShieldMetricReporter.valueOf(
                        (Gauge<Long>)
                                () -> {
                                    throw new IllegalStateException("gauge broke");
                                }));
        assertNull(StreamShieldMetricReporter.valueOf((Gauge<Double>) () -> Double.POSITIVE_INFINITY));
    }

    @Test
    void traceReporterForwardsSpans() throws Exception {
        AgentLink link = idleLink();
        StreamShieldTraceReporter r = new StreamShieldTraceReporter(c -> link);
        r.open(new MetricConfig());
        Span span =
                Span.builder(ReportersTest.class, "JobInitialization")
                        .setStartTsMillis(10)
                        .setEndTsMillis(25)
                        .setAttribute("restoreStateDurationMs", 7L)
                        .setAttribute("jobId", "j1")
                        .build();
        r.notifyOfAddedSpan(span);
        Map<?, ?> m = only(link, Frames.SPAN);
        assertEquals("JobInitialization", m.get("name"));
        assertEquals(15.0, (Double) m.get("end_ms") - (Double) m.get("start_ms"));
        assertEquals(7.0, ((Map<?, ?>) m.get("attributes")).get("restoreStateDurationMs"));
        assertEquals("j1", ((Map<?, ?>) m.get("attributes")).get("jobId"));
    }

    @Test
    void traceReporterForwardsChildSpansWhereFlinkHasThem() throws Exception {
        AgentLink link = idleLink();
        StreamShieldTraceReporter r = new StreamShieldTraceReporter(c -> link);
        r.open(new MetricConfig());
        Span leaf = new TestingSpan("Leaf", 12, 13, Map.of("ok", true), List.of());
        Span child = new TestingSpan("Child", 11, 14, Map.of("subtask", 3L), List.of(leaf));
        r.notifyOfAddedSpan(new TestingSpan("Checkpoint", 10, 20, Map.of("checkpointId", 7L), List.of(child)));
        Map<?, ?> m = only(link, Frames.SPAN);
        assertEquals("Checkpoint", m.get("name"));
        assertEquals(7.0, ((Map<?, ?>) m.get("attributes")).get("checkpointId"));
        // Span.getChildren() exists from Flink 2.x on: there the tree travels along; on 1.x spans do not nest.
        assertEquals(FlinkVersionTest.major() >= 2, StreamShieldTraceReporter.spansNest());
        if (!StreamShieldTraceReporter.spansNest()) {
            assertNull(m.get("children"));
            return;
        }
        List<?> children = (List<?>) m.get("children");
        assertEquals(1, children.size());
        Map<?, ?> c = (Map<?, ?>) children.get(0);
        assertEquals("Child", c.get("name"));
        assertEquals(3.0, ((Map<?, ?>) c.get("attributes")).get("subtask"));
        Map<?, ?> l = (Map<?, ?>) ((List<?>) c.get("children")).get(0);
        assertEquals("Leaf", l.get("name"));
        assertEquals(true, ((Map<?, ?>) l.get("attributes")).get("ok"));
        assertNull(l.get("children"), "no children, no field");

        // A pathological depth is cut, not followed.
        Span deep = new TestingSpan("d0", 0, 1, Map.of(), List.of());
        for (int i = 1; i <= 20; i++) {
            deep = new TestingSpan("d" + i, 0, 1, Map.of(), List.of(deep));
        }
        r.notifyOfAddedSpan(deep);
        Map<?, ?> level = only(link, Frames.SPAN);
        int depth = 0;
        while (level.get("children") != null) {
            level = (Map<?, ?>) ((List<?>) level.get("children")).get(0);
            depth++;
        }
        assertEquals(StreamShieldTraceReporter.MAX_DEPTH, depth);
    }

    @Test
    void failureEnricherSendsTheFailureAndLabelsIt() throws Exception {
        AgentLink link = idleLink();
        java.util.concurrent.atomic.AtomicInteger asked = new java.util.concurrent.atomic.AtomicInteger();
        StreamShieldFailureEnricher e =
                new StreamShieldFailureEnricher(
                        () -> {
                            asked.incrementAndGet();
                            return link;
                        });
        // The warm-up links before any failure and sends nothing.
        e.warmUp();
        assertEquals(1, asked.get());
        assertTrue(link.drain().isEmpty(), "the warm-up sends nothing");
        assertEquals(java.util.Set.of("streamshield.event"), e.getOutputKeys());
        JobID job = new JobID();
        Map<String, String> labels =
                e.processFailure(new IllegalStateException("boom"), new TestingContext(job)).get();
        String id = labels.get("streamshield.event");
        assertTrue(id.endsWith("-1"), id);
        Map<?, ?> m = only(link, Frames.FAILURE);
        assertEquals("TASK_MANAGER", m.get("failure_type"));
        assertEquals("java.lang.IllegalStateException", m.get("exception"));
        assertEquals("boom", m.get("message"));
        assertEquals(job.toString(), m.get("job_id"));
        assertEquals("seq", m.get("job_name"));
        assertEquals(id, m.get("event"));
        assertTrue(e.processFailure(null, new TestingContext(job)).get().get("streamshield.event").endsWith("-2"));
        link.drain();
        // A context that cannot tell the job still reports the failure (and never throws into Flink).
        assertTrue(e.processFailure(new RuntimeException("x"), new TestingContext(null)).get().get(LABEL).endsWith("-3"));
        Map<?, ?> anonymous = only(link, Frames.FAILURE);
        assertEquals("", anonymous.get("job_id"));
        assertEquals("", anonymous.get("job_name"));
    }

    private static final String LABEL = StreamShieldFailureEnricher.LABEL;

    /**
     * A failure context for a TaskManager loss (of no known job when {@code job} is null). Only what both Flink 1.20
     * and 2.x declare: 2.x removed the 1.x default methods getJobId()/getJobName(), so the job comes from
     * getJobInfo().
     */
    static final class TestingContext implements FailureEnricher.Context {
        private final JobID job;

        TestingContext(JobID job) {
            this.job = job;
        }

        @Override
        public MetricGroup getMetricGroup() {
            return new TestingMetricGroup("jm", Map.of());
        }

        @Override
        public FailureType getFailureType() {
            return FailureType.TASK_MANAGER;
        }

        @Override
        public ClassLoader getUserClassLoader() {
            return getClass().getClassLoader();
        }

        @Override
        public Executor getIOExecutor() {
            return Runnable::run;
        }

        @Override
        public JobInfo getJobInfo() {
            if (job == null) {
                throw new IllegalStateException("no job information");
            }
            return new JobInfo() {
                @Override
                public JobID getJobId() {
                    return job;
                }

                @Override
                public String getJobName() {
                    return "seq";
                }
            };
        }
    }
}
