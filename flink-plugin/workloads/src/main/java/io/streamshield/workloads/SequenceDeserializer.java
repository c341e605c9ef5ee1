package io.streamshield.workloads;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.metrics.Counter;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads generator records. A record that is not in the generator's format is skipped, counted in the
 * {@code streamshieldMalformedRecords} metric and logged (the first few, then every 1000th): it cannot be part of a
 * verified sequence, and failing the job on it would turn one bad producer into an outage.
 */
public class SequenceDeserializer implements KafkaRecordDeserializationSchema<SequenceRecord> {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(SequenceDeserializer.class);

    private transient Counter malformed;
    private transient long malformedSeen;

    @Override
    public void open(DeserializationSchema.InitializationContext context) {
        malformed = context.getMetricGroup().counter("streamshieldMalformedRecords");
    }

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<SequenceRecord> out) {
        try {
            out.collect(SequenceRecord.parse(record.key(), record.value()));
        } catch (SequenceRecord.MalformedRecordException e) {
            malformedSeen++;
            if (malformed != null) {
                malformed.inc();
            }
            if (malformedSeen <= 10 || malformedSeen % 1000 == 0) {
                LOG.warn(
                        "Skipping malformed record at {}-{} offset {} ({} so far): {}",
                        record.topic(),
                        record.partition(),
                        record.offset(),
                        malformedSeen,
                        e.getMessage());
            }
        }
    }

    @Override
    public TypeInformation<SequenceRecord> getProducedType() {
        return TypeInformation.of(SequenceRecord.class);
    }
}
