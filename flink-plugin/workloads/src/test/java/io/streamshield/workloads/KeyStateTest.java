package io.streamshield.workloads;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class KeyStateTest {

    @Test
    void firstRecordOfARunHasNoPredecessor() {
        KeyState.Result r = KeyState.apply(null, new SequenceRecord("k", "r1", 1, 10), 16, 3);
        assertEquals(0, r.output.prevSeq);
        assertEquals(1, r.output.count);
        assertEquals(3, r.output.subtask);
        assertEquals(16, r.state.padding.length);
        assertEquals(1, r.state.lastSeq);
    }

    @Test
    void consecutiveRecordsChainAndCount() {
        KeyState s = null;
        for (long seq = 1; seq <= 5; seq++) {
            KeyState.Result r = KeyState.apply(s, new SequenceRecord("k", "r1", seq, seq * 10), 0, 0);
            assertEquals(seq - 1, r.output.prevSeq);
            assertEquals(seq, r.output.count);
            s = r.state;
        }
        assertEquals(5, s.lastSeq);
    }

    @Test
    void aNewRunRestartsTheChainButKeepsTheCount() {
        KeyState s = KeyState.apply(null, new SequenceRecord("k", "r1", 7, 0), 0, 0).state;
        KeyState.Result r = KeyState.apply(s, new SequenceRecord("k", "r2", 1, 0), 0, 0);
        assertEquals(0, r.output.prevSeq);
        assertEquals(2, r.output.count);
        assertEquals("r2", r.state.run);
    }

    @Test
    void aReplayedRecordShowsItsPredecessorAsTheHighestSeen() {
        KeyState s = null;
        for (long seq = 1; seq <= 3; seq++) {
            s = KeyState.apply(s, new SequenceRecord("k", "r1", seq, 0), 0, 0).state;
        }
        // A duplicate input (seq 2 again) does not move lastSeq back, and its prevSeq (3) != seq - 1 exposes it.
        KeyState.Result r = KeyState.apply(s, new SequenceRecord("k", "r1", 2, 0), 0, 0);
        assertEquals(3, r.output.prevSeq);
        assertEquals(3, r.state.lastSeq);
    }

    @Test
    void paddingChangesWithRecords() {
        KeyState s = KeyState.apply(null, new SequenceRecord("k", "r1", 1, 0), 4, 0).state;
        byte[] before = s.padding.clone();
        s = KeyState.apply(s, new SequenceRecord("k", "r1", 2, 0), 4, 0).state;
        assertEquals(4, s.padding.length);
        assertEquals(2, s.padding[2]);
        assertArrayEquals(new byte[] {0, 1, 0, 0}, before);
    }
}
