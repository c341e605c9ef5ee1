package io.streamshield.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.streamshield.plugin.protocol.Json;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class JsonTest {

    @Test
    void writesEscapesAndNonFiniteNumbers() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("s", "a\"b\\c\nd\u0001é");
        m.put("n", 1.5);
        m.put("nan", Double.NaN);
        m.put("l", 7L);
        m.put("b", true);
        m.put("list", Arrays.asList(1, "x", null));
        assertEquals(
                "{\"s\":\"a\\\"b\\\\c\\nd\\u0001é\",\"n\":1.5,\"nan\":null,\"l\":7,\"b\":true,\"list\":[1,\"x\",null]}",
                Json.write(m));
    }

    @Test
    void parsesWhatItWrites() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("reason", "protocol version 2 is not supported \"x\"");
        m.put("heartbeat_interval_ms", 100L);
        m.put("nested", Arrays.asList(Map.of("k", "v")));
        @SuppressWarnings("unchecked")
        Map<String, Object> back = (Map<String, Object>) Json.parse(Json.write(m));
        assertEquals(m.get("reason"), back.get("reason"));
        assertEquals(100.0, back.get("heartbeat_interval_ms"));
        assertEquals("v", ((Map<?, ?>) ((List<?>) back.get("nested")).get(0)).get("k"));
        assertEquals("\u2603", Json.parse("\"\\u2603\""));
    }

    @Test
    void rejectsMalformedInputWithAReason() {
        for (String bad : new String[] {"", "{", "{\"a\" 1}", "[1,", "\"open", "{\"a\":1} x", "nope", "\"\\u12\""}) {
            assertThrows(IllegalArgumentException.class, () -> Json.parse(bad), bad);
        }
        StringBuilder deep = new StringBuilder();
        for (int i = 0; i < 100; i++) {
            deep.append('[');
        }
        assertThrows(IllegalArgumentException.class, () -> Json.parse(deep.toString()));
    }
}
