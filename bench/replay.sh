#!/usr/bin/env bash
# `make bench` (second part): replay throughput from a local archive, side by
# side with `zcat | jq -c .` on the same objects.
#
# 1. builds `evs` and the archive generator (release);
# 2. generates a local archive of BENCH_EVENTS events (default 1,000,000; 10,000
#    streams, 1,000 records a batch) through the real archiver handler
#    (crates/evs-replay/examples/gen_archive.rs: ~2% of the batches archived
#    twice, ~3% archived after their successor), cached in
#    <target>/bench-archive-<N> (kept once complete; delete it to regenerate);
# 3. checks once (untimed) that `evs replay` prints exactly N lines and that
#    `evs verify` finds the archive complete;
# 4. times, BENCH_RUNS times each (default 3, the best run counts), with
#    /usr/bin/time (wall time, peak RSS):
#      evs replay --archive DIR --quiet > /dev/null
#      find DIR/events -name '*.ndjson.gz' | sort | xargs zcat | jq -c . > /dev/null
#      evs verify --archive DIR --quiet
#    For the pipeline, peak RSS is that of its largest process (jq).
# 5. prints a table (also written to <target>/bench-replay-<N>.txt).
#
# events/s is N (distinct events) over the wall time for every tool, although
# zcat|jq also prints the duplicate lines; MB/s is the input read, compressed
# (as stored) and decompressed (NDJSON).
#
# Usage: bash bench/replay.sh [N]   (or BENCH_EVENTS=N; BENCH_RUNS=R; JQ=path)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*" >&2; }

EVENTS=${1:-${BENCH_EVENTS:-1000000}}
RUNS=${BENCH_RUNS:-3}
JQ=${JQ:-$(command -v jq || echo /usr/bin/jq)}
if [[ ! -x $JQ ]]; then
    echo "bench: jq not found (set JQ=/path/to/jq)" >&2
    exit 1
fi
for tool in zcat python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done

TARGET=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
EVS=$TARGET/release/evs
GEN=$TARGET/release/examples/gen_archive
ARCHIVE=$TARGET/bench-archive-$EVENTS
SUMMARY=$ARCHIVE/gen_archive.json
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say "building (release)"
cargo build --release -p evs --bin evs
cargo build --release -p evs-replay --example gen_archive

if [[ -s $SUMMARY ]]; then
    say "reusing the archive in $ARCHIVE ($(cat "$SUMMARY"))"
else
    say "generating $EVENTS events into $ARCHIVE"
    rm -rf "$ARCHIVE"
    mkdir -p "$ARCHIVE"
    # The summary is written last: an interrupted run leaves no summary and
    # is generated again.
    "$GEN" --dir "$ARCHIVE" --events "$EVENTS" >"$WORK/summary.json"
    mv "$WORK/summary.json" "$SUMMARY"
    cat "$SUMMARY" >&2
fi

OBJECTS=$(find "$ARCHIVE/events" -name '*.ndjson.gz' | wc -l)
STORED=$(find "$ARCHIVE/events" -name '*.ndjson.gz' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
LINES=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["lines"])' "$SUMMARY")
say "measuring decompressed size"
NDJSON=$(find "$ARCHIVE/events" -name '*.ndjson.gz' | LC_ALL=C sort | xargs zcat | wc -c)

say "checking the replay's output and verify (untimed)"
REPLAYED=$("$EVS" replay --archive "$ARCHIVE" --quiet | wc -l)
if [[ $REPLAYED -ne $EVENTS ]]; then
    echo "bench: evs replay printed $REPLAYED lines, expected $EVENTS" >&2
    exit 1
fi
"$EVS" verify --archive "$ARCHIVE" --quiet >"$WORK/verify.txt" || {
    cat "$WORK/verify.txt" >&2
    echo "bench: evs verify did not find the archive complete" >&2
    exit 1
}
echo "replay: $REPLAYED lines = $EVENTS events; verify: $(sed -n 2p "$WORK/verify.txt")" >&2

# Runs `bash -c CMD` and prints "<seconds> <peak RSS KiB>".
if [[ -x /usr/bin/time ]]; then
    timed() {
        /usr/bin/time -f '%e %M' -o "$WORK/time" bash -c "$1"
        tail -n 1 "$WORK/time"
    }
else
    # No GNU time: the children's peak RSS from getrusage, wall time from Python.
    timed() {
        python3 - "$1" <<'EOF'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(["bash", "-c", sys.argv[1]], check=True)
e = time.monotonic() - t
print(f"{e:.2f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
EOF
    }
fi

# best NAME CMD: the fastest of RUNS runs, "<seconds> <peak RSS KiB>".
best() {
    local name=$1 cmd=$2 i result
    : >"$WORK/$name.runs"
    for ((i = 1; i <= RUNS; i++)); do
        result=$(timed "$cmd")
        echo "  $name run $i: $result (s, KiB)" >&2
        echo "$result" >>"$WORK/$name.runs"
    done
    sort -n "$WORK/$name.runs" | head -n 1
}

Q=$(printf '%q' "$ARCHIVE")
say "timing, best of $RUNS"
REPLAY=$(best replay "$(printf '%q' "$EVS") replay --archive $Q --quiet > /dev/null")
JQRUN=$(best zcat-jq "find $Q/events -name '*.ndjson.gz' | LC_ALL=C sort | xargs zcat | $(printf '%q' "$JQ") -c . > /dev/null")
VERIFY=$(best verify "$(printf '%q' "$EVS") verify --archive $Q --quiet > /dev/null")

say "results"
{
    awk -v a="$ARCHIVE" -v n="$EVENTS" -v l="$LINES" -v o="$OBJECTS" -v gz="$STORED" -v nd="$NDJSON" \
        -v r="$RUNS" -v c="$(nproc)" 'BEGIN {
        printf "archive %s: %d events (%d lines with duplicates), %d objects, %.1f MB gzip, %.1f MB NDJSON; best of %d runs; %d cores\n", a, n, l, o, gz / 1e6, nd / 1e6, r, c
    }'
    printf '%-32s %8s %12s %10s %12s %10s %9s\n' tool seconds events/s "gz MB/s" "NDJSON MB/s" "peak RSS" speed-up
    JQ_S=${JQRUN%% *}
    for row in "evs replay --quiet;$REPLAY" "zcat | jq -c .;$JQRUN" "evs verify --quiet;$VERIFY"; do
        name=${row%%;*}
        read -r s kib <<<"${row#*;}"
        awk -v name="$name" -v s="$s" -v kib="$kib" -v n="$EVENTS" -v gz="$STORED" -v nd="$NDJSON" -v jq="$JQ_S" 'BEGIN {
            if (s <= 0) s = 0.01
            printf "%-32s %8.2f %12.0f %10.1f %12.1f %7.1f MiB %8.1fx\n", name, s, n / s, gz / s / 1e6, nd / s / 1e6, kib / 1024, jq / s
        }'
    done
} | tee "$TARGET/bench-replay-$EVENTS.txt"
