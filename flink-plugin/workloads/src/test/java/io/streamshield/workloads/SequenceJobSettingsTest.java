package io.streamshield.workloads;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.apache.flink.api.java.utils.ParameterTool;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.junit.jupiter.api.Test;

class SequenceJobSettingsTest {

    private static SequenceJob.Settings parse(String... args) {
        return SequenceJob.Settings.parse(ParameterTool.fromArgs(args));
    }

    @Test
    void defaults() {
        SequenceJob.Settings s = parse("--bootstrap", "127.0.0.1:9092");
        assertEquals(DeliveryGuarantee.EXACTLY_ONCE, s.delivery);
        assertEquals(1000L, s.checkpointIntervalMs);
        assertEquals(0, s.stateBytes);
        assertEquals("streamshield-input", s.inputTopic);
    }

    @Test
    void badInputIsRejectedWithTheReason() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> parse());
        assertTrue(e.getMessage().contains("--bootstrap"));
        e = assertThrows(IllegalArgumentException.class, () -> parse("--bootstrap", "x", "--delivery", "maybe"));
        assertTrue(e.getMessage().contains("maybe"));
        assertThrows(
                IllegalArgumentException.class, () -> parse("--bootstrap", "x", "--checkpoint-interval-ms", "5"));
        assertThrows(IllegalArgumentException.class, () -> parse("--bootstrap", "x", "--state-bytes", "-1"));
    }

    @Test
    void atLeastOnce() {
        assertEquals(
                DeliveryGuarantee.AT_LEAST_ONCE,
                parse("--bootstrap", "x", "--delivery", "at-least-once").delivery);
    }
}
