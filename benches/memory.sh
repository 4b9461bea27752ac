#!/usr/bin/env bash
# benches/memory.sh: what a store of N generated events costs the engine in
# memory and time (issue #10, "Compact state").
#
# Generates a `fusion generate` stream, loads it into a fresh embedded store
# with `fusion ingest`, then measures:
# - `fusion serve`: seconds until /readyz answers 200, resident memory then
#   (VmRSS of /proc/PID/status) and its peak (VmHWM);
# - `fusion rescore`: seconds and peak resident memory (/usr/bin/time -v),
#   and the number of relationships it scores;
# and prints bytes per event and per relationship. Prints `name=value`
# lines on stdout; the rest goes to stderr. The stream and the store are
# deleted at the end (KEEP=1 keeps them).
#
# Settings (environment): FUSION_BIN (default: build release), EVENTS
# (1000000), SEED (42), PEOPLE, INFLUENCERS, BRANDS (generator defaults when
# unset), SERVE_ARGS (extra flags for serve and rescore).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-1000000}
SEED=${SEED:-42}
# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-memory.XXXXXX")
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

gen=(--seed "$SEED" --events "$EVENTS")
[ -n "${PEOPLE:-}" ] && gen+=(--people "$PEOPLE")
[ -n "${INFLUENCERS:-}" ] && gen+=(--influencers "$INFLUENCERS")
[ -n "${BRANDS:-}" ] && gen+=(--brands "$BRANDS")
echo "generating ${gen[*]}..." >&2
"$BIN" generate "${gen[@]}" >"$WORK/events.ndjson"
t0=$(date +%s.%N)
"$BIN" ingest --data-dir "$WORK/data" "$WORK/events.ndjson" >&2
t1=$(date +%s.%N)
rm "$WORK/events.ndjson"
echo "events=$EVENTS"
awk -v a="$t0" -v b="$t1" -v n="$EVENTS" 'BEGIN { printf "ingest_s=%.1f\ningest_events_per_s=%.0f\n", b - a, n / (b - a) }'
echo "store_bytes=$(du -sb "$WORK/data" | cut -f1)"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
t0=$(date +%s.%N)
# shellcheck disable=SC2086
RUST_LOG=warn "$BIN" serve --bind "127.0.0.1:$port" --data-dir "$WORK/data" ${SERVE_ARGS:-} >&2 &
pid=$!
until curl -sf "localhost:$port/readyz" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "serve exited" >&2; exit 1; }
    sleep 0.2
done
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "serve_ready_s=%.1f\n", b - a }'
rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
hwm_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
echo "serve_rss_bytes=$((rss_kb * 1024))"
echo "serve_peak_bytes=$((hwm_kb * 1024))"
echo "serve_rss_bytes_per_event=$((rss_kb * 1024 / EVENTS))"

# shellcheck disable=SC2086
/usr/bin/time -v "$BIN" rescore --data-dir "$WORK/data" ${SERVE_ARGS:-} >"$WORK/rescore.out" 2>"$WORK/rescore.time"
cat "$WORK/rescore.out" >&2
rels=$(grep -oE 'relationships=[0-9]+' "$WORK/rescore.out" | cut -d= -f2)
peak_kb=$(awk '/Maximum resident set size/ { print $6 }' "$WORK/rescore.time")
wall=$(awk '/Elapsed \(wall clock\)/ { print $8 }' "$WORK/rescore.time")
echo "relationships=$rels"
echo "rescore_wall=$wall"
echo "rescore_peak_bytes=$((peak_kb * 1024))"
echo "serve_rss_bytes_per_relationship=$((rss_kb * 1024 / rels))"
