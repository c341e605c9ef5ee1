package io.streamshield.plugin;

import io.streamshield.plugin.protocol.Frames;
import io.streamshield.plugin.protocol.Json;
import java.io.BufferedOutputStream;
import java.io.Closeable;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ProtocolFamily;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Timer;
import java.util.TimerTask;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The link from this JVM to its StreamShield agent: one background thread that connects (Unix domain socket on Java
 * 16+, else loopback TCP with the agent's secret), performs the handshake, sends a heartbeat every interval and
 * drains a bounded queue of messages.
 *
 * <p>It never blocks a Flink thread: {@link #offer} only enqueues; when the queue is full the oldest message is
 * dropped and counted. When the agent is away the link retries with back-off (100 ms doubling to 5 s) and says so in
 * one log line per outage; Flink keeps running. One link per JVM (per plugin class loader), shared by the reporter,
 * the trace reporter and the failure enricher.
 */
public final class AgentLink implements Closeable {
    private static final Logger LOG = LoggerFactory.getLogger(AgentLink.class);
    private static final long MAX_BACKOFF_MS = 5_000;
    private static final long HANDSHAKE_TIMEOUT_MS = 5_000;
    private static final Timer TIMER = new Timer("streamshield-link-timer", true);

    private static AgentLink shared;

    /** Replaced only while the link has not started: see {@link #shared}. */
    private volatile LinkConfig config;
    /** Whether the link's thread was started; guarded by this. */
    private boolean started;
    /** Encoded frames waiting to be sent; guarded by itself. */
    private final ArrayDeque<byte[]> queue = new ArrayDeque<>();
    private final AtomicLong dropped = new AtomicLong();
    private final AtomicLong sent = new AtomicLong();
    private final AtomicLong connects = new AtomicLong();
    private final Thread thread;
    private volatile boolean closed;
    private volatile boolean connected;
    private volatile Closeable current;
    private long heartbeatSeq;
    /** Flink's id for this TaskManager, as the metric reporter saw it ({@code <tm_id>}). */
    private final CompletableFuture<String> flinkResourceId = new CompletableFuture<>();
    /** The resource id HELLO names: settled by the link's thread before its first connection. */
    private volatile String resourceId;
    /** The answer to a STOPPING announcement, while one is outstanding. */
    private volatile CompletableFuture<Map<?, ?>> stopReady;

    /**
     * The JVM's link, created (and started) by the first caller; later callers share it. A link created with no agent
     * address (by a component whose settings name none, e.g. the trace reporter's {@code traces.reporter.*} keys)
     * takes the settings of the first later caller that has one and starts then: whichever of the reporters and the
     * enricher comes first, the JVM links once it knows where its agent is.
     */
    public static synchronized AgentLink shared(LinkConfig config) {
        if (shared == null || shared.closed) {
            shared = new AgentLink(config);
            shared.start();
        } else if (shared.config.address == null && config.address != null) {
            shared.config = config;
            shared.start();
        }
        return shared;
    }

    AgentLink(LinkConfig config) {
        this.config = config;
        this.thread = new Thread(this::run, "streamshield-agent-link");
        this.thread.setDaemon(true);
    }

    synchronized void start() {
        if (started) {
            return;
        }
        if (config.address == null) {
            LOG.info(
                    "StreamShield plugin: no agent address configured (agent-address, STREAMSHIELD_AGENT_ADDRESS);"
                            + " not linking.");
            return;
        }
        started = true;
        LOG.info("StreamShield plugin: linking to {}", config);
        thread.start();
    }

    /** The settings the link uses (tests). */
    LinkConfig config() {
        return config;
    }

    /** Enqueues a message; never blocks. Returns false when it had to drop the oldest message to make room. */
    public boolean offer(int kind, Map<String, Object> payload) {
        byte[] body = Json.write(payload).getBytes(StandardCharsets.UTF_8);
        if (body.length + 1 > Frames.MAX_FRAME) {
            dropped.incrementAndGet();
            return false;
        }
        byte[] frame = Frames.encode(kind, body);
        boolean room = true;
        synchronized (queue) {
            if (queue.size() >= config.queueCapacity) {
                queue.pollFirst();
                dropped.incrementAndGet();
                room = false;
            }
            queue.addLast(frame);
            queue.notifyAll();
        }
        return room;
    }

    /**
     * Tells the agent that this process was asked to stop and waits (blocking the caller, at most {@code maxWaitMs})
     * for its STOP_READY answer. Returns the answer ({@code outcome}, {@code detail}), or a map saying why there is
     * none ({@code not-linked}, {@code timeout}). Called by the planned-stop signal handler, never by a Flink thread.
     */
    public Map<?, ?> announceStop(String signal, long maxWaitMs) {
        if (!connected) {
            return Map.of("outcome", "not-linked", "detail", "no agent link");
        }
        CompletableFuture<Map<?, ?>> answer = new CompletableFuture<>();
        stopReady = answer;
        Map<String, Object> stopping = new LinkedHashMap<>();
        stopping.put("signal", signal);
        stopping.put("ts_ms", System.currentTimeMillis());
        stopping.put("max_wait_ms", maxWaitMs);
        offer(Frames.STOPPING, stopping);
        try {
            return answer.get(maxWaitMs, TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            return Map.of("outcome", "timeout", "detail", "no answer within " + maxWaitMs + " ms");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Map.of("outcome", "interrupted", "detail", "interrupted while waiting");
        } catch (ExecutionException e) {
            return Map.of("outcome", "failed", "detail", String.valueOf(e.getCause()));
        } finally {
            stopReady = null;
        }
    }

    /**
     * Flink's own id for this TaskManager (the {@code <tm_id>} variable of its metrics), from the metric reporter.
     * Only the first counts; never blocks.
     */
    public void learnResourceId(String flinkId) {
        if (flinkId != null && !flinkId.isEmpty()) {
            flinkResourceId.complete(flinkId);
        }
    }

    /** Whether the link still waits for {@link #learnResourceId} (cheap: the reporter asks on every new metric). */
    public boolean wantsResourceId() {
        return config.resourceIdFromFlink && !flinkResourceId.isDone();
    }

    /** Flink's id as learnt so far; null before (tests). */
    String learntResourceId() {
        return flinkResourceId.getNow(null);
    }

    /** The resource id the link says HELLO with; null until settled. */
    String resourceId() {
        return resourceId;
    }

    public long dropped() {
        return dropped.get();
    }

    public long sent() {
        return sent.get();
    }

    public boolean connected() {
        return connected;
    }

    public long connects() {
        return connects.get();
    }

    int queued() {
        synchronized (queue) {
            return queue.size();
        }
    }

    /** Takes every queued frame (tests of the components that offer messages, on a link that was not started). */
    java.util.List<byte[]> drain() {
        synchronized (queue) {
            java.util.List<byte[]> all = new java.util.ArrayList<>(queue);
            queue.clear();
            return all;
        }
    }

    @Override
    public void close() {
        closed = true;
        closeQuietly(current);
        synchronized (queue) {
            queue.notifyAll();
        }
        thread.interrupt();
    }

    private void run() {
        if (!settleResourceId()) {
            return;
        }
        long backoff = 100;
        String lastProblem = null;
        while (!closed) {
            try {
                session();
                backoff = 100;
            } catch (Exception e) {
                connected = false;
                String problem = e.getClass().getSimpleName() + ": " + e.getMessage();
                if (!problem.equals(lastProblem)) {
                    LOG.warn(
                            "StreamShield agent at {} not reachable ({}); Flink keeps running, retrying.",
                            config.address,
                            problem);
                    lastProblem = problem;
                }
            } finally {
                closeQuietly(current);
                current = null;
                connected = false;
            }
            if (closed) {
                break;
            }
            try {
                Thread.sleep(backoff);
            } catch (InterruptedException e) {
                if (closed) {
                    break;
                }
            }
            backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
        }
    }

    /**
     * Decides the resource id before the first HELLO: the configured one, or (a TaskManager without one) Flink's, as
     * soon as the metric reporter has seen it, at most {@code resourceIdWaitMs}, else the guess. Runs on the link's
     * own thread: nothing of Flink waits for it (messages queue meanwhile). False when the link closed meanwhile.
     */
    private boolean settleResourceId() {
        LinkConfig c = config;
        if (!c.resourceIdFromFlink) {
            resourceId = c.resourceId;
            return true;
        }
        long t0 = System.currentTimeMillis();
        try {
            resourceId = flinkResourceId.get(c.resourceIdWaitMs, TimeUnit.MILLISECONDS);
            LOG.info(
                    "StreamShield plugin: resource id {} (Flink's, from the TaskManager's metrics, after {} ms)",
                    resourceId,
                    System.currentTimeMillis() - t0);
        } catch (TimeoutException | ExecutionException e) {
            resourceId = c.resourceId;
            LOG.warn(
                    "StreamShield plugin: no metric named this TaskManager's Flink id (<tm_id>) within {} ms; using"
                            + " resource id {} (from the command line, else host-pid). Set resource-id or"
                            + " STREAMSHIELD_RESOURCE_ID to name it.",
                    c.resourceIdWaitMs,
                    resourceId);
        } catch (InterruptedException e) {
            if (closed) {
                return false;
            }
            resourceId = c.resourceId;
        }
        return true;
    }

    /** One connection: connect, handshake, then send until something fails. */
    private void session() throws IOException, InterruptedException {
        Connection c = connect();
        current = c.closer;
        TimerTask guard =
                new TimerTask() {
                    @Override
                    public void run() {
                        closeQuietly(c.closer);
                    }
                };
        TIMER.schedule(guard, HANDSHAKE_TIMEOUT_MS);
        OutputStream out = new BufferedOutputStream(c.out, 64 << 10);
        Map<String, Object> hello = new LinkedHashMap<>();
        hello.put("protocol", Frames.PROTOCOL_VERSION);
        hello.put("role", config.role);
        hello.put("resource_id", resourceId);
        hello.put("pid", config.pid);
        hello.put("flink_version", config.flinkVersion);
        if (config.secret != null) {
            hello.put("secret", config.secret);
        }
        out.write(Frames.encode(Frames.HELLO, Json.write(hello).getBytes(StandardCharsets.UTF_8)));
        out.flush();
        Frames.Frame reply;
        try {
            reply = Frames.read(c.in, Frames.HANDSHAKE_MAX_FRAME);
        } finally {
            guard.cancel();
        }
        String text = new String(reply.payload, StandardCharsets.UTF_8);
        if (reply.kind == Frames.REJECT) {
            Object parsed = Json.parse(text);
            Object reason = parsed instanceof Map ? ((Map<?, ?>) parsed).get("reason") : text;
            throw new IOException("agent rejected the handshake: " + reason);
        }
        if (reply.kind != Frames.WELCOME) {
            throw new IOException("expected WELCOME, got frame kind " + reply.kind);
        }
        startReader(c);
        connected = true;
        connects.incrementAndGet();
        LOG.info("StreamShield plugin: linked to the agent at {} as {} {}", config.address, config.role, resourceId);
        long interval = config.heartbeatIntervalMs;
        long nextBeat = System.currentTimeMillis();
        while (!closed) {
            long now = System.currentTimeMillis();
            if (now >= nextBeat) {
                Map<String, Object> hb = new LinkedHashMap<>();
                hb.put("seq", ++heartbeatSeq);
                hb.put("ts_ms", now);
                out.write(Frames.encode(Frames.HEARTBEAT, Json.write(hb).getBytes(StandardCharsets.UTF_8)));
                nextBeat = now + interval;
            }
            byte[] next;
            synchronized (queue) {
                if (queue.isEmpty()) {
                    out.flush();
                    long wait = nextBeat - System.currentTimeMillis();
                    if (wait > 0) {
                        queue.wait(wait);
                    }
                }
                next = queue.pollFirst();
            }
            if (next != null) {
                out.write(next);
                sent.incrementAndGet();
            }
        }
    }

    /**
     * Reads what the agent sends after the handshake (STOP_READY; other kinds are ignored, per the protocol) until
     * the connection ends. A broken frame closes the connection; the writer then reconnects.
     */
    private void startReader(Connection c) {
        Thread reader =
                new Thread(
                        () -> {
                            try {
                                while (!closed) {
                                    Frames.Frame f = Frames.read(c.in, Frames.MAX_FRAME);
                                    if (f.kind == Frames.STOP_READY) {
                                        Object parsed = Json.parse(new String(f.payload, StandardCharsets.UTF_8));
                                        CompletableFuture<Map<?, ?>> waiting = stopReady;
                                        if (waiting != null && parsed instanceof Map) {
                                            waiting.complete((Map<?, ?>) parsed);
                                        }
                                    }
                                }
                            } catch (IOException | RuntimeException e) {
                                if (!closed) {
                                    LOG.debug("StreamShield agent link: reading ended ({})", e.toString());
                                }
                                closeQuietly(c.closer);
                            }
                        },
                        "streamshield-agent-link-reader");
        reader.setDaemon(true);
        reader.start();
    }

    private static final class Connection {
        final InputStream in;
        final OutputStream out;
        final Closeable closer;

        Connection(InputStream in, OutputStream out, Closeable closer) {
            this.in = in;
            this.out = out;
            this.closer = closer;
        }
    }

    private Connection connect() throws IOException {
        String a = config.address;
        if (a.startsWith("unix:")) {
            SocketChannel ch = openUnix(a.substring("unix:".length()));
            return new Connection(reading(ch), Channels.newOutputStream(ch), ch);
        }
        if (a.startsWith("tcp:")) {
            String hostPort = a.substring("tcp:".length());
            int colon = hostPort.lastIndexOf(':');
            if (colon < 0) {
                throw new IOException("agent address " + a + " has no port");
            }
            Socket s = new Socket();
            s.setTcpNoDelay(true);
            s.connect(
                    new InetSocketAddress(hostPort.substring(0, colon), Integer.parseInt(hostPort.substring(colon + 1))),
                    2_000);
            return new Connection(s.getInputStream(), s.getOutputStream(), s);
        }
        throw new IOException("agent address must start with unix: or tcp:, got " + a);
    }

    /**
     * An input stream over a blocking channel that reads it directly. {@code Channels.newInputStream} holds the
     * channel's blocking lock while a read blocks, and {@code Channels.newOutputStream} needs that same lock to write:
     * the reader waiting for the agent would stop the heartbeats.
     */
    static InputStream reading(SocketChannel ch) {
        return new InputStream() {
            @Override
            public int read() throws IOException {
                byte[] one = new byte[1];
                int n = read(one, 0, 1);
                return n < 0 ? -1 : one[0] & 0xff;
            }

            @Override
            public int read(byte[] b, int off, int len) throws IOException {
                if (len == 0) {
                    return 0;
                }
                return ch.read(java.nio.ByteBuffer.wrap(b, off, len));
            }
        };
    }

    /** A Unix domain socket channel (Java 16+), reached by reflection so the plugin still loads on Java 11. */
    static SocketChannel openUnix(String path) throws IOException {
        try {
            ProtocolFamily unix = Enum.valueOf(StandardProtocolFamily.class, "UNIX");
            SocketChannel ch =
                    (SocketChannel) SocketChannel.class.getMethod("open", ProtocolFamily.class).invoke(null, unix);
            SocketAddress addr =
                    (SocketAddress)
                            Class.forName("java.net.UnixDomainSocketAddress")
                                    .getMethod("of", String.class)
                                    .invoke(null, path);
            try {
                ch.connect(addr);
            } catch (IOException e) {
                ch.close();
                throw e;
            }
            return ch;
        } catch (IOException e) {
            throw e;
        } catch (ReflectiveOperationException | IllegalArgumentException e) {
            throw new IOException(
                    "Unix domain sockets need Java 16+ (this is " + System.getProperty("java.version")
                            + "); configure a tcp: agent address instead",
                    e);
        }
    }

    private static void closeQuietly(Closeable c) {
        if (c != null) {
            try {
                c.close();
            } catch (IOException ignored) {
                // closing on the way out
            }
        }
    }
}
