package io.streamshield.workloads;

import java.util.Properties;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.java.utils.ParameterTool;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.kafka.clients.consumer.OffsetResetStrategy;

/**
 * The sequence workload: Kafka source -> keyBy(key) -> {@link SequenceFunction} (per-key state) -> Kafka sink.
 *
 * <p>Arguments ({@code --name value}); see docs/development.md for how {@code streamshield local} passes them:
 *
 * <ul>
 *   <li>{@code --bootstrap} Kafka bootstrap servers (required)
 *   <li>{@code --input-topic} / {@code --output-topic} (default {@code streamshield-input} / {@code
 *       streamshield-output})
 *   <li>{@code --group-id} consumer group for committed offsets (default {@code streamshield-workload})
 *   <li>{@code --delivery} {@code exactly-once} (default) or {@code at-least-once}
 *   <li>{@code --checkpoint-interval-ms} (default 1000)
 *   <li>{@code --state-bytes} extra state bytes per key (default 0)
 *   <li>{@code --gc-ballast-mb} megabytes of randomly linked live heap per TaskManager, for the drill's GC pause
 *       (default 0: none)
 *   <li>{@code --transactional-id-prefix} (default {@code streamshield-workload})
 *   <li>{@code --job-name} (default {@code streamshield-sequence})
 * </ul>
 *
 * Parallelism is the job's parallelism (REST {@code parallelism} or {@code parallelism.default}).
 */
public final class SequenceJob {
    /** Kafka's broker default {@code transaction.max.timeout.ms} is 15 min; Flink's sink default (1 h) exceeds it. */
    static final long TRANSACTION_TIMEOUT_MS = 10 * 60 * 1000L;

    private SequenceJob() {}

    public static void main(String[] args) throws Exception {
        Settings s = Settings.parse(ParameterTool.fromArgs(args));
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.enableCheckpointing(s.checkpointIntervalMs);

        KafkaSource<SequenceRecord> source =
                KafkaSource.<SequenceRecord>builder()
                        .setBootstrapServers(s.bootstrap)
                        .setTopics(s.inputTopic)
                        .setGroupId(s.groupId)
                        .setStartingOffsets(OffsetsInitializer.committedOffsets(OffsetResetStrategy.EARLIEST))
                        .setDeserializer(new SequenceDeserializer())
                        .setProperty("isolation.level", "read_committed")
                        .build();

        Properties producer = new Properties();
        producer.setProperty("transaction.timeout.ms", Long.toString(TRANSACTION_TIMEOUT_MS));
        producer.setProperty("linger.ms", "5");
        KafkaSink<OutputRecord> sink =
                KafkaSink.<OutputRecord>builder()
                        .setBootstrapServers(s.bootstrap)
                        .setRecordSerializer(new OutputSerializer(s.outputTopic))
                        .setDeliveryGuarantee(s.delivery)
                        .setTransactionalIdPrefix(s.transactionalIdPrefix)
                        .setKafkaProducerConfig(producer)
                        .build();

        env.fromSource(source, WatermarkStrategy.noWatermarks(), "sequence-source")
                .uid("sequence-source")
                .keyBy(r -> r.key)
                .process(new SequenceFunction(s.stateBytes, s.gcBallastMb))
                .uid("sequence-state")
                .name("sequence-state")
                .sinkTo(sink)
                .uid("sequence-sink")
                .name("sequence-sink");

        env.execute(s.jobName);
    }

    /** The job's parameters, validated before anything is built. */
    static final class Settings {
        String bootstrap;
        String inputTopic;
        String outputTopic;
        String groupId;
        DeliveryGuarantee delivery;
        long checkpointIntervalMs;
        int stateBytes;
        int gcBallastMb;
        String transactionalIdPrefix;
        String jobName;

        static Settings parse(ParameterTool p) {
            Settings s = new Settings();
            s.bootstrap = p.get("bootstrap");
            if (s.bootstrap == null || s.bootstrap.isEmpty()) {
                throw new IllegalArgumentException("--bootstrap is required (Kafka bootstrap servers)");
            }
            s.inputTopic = p.get("input-topic", "streamshield-input");
            s.outputTopic = p.get("output-topic", "streamshield-output");
            s.groupId = p.get("group-id", "streamshield-workload");
            String delivery = p.get("delivery", "exactly-once");
            switch (delivery) {
                case "exactly-once":
                    s.delivery = DeliveryGuarantee.EXACTLY_ONCE;
                    break;
                case "at-least-once":
                    s.delivery = DeliveryGuarantee.AT_LEAST_ONCE;
                    break;
                default:
                    throw new IllegalArgumentException(
                            "--delivery must be exactly-once or at-least-once, got " + delivery);
            }
            s.checkpointIntervalMs = p.getLong("checkpoint-interval-ms", 1000L);
            if (s.checkpointIntervalMs < 10) {
                throw new IllegalArgumentException(
                        "--checkpoint-interval-ms must be >= 10 (Flink's floor), got " + s.checkpointIntervalMs);
            }
            s.stateBytes = p.getInt("state-bytes", 0);
            if (s.stateBytes < 0) {
                throw new IllegalArgumentException("--state-bytes must be >= 0, got " + s.stateBytes);
            }
            s.gcBallastMb = p.getInt("gc-ballast-mb", 0);
            if (s.gcBallastMb < 0) {
                throw new IllegalArgumentException("--gc-ballast-mb must be >= 0, got " + s.gcBallastMb);
            }
            s.transactionalIdPrefix = p.get("transactional-id-prefix", "streamshield-workload");
            s.jobName = p.get("job-name", "streamshield-sequence");
            return s;
        }
    }
}
