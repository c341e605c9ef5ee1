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
    private final int gcBallastMb;
    private transient ValueState<KeyState> state;
    private transient int subtask;

    public SequenceFunction(int stateBytes) {
        this(stateBytes, 0);
    }

    /** {@code gcBallastMb} &gt; 0: every TaskManager running this function holds that much {@link GcBallast}. */
    public SequenceFunction(int stateBytes, int gcBallastMb) {
        if (stateBytes < 0) {
            throw new IllegalArgumentException("state bytes must be >= 0, got " + stateBytes);
        }
        if (gcBallastMb < 0) {
            throw new IllegalArgumentException("gc ballast must be >= 0 MB, got " + gcBallastMb);
        }
        this.stateBytes = stateBytes;
        this.gcBallastMb = gcBallastMb;
    }

    @Override
    public void open(Configuration parameters) {
        state = getRuntimeContext().getState(new ValueStateDescriptor<>("sequence", KeyState.class));
        subtask = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
        GcBallast.ensure(gcBallastMb);
    }

    @Override
    public void processElement(SequenceRecord record, Context ctx, Collector<OutputRecord> out) throws Exception {
        KeyState.Result result = KeyState.apply(state.value(), record, stateBytes, subtask);
        state.update(result.state);
        out.collect(result.output);
    }
}
