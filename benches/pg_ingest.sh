#!/usr/bin/env bash
# End-to-end ingest figures for the PostgreSQL backend (issue 4), each on a
# fresh database of one server, in one run:
#   - raw_copy_rows_per_s: the ceiling, the rows of a `fusion generate` stream
#     written with one binary COPY and one commit into an unindexed table;
#   - ingest_events_per_s: `fusion ingest --database-url URL FILE` of the same
#     stream (validation, role checks, group-committed appends and the fold
#     into the scoring state), wall clock including start-up;
#   - http_*: acknowledgement latency when HTTP_THREADS clients post
#     HTTP_BATCH-event NDJSON batches to `fusion serve --database-url`.
# Prints name=value lines on stdout; progress goes to stderr.
#
# Uses FUSION_BENCH_DATABASE_URL (key=value form, a server where it may
# create databases) when set; otherwise starts a throwaway server from the
# local binaries (as the postgres user when run as root; fsync and
# synchronous_commit on) and removes it at the end. Settings: EVENTS
# (1000000), SEED (42), HTTP_EVENTS (200000), HTTP_THREADS (8),
# HTTP_BATCH (1000).
set -euo pipefail
cd "$(dirname "$0")/.."

events="${EVENTS:-1000000}"
seed="${SEED:-42}"
http_events="${HTTP_EVENTS:-200000}"
http_threads="${HTTP_THREADS:-8}"
http_batch="${HTTP_BATCH:-1000}"
cargo build --release --quiet --bin fusion --example pg_ingest >&2
fusion=./target/release/fusion
helper=./target/release/examples/pg_ingest

work=$(mktemp -d /tmp/fusion-pgingest-XXXXXX)
serve_pid=""
cleanup() {
    if [[ -n "$serve_pid" ]]; then kill "$serve_pid" 2>/dev/null || true; fi
    if [[ -n "${stop_server:-}" ]]; then eval "$stop_server"; fi
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/pg_server.sh
source benches/pg_server.sh
pg_server_start "$work"
if [[ -n "$stop_server" ]]; then
    echo "server_settings=fsync=on,synchronous_commit=on,max_wal_size=4GB,shared_buffers=128MB"
fi
echo "cpus=$(nproc)"
# Other work on the machine moves these figures a lot: say how busy it was.
echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 0.001; printf "%.0f", n / s }'; }

echo "generating $events events..." >&2
"$fusion" generate --seed "$seed" --events "$events" >"$work/events.ndjson"
echo "events=$events"

echo "raw binary COPY of the same rows..." >&2
"$helper" copy "$("$helper" db "$admin" bench_copy)" "$work/events.ndjson"

echo "fusion ingest --database-url..." >&2
url=$("$helper" db "$admin" bench_ingest)
t0=$(now)
"$fusion" ingest --database-url "$url" "$work/events.ndjson" >"$work/ingest.out" 2>"$work/ingest.err" ||
    { cat "$work/ingest.err" >&2; exit 1; }
t1=$(now)
ingest_s=$(elapsed "$t0" "$t1")
echo "ingest_report=$(tr ' ' , <"$work/ingest.out")"
echo "ingest_s=$ingest_s"
echo "ingest_events_per_s=$(rate "$events" "$ingest_s")"

echo "concurrent HTTP ingest into fusion serve --database-url..." >&2
head -n "$http_events" "$work/events.ndjson" >"$work/http.ndjson"
url=$("$helper" db "$admin" bench_http)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$fusion" serve --bind "127.0.0.1:$port" --database-url "$url" 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
    sleep 0.1
done
echo "http_events=$http_events"
"$helper" http "http://127.0.0.1:$port" "$work/http.ndjson" "$http_threads" "$http_batch"
# Failed requests are explained in the service's log.
echo "http_serve_warnings=$(grep -c WARN "$work/serve.err" || true)"
grep WARN "$work/serve.err" | sort | uniq -c | sort -rn | head -5 >&2 || true
echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
