package io.streamshield.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.streamshield.plugin.protocol.Frames;
import io.streamshield.plugin.protocol.Json;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Map;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class AgentLinkTest {

    static LinkConfig config(String address, String secret, int capacity) {
        return new LinkConfig(address, secret, "tm", "tm-9", 4242, "1.20.5", 20, capacity, 0, false, 0);
    }

    /** A TaskManager with no configured id: it waits for Flink's, at most {@code waitMs}, else uses host-77. */
    static LinkConfig taskManagerWithoutId(String address, long waitMs) {
        return new LinkConfig(address, null, "tm", "host-77", 77, "2.3.0", 20, 64, 0, true, waitMs);
    }

    static void await(BooleanSupplier cond, long ms, String what) throws InterruptedException {
        long deadline = System.currentTimeMillis() + ms;
        while (!cond.getAsBoolean()) {
            if (System.currentTimeMillis() > deadline) {
                throw new AssertionError("timed out waiting for " + what);
            }
            Thread.sleep(10);
        }
    }

    @Test
    void tcpLinkHandshakesWithItsSecretAndStreams() throws Exception {
        try (FakeAgent agent = FakeAgent.tcp();
                AgentLink link = new AgentLink(config(agent.address, "s3cr3t", 64))) {
            link.start();
            await(link::connected, 5_000, "the handshake");
            Map<String, Object> hello = agent.hellos.get(0);
            assertEquals("s3cr3t", hello.get("secret"));
            assertEquals("tm-9", hello.get("resource_id"));
            assertEquals("tm", hello.get("role"));
            assertEquals(1.0, hello.get("protocol"));
            assertEquals(4242.0, hello.get("pid"));

            link.offer(Frames.METRICS, Map.of("ts_ms", 1, "dropped", 0, "metrics", java.util.List.of()));
            assertNotNull(agent.next(Frames.METRICS, 5_000), "the metrics batch arrives");
            double last = 0;
            for (int i = 0; i < 3; i++) {
                Frames.Frame hb = agent.next(Frames.HEARTBEAT, 5_000);
                assertNotNull(hb, "heartbeats keep coming");
                double seq = (Double) ((Map<?, ?>) Json.parse(new String(hb.payload, StandardCharsets.UTF_8))).get("seq");
                assertTrue(seq > last, "heartbeat seq increases");
                last = seq;
            }
        }
    }

    @Test
    void aPlannedStopIsHeldUntilTheAgentAnswersThenPassedOn(@TempDir Path dir) throws Exception {
        try (FakeAgent agent = FakeAgent.unix(dir.resolve("agent.sock"));
                AgentLink link = new AgentLink(config(agent.address, null, 64))) {
            link.start();
            await(link::connected, 5_000, "the handshake");
            java.util.concurrent.atomic.AtomicLong passedAt = new java.util.concurrent.atomic.AtomicLong();
            PlannedStop stop = new PlannedStop(link, 10_000, sig -> passedAt.set(System.currentTimeMillis()));
            Thread term = new Thread(() -> stop.handle(new sun.misc.Signal("TERM")));
            term.start();
            Frames.Frame stopping = agent.next(Frames.STOPPING, 5_000);
            assertNotNull(stopping, "the agent hears of the stop");
            Map<?, ?> s = (Map<?, ?>) Json.parse(new String(stopping.payload, StandardCharsets.UTF_8));
            assertEquals("SIGTERM", s.get("signal"));
            assertEquals(10_000.0, s.get("max_wait_ms"));
            // Held: the signal is not passed on while the checkpoint runs, and heartbeats keep flowing (the reader
            // waiting for the answer must not block the writer).
            Thread.sleep(300);
            assertEquals(0, passedAt.get(), "the stop is held");
            agent.frames.clear();
            assertNotNull(agent.next(Frames.HEARTBEAT, 2_000), "heartbeats continue while the stop is held");
            long answered = System.currentTimeMillis();
            agent.send(Frames.STOP_READY, "{\"outcome\":\"checkpointed\",\"detail\":\"checkpoint 7\"}");
            term.join(5_000);
            assertFalse(term.isAlive(), "the handler returns once the agent answered");
            assertTrue(passedAt.get() >= answered, "the signal is passed on after the answer");
        }
    }

    @Test
    void aPlannedStopIsNotHeldWithoutAnAgentAndTimesOutWithASilentOne(@TempDir Path dir) throws Exception {
        try (AgentLink unlinked = new AgentLink(config(null, null, 64))) {
            assertEquals("not-linked", unlinked.announceStop("SIGTERM", 10_000).get("outcome"));
        }
        try (FakeAgent agent = FakeAgent.unix(dir.resolve("agent.sock"));
                AgentLink link = new AgentLink(config(agent.address, null, 64))) {
            link.start();
            await(link::connected, 5_000, "the handshake");
            long t0 = System.currentTimeMillis();
            Map<?, ?> answer = link.announceStop("SIGTERM", 300);
            assertEquals("timeout", answer.get("outcome"));
            assertTrue(System.currentTimeMillis() - t0 < 3_000, "the wait is bounded");
        }
    }

    @Test
    void anExplicitResourceIdIsUsedAsItIs() {
        String tmCommand = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner --configDir x";
        java.util.Properties conf = new java.util.Properties();
        LinkConfig guessed = LinkConfig.resolve(conf, Map.of(), tmCommand, 7, "x");
        assertTrue(guessed.resourceIdFromFlink);
        assertTrue(guessed.resourceId.endsWith("-7"), "host-pid as the fallback: " + guessed.resourceId);
        LinkConfig fromEnv = LinkConfig.resolve(conf, Map.of("STREAMSHIELD_RESOURCE_ID", "tm-env"), tmCommand, 7, "x");
        assertFalse(fromEnv.resourceIdFromFlink);
        assertEquals("tm-env", fromEnv.resourceId);
        conf.setProperty("resource-id", "tm-conf");
        LinkConfig fromConf = LinkConfig.resolve(conf, Map.of("STREAMSHIELD_RESOURCE_ID", "tm-env"), tmCommand, 7, "x");
        assertFalse(fromConf.resourceIdFromFlink);
        assertEquals("tm-conf", fromConf.resourceId, "the reporter's setting first");
        java.util.Properties wait = new java.util.Properties();
        wait.put("resource-id-wait-ms", 2500);
        assertEquals(2_500, LinkConfig.resolve(wait, Map.of(), tmCommand, 7, "x").resourceIdWaitMs);
        wait.put("resource-id-wait-ms", "-5");
        org.junit.jupiter.api.Assertions.assertThrows(
                IllegalArgumentException.class, () -> LinkConfig.resolve(wait, Map.of(), tmCommand, 7, "x"));
    }

    @Test
    void unixDomainSocketLinkNeedsNoSecret(@TempDir Path dir) throws Exception {
        try (FakeAgent agent = FakeAgent.unix(dir.resolve("plugin.sock"));
                AgentLink link = new AgentLink(config(agent.address, null, 64))) {
            link.start();
            await(link::connected, 5_000, "the handshake");
            assertFalse(agent.hellos.get(0).containsKey("secret"));
            assertNotNull(agent.next(Frames.HEARTBEAT, 5_000));
        }
    }

    @Test
    void aRejectedHandshakeIsRetriedWithBackoffAndNeverBlocksFlink() throws Exception {
        try (FakeAgent agent = FakeAgent.tcp();
                AgentLink link = new AgentLink(config(agent.address, "wrong", 16))) {
            agent.rejectWith = "wrong secret";
            link.start();
            await(() -> agent.hellos.size() >= 3, 5_000, "three attempts");
            assertFalse(link.connected());
            assertEquals(0, link.connects());
            long start = System.nanoTime();
            for (int i = 0; i < 1000; i++) {
                link.offer(Frames.SPAN, Map.of("i", i));
            }
            assertTrue((System.nanoTime() - start) / 1_000_000 < 1_000, "offer does not wait for the agent");
            assertEquals(16, link.queued());
            assertEquals(1000 - 16, link.dropped());

            agent.rejectWith = null;
            await(link::connected, 10_000, "the link once the agent accepts");
            Frames.Frame first = agent.next(Frames.SPAN, 5_000);
            assertNotNull(first);
            assertEquals(
                    984.0,
                    ((Map<?, ?>) Json.parse(new String(first.payload, StandardCharsets.UTF_8))).get("i"),
                    "the oldest messages were the ones dropped");
        }
    }

    @Test
    void noAgentAtAll() throws Exception {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        try (AgentLink link = new AgentLink(config("tcp:127.0.0.1:" + port, "x", 32))) {
            link.start();
            for (int i = 0; i < 100; i++) {
                link.offer(Frames.HEARTBEAT, Map.of("seq", i));
            }
            Thread.sleep(300);
            assertFalse(link.connected());
            assertEquals(32, link.queued());
        }
    }

    @Test
    void reconnectsAfterTheAgentGoesAway() throws Exception {
        try (FakeAgent agent = FakeAgent.tcp();
                AgentLink link = new AgentLink(config(agent.address, "s", 64))) {
            link.start();
            await(link::connected, 5_000, "first connection");
            agent.dropConnections();
            await(() -> link.connects() >= 2, 10_000, "a second connection");
            assertEquals(2, agent.hellos.size());
        }
    }

    @Test
    void aTaskManagerWithoutAConfiguredIdSaysHelloWithFlinksOwn(@TempDir Path dir) throws Exception {
        try (FakeAgent agent = FakeAgent.unix(dir.resolve("plugin.sock"));
                AgentLink link = new AgentLink(taskManagerWithoutId(agent.address, 10_000))) {
            long t0 = System.currentTimeMillis();
            link.start();
            assertTrue(link.wantsResourceId());
            // Messages offered meanwhile wait in the queue; offer does not wait for the id.
            link.offer(Frames.METRICS, Map.of("ts_ms", 1, "dropped", 0, "metrics", java.util.List.of()));
            assertTrue(System.currentTimeMillis() - t0 < 1_000);
            Thread.sleep(200);
            assertTrue(agent.hellos.isEmpty(), "no HELLO before the id is known");
            link.learnResourceId("127.0.0.1:40123-a1b2c3");
            link.learnResourceId("another");
            assertFalse(link.wantsResourceId());
            await(link::connected, 5_000, "the handshake");
            assertEquals("127.0.0.1:40123-a1b2c3", agent.hellos.get(0).get("resource_id"));
            assertEquals("127.0.0.1:40123-a1b2c3", link.resourceId());
            assertNotNull(agent.next(Frames.METRICS, 5_000), "what was queued goes out");
            agent.dropConnections();
            await(() -> agent.hellos.size() >= 2, 10_000, "the reconnection");
            assertEquals("127.0.0.1:40123-a1b2c3", agent.hellos.get(1).get("resource_id"), "the id stays");
        }
    }

    @Test
    void withoutFlinksIdTheLinkFallsBackToTheGuessInBoundedTime(@TempDir Path dir) throws Exception {
        try (FakeAgent agent = FakeAgent.unix(dir.resolve("plugin.sock"));
                AgentLink link = new AgentLink(taskManagerWithoutId(agent.address, 300))) {
            long t0 = System.currentTimeMillis();
            link.start();
            await(link::connected, 5_000, "the handshake after the wait");
            assertTrue(System.currentTimeMillis() - t0 >= 300, "it waited");
            assertEquals("host-77", agent.hellos.get(0).get("resource_id"));
            // Too late: the link keeps the id it said HELLO with.
            link.learnResourceId("127.0.0.1:40123-a1b2c3");
            agent.dropConnections();
            await(() -> agent.hellos.size() >= 2, 10_000, "the reconnection");
            assertEquals("host-77", agent.hellos.get(1).get("resource_id"));
        }
    }

    @Test
    void aLinkClosedWhileWaitingForTheIdNeverConnects(@TempDir Path dir) throws Exception {
        try (FakeAgent agent = FakeAgent.unix(dir.resolve("plugin.sock"))) {
            AgentLink link = new AgentLink(taskManagerWithoutId(agent.address, 10_000));
            link.start();
            Thread.sleep(100);
            link.close();
            link.learnResourceId("late");
            Thread.sleep(300);
            assertTrue(agent.hellos.isEmpty());
            assertEquals(0, link.connects());
        }
    }

    @Test
    void configurationFromEnvironmentAndCommandLine() {
        java.util.Properties conf = new java.util.Properties();
        LinkConfig c =
                LinkConfig.resolve(
                        conf,
                        Map.of("STREAMSHIELD_AGENT_ADDRESS", "unix:/run/a.sock"),
                        "org.apache.flink.runtime.taskexecutor.TaskManagerRunner --configDir x -D taskmanager.resource-id=tm-3",
                        7,
                        "1.20.5");
        assertEquals("tm", c.role);
        assertEquals("tm-3", c.resourceId, "the fallback");
        assertTrue(c.resourceIdFromFlink, "no resource id configured: the TaskManager's link waits for Flink's");
        assertEquals(10_000, c.resourceIdWaitMs);
        assertEquals("unix:/run/a.sock", c.address);
        assertEquals(100, c.heartbeatIntervalMs);
        assertEquals(0, c.plannedStopWaitMs, "planned stops are off unless configured");
        java.util.Properties held = new java.util.Properties();
        held.setProperty("planned-stop-wait-ms", "10000");
        assertEquals(10_000, LinkConfig.resolve(held, Map.of(), "", 1, "x").plannedStopWaitMs);
        // Flink's YAML configuration hands a number over as an Integer, not a String.
        held.put("planned-stop-wait-ms", 7000);
        assertEquals(7_000, LinkConfig.resolve(held, Map.of(), "", 1, "x").plannedStopWaitMs);
        held.setProperty("planned-stop-wait-ms", "-1");
        org.junit.jupiter.api.Assertions.assertThrows(
                IllegalArgumentException.class, () -> LinkConfig.resolve(held, Map.of(), "", 1, "x"));
        LinkConfig jm =
                LinkConfig.resolve(
                        conf, Map.of(), "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint", 8, "x");
        assertEquals("jm", jm.role);
        assertEquals("jobmanager", jm.resourceId);
        assertFalse(jm.resourceIdFromFlink, "the JobManager is jobmanager");
        conf.setProperty("heartbeat-interval-ms", "1");
        org.junit.jupiter.api.Assertions.assertThrows(
                IllegalArgumentException.class, () -> LinkConfig.resolve(conf, Map.of(), "", 1, "x"));
    }
}
