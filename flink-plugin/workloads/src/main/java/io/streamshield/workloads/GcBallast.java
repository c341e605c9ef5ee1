package io.streamshield.workloads;

import java.util.SplittableRandom;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A large live heap for the drill's {@code tm-gc-pause} scenario: {@code --gc-ballast-mb} megabytes of small objects
 * linked in random order, built once per TaskManager JVM on a daemon thread (the job's tasks do not wait for it).
 * Under the serial collector a full collection must mark and then move every one of them, chasing one pointer per
 * object through memory in random order, so an explicit {@code System.gc()} (the drill sends {@code GC.run} over the
 * JVM's attach socket) becomes a real stop-the-world pause of many seconds. Nothing else reads the ballast.
 */
final class GcBallast {
    private static final Logger LOG = LoggerFactory.getLogger(GcBallast.class);
    /** Bytes per node with compressed oops: 12-byte header, one reference, one long, aligned to 8. */
    static final int NODE_BYTES = 24;

    static final class Node {
        Node next;
        long pad;
    }

    private static boolean started;
    /** The head of the chain: keeps every node alive. */
    private static volatile Node head;

    private GcBallast() {}

    /** Starts building {@code mb} megabytes of ballast unless this JVM already has (or builds) one. */
    static synchronized void ensure(int mb) {
        if (mb <= 0 || started) {
            return;
        }
        started = true;
        Thread t = new Thread(() -> build(mb), "streamshield-gc-ballast");
        t.setDaemon(true);
        t.start();
    }

    /** Builds a chain of {@code mb} megabytes of nodes in random order and keeps it. */
    static void build(int mb) {
        long start = System.nanoTime();
        int n = nodes(mb);
        head = chain(n, new SplittableRandom(n));
        LOG.info(
                "streamshield gc ballast ready: {} nodes, {} MB, built in {} ms",
                n,
                mb,
                (System.nanoTime() - start) / 1_000_000);
    }

    static int nodes(int mb) {
        long n = (long) mb * 1024 * 1024 / NODE_BYTES;
        if (n > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("--gc-ballast-mb " + mb + " is too large");
        }
        return (int) n;
    }

    /** {@code n} nodes, each linked to a random other one so that the chain visits all of them once. */
    static Node chain(int n, SplittableRandom random) {
        if (n == 0) {
            return null;
        }
        Node[] all = new Node[n];
        for (int i = 0; i < n; i++) {
            all[i] = new Node();
        }
        for (int i = n - 1; i > 0; i--) {
            int j = random.nextInt(i + 1);
            Node tmp = all[i];
            all[i] = all[j];
            all[j] = tmp;
        }
        for (int i = 0; i < n - 1; i++) {
            all[i].next = all[i + 1];
        }
        return all[0];
    }

    /** Nodes in the chain (for tests). */
    static long length(Node from) {
        long c = 0;
        for (Node x = from; x != null; x = x.next) {
            c++;
        }
        return c;
    }
}
