package io.streamshield.workloads;

import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;

/** The stateful step of the workload: keeps {@link KeyState} per key and emits one {@link OutputRecord} per input. */
public class SequenceFunction extends KeyedProcessFunction<String, SequenceRecord, OutputRecord> {
    private static final long serialVersionUID = 1L;

    private final int stateBytes;
    private transient ValueState<KeyState> state;
    private transient int subtask;

    public SequenceFunction(int stateBytes) {
        if (stateBytes < 0) {
            throw new IllegalArgumentException("state bytes must be >= 0, got " + stateBytes);
        }
        this.stateBytes = stateBytes;
    }

    @Override
    public void open(Configuration parameters) {
        state = getRuntimeContext().getState(new ValueStateDescriptor<>("sequence", KeyState.class));
        subtask = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
    }

    @Override
    public void processElement(SequenceRecord record, Context ctx, Collector<OutputRecord> out) throws Exception {
        KeyState.Result result = KeyState.apply(state.value(), record, stateBytes, subtask);
        state.update(result.state);
        out.collect(result.output);
    }
}
