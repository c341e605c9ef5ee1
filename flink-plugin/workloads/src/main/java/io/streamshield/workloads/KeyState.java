package io.streamshield.workloads;

/**
 * Per-key state of the sequence operator. A Flink POJO, so it is serialized by the PojoSerializer and its size is
 * predictable: a few longs plus {@link #padding}, whose length is the workload's {@code --state-bytes} parameter and
 * lets a drill vary state size (and therefore checkpoint and restore cost) without changing the logic.
 */
public class KeyState {
    /** The run whose sequence {@link #lastSeq} belongs to. */
    public String run;
    /** Highest sequence number of {@link #run} seen so far. */
    public long lastSeq;
    /** Records seen for this key over all runs. */
    public long count;
    /** Extra state bytes; rewritten a little on every record so every checkpoint carries changed state. */
    public byte[] padding;

    public KeyState() {}

    /**
     * Applies one record to this key's state (creating it when {@code state} is null) and returns what to emit.
     * Pure: the operator wraps it, the tests call it directly.
     */
    public static Result apply(KeyState state, SequenceRecord record, int stateBytes, int subtask) {
        KeyState s = state;
        if (s == null) {
            s = new KeyState();
            s.padding = new byte[Math.max(0, stateBytes)];
        }
        long prevSeq = record.run.equals(s.run) ? s.lastSeq : 0L;
        if (!record.run.equals(s.run) || record.seq > s.lastSeq) {
            s.run = record.run;
            s.lastSeq = record.seq;
        }
        s.count += 1;
        if (s.padding != null && s.padding.length > 0) {
            s.padding[(int) (s.count % s.padding.length)] = (byte) record.seq;
        }
        OutputRecord out =
                new OutputRecord(record.key, record.run, record.seq, record.sendTs, prevSeq, s.count, subtask);
        return new Result(s, out);
    }

    /** The new state and the record to emit. */
    public static final class Result {
        public final KeyState state;
        public final OutputRecord output;

        Result(KeyState state, OutputRecord output) {
            this.state = state;
            this.output = output;
        }
    }
}
