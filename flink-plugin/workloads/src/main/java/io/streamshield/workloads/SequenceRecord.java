package io.streamshield.workloads;

import java.nio.charset.StandardCharsets;
import java.util.Objects;

/**
 * One generator record: per (run, key) a strictly increasing sequence number and the generator's send time.
 *
 * <p>Wire format (Kafka value, ASCII): {@code run:seq:sendTsMillis}; the Kafka key is the record key. The Rust
 * generator and verifier ({@code src/workload/record.rs}) use the same format; both sides test the same vectors.
 *
 * <p>A Flink POJO (public fields, no-arg constructor) so it is serialized by the PojoSerializer, not Kryo.
 */
public class SequenceRecord {
    public String key;
    public String run;
    public long seq;
    public long sendTs;

    public SequenceRecord() {}

    public SequenceRecord(String key, String run, long seq, long sendTs) {
        this.key = key;
        this.run = run;
        this.seq = seq;
        this.sendTs = sendTs;
    }

    /**
     * Parses a generator record.
     *
     * @throws MalformedRecordException with the reason when the value is not {@code run:seq:sendTs}
     */
    public static SequenceRecord parse(byte[] key, byte[] value) throws MalformedRecordException {
        if (key == null || key.length == 0) {
            throw new MalformedRecordException("record has no key");
        }
        if (value == null) {
            throw new MalformedRecordException("record has no value");
        }
        String text = new String(value, StandardCharsets.US_ASCII);
        String[] parts = text.split(":", -1);
        if (parts.length != 3) {
            throw new MalformedRecordException("expected run:seq:sendTs, got " + abbreviate(text));
        }
        if (parts[0].isEmpty()) {
            throw new MalformedRecordException("empty run id in " + abbreviate(text));
        }
        try {
            long seq = Long.parseLong(parts[1]);
            long ts = Long.parseLong(parts[2]);
            if (seq < 1) {
                throw new MalformedRecordException("sequence numbers start at 1, got " + seq);
            }
            return new SequenceRecord(new String(key, StandardCharsets.UTF_8), parts[0], seq, ts);
        } catch (NumberFormatException e) {
            throw new MalformedRecordException("non-numeric seq or sendTs in " + abbreviate(text));
        }
    }

    private static String abbreviate(String s) {
        return s.length() <= 64 ? '"' + s + '"' : '"' + s.substring(0, 64) + "...\"";
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof SequenceRecord)) {
            return false;
        }
        SequenceRecord r = (SequenceRecord) o;
        return seq == r.seq && sendTs == r.sendTs && Objects.equals(key, r.key) && Objects.equals(run, r.run);
    }

    @Override
    public int hashCode() {
        return Objects.hash(key, run, seq, sendTs);
    }

    @Override
    public String toString() {
        return key + "/" + run + ":" + seq + ":" + sendTs;
    }

    /** A record that is not in the generator's format. */
    public static final class MalformedRecordException extends Exception {
        private static final long serialVersionUID = 1L;

        public MalformedRecordException(String message) {
            super(message);
        }
    }
}
