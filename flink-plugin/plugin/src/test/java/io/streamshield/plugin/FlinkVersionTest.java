package io.streamshield.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URL;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.traces.Span;
import org.junit.jupiter.api.Test;

/**
 * The tests run on the Flink they claim to (the flink2 profile swaps the provided 1.20 jars for 2.x ones at run time:
 * if that swap silently did nothing, every other test would pass on 1.20 again and prove nothing about 2.x).
 */
class FlinkVersionTest {

    static String expected() {
        String v = System.getProperty("streamshield.test.flink.version");
        assertNotNull(v, "surefire sets streamshield.test.flink.version");
        return v;
    }

    static int major() {
        return Integer.parseInt(expected().split("\\.")[0]);
    }

    private static String jarOf(Class<?> c) {
        URL where = c.getProtectionDomain().getCodeSource().getLocation();
        return where.getPath().substring(where.getPath().lastIndexOf('/') + 1);
    }

    @Test
    void theClasspathHoldsTheExpectedFlink() {
        String v = expected();
        assertEquals("flink-core-" + v + ".jar", jarOf(Configuration.class));
        assertEquals("flink-metrics-core-" + v + ".jar", jarOf(Span.class));
    }

    @Test
    void noOtherFlinkIsOnTheClasspath() {
        String path = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        int flinkJars = 0;
        for (String entry : path.split(java.io.File.pathSeparator)) {
            if (!entry.contains("/org/apache/flink/")) {
                continue;
            }
            String jar = entry.substring(entry.lastIndexOf('/') + 1);
            if (jar.startsWith("flink-shaded-")) {
                continue; // shaded libraries have versions of their own
            }
            flinkJars++;
            assertTrue(jar.endsWith("-" + expected() + ".jar"), "a Flink jar of another version: " + entry);
        }
        assertTrue(flinkJars >= 2, "Flink jars on the test classpath: " + path);
    }

    @Test
    void theApiIsTheExpectedGeneration() {
        boolean two = major() >= 2;
        assertEquals(two, present("org.apache.flink.metrics.Reporter"), "2.x moved open/close into Reporter");
        boolean shortcuts = true;
        try {
            org.apache.flink.core.failure.FailureEnricher.Context.class.getMethod("getJobId");
        } catch (NoSuchMethodException e) {
            shortcuts = false;
        }
        assertEquals(!two, shortcuts, "FailureEnricher.Context.getJobId() exists in 1.x only");
        assertTrue(present("org.apache.flink.api.common.JobInfo"), "JobInfo exists in both");
    }

    private static boolean present(String name) {
        try {
            Class.forName(name, false, FlinkVersionTest.class.getClassLoader());
            return true;
        } catch (ClassNotFoundException e) {
            return false;
        }
    }
}
