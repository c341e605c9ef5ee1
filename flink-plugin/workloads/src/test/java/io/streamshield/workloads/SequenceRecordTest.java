package io.streamshield.workloads;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import org.junit.jupiter.api.Test;

class SequenceRecordTest {

    /** The vectors the Rust generator and verifier are tested against too. */
    private static final Path VECTORS = Paths.get("..", "..", "tests", "vectors", "records.txt");

    @Test
    void sharedVectors() throws Exception {
        List<String> lines = Files.readAllLines(VECTORS, StandardCharsets.UTF_8);
        int checked = 0;
        for (String line : lines) {
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String[] cols = line.split("\t", -1);
            assertEquals(3, cols.length, "vector line needs 3 tab-separated columns: " + line);
            byte[] key = cols[0].getBytes(StandardCharsets.UTF_8);
            byte[] value = cols[1].getBytes(StandardCharsets.US_ASCII);
            if (cols[2].equals("err")) {
                assertThrows(
                        SequenceRecord.MalformedRecordException.class,
                        () -> SequenceRecord.parse(key, value),
                        "should be rejected: " + line);
            } else {
                String[] want = cols[2].split(" ");
                SequenceRecord r = SequenceRecord.parse(key, value);
                assertEquals(
                        new SequenceRecord(cols[0], want[1], Long.parseLong(want[2]), Long.parseLong(want[3])),
                        r);
            }
            checked++;
        }
        assertTrue(checked >= 10, "expected at least 10 vectors, found " + checked);
    }

    @Test
    void nullKeyOrValueIsMalformed() {
        assertThrows(SequenceRecord.MalformedRecordException.class, () -> SequenceRecord.parse(null, new byte[] {1}));
        assertThrows(
                SequenceRecord.MalformedRecordException.class,
                () -> SequenceRecord.parse("k".getBytes(StandardCharsets.UTF_8), null));
    }

    @Test
    void outputFormat() {
        OutputRecord out = new OutputRecord("k3", "r9", 12, 1700000000123L, 11, 40, 1);
        assertEquals("r9:12:1700000000123:11:40:1", new String(out.valueBytes(), StandardCharsets.US_ASCII));
        assertEquals("k3", new String(out.keyBytes(), StandardCharsets.UTF_8));
    }
}
