#!/usr/bin/env bash
# What acknowledged delivery (`evs replay … -- CMD`) costs: a local archive of CONSUMER_EVENTS events
# (default 200,000 over 2,000 streams) replayed to /dev/null, through a pipe, and to a consumer process
# that acknowledges every line or every 1,000th, with a checkpoint file; best of three runs each.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${CONSUMER_EVENTS:-200000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo build -q --release -p evs --bin evs
cargo build -q --release -p evs-replay --example gen_archive
target/release/examples/gen_archive --dir "$dir/archive" --events "$events" --streams 2000 > /dev/null
evs=target/release/evs
best() {
  local label=$1; shift
  local best_ms=
  for _ in 1 2 3; do
    rm -f "$dir/checkpoint.json"
    local start; start=$(date +%s%N)
    "$@" > /dev/null
    local ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ -z "$best_ms" ] || [ "$ms" -lt "$best_ms" ]; then best_ms=$ms; fi
  done
  echo "$label: $best_ms ms ($(( events * 1000 / (best_ms > 0 ? best_ms : 1) )) events/s)"
}
replay=("$evs" replay --archive "$dir/archive" --quiet)
best "stdout to /dev/null" "${replay[@]}"
best "stdout to /dev/null, with a checkpoint file" "${replay[@]}" --checkpoint-file "$dir/checkpoint.json"
best "through a pipe (| cat)" bash -c '"$@" | cat' _ "${replay[@]}"
best "consumer acknowledging every line" "${replay[@]}" --checkpoint-file "$dir/checkpoint.json" \
  -- awk '{n++; print n; fflush()}'
best "consumer acknowledging every 1000th" "${replay[@]}" --checkpoint-file "$dir/checkpoint.json" \
  -- awk '{n++; if (n % 1000 == 0) {print n; fflush()}} END {print n}'
