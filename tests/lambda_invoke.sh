#!/usr/bin/env bash
# `make invoke-test`: the archiver under the local Lambda emulator, end to end. `cargo lambda watch` (a host
# build, no cross compile) runs the evs-archiver binary on a free port with a local archive directory in a
# temporary directory; `cargo lambda invoke` sends it each events/*.json; each answer must report no
# batchItemFailures, and the objects that land must hold every record of the batch: its events as NDJSON
# lines under events/, the rest in one dead-letter object under dead-letter/ (for the three sample files,
# exactly the counts events/README.md gives). The watcher and its children are stopped on exit, however the
# script ends; any failure exits non-zero.
#
# Needs cargo-lambda (`make lambda-tools` puts it in .venv; CARGO_LAMBDA overrides) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_lambda=${CARGO_LAMBDA:-.venv/bin/cargo-lambda}
python=${PYTHON:-python3}
[ -x "$cargo_lambda" ] || { echo "error: $cargo_lambda not found (make lambda-tools)" >&2; exit 1; }

tmp=$(mktemp -d)
archive=$tmp/archive
mkdir -p "$archive"
watcher=
stop() {
  status=$?
  if [ -n "$watcher" ] && kill -0 "$watcher" 2>/dev/null; then
    # The watcher leads a process group of its own (setsid): cargo, the function. Stop them all.
    kill -TERM -- "-$watcher" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$watcher" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
  fi
  if [ "$status" != 0 ] && [ -f "$tmp/watch.log" ]; then
    echo "-- cargo lambda watch output:" >&2
    tail -n 40 "$tmp/watch.log" | cut -c 1-400 >&2
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap stop EXIT
trap 'exit 130' INT TERM

# The binary first, so that the watcher's own build is a no-op and its start is quick.
start=$(date +%s)
cargo build --locked -q -p evs-lambda --bin evs-archiver
echo "== evs-archiver built (host) in $(( $(date +%s) - start )) s"

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
EVS_ARCHIVE=$archive EVS_LOCAL_ARCHIVE_IN_LAMBDA=true EVS_COMPRESSION=gzip RUST_LOG=info \
  setsid "$cargo_lambda" lambda watch --ignore-changes -A 127.0.0.1 -P "$port" -p evs-lambda --bin evs-archiver \
  >"$tmp/watch.log" 2>&1 &
watcher=$!

# Ready when the emulator's port accepts connections (the function itself starts on the first invoke).
for i in $(seq 600); do
  kill -0 "$watcher" 2>/dev/null || { echo "error: cargo lambda watch exited" >&2; exit 1; }
  if "$python" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; then
    break
  fi
  [ "$i" = 600 ] && { echo "error: cargo lambda watch not answering on port $port after 60 s" >&2; exit 1; }
  sleep 0.1
done
echo "== cargo lambda watch answering on 127.0.0.1:$port"

failures=0
for event in events/*.json; do
  before=$(find "$archive" -type f | sort)
  t0=$(date +%s%N)
  if ! "$cargo_lambda" lambda invoke evs-archiver -A 127.0.0.1 -P "$port" -o json --data-file "$event" \
      >"$tmp/answer.json" 2>"$tmp/invoke.err"; then
    echo "FAIL $event: cargo lambda invoke failed: $(cat "$tmp/invoke.err")" >&2
    failures=$((failures + 1))
    continue
  fi
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  after=$(find "$archive" -type f | sort)
  new=$(comm -13 <(echo "$before") <(echo "$after"))
  if "$python" - "$event" "$tmp/answer.json" "$archive" "$ms" $new <<'EOF'; then :; else failures=$((failures + 1)); fi
import gzip, json, os, sys

event, answer_path, archive, ms, new = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
# The counts events/README.md gives: (events archived, records dead-lettered).
expected = {"inserts.json": (8, 0), "mixed.json": (4, 3), "empty.json": (0, 0)}
problems = []
with open(answer_path, encoding="utf-8") as f:
    text = f.read()
try:
    answer = json.loads(text)
except ValueError as e:
    answer = None
    problems.append(f"the answer is not JSON ({e}): {text!r}")
if answer is not None:
    if not isinstance(answer, dict) or answer.get("batchItemFailures") != []:
        problems.append(f"the answer is not an empty batchItemFailures: {text.strip()}")
with open(event, encoding="utf-8") as f:
    records = json.load(f)["Records"]
lines, dead, objects = 0, 0, []
for path in new:
    key = os.path.relpath(path, archive)
    objects.append(key)
    if key.startswith("events/") and key.endswith(".ndjson.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if not row.get("streamId") or not isinstance(row.get("eventId"), int):
                    problems.append(f"{key}: a line without streamId/eventId: {line.strip()}")
                lines += 1
    elif key.startswith("dead-letter/") and key.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        dead += len(doc["deadLetters"])
        if doc.get("count") != len(doc["deadLetters"]):
            problems.append(f"{key}: count {doc.get('count')} but {len(doc['deadLetters'])} entries")
    else:
        problems.append(f"an unexpected object {key}")
if lines + dead != len(records):
    problems.append(f"{len(records)} records in, but {lines} archived + {dead} dead-lettered out")
want = expected.get(os.path.basename(event))
if want is not None and (lines, dead) != want:
    problems.append(f"expected {want[0]} archived and {want[1]} dead-lettered, got {lines} and {dead}")
if problems:
    for p in problems:
        print(f"FAIL {event}: {p}", file=sys.stderr)
    sys.exit(1)
print(f"ok   {event}: {len(records)} records -> {lines} archived, {dead} dead-lettered, "
      f"{len(objects)} object(s), answer {json.dumps(answer)} in {ms} ms")
EOF
done

if [ "$failures" != 0 ]; then
  echo "== $failures of $(ls events/*.json | wc -l) sample events failed" >&2
  exit 1
fi
echo "== every sample event archived through cargo lambda watch ($(( $(date +%s) - start )) s in all)"
