#!/usr/bin/env bash
# `make bench`: the orders example's rebuild (crates/evs-orders: rows per customer and per day, the
# day rows touched by every order stream) against the raw replay of the same archive, in the same run.
#
# 1. builds `evs`, `evs-orders` and the archive generator (release);
# 2. generates a local archive of ORDERS_EVENTS events (default 1,000,000, 10,000 streams; about a
#    third of the streams are order streams, whose events carry the example's fields), cached in
#    <target>/bench-orders-<N> (kept once complete; delete it to regenerate);
# 3. times, ORDERS_RUNS times each (default 3, the best run counts), with /usr/bin/time (wall, peak RSS):
#      evs replay --archive DIR --quiet > /dev/null
#      evs-orders rebuild --archive DIR --read-model memory: --quiet > /dev/null
#      the same rebuild as two processes at once, --partition 0/2 and 1/2 (the wall time of the pair)
#      evs-orders rebuild --read-model sqlite:FILE (a new file each run), alone and as a pair of partitions
#        into one file
#      evs-orders rebuild --read-model postgres://… (a new database each run) on a throwaway PostgreSQL
#        cluster on loopback (initdb and pg_ctl, run as `nobody` under root; skipped without PostgreSQL)
# 4. prints each as events/s and as a ratio to the replay's rate.
#
# Usage: bash bench/orders.sh [N]   (or ORDERS_EVENTS=N; ORDERS_RUNS=R)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:-${ORDERS_EVENTS:-1000000}}
RUNS=${ORDERS_RUNS:-3}
TARGET=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo build -q --release -p evs -p evs-orders
cargo build -q --release -p evs-replay --example gen_archive
EVS=$TARGET/release/evs
ORDERS=$TARGET/release/evs-orders
ARCHIVE=$TARGET/bench-orders-$EVENTS
if [[ ! -f $ARCHIVE/gen_archive.json ]]; then
    rm -rf "$ARCHIVE"
    mkdir -p "$ARCHIVE"
    "$TARGET/release/examples/gen_archive" --dir "$ARCHIVE" --events "$EVENTS" > "$ARCHIVE/gen_archive.tmp"
    mv "$ARCHIVE/gen_archive.tmp" "$ARCHIVE/gen_archive.json"
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# best wall time (s) and its peak RSS (kB) of RUNS runs of a command
best() {
    local best_s="" best_kb=""
    for _ in $(seq "$RUNS"); do
        /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" > /dev/null 2> "$WORK/err" || {
            cat "$WORK/err" >&2
            return 1
        }
        read -r s kb < "$WORK/time"
        if [[ -z $best_s ]] || python3 -c "import sys; sys.exit(0 if $s < $best_s else 1)"; then
            best_s=$s best_kb=$kb
        fi
    done
    echo "$best_s $best_kb"
}

# the pair of partitions at once into read model $1 (a SQLite file is removed first): best wall time of
# RUNS runs
pair() {
    local best_s=""
    for _ in $(seq "$RUNS"); do
        local start end
        rm -f "$WORK"/orders.db*
        start=$(date +%s%N)
        "$ORDERS" rebuild --archive "$ARCHIVE" --read-model "$1" --quiet --partition 0/2 > /dev/null &
        local a=$!
        "$ORDERS" rebuild --archive "$ARCHIVE" --read-model "$1" --quiet --partition 1/2 > /dev/null &
        local b=$!
        wait "$a" "$b"
        end=$(date +%s%N)
        local s
        s=$(python3 -c "print(round(($end - $start) / 1e9, 2))")
        if [[ -z $best_s ]] || python3 -c "import sys; sys.exit(0 if $s < $best_s else 1)"; then
            best_s=$s
        fi
    done
    echo "$best_s"
}

# a rebuild into a new SQLite file
sqlite_rebuild() {
    rm -f "$WORK"/orders.db*
    "$ORDERS" rebuild --archive "$ARCHIVE" --read-model "sqlite:$WORK/orders.db" --quiet
}
export -f sqlite_rebuild
export ORDERS ARCHIVE WORK

# A throwaway PostgreSQL cluster on a free loopback port, stopped at exit.
PG_URL=""
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -n $PG_BIN && -x $PG_BIN/initdb ]]; then
    PGDIR=$WORK/pg
    mkdir -p "$PGDIR"
    as_pg() { if [[ $(id -u) == 0 ]]; then su nobody -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
    [[ $(id -u) == 0 ]] && chown nobody "$PGDIR" "$WORK" && chmod 755 "$WORK"
    PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$PG_BIN/initdb -D $PGDIR/data -U evs -A trust --no-sync -E UTF8 --locale=C" > /dev/null
    as_pg "$PG_BIN/pg_ctl -D $PGDIR/data -l $PGDIR/log -w -o '-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off' start" > /dev/null
    trap 'as_pg "$PG_BIN/pg_ctl -D $PGDIR/data -m fast stop" > /dev/null 2>&1; rm -rf "$WORK"' EXIT
    PG_URL=postgres://evs@127.0.0.1:$PG_PORT
fi

# a rebuild into a new PostgreSQL database
pg_rebuild() {
    local db=orders_$RANDOM$RANDOM
    "$PG_BIN/psql" -q "$PG_URL/postgres" -c "create database $db" > /dev/null
    "$ORDERS" rebuild --archive "$ARCHIVE" --read-model "$PG_URL/$db" --quiet
}
export -f pg_rebuild
export PG_URL PG_BIN

read -r replay_s replay_kb < <(best "$EVS" replay --archive "$ARCHIVE" --quiet)
read -r rebuild_s rebuild_kb < <(best "$ORDERS" rebuild --archive "$ARCHIVE" --read-model memory: --quiet)
pair_s=$(pair memory:)
read -r sqlite_s sqlite_kb < <(best bash -c sqlite_rebuild)
sqlite_pair_s=$(pair "sqlite:$WORK/orders.db")
pg_s=0 pg_kb=0
if [[ -n $PG_URL ]]; then
    read -r pg_s pg_kb < <(best bash -c pg_rebuild)
fi

python3 - "$EVENTS" "$replay_s" "$replay_kb" "$rebuild_s" "$rebuild_kb" "$pair_s" \
    "$sqlite_s" "$sqlite_kb" "$sqlite_pair_s" "$pg_s" "$pg_kb" <<'EOF'
import sys
events = int(sys.argv[1])
(replay_s, replay_kb, rebuild_s, rebuild_kb, pair_s, sqlite_s, sqlite_kb, sqlite_pair_s, pg_s,
 pg_kb) = map(float, sys.argv[2:])
rate = lambda s: events / s
print(f"orders rebuild, {events:,} events (best of the runs; ratio = events/s over evs replay --quiet's)")
print(f"{'':<44}{'wall s':>8}{'events/s':>12}{'ratio':>8}{'peak RSS MB':>13}")
rows = [
    ("evs replay --quiet", replay_s, replay_kb),
    ("evs-orders rebuild --read-model memory:", rebuild_s, rebuild_kb),
    ("the same, --partition 0/2 + 1/2 at once", pair_s, None),
    ("evs-orders rebuild --read-model sqlite:FILE", sqlite_s, sqlite_kb),
    ("the same, --partition 0/2 + 1/2 at once", sqlite_pair_s, None),
]
if pg_s:
    rows.append(("evs-orders rebuild --read-model postgres://", pg_s, pg_kb))
for name, s, kb in rows:
    mb = f"{kb / 1024:.0f}" if kb else "-"
    print(f"{name:<44}{s:>8.2f}{rate(s):>12,.0f}{rate(s) / rate(replay_s):>8.2f}{mb:>13}")
EOF
