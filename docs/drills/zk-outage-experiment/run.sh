#!/usr/bin/env bash
# One ZooKeeper-outage experiment: shield profile, extra Flink settings from $@, ZooKeeper SIGSTOPped for $OUT s.
set -uo pipefail
B=${B:-target/debug/streamshield}
NAME=$1; shift; OUT=$1; shift
D=${WORK:-/tmp/zkexp}/$NAME
rm -rf "$D"
args=()
for kv in "$@"; do args+=(--flink-conf "$kv"); done
$B local up --dir "$D" --profile shield --port-offset 31000 "${args[@]}" > "$D.up.log" 2>&1 || { echo "$NAME: up failed"; tail -20 "$D.up.log"; $B local down --dir "$D" >/dev/null 2>&1; exit 1; }
REST=$(python3 -c "import json;s=json.load(open('$D/state.json'));print(s['ports']['rest'])")
ZK=$(python3 -c "import json;s=json.load(open('$D/state.json'));print(s['zookeeper']['pid'])")
JOB=$(curl -s localhost:$REST/jobs | python3 -c "import json,sys;print(json.load(sys.stdin)['jobs'][0]['id'])")
restarts() { curl -s "localhost:$REST/jobs/$JOB/metrics?get=numRestarts" | python3 -c "import json,sys;d=json.load(sys.stdin);print(d[0]['value'] if d else 'na')" 2>/dev/null || echo down; }
state() { curl -s -m 2 "localhost:$REST/jobs/$JOB" | python3 -c "import json,sys;print(json.load(sys.stdin)['state'])" 2>/dev/null || echo unreachable; }
sleep 15
echo "$NAME: before: restarts=$(restarts) state=$(state)"
T0=$(date +%s.%N)
kill -STOP "$ZK"
for i in $(seq 1 $OUT); do sleep 1; s=$(state); [ "$s" != RUNNING ] && echo "  t=$i s: $s"; done
kill -CONT "$ZK"
echo "$NAME: zk back after $OUT s"
for i in $(seq 1 60); do sleep 1; s=$(state); [ "$s" != RUNNING ] && echo "  +$i s: $s"; done
echo "$NAME: after: restarts=$(restarts) state=$(state)"
grep -iE "revoked leadership|lost leadership|SUSPENDED|suspended|Connection state changed" "$D/logs/jobmanager.log" | grep -v DEBUG | cut -c1-220 | head -12
$B local down --dir "$D" >/dev/null 2>&1
