#!/usr/bin/env bash
# benches/future_skew.sh: HTTP ingest throughput after a future-dated event
# was attempted (issue #9, item 1: "clock skew at ingestion").
#
# Owns two figures: events/s of in-order batches posted to `fusion serve` on
# a store of STORE_EVENTS generated events, without and with one event dated
# FUTURE (years ahead of the clock) posted first. When such an event is
# accepted, every later batch is "late" and refolds the whole log; when it is
# rejected on `time` (serve --max-future-skew), both figures are alike.
# Each run gets its own copy of the store and its own server. Prints
# `name=value` lines on stdout; everything else goes to stderr.
#
# Settings (environment): FUSION_BIN (a built binary instead of building
# release), STORE_EVENTS (300000), BATCHES (20), BATCH (1000 events each),
# FUTURE (2030-01-01T00:00:00Z), READY_TRIES (600, 0.2 s apart).
set -euo pipefail

cd "$(dirname "$0")/.."

STORE_EVENTS=${STORE_EVENTS:-300000}
BATCHES=${BATCHES:-20}
BATCH=${BATCH:-1000}
FUTURE=${FUTURE:-2030-01-01T00:00:00Z}
READY_TRIES=${READY_TRIES:-600}

command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-skew.XXXXXX")
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { s = b - a; if (s <= 0) s = 0.001; printf "%.0f", n / s }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "generating a store of $STORE_EVENTS events..." >&2
"$BIN" generate --seed 42 --events "$STORE_EVENTS" >"$WORK/store.ndjson"
"$BIN" ingest --data-dir "$WORK/store" "$WORK/store.ndjson" >/dev/null 2>&1
# Later batches: another seed, after the store's 90 days, ids of their own.
"$BIN" generate --seed 43 --events $((BATCHES * BATCH)) --start 2026-04-01T00:00:00Z --days 30 |
    sed 's/"id":"e/"id":"n/' | split -l "$BATCH" - "$WORK/batch."

# run NAME WITH_FUTURE: a server on a copy of the store, then every batch.
run() {
    local name=$1 with_future=$2
    cp -r "$WORK/store" "$WORK/$name"
    local port
    port=$(free_port)
    RUST_LOG=warn "$BIN" serve --bind "127.0.0.1:$port" --data-dir "$WORK/$name" 2>"$WORK/$name.log" &
    SERVER_PID=$!
    local tries=0
    until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -ge "$READY_TRIES" ]; then
            echo "the server did not become ready" >&2
            cat "$WORK/$name.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    if [ "$with_future" = 1 ]; then
        local answer
        answer=$(curl -s -H 'Content-Type: application/json' --data-binary \
            "{\"id\":\"future-1\",\"type\":\"purchase\",\"time\":\"$FUTURE\",\"person\":\"p1\",\"brand\":\"b1\",\"amount\":5}" \
            "http://127.0.0.1:$port/v1/events")
        echo "$name: the future-dated event: $answer" >&2
    fi
    local t0 t1
    t0=$(now)
    for f in "$WORK"/batch.*; do
        curl -sf -H 'Content-Type: application/x-ndjson' --data-binary "@$f" \
            "http://127.0.0.1:$port/v1/events" >/dev/null
    done
    t1=$(now)
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    echo "${name}_events_per_s=$(rate $((BATCHES * BATCH)) "$t0" "$t1")"
}

echo "store_events=$STORE_EVENTS"
echo "posted_events=$((BATCHES * BATCH))"
run plain 0
run after_future 1
