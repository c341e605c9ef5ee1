package io.streamshield.plugin;

import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import sun.misc.Signal;
import sun.misc.SignalHandler;

/**
 * A planned stop: the TaskManager's SIGTERM (Kubernetes eviction, a rolling restart, {@code kill}) is held until the
 * StreamShield coordinator has completed a checkpoint of every running job, at most {@code planned-stop-wait-ms},
 * and then handed to the handler that was installed before (Flink's, which logs it and shuts the JVM down). The
 * restarted job then replays from just before the stop instead of from up to a checkpoint interval earlier.
 *
 * <p>A second SIGTERM while the first is held goes straight through, so an operator can always insist. Without an
 * agent link the stop is not held at all.
 */
final class PlannedStop implements SignalHandler {
    private static final Logger LOG = LoggerFactory.getLogger(PlannedStop.class);
    private static final AtomicBoolean INSTALLED = new AtomicBoolean();

    private final AgentLink link;
    private final long maxWaitMs;
    private volatile SignalHandler previous;
    private final AtomicBoolean holding = new AtomicBoolean();

    PlannedStop(AgentLink link, long maxWaitMs, SignalHandler previous) {
        this.link = link;
        this.maxWaitMs = maxWaitMs;
        this.previous = previous;
    }

    /** Installs the SIGTERM handler once per JVM; false when it was there already or the JVM does not allow it. */
    static boolean install(AgentLink link, long maxWaitMs) {
        if (maxWaitMs <= 0 || !INSTALLED.compareAndSet(false, true)) {
            return false;
        }
        try {
            Signal term = new Signal("TERM");
            PlannedStop handler = new PlannedStop(link, maxWaitMs, null);
            // Until this assignment a SIGTERM would take the JVM's default path (see pass): the same as before.
            handler.previous = Signal.handle(term, handler);
            LOG.info(
                    "StreamShield plugin: SIGTERM is held for up to {} ms so that the coordinator can checkpoint first",
                    maxWaitMs);
            return true;
        } catch (IllegalArgumentException | UnsupportedOperationException e) {
            LOG.warn("StreamShield plugin: cannot hold SIGTERM for a planned stop ({}); stops are not held", e.toString());
            return false;
        }
    }

    @Override
    public void handle(Signal signal) {
        if (holding.compareAndSet(false, true)) {
            long started = System.currentTimeMillis();
            LOG.info(
                    "StreamShield plugin: SIG{} received; holding it (at most {} ms) for a checkpoint first",
                    signal.getName(),
                    maxWaitMs);
            Map<?, ?> answer = link.announceStop("SIG" + signal.getName(), maxWaitMs);
            LOG.info(
                    "StreamShield plugin: stopping after {} ms: {} ({})",
                    System.currentTimeMillis() - started,
                    answer.get("outcome"),
                    answer.get("detail"));
        } else {
            LOG.info("StreamShield plugin: SIG{} again; stopping now", signal.getName());
        }
        pass(signal);
    }

    private void pass(Signal signal) {
        SignalHandler previous = this.previous;
        if (previous != null && previous != SignalHandler.SIG_DFL && previous != SignalHandler.SIG_IGN) {
            previous.handle(signal);
        } else if (previous != SignalHandler.SIG_IGN) {
            // The JVM's default reaction to SIGTERM: an orderly exit with the shutdown hooks.
            System.exit(128 + signal.getNumber());
        }
    }
}
