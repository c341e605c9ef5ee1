package io.streamshield.workloads;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.kafka.clients.producer.ProducerRecord;

/** Writes {@link OutputRecord}s keyed by record key, so one key's output stays in order in one partition. */
public class OutputSerializer implements KafkaRecordSerializationSchema<OutputRecord> {
    private static final long serialVersionUID = 1L;

    private final String topic;

    public OutputSerializer(String topic) {
        this.topic = topic;
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(OutputRecord element, KafkaSinkContext context, Long timestamp) {
        return new ProducerRecord<>(topic, element.keyBytes(), element.valueBytes());
    }
}
