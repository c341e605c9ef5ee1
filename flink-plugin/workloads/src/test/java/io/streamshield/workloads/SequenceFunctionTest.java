package io.streamshield.workloads;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.List;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.runtime.checkpoint.OperatorSubtaskState;
import org.apache.flink.streaming.api.operators.KeyedProcessOperator;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.junit.jupiter.api.Test;

/** The operator inside Flink's test harness: keyed state must survive a snapshot and a restore into a new instance. */
class SequenceFunctionTest {

    private static KeyedOneInputStreamOperatorTestHarness<String, SequenceRecord, OutputRecord> harness()
            throws Exception {
        return new KeyedOneInputStreamOperatorTestHarness<>(
                new KeyedProcessOperator<>(new SequenceFunction(32)), r -> r.key, Types.STRING);
    }

    @Test
    void stateSurvivesSnapshotAndRestore() throws Exception {
        OperatorSubtaskState snapshot;
        try (KeyedOneInputStreamOperatorTestHarness<String, SequenceRecord, OutputRecord> h = harness()) {
            h.open();
            h.processElement(new SequenceRecord("a", "r1", 1, 100), 0);
            h.processElement(new SequenceRecord("b", "r1", 1, 101), 0);
            h.processElement(new SequenceRecord("a", "r1", 2, 102), 0);
            snapshot = h.snapshot(1L, 1L);
            // Processed after the checkpoint: lost with the "crash" below, as in a real failover.
            h.processElement(new SequenceRecord("a", "r1", 3, 103), 0);
        }

        try (KeyedOneInputStreamOperatorTestHarness<String, SequenceRecord, OutputRecord> h = harness()) {
            h.initializeState(snapshot);
            h.open();
            // The source rewinds to the checkpoint, so seq 3 of "a" is replayed.
            h.processElement(new SequenceRecord("a", "r1", 3, 103), 0);
            h.processElement(new SequenceRecord("b", "r1", 2, 104), 0);
            List<OutputRecord> out = h.extractOutputValues();
            assertEquals(2, out.size());
            assertEquals(new OutputRecord("a", "r1", 3, 103, 2, 3, 0), out.get(0));
            assertEquals(new OutputRecord("b", "r1", 2, 104, 1, 2, 0), out.get(1));
        }
    }

    @Test
    void negativeStateBytesAreRejected() {
        assertThrows(IllegalArgumentException.class, () -> new SequenceFunction(-1));
    }
}
