package io.streamshield.workloads;

import java.nio.charset.StandardCharsets;
import java.util.Objects;

/**
 * What the sequence operator emits for every input record.
 *
 * <p>Wire format (Kafka value, ASCII): {@code run:seq:sendTs:prevSeq:count:subtask}, Kafka key = record key.
 * {@code prevSeq} is the sequence number the operator's keyed state held for this run before this record (0 for the
 * first record of a run), {@code count} how many records the key's state has counted in total. After a correct restore
 * from a checkpoint, exactly-once output satisfies {@code prevSeq == seq - 1}; the verifier checks it, which proves the
 * state itself survived and not only the records.
 */
public class OutputRecord {
    public String key;
    public String run;
    public long seq;
    public long sendTs;
    public long prevSeq;
    public long count;
    public int subtask;

    public OutputRecord() {}

    public OutputRecord(String key, String run, long seq, long sendTs, long prevSeq, long count, int subtask) {
        this.key = key;
        this.run = run;
        this.seq = seq;
        this.sendTs = sendTs;
        this.prevSeq = prevSeq;
        this.count = count;
        this.subtask = subtask;
    }

    public byte[] keyBytes() {
        return key.getBytes(StandardCharsets.UTF_8);
    }

    public byte[] valueBytes() {
        return (run + ':' + seq + ':' + sendTs + ':' + prevSeq + ':' + count + ':' + subtask)
                .getBytes(StandardCharsets.US_ASCII);
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof OutputRecord)) {
            return false;
        }
        OutputRecord r = (OutputRecord) o;
        return seq == r.seq
                && sendTs == r.sendTs
                && prevSeq == r.prevSeq
                && count == r.count
                && subtask == r.subtask
                && Objects.equals(key, r.key)
                && Objects.equals(run, r.run);
    }

    @Override
    public int hashCode() {
        return Objects.hash(key, run, seq, sendTs, prevSeq, count, subtask);
    }

    @Override
    public String toString() {
        return key + "/" + new String(valueBytes(), StandardCharsets.US_ASCII);
    }
}
