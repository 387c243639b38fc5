#!/usr/bin/env bash
# `make bench`: the archiver's speed and memory, side by side with a Python handler.
#
# 1. builds the release archiver and the bench examples;
# 2. generates three Lambda events with examples/gen_batch.rs (deterministic,
#    seed 42) into <target>/bench-data/: 1k.json (1,000 records), 10k.json
#    (10,000 records) and 6mb.json (as many records as fit in 6,000,000 bytes,
#    the Lambda payload limit);
# 3. runs the real handler once per file (examples/archive_file.rs) into a
#    local directory: the archive object the Python handler is checked
#    against, and the process's peak RSS (also from /usr/bin/time -v, if present);
# 4. runs the criterion bench (benches/archive.rs) on the same files;
# 5. runs bench/python_handler.py on the same files (and checks that its NDJSON
#    is byte for byte the Rust archive's), and bench/node_handler.js the same
#    way when `node` is installed;
# 6. prints a table (also written as results.json next to the data).
#
# Environment: PYTHON (default .venv/bin/python, made by `make venv`, else
# python3; needs boto3), PY_MIN_SECONDS (Python and Node timing per file,
# default 5), NODE (default: `node` on the PATH; none: no Node column),
# EVS_BENCH_CPU_TIME=1 (criterion measures the thread's CPU time instead of
# the wall clock: the same on an idle machine, steadier on a busy one).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*" >&2; }

PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import boto3' 2>/dev/null; then
    echo "bench: $PYTHON cannot import boto3; run 'make venv' or set PYTHON" >&2
    exit 1
fi

TARGET=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
DATA=$TARGET/bench-data
mkdir -p "$DATA"

say "building (release)"
cargo build --release -p evs-archiver --example gen_batch --example archive_file
# The Lambda binary on its own, as cargo-lambda builds it: built together with
# the examples it would get the dev-dependencies' features too (0.5 MB more).
cargo build --release -p evs-lambda --bin evs-archiver

say "generating inputs in $DATA"
"$TARGET/release/examples/gen_batch" 1000 "$DATA/1k.json" >&2
"$TARGET/release/examples/gen_batch" 10000 "$DATA/10k.json" >&2
"$TARGET/release/examples/gen_batch" --target-bytes 6000000 "$DATA/6mb.json" >&2

NAMES=(1k 10k 6mb)

say "running the handler once per file (archive_file)"
for name in "${NAMES[@]}"; do
    rm -rf "$DATA/archive-$name"
    "$TARGET/release/examples/archive_file" "$DATA/$name.json" --keep "$DATA/archive-$name" \
        >"$DATA/archive_file-$name.json"
done
if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -v "$TARGET/release/examples/archive_file" "$DATA/6mb.json" \
        >/dev/null 2>"$DATA/time-v-6mb.txt"
fi

say "criterion (cargo bench -p evs-archiver --bench archive)"
EVS_BENCH_DATA=$DATA cargo bench -p evs-archiver --bench archive 2>&1 | tee "$DATA/criterion.log" >&2

say "Python handler ($PYTHON)"
for name in "${NAMES[@]}"; do
    object=$(find "$DATA/archive-$name" -name '*.ndjson.gz' | head -n 1)
    "$PYTHON" bench/python_handler.py "$DATA/$name.json" --compare "$object" \
        --min-seconds "${PY_MIN_SECONDS:-5}" | tee "$DATA/python-$name.json" >&2
done

NODE=${NODE:-$(command -v node || true)}
rm -f "$DATA"/node-*.json
if [[ -n $NODE ]]; then
    say "Node handler ($NODE $("$NODE" --version))"
    for name in "${NAMES[@]}"; do
        object=$(find "$DATA/archive-$name" -name '*.ndjson.gz' | head -n 1)
        "$NODE" bench/node_handler.js "$DATA/$name.json" --compare "$object" \
            --min-seconds "${PY_MIN_SECONDS:-5}" | tee "$DATA/node-$name.json" >&2
    done
else
    say "no node on the PATH: no Node comparison"
fi

BINARY=$TARGET/release/evs-archiver
INSTALLED_TARGETS=$(rustup target list --installed 2>/dev/null | tr '\n' ' ' || true)

say "results"
python3 - "$DATA" "$TARGET" "$BINARY" "$INSTALLED_TARGETS" <<'EOF'
import json, os, re, sys

data, target, binary, installed = sys.argv[1:5]
names = ["1k", "10k", "6mb"]

def load(path):
    with open(path) as f:
        return json.load(f)

def criterion_ns(group, bench):
    est = load(os.path.join(target, "criterion", group, bench, "new", "estimates.json"))
    return est["mean"]["point_estimate"]

rows, results = [], {"inputs": {}, "steps10k": {}}
for name in names:
    run = load(os.path.join(data, f"archive_file-{name}.json"))
    py = load(os.path.join(data, f"python-{name}.json"))
    records, size = run["records"], run["inputBytes"]
    rust_s = criterion_ns("archive", name) / 1e9
    r = {
        "records": records,
        "inputBytes": size,
        "rust": {"seconds": rust_s, "recordsPerSecond": records / rust_s,
                 "mbPerSecond": size / rust_s / 1e6, "outputBytes": run["summary"]["bytes"],
                 "peakRssKiB": run["peakRssKiB"]},
        "python": {"seconds": py["meanSeconds"], "recordsPerSecond": py["recordsPerSecond"],
                   "mbPerSecond": py["mbPerSecond"], "outputBytes": py["outputBytes"],
                   "steps": py["stepsMeanSeconds"]},
        "sameNdjson": py.get("compare", {}).get("identical"),
    }
    r["speedup"] = py["meanSeconds"] / rust_s
    node_path = os.path.join(data, f"node-{name}.json")
    if os.path.exists(node_path):
        node = load(node_path)
        r["node"] = {"seconds": node["meanSeconds"], "recordsPerSecond": node["recordsPerSecond"],
                     "mbPerSecond": node["mbPerSecond"], "outputBytes": node["outputBytes"],
                     "steps": node["stepsMeanSeconds"], "version": node["node"]}
        r["speedupOverNode"] = node["meanSeconds"] / rust_s
        r["sameNdjsonNode"] = node.get("compare", {}).get("identical")
    try:
        zlib_s = criterion_ns("archive-zlib-rs", name) / 1e9
        r["rustZlibRs"] = {"seconds": zlib_s, "recordsPerSecond": records / zlib_s,
                           "speedupOverPython": py["meanSeconds"] / zlib_s}
    except OSError:
        pass
    try:
        zstd_s = criterion_ns("archive-zstd", name) / 1e9
        r["rustZstd"] = {"seconds": zstd_s, "recordsPerSecond": records / zstd_s,
                         "speedupOverPythonGzip": py["meanSeconds"] / zstd_s}
    except OSError:
        pass
    results["inputs"][name] = r

for step in ["1-parse-json", "2-classify", "3-sort-and-ndjson", "4-gzip", "4-gzip-zlib-rs"]:
    try:
        results["steps10k"][step] = criterion_ns("steps-10k", step) / 1e9
    except OSError:
        pass

time_v = None
try:
    with open(os.path.join(data, "time-v-6mb.txt")) as f:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
        time_v = int(m.group(1)) if m else None
except OSError:
    pass
results["peakRss6mbKiB"] = {"vmHwm": results["inputs"]["6mb"]["rust"]["peakRssKiB"], "timeV": time_v}
results["binary"] = {"path": binary, "bytes": os.path.getsize(binary) if os.path.exists(binary) else None}
results["installedTargets"] = installed.split()
with open(os.path.join(data, "results.json"), "w") as f:
    json.dump(results, f, indent=2)

print()
print(f"{'input':<6} {'records':>7} {'MB in':>6} | {'Rust rec/s':>10} {'MB/s':>6} | {'Python rec/s':>12} {'MB/s':>6} | {'speed-up':>8} | same NDJSON")
for name in names:
    r = results["inputs"][name]
    print(f"{name:<6} {r['records']:>7} {r['inputBytes']/1e6:>6.2f} | "
          f"{r['rust']['recordsPerSecond']:>10,.0f} {r['rust']['mbPerSecond']:>6.1f} | "
          f"{r['python']['recordsPerSecond']:>12,.0f} {r['python']['mbPerSecond']:>6.1f} | "
          f"{r['speedup']:>7.1f}x | {r['sameNdjson']}")
if all("node" in results["inputs"][n] for n in names):
    print()
    print(f"{'input':<6} {'Rust rec/s':>10} | {'Node rec/s':>10} {'MB/s':>6} | {'speed-up':>8} | same NDJSON   ({results['inputs']['1k']['node']['version']})")
    for name in names:
        r = results["inputs"][name]
        print(f"{name:<6} {r['rust']['recordsPerSecond']:>10,.0f} | {r['node']['recordsPerSecond']:>10,.0f} "
              f"{r['node']['mbPerSecond']:>6.1f} | {r['speedupOverNode']:>7.1f}x | {r['sameNdjsonNode']}")
for name in names:
    z = results["inputs"][name].get("rustZlibRs")
    if z:
        print(f"{name:<6} with the gzip of before (zlib-rs): {z['recordsPerSecond']:>10,.0f} rec/s "
              f"({z['speedupOverPython']:.1f}x Python; libdeflate's path takes "
              f"{results['inputs'][name]['rust']['seconds'] / z['seconds']:.2f} of its time)")
for name in names:
    z = results["inputs"][name].get("rustZstd")
    if z:
        print(f"{name:<6} with EVS_COMPRESSION=zstd: {z['recordsPerSecond']:>10,.0f} rec/s "
              f"({z['speedupOverPythonGzip']:.1f}x the Python gzip handler; not like for like)")
print()
if results["steps10k"]:
    py = results["inputs"]["10k"]["python"]["steps"]
    print("10k, per step (ms):  Rust: " + ", ".join(f"{k} {v*1e3:.0f}" for k, v in results["steps10k"].items()))
    print("                   Python: " + ", ".join(f"{k} {v*1e3:.0f}" for k, v in py.items()))
    if "node" in results["inputs"]["10k"]:
        node = results["inputs"]["10k"]["node"]["steps"]
        print("                     Node: " + ", ".join(f"{k} {v*1e3:.0f}" for k, v in node.items()))
print(f"peak RSS, 6 MB batch ({results['inputs']['6mb']['records']} records, real handler, LocalDir): "
      f"{results['peakRss6mbKiB']['vmHwm'] / 1024:.1f} MiB (VmHWM)"
      + (f", {time_v / 1024:.1f} MiB (/usr/bin/time -v)" if time_v else ""))
for name in names:
    print(f"  peak RSS {name}: {results['inputs'][name]['rust']['peakRssKiB'] / 1024:.1f} MiB")
b = results["binary"]["bytes"]
print(f"release binary {binary}: " + (f"{b:,} bytes ({b / 2**20:.1f} MiB, stripped by profile.release)" if b else "missing"))
print(f"installed rust targets: {installed or '?'}"
      + ("" if "aarch64-unknown-linux-gnu" in installed else " (no aarch64 std: arm64 size not measured)"))
print(f"details: {os.path.join(data, 'results.json')}")
different = [n for n in names if results["inputs"][n]["sameNdjson"] is not True]
different += [f"{n} (Node)" for n in names
              if "node" in results["inputs"][n] and results["inputs"][n]["sameNdjsonNode"] is not True]
if different:
    # The comparison is only fair on the same output: a difference is a bug to look at.
    sys.exit(f"bench: the Python or Node handler's NDJSON differs from the archive's for {', '.join(different)} (see results.json)")
EOF
