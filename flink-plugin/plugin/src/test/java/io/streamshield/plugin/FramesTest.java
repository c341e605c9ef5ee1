package io.streamshield.plugin;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.streamshield.plugin.protocol.Frames;
import java.io.ByteArrayInputStream;
import java.io.EOFException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import org.junit.jupiter.api.Test;

class FramesTest {

    private static byte[] hex(String h) {
        byte[] b = new byte[h.length() / 2];
        for (int i = 0; i < b.length; i++) {
            b[i] = (byte) Integer.parseInt(h.substring(2 * i, 2 * i + 2), 16);
        }
        return b;
    }

    /** The vectors the Rust decoder is tested against too (tests/vectors/frames.txt). */
    @Test
    void sharedVectors() throws Exception {
        int n = 0;
        for (String line : Files.readAllLines(Paths.get("..", "..", "tests", "vectors", "frames.txt"))) {
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String[] cols = line.split("\t", 3);
            byte[] bytes = hex(cols[1]);
            String expect = cols[2];
            if (expect.startsWith("frame ")) {
                String body = expect.substring("frame ".length());
                int sp = body.indexOf(' ');
                Frames.Frame f = Frames.read(new ByteArrayInputStream(bytes), Frames.HANDSHAKE_MAX_FRAME);
                assertEquals(Integer.parseInt(body.substring(0, sp)), f.kind, line);
                assertEquals(body.substring(sp + 1), new String(f.payload, StandardCharsets.UTF_8), line);
                assertArrayEquals(bytes, Frames.encode(f.kind, f.payload), "encoding gives the same bytes: " + line);
            } else if (expect.startsWith("error")) {
                assertThrows(
                        Frames.FrameException.class,
                        () -> Frames.read(new ByteArrayInputStream(bytes), Frames.HANDSHAKE_MAX_FRAME),
                        line);
            } else {
                assertEquals("incomplete", expect);
                assertThrows(
                        EOFException.class,
                        () -> Frames.read(new ByteArrayInputStream(bytes), Frames.HANDSHAKE_MAX_FRAME),
                        line);
            }
            n++;
        }
        assertTrue(n >= 10, "only " + n + " vectors");
    }

    @Test
    void oversizedPayloadsAreNotEncoded() {
        assertThrows(IllegalArgumentException.class, () -> Frames.encode(11, new byte[Frames.MAX_FRAME]));
    }
}
