#!/usr/bin/env bash
# benches/log_scan.sh: how fast a build reads the log, PostgreSQL against
# redb in the same run (issue #11, item 4). One `fusion generate` stream of
# EVENTS events (200000) is ingested into an embedded store and into a
# fresh PostgreSQL database (FUSION_BENCH_DATABASE_URL or a throwaway
# server, benches/pg_server.sh); examples/log_scan.rs then reads each whole
# log as a build does, REPS times (3, best counts).
# Prints name=value lines on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-200000}
if [ -z "${FUSION_BIN:-}" ] || [ -z "${SCAN_BIN:-}" ]; then
    echo "building release..." >&2
    cargo build --release --quiet --bin fusion --example log_scan --example pg_ingest
fi
BIN=${FUSION_BIN:-target/release/fusion}
SCAN=${SCAN_BIN:-target/release/examples/log_scan}
PG_HELPER=${PG_HELPER_BIN:-target/release/examples/pg_ingest}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-scan.XXXXXX")
cleanup() {
    if [ -n "${stop_server:-}" ]; then eval "$stop_server"; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=benches/pg_server.sh
source benches/pg_server.sh
pg_server_start "$WORK"
echo "cpus=$(nproc)"
echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
echo "events=$EVENTS"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

echo "generating $EVENTS events..." >&2
"$BIN" generate --seed 42 --events "$EVENTS" >"$WORK/events.ndjson"
url=$("$PG_HELPER" db "$admin" bench_scan)
"$BIN" ingest --data-dir "$WORK/redb" "$WORK/events.ndjson" >/dev/null 2>&1
"$BIN" ingest --database-url "$url" "$WORK/events.ndjson" >/dev/null 2>&1

"$SCAN" embedded "$WORK/redb"
"$SCAN" postgres "$url"
echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
