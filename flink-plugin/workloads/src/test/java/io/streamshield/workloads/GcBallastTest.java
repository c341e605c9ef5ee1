package io.streamshield.workloads;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.HashSet;
import java.util.Set;
import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;

class GcBallastTest {
    @Test
    void theChainVisitsEveryNodeOnce() {
        GcBallast.Node head = GcBallast.chain(10_000, new SplittableRandom(7));
        assertEquals(10_000, GcBallast.length(head));
        Set<GcBallast.Node> seen = new HashSet<>();
        for (GcBallast.Node x = head; x != null; x = x.next) {
            seen.add(x);
        }
        assertEquals(10_000, seen.size());
        assertNull(GcBallast.chain(0, new SplittableRandom(1)));
    }

    @Test
    void sizesAreInMegabytes() {
        assertEquals(1024 * 1024 / 24, GcBallast.nodes(1));
        assertThrows(IllegalArgumentException.class, () -> GcBallast.nodes(1_000_000));
    }
}
