#!/usr/bin/env bash
# benches/feed.sh: the change feed's figures (issue 13), short.
#
# Starts `fusion serve` on a fresh embedded store and runs
# benches/feed_bench.py against it: feed latency from an event's
# acknowledgement to its change's delivery over SSE, p50 and p99, under a
# modest stream (ROUNDS rounds of a BATCH-event batch and one probe event,
# posted one after the other, with ACTIVE subscribers reading), the
# server's CPU over that stream, then its memory with IDLE idle
# subscribers. Prints `name=value` lines on stdout; the rest on stderr.
#
# Settings (environment): FUSION_BIN (a built binary instead of building
# release), ROUNDS (300), BATCH (50), ACTIVE (100), IDLE (1000).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-feed.XXXXXX")
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The subscribers hold one descriptor each, on both sides.
ulimit -n 8192 2>/dev/null || true
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$BIN" serve --data-dir "$WORK/data" --bind "127.0.0.1:$PORT" \
    --rate-per-key 0 --rate-per-address 0 >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/readyz" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.2
done
python3 benches/feed_bench.py "http://127.0.0.1:$PORT" "$SERVER_PID"
