#!/usr/bin/env bash
# A follower's memory over a long idle follow with an unacknowledged tail:
# `evs replay --follow` on a quiet archive, polling every 10 ms, delivering
# to a consumer that acknowledges every 100th line (so the last lines stay
# unacknowledged and a checkpoint waits for them). Prints the resident
# memory after 5 s and at the end; it should stay flat.
#   bash bench/follow_memory.sh [SECONDS] [EVS_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-60}
EVS=${2:-}
if [ -z "$EVS" ]; then
  cargo build -q --release -p evs
  EVS=target/release/evs
fi
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
# 1,950 events in 39 objects (the sample insert, one stream per ten events).
python3 - "$work" "$EVS" <<'PY'
import json, subprocess, sys
work, evs = sys.argv[1], sys.argv[2]
template = json.load(open("events/inserts.json"))["Records"][0]
for b in range(39):
    records = []
    for i in range(50):
        n = b * 50 + i
        r = json.loads(json.dumps(template))
        r["eventID"] = f"{n:032x}"
        for k in ("Keys", "NewImage"):
            r["dynamodb"][k]["StreamId"]["S"] = f"s-{n % 10}"
            r["dynamodb"][k]["EventId"]["N"] = str(n // 10 + 1)
        r["dynamodb"]["NewImage"]["EventUuid"]["S"] = f"00000000-0000-4000-8000-{n:012x}"
        r["dynamodb"]["SequenceNumber"] = str(1000000 + n)
        records.append(r)
    path = f"{work}/ev{b}.json"
    json.dump({"Records": records}, open(path, "w"))
    subprocess.run([evs, "invoke", "--archive", f"{work}/archive", path],
                   stdout=subprocess.DEVNULL, check=True)
PY
"$EVS" replay --archive "$work/archive" --follow --poll-interval 10ms \
  --archiver-timeout 1ms --clock-margin 1ms --checkpoint-file "$work/cp.json" \
  --checkpoint-interval 0 --quiet \
  -- awk 'NR % 100 == 0 {print NR; fflush()}' 2>/dev/null &
pid=$!
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
sleep 5
early=$(rss)
sleep $((SECONDS_TOTAL - 5))
late=$(rss)
echo "$EVS: follow, idle with an unacknowledged tail: RSS ${early} kB after 5 s, ${late} kB after ${SECONDS_TOTAL} s"
