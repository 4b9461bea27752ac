#!/usr/bin/env bash
# benches/scale.sh [N]: the figures of issue #10 at N generated events
# (default 1,000,000) on the embedded store (DATABASE=1: on PostgreSQL):
# memory per event, start-up from the whole log and from a snapshot,
# rescore, and the relationship read under load beside /healthz.
#
# Generates a `fusion generate` stream of N events, loads it with `fusion
# ingest`, then:
# - first open: `fusion serve` until /readyz answers 200 (a full fold of
#   the log): seconds, resident bytes then (VmRSS) and per event; then until
#   /readyz says `"rankings":"ready"` (the live series, built on the live
#   thread after ready: seconds from the start, resident bytes then); the
#   peak (VmHWM); the phases of the start from its log (`*_phase_*_s`,
#   engine `Phases`; `*_phase_before_load_s`, the store's open before a
#   load from a snapshot, and `*_phase_after_load_s`, from the load or
#   build to serving); the snapshot it writes after the full fold (seconds
#   until it is stored, bytes);
# - the read under load: wrk on `GET /healthz`, on a relationship read (one
#   relationship of the stream, the answer cache answering), and on the same
#   read with a new `at` on every request (the cache never answers),
#   p50/p99;
# - restart: SIGTERM (a graceful stop writes a snapshot), `fusion serve`
#   again until ready and until its rankings are: seconds, resident bytes,
#   the phases (reading the snapshots, decoding one, folding the log's tail);
# - `fusion rescore`: wall seconds and peak resident memory
#   (/usr/bin/time -v), relationships scored (it loads the snapshot too).
# Prints `name=value` lines on stdout; the rest goes to stderr. The stream
# and the store are deleted at the end (KEEP=1 keeps them, and a
# PostgreSQL server started here keeps running: stop it with the pg_ctl
# line on stderr).
#
# Settings (environment): FUSION_BIN (default: build release), SEED (42),
# PEOPLE, INFLUENCERS, BRANDS (generator defaults when unset; the issue's
# 10M run: 200000, 2000, 1000), DURATION (wrk, 10s), CONNECTIONS (16).
# STREAM=file.ndjson and STORE=dir reuse a stream generated and ingested
# once (the store is copied, its snapshots left out): comparing two builds
# on one stream then costs neither generating nor ingesting it again.
# STORE_COPY=0 uses STORE in place instead (its snapshots deleted first; it
# keeps this run's): a 10M-event store is 6 GB. DATABASE=1: PostgreSQL, a
# throwaway server (benches/pg_server.sh; FUSION_BENCH_DATABASE_URL, a
# key=value connection string, for another), a database `bench_scale`
# loaded with `fusion ingest --database-url` (STORE is embedded only).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:-${EVENTS:-1000000}}
SEED=${SEED:-42}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
DATABASE=${DATABASE:-0}
# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-scale.XXXXXX")
pid=
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept $WORK" >&2
        [ -z "${stop_server:-}" ] || echo "its PostgreSQL server runs; stop it with: $stop_server" >&2
    else
        [ -z "${stop_server:-}" ] || eval "$stop_server"
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
kb() { awk "/^$1:/ { print \$2 }" "/proc/$pid/status"; }

# PLACE: the flags that name the store, for every command.
if [ "$DATABASE" = 1 ]; then
    [ -z "${STORE:-}" ] || { echo "STORE is for the embedded store only" >&2; exit 1; }
    # shellcheck source=benches/pg_server.sh
    source benches/pg_server.sh
    pg_server_start "$WORK"
    case "$admin" in
        *dbname=*) url=$(sed -E 's/dbname=[^ ]*/dbname=bench_scale/' <<<"$admin") ;;
        *) echo "FUSION_BENCH_DATABASE_URL must be key=value (dbname=...)" >&2; exit 1 ;;
    esac
    psql "$admin" -qc "DROP DATABASE IF EXISTS bench_scale" -c "CREATE DATABASE bench_scale"
    mkdir -p "$WORK/data"
    PLACE=(--data-dir "$WORK/data" --database-url "$url")
    echo "backend=postgres"
else
    PLACE=(--data-dir "$WORK/data")
    echo "backend=embedded"
fi
echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"

gen=(--seed "$SEED" --events "$EVENTS")
[ -n "${PEOPLE:-}" ] && gen+=(--people "$PEOPLE")
[ -n "${INFLUENCERS:-}" ] && gen+=(--influencers "$INFLUENCERS")
[ -n "${BRANDS:-}" ] && gen+=(--brands "$BRANDS")
if [ -n "${STORE:-}" ]; then
    [ -n "${STREAM:-}" ] || { echo "STORE needs the STREAM it was ingested from" >&2; exit 1; }
    if [ "${STORE_COPY:-1}" = 0 ]; then
        rm -rf "$STORE/snapshots"
        # The cleanup's rm -rf removes the link, not the store.
        ln -s "$(realpath "$STORE")" "$WORK/data"
    else
        cp -r "$STORE" "$WORK/data"
        rm -rf "$WORK/data/snapshots"
    fi
    events=$STREAM
else
    echo "generating ${gen[*]}..." >&2
    "$BIN" generate "${gen[@]}" >"$WORK/events.ndjson"
    events=$WORK/events.ndjson
fi
# A relationship the stream certainly has: the first purchase's.
read -r person brand < <(grep -m1 '"type":"purchase"' "$events" |
    python3 -c 'import json,sys; e=json.loads(sys.stdin.read()); print(e["person"], e["brand"])')
if [ -z "${STORE:-}" ]; then
    t0=$(date +%s.%N)
    "$BIN" ingest "${PLACE[@]}" "$events" >&2
    echo "ingest_s=$(elapsed "$t0" "$(date +%s.%N)")"
    rm "$events"
fi
echo "events=$EVENTS"
if [ "$DATABASE" = 1 ]; then
    echo "store_bytes=$(psql "$admin" -qtAc "SELECT pg_database_size('bench_scale')")"
else
    echo "store_bytes=$(du -sbL "$WORK/data" | cut -f1)"
fi

# Snapshots stored, and the newest one's bytes.
snapshot_count() {
    if [ "$DATABASE" = 1 ]; then
        psql "$url" -qtAc "SELECT count(*) FROM snapshots"
    else
        find -L "$WORK/data/snapshots" -name '*.snapshot' 2>/dev/null | wc -l
    fi
}
newest_snapshot_bytes() {
    if [ "$DATABASE" = 1 ]; then
        # Its bytes are in chunks (migration 0014); a build before has them whole.
        psql "$url" -qtAc "SELECT COALESCE((SELECT sum(octet_length(bytes)) FROM snapshot_chunks \
            WHERE snapshot = (SELECT id FROM snapshots ORDER BY position DESC, id DESC LIMIT 1)), 0)" 2>/dev/null ||
            psql "$url" -qtAc "SELECT octet_length(snapshot) FROM snapshots ORDER BY position DESC, id DESC LIMIT 1"
    else
        stat -c %s "$(ls -t "$WORK/data/snapshots/"*.snapshot | head -1)"
    fi
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$port"

# start NAME: starts serve (its process id in $pid, its log in
# $WORK/serve-NAME.log) and waits until it is ready (seconds in $ready,
# resident kB then in $rss_ready), then until its rankings are (the live
# series built: seconds from the start in $rankings_ready). Prints the
# phases its log names as `NAME_phase_<phase>_s`.
start() {
    local t0 t1 log="$WORK/serve-$1.log"
    t0=$(date +%s.%N)
    # No rate limit: the load comes from one address.
    RUST_LOG=info "$BIN" serve --bind "127.0.0.1:$port" "${PLACE[@]}" \
        --rate-per-address 0 --rate-per-key 0 >>"$log" 2>&1 &
    pid=$!
    until curl -sf "$BASE/readyz" >/dev/null; do
        kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; echo "serve exited" >&2; exit 1; }
        sleep 0.1
    done
    t1=$(date +%s.%N)
    ready=$(elapsed "$t0" "$t1")
    rss_ready=$(kb VmRSS)
    # A build before issue #10's h25 has no `rankings`: ready is both.
    until curl -sf "$BASE/readyz" | grep -qvE '"rankings":"building"'; do
        kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; echo "serve exited" >&2; exit 1; }
        sleep 0.1
    done
    rankings_ready=$(elapsed "$t0" "$(date +%s.%N)")
    sed 's/\x1b\[[0-9;]*m//g' "$log" |
        grep -E 'loaded the scoring state from a snapshot|built the scoring state from the whole log' |
        grep -oE '[a-z_]+_seconds=[0-9.e-]+' |
        sed -E "s/^([a-z_]+)_seconds=/$1_phase_\\1_s=/" || true
    # Around the state's load or build, from the log's times (task h37):
    # before it (the store's open: a file not closed cleanly is repaired
    # first, every page read), and after it until `serve` says it serves
    # (the live series' build inputs read, memory given back, the rest of
    # the set-up).
    sed 's/\x1b\[[0-9;]*m//g' "$log" | python3 -c '
import re, sys
from datetime import datetime
name, t0 = sys.argv[1], float(sys.argv[2])
def at(line):
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
loaded = serving = None
for line in sys.stdin:
    if loaded is None and re.search("loaded the scoring state from a snapshot|built the scoring state from the whole log", line):
        loaded = (at(line), float(re.search(r" seconds=([0-9.e-]+)", line).group(1)) if " seconds=" in line else None)
    if serving is None and "serving;" in line:
        serving = at(line)
if loaded and loaded[1] is not None:
    print(f"{name}_phase_before_load_s={loaded[0] - loaded[1] - t0:.2f}")
if loaded and serving:
    print(f"{name}_phase_after_load_s={serving - loaded[0]:.2f}")
' "$1" "$t0" || true
}

start first_open
t_ready=$(date +%s.%N)
echo "first_open_ready_s=$ready"
echo "first_open_rss_bytes=$((rss_ready * 1024))"
echo "first_open_rss_bytes_per_event=$((rss_ready * 1024 / EVENTS))"
echo "first_open_rankings_ready_s=$rankings_ready"
rss=$(kb VmRSS)
echo "first_open_rankings_ready_rss_bytes=$((rss * 1024))"
echo "first_open_rankings_ready_rss_bytes_per_event=$((rss * 1024 / EVENTS))"
echo "first_open_peak_bytes=$(($(kb VmHWM) * 1024))"

# The snapshot written in the background after the full fold.
until [ "$(snapshot_count)" -gt 0 ]; do
    kill -0 "$pid" 2>/dev/null || { echo "serve exited" >&2; exit 1; }
    sleep 0.1
done
echo "snapshot_written_after_ready_s=$(elapsed "$t_ready" "$(date +%s.%N)")"
echo "snapshot_bytes=$(newest_snapshot_bytes)"
echo "first_open_peak_with_snapshot_bytes=$(($(kb VmHWM) * 1024))"

to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n;
        else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
measure() {
    local name=$1 out="$WORK/wrk-$1.txt"
    shift
    timeout 120 wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --timeout 10s --latency "$@" >"$out"
    cat "$out" >&2
    echo "${name}_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    echo "${name}_p50_ms=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")"
    echo "${name}_p99_ms=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")"
    local bad
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    [ -z "$bad" ] || echo "${name}_non2xx=$bad"
}
code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/v1/relationships/$person/$brand")
[ "$code" = 200 ] || { echo "GET /v1/relationships/$person/$brand answered $code" >&2; exit 1; }
cat >"$WORK/uncached.lua" <<LUA
counter = 0
request = function()
    counter = counter + 1
    local t = 1767225600 + 86400 * 90 + (counter * 7919) % 2000000
    return wrk.format("GET", string.format("/v1/relationships/$person/$brand?at=%s",
        os.date("!%Y-%m-%dT%H:%M:%SZ", t)))
end
LUA
measure healthz "$BASE/healthz"
measure relationship "$BASE/v1/relationships/$person/$brand"
measure relationship_uncached -s "$WORK/uncached.lua" "$BASE/"

kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
pid=
start restart
echo "restart_ready_s=$ready"
echo "restart_rss_bytes=$((rss_ready * 1024))"
echo "restart_rss_bytes_per_event=$((rss_ready * 1024 / EVENTS))"
echo "restart_rankings_ready_s=$rankings_ready"
rss=$(kb VmRSS)
echo "restart_rankings_ready_rss_bytes=$((rss * 1024))"
echo "restart_rankings_ready_rss_bytes_per_event=$((rss * 1024 / EVENTS))"
echo "restart_peak_bytes=$(($(kb VmHWM) * 1024))"
grep -c "loaded the scoring state from a snapshot" "$WORK/serve-restart.log" |
    sed 's/^/restart_from_snapshot=/' || true
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
pid=

/usr/bin/time -v "$BIN" rescore "${PLACE[@]}" >"$WORK/rescore.out" 2>"$WORK/rescore.time"
cat "$WORK/rescore.out" >&2
echo "relationships=$(grep -oE 'relationships=[0-9]+' "$WORK/rescore.out" | cut -d= -f2)"
wall=$(awk '/Elapsed \(wall clock\)/ { print $8 }' "$WORK/rescore.time")
echo "rescore_s=$(awk -v w="$wall" 'BEGIN { n = split(w, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.1f", s }')"
echo "rescore_peak_bytes=$(($(awk '/Maximum resident set size/ { print $6 }' "$WORK/rescore.time") * 1024))"
echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
