package io.streamshield.plugin.protocol;

import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;

/** Framing of the StreamShield link protocol (docs/protocol.md): {@code length:u32 BE | kind:u8 | payload}. */
public final class Frames {
    public static final int HELLO = 1;
    public static final int WELCOME = 2;
    public static final int REJECT = 3;
    public static final int HEARTBEAT = 10;
    public static final int METRICS = 11;
    public static final int SPAN = 12;
    public static final int FAILURE = 13;
    /** Plugin to agent: the process was asked to stop and the plugin holds the stop (a planned stop). */
    public static final int STOPPING = 14;
    /** Agent to plugin: the held stop may go on. */
    public static final int STOP_READY = 15;

    /** Largest {@code length} (kind + payload) after the handshake: 1 MiB. */
    public static final int MAX_FRAME = 1 << 20;
    /** Largest {@code length} before the handshake completes: 4 KiB. */
    public static final int HANDSHAKE_MAX_FRAME = 4 << 10;

    public static final int PROTOCOL_VERSION = 1;

    private Frames() {}

    /** One frame. */
    public static final class Frame {
        public final int kind;
        public final byte[] payload;

        public Frame(int kind, byte[] payload) {
            this.kind = kind;
            this.payload = payload;
        }
    }

    /** A frame that breaks the framing rules. */
    public static final class FrameException extends IOException {
        private static final long serialVersionUID = 1L;

        public FrameException(String message) {
            super(message);
        }
    }

    /** Encodes one frame. */
    public static byte[] encode(int kind, byte[] payload) {
        if (payload.length + 1 > MAX_FRAME) {
            throw new IllegalArgumentException(
                    "frame of " + (payload.length + 1) + " bytes exceeds the limit of " + MAX_FRAME);
        }
        ByteBuffer b = ByteBuffer.allocate(5 + payload.length);
        b.putInt(payload.length + 1);
        b.put((byte) kind);
        b.put(payload);
        return b.array();
    }

    /**
     * Reads one frame, blocking. Never allocates more than {@code limit} bytes for a frame.
     *
     * @throws EOFException when the stream ends (cleanly between frames or in the middle of one)
     * @throws FrameException for a zero or oversized length
     */
    public static Frame read(InputStream in, int limit) throws IOException {
        DataInputStream data = new DataInputStream(in);
        int length = data.readInt();
        long unsigned = length & 0xffffffffL;
        if (unsigned == 0) {
            throw new FrameException("frame with length 0 (no kind byte)");
        }
        if (unsigned > limit) {
            throw new FrameException("frame of " + unsigned + " bytes exceeds the limit of " + limit);
        }
        int kind = data.readUnsignedByte();
        byte[] payload = new byte[(int) unsigned - 1];
        data.readFully(payload);
        return new Frame(kind, payload);
    }
}
