#!/usr/bin/env python3
"""A fake StreamShield agent for checking the plugin in a real Flink by hand (docs/flink-versions.md).

Usage: fake-agent.py SOCKET_PATH [STOP_DELAY_S]

Listens on a Unix socket, speaks docs/protocol.md's framing, answers HELLO with WELCOME and STOPPING with STOP_READY
(outcome "skipped") after STOP_DELAY_S seconds (default 1.5), and prints what arrives: every HELLO, SPAN, FAILURE and
STOPPING, the first METRICS batches (with their tm_id labels) and a few heartbeats. Any number of connections."""
import json, os, socket, struct, sys, threading, time

NAMES = {1: "HELLO", 2: "WELCOME", 3: "REJECT", 10: "HEARTBEAT", 11: "METRICS", 12: "SPAN", 13: "FAILURE",
         14: "STOPPING", 15: "STOP_READY"}
if len(sys.argv) < 2:
    sys.exit(__doc__)
path = sys.argv[1]
stop_delay = float(sys.argv[2]) if len(sys.argv) > 2 else 1.5
lock = threading.Lock()

def log(*a):
    with lock:
        now = time.time()
        print(time.strftime("%H:%M:%S", time.localtime(now)) + ".%03d" % int(now * 1000 % 1000), *a, flush=True)

def read_exact(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b

def frame(kind, obj):
    body = json.dumps(obj).encode()
    return struct.pack(">IB", len(body) + 1, kind) + body

def serve(c, n):
    who = "conn%d" % n
    beats = 0
    metrics_batches = 0
    try:
        while True:
            ln, kind = struct.unpack(">IB", read_exact(c, 5))
            payload = json.loads(read_exact(c, ln - 1) or b"{}")
            name = NAMES.get(kind, str(kind))
            if kind == 1:
                who = "%s[%s %s pid %s]" % (who, payload.get("role"), payload.get("resource_id"), payload.get("pid"))
                log(who, "HELLO", json.dumps(payload))
                c.sendall(frame(2, {"protocol": 1, "server": "fake-agent", "heartbeat_interval_ms": 100}))
            elif kind == 10:
                beats += 1
                if beats in (1, 10) or beats % 300 == 0:
                    log(who, "HEARTBEAT #%d seq %s" % (beats, payload.get("seq")))
            elif kind == 11:
                metrics_batches += 1
                ms = payload.get("metrics", [])
                if metrics_batches <= 2 or metrics_batches % 30 == 0:
                    tm_ids = sorted({m["labels"].get("tm_id") for m in ms if m.get("labels", {}).get("tm_id")})
                    names = sorted({m["name"] for m in ms})
                    log(who, "METRICS #%d: %d metrics, dropped %s, tm_id labels %s, names %s" % (
                        metrics_batches, len(ms), payload.get("dropped"), tm_ids, names[:12]))
            elif kind == 12:
                log(who, "SPAN", json.dumps(payload)[:1500])
            elif kind == 13:
                log(who, "FAILURE", json.dumps(payload)[:600])
            elif kind == 14:
                log(who, "STOPPING", json.dumps(payload), "-> STOP_READY in %.1f s" % stop_delay)
                def answer():
                    time.sleep(stop_delay)
                    try:
                        c.sendall(frame(15, {"outcome": "skipped", "detail": "fake agent"}))
                        log(who, "STOP_READY sent")
                    except OSError as e:
                        log(who, "STOP_READY not sent:", e)
                threading.Thread(target=answer, daemon=True).start()
            else:
                log(who, name, json.dumps(payload)[:300])
    except (EOFError, OSError) as e:
        log(who, "closed after %d heartbeats, %d metrics batches" % (beats, metrics_batches))

if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o600)
s.listen(16)
log("fake agent listening on", path, "pid", os.getpid())
n = 0
while True:
    c, _ = s.accept()
    n += 1
    threading.Thread(target=serve, args=(c, n), daemon=True).start()
