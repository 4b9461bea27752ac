#!/usr/bin/env bash
# benches/pipelines.sh: the pipelines' figures (issue #16), in one run
# against one fresh `fusion serve` on the embedded store:
# - events per second through /v1/batch from Segment's Python library
#   (segment-analytics-python 2.x, gzip, its batches of 100), next to the
#   same purchases posted natively as NDJSON (requests of 5,000 lines, and
#   of 100 like the library's);
# - the dead-letter store's cost per rejected event: the time of a /v1/batch
#   message that is kept as a dead letter next to one that is stored, and
#   the bytes dead_letters.redb grows by per letter.
# Each phase runs on a fresh server (a request's cost grows with the events
# the state holds). The load is benches/pipelines_bench.py. Prints
# `name=value` lines on
# stdout; everything else goes to stderr.
#
# Settings (environment): FUSION_BIN (a built binary to use instead of
# building release), EVENTS (default 20000), REJECTED (5000).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-20000}
REJECTED=${REJECTED:-5000}
python3 -c 'import segment.analytics, requests' 2>/dev/null || {
    echo "needs segment-analytics-python 2.x (scripts/test installs it)" >&2
    exit 1
}
# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-pipelines.XXXXXX")
SERVER_PID=""
stop() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap 'stop; rm -rf "$WORK"' EXIT

# start NAME: a fresh server on its own store; sets PORT.
start() {
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    RUST_LOG=warn "$BIN" serve --data-dir "$WORK/$1" --bind "127.0.0.1:$PORT" \
        --rate-per-key 0 --rate-per-address 0 >"$WORK/$1.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/readyz" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    cat "$WORK/$1.log" >&2
    exit 1
}

# Each phase on a fresh server: a request's cost grows with the state.
for phase in segment native native100 accepted rejected; do
    echo "phase $phase..." >&2
    start "$phase"
    letters="$WORK/$phase/dead_letters.redb"
    before=$(stat -c %s "$letters")
    python3 benches/pipelines_bench.py "$phase" "http://127.0.0.1:$PORT" "$EVENTS" "$REJECTED"
    if [ "$phase" = rejected ]; then
        after=$(stat -c %s "$letters")
        held=$(curl -s "http://127.0.0.1:$PORT/v1/rejected?limit=1" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["held"])')
        if [ "$held" -ne "$REJECTED" ]; then
            echo "expected $REJECTED dead letters, the server holds $held" >&2
            exit 1
        fi
        echo "dead_letters_file_bytes=$after"
        echo "dead_letter_bytes_per_letter=$(( (after - before) / REJECTED ))"
    fi
    stop
done
