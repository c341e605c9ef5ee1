import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;

/**
 * A user's job, not StreamShield's: runs a SQL file the way the SQL runner users deploy with the Flink Kubernetes
 * Operator does. {@code SET 'key' = 'value'} statements configure the job (so a job can carry its own
 * {@code pipeline.global-job-parameters}); every other statement goes to {@code executeSql}. Compiled by the tests
 * against the Flink distribution's own lib/ and submitted with its {@code bin/flink run}.
 */
public class SqlRunner {
    private static final Pattern SET =
            Pattern.compile("(?is)^SET\\s+'([^']+)'\\s*=\\s*'([^']*)'$");

    public static void main(String[] args) throws Exception {
        String script = new String(Files.readAllBytes(Paths.get(args[0])), StandardCharsets.UTF_8);
        Map<String, String> settings = new LinkedHashMap<>();
        List<String> statements = new ArrayList<>();
        for (String part : script.split(";")) {
            String statement = part.trim();
            if (statement.isEmpty()) {
                continue;
            }
            Matcher m = SET.matcher(statement);
            if (m.matches()) {
                settings.put(m.group(1), m.group(2));
            } else {
                statements.add(statement);
            }
        }
        StreamExecutionEnvironment env =
                StreamExecutionEnvironment.getExecutionEnvironment(Configuration.fromMap(settings));
        StreamTableEnvironment tables = StreamTableEnvironment.create(env);
        for (String statement : statements) {
            tables.executeSql(statement);
        }
    }
}
