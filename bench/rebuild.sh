#!/usr/bin/env bash
# The replay driver's rebuild speed: a local archive of REBUILD_EVENTS events (default 200,000) replayed
# into an in-memory read model by one process, then by two processes at once, one per partition.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${REBUILD_EVENTS:-200000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo build -q --release -p evs-replay --example gen_archive
cargo build -q --release -p evs-projection --example rebuild_bench
target/release/examples/gen_archive --dir "$dir" --events "$events" > /dev/null
bench=target/release/examples/rebuild_bench
echo "== one process, every stream"
/usr/bin/time -f "wall %e s" "$bench" "$dir"
echo "== two processes at once, --partition 0/2 and 1/2"
start=$(date +%s%N)
"$bench" "$dir" --partition 0/2 & a=$!
"$bench" "$dir" --partition 1/2 & b=$!
wait $a $b
echo "wall $(( ($(date +%s%N) - start) / 1000000 )) ms"
