package io.streamshield.plugin;

import io.streamshield.plugin.protocol.Frames;
import io.streamshield.plugin.protocol.Json;
import java.io.Closeable;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/** A hand-written agent for the plugin's tests: real sockets, the real framing, scripted answers. */
final class FakeAgent implements Closeable {
    final List<Map<String, Object>> hellos = new CopyOnWriteArrayList<>();
    final BlockingQueue<Frames.Frame> frames = new LinkedBlockingQueue<>();
    private final List<Closeable> open = new CopyOnWriteArrayList<>();
    /** The write side of every connection that completed the handshake, newest last. */
    private final List<OutputStream> welcomed = new CopyOnWriteArrayList<>();
    volatile String rejectWith;
    private final Closeable server;
    final String address;

    private FakeAgent(Closeable server, String address) {
        this.server = server;
        this.address = address;
    }

    static FakeAgent tcp() throws IOException {
        ServerSocket s = new ServerSocket(0, 16, InetAddress.getLoopbackAddress());
        FakeAgent a = new FakeAgent(s, "tcp:127.0.0.1:" + s.getLocalPort());
        Thread t =
                new Thread(
                        () -> {
                            while (!s.isClosed()) {
                                try {
                                    Socket c = s.accept();
                                    a.open.add(c);
                                    a.serve(c.getInputStream(), c.getOutputStream(), c);
                                } catch (IOException e) {
                                    return;
                                }
                            }
                        });
        t.setDaemon(true);
        t.start();
        return a;
    }

    static FakeAgent unix(Path path) throws IOException {
        ServerSocketChannel s = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        SocketAddress addr = UnixDomainSocketAddress.of(path);
        s.bind(addr);
        FakeAgent a = new FakeAgent(s, "unix:" + path);
        Thread t =
                new Thread(
                        () -> {
                            while (s.isOpen()) {
                                try {
                                    SocketChannel c = s.accept();
                                    a.open.add(c);
                                    a.serve(Channels.newInputStream(c), Channels.newOutputStream(c), c);
                                } catch (IOException e) {
                                    return;
                                }
                            }
                        });
        t.setDaemon(true);
        t.start();
        return a;
    }

    @SuppressWarnings("unchecked")
    private void serve(InputStream in, OutputStream out, Closeable c) {
        Thread t =
                new Thread(
                        () -> {
                            try {
                                Frames.Frame hello = Frames.read(in, Frames.HANDSHAKE_MAX_FRAME);
                                hellos.add(
                                        (Map<String, Object>)
                                                Json.parse(new String(hello.payload, StandardCharsets.UTF_8)));
                                String reject = rejectWith;
                                if (reject != null) {
                                    out.write(
                                            Frames.encode(
                                                    Frames.REJECT,
                                                    Json.write(Map.of("reason", reject))
                                                            .getBytes(StandardCharsets.UTF_8)));
                                    out.flush();
                                    c.close();
                                    return;
                                }
                                out.write(
                                        Frames.encode(
                                                Frames.WELCOME,
                                                "{\"protocol\":1,\"server\":\"fake\",\"heartbeat_interval_ms\":20}"
                                                        .getBytes(StandardCharsets.UTF_8)));
                                out.flush();
                                welcomed.add(out);
                                while (true) {
                                    frames.add(Frames.read(in, Frames.MAX_FRAME));
                                }
                            } catch (IOException e) {
                                // connection over
                            }
                        });
        t.setDaemon(true);
        t.start();
    }

    /** Sends one frame on the newest connection. */
    void send(int kind, String json) throws IOException {
        OutputStream out = welcomed.get(welcomed.size() - 1);
        synchronized (out) {
            out.write(Frames.encode(kind, json.getBytes(StandardCharsets.UTF_8)));
            out.flush();
        }
    }

    /** Drops every current connection (an agent restart, as the plugin sees it). */
    void dropConnections() {
        for (Closeable c : open) {
            try {
                c.close();
            } catch (IOException ignored) {
                // already closed
            }
        }
        open.clear();
    }

    Frames.Frame next(int kind, long timeoutMs) throws InterruptedException {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (System.currentTimeMillis() < deadline) {
            Frames.Frame f = frames.poll(deadline - System.currentTimeMillis(), TimeUnit.MILLISECONDS);
            if (f != null && f.kind == kind) {
                return f;
            }
        }
        return null;
    }

    @Override
    public void close() throws IOException {
        dropConnections();
        server.close();
    }
}
