#!/usr/bin/env bash
# benches/dashboard.sh: the dashboard's brand page, cold, in headless Chromium.
#
# Owns the issue 14 figures: page weight (bytes transferred for a brand page
# with an empty cache: the page, its assets and its API calls, Resource
# Timing's transferSize) and time to first render of the brand page (from
# the start of navigation to app.js's `rendered` mark) on a store of
# EVENTS generated events (`fusion generate`, `fusion ingest` into an
# embedded store, `fusion serve`). References measured in the same run, so
# the ratio means something on a loaded machine: the same page on the seed
# story (`serve --demo`), the brand page's largest API call on the big
# store timed alone with curl, and the page showing now (no `at`). Drives the tests' Debian chromium and chromedriver
# (benches/dashboard_page.py). Prints `name=value` lines on stdout;
# everything else goes to stderr. The big store is deleted on exit.
#
# Settings (environment): FUSION_BIN (a built binary to use instead of
# building release), EVENTS (default 1000000), SEED (42), AT (the "as of"
# date of the big store's page, default 2026-04-01: the end of the
# generated stream), READY_TIMEOUT seconds (900), RENDER_TIMEOUT (600).
set -euo pipefail

cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-1000000}
SEED=${SEED:-42}
AT=${AT:-2026-04-01}
READY_TIMEOUT=${READY_TIMEOUT:-900}
RENDER_TIMEOUT=${RENDER_TIMEOUT:-600}

for b in /usr/bin/chromium /usr/bin/chromedriver; do
    [ -x "$b" ] || { echo "$b is missing: apt-get install -y chromium chromium-driver (scripts/test does)" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-dashboard.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DRIVER_PORT=$(free_port)
/usr/bin/chromedriver --port="$DRIVER_PORT" >"$WORK/chromedriver.log" 2>&1 &
PIDS+=($!)
DRIVER="http://127.0.0.1:$DRIVER_PORT"

# Starts `fusion serve` on data dir $1 (extra arguments after it) and sets
# $BASE once /readyz answers 200.
serve() {
    local dir=$1
    shift
    local port
    port=$(free_port)
    BASE="http://127.0.0.1:$port"
    "$BIN" serve --data-dir "$dir" --bind "127.0.0.1:$port" "$@" >"$dir.serve.log" 2>&1 &
    PIDS+=($!)
    local pid=$! deadline=$(($(date +%s) + READY_TIMEOUT))
    until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/readyz" || true)" = 200 ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "fusion serve exited:" >&2
            tail -n 20 "$dir.serve.log" >&2
            exit 1
        fi
        [ "$(date +%s)" -lt "$deadline" ] || { echo "fusion serve not ready after ${READY_TIMEOUT}s" >&2; exit 1; }
        sleep 0.2
    done
}

page() { python3 benches/dashboard_page.py "$DRIVER" "$1" "$2" "$RENDER_TIMEOUT"; }

until curl -s -o /dev/null --max-time 2 "$DRIVER/status"; do sleep 0.1; done

echo "the seed story (serve --demo)..." >&2
serve "$WORK/story" --demo
page "$BASE/#/brand/sweater?at=2026-11-13" story | tee "$WORK/story.txt"

echo "generating and ingesting $EVENTS events..." >&2
"$BIN" generate --seed "$SEED" --events "$EVENTS" >"$WORK/events.ndjson"
"$BIN" ingest --data-dir "$WORK/big" "$WORK/events.ndjson" >&2
rm -f "$WORK/events.ndjson"
t0=$(now)
serve "$WORK/big"
t1=$(now)
echo "big_serve_ready_ms=$(ms "$t0" "$t1")"
# The brand with the most relationships: the heaviest brand page (asked
# a second off the page's `at`, so the page finds no ranking computed for it).
BRAND=$(curl -sf "$BASE/v1/brands?limit=1000&at=${AT}T00:00:02Z" |
    python3 -c 'import json, sys; print(max(json.load(sys.stdin)["items"], key=lambda b: b["relationships"])["id"])')
echo "big_brand=$BRAND"
# The page's largest API call alone, before the page, at a time of its own
# (the last ranking at a past time is kept for that time only,
# src/http/dashboard.rs): what one ranking at a past time costs.
t0=$(now)
curl -sf -o "$WORK/rels.json" "$BASE/v1/brands/$BRAND/relationships?limit=1000&at=${AT}T00:00:01Z"
t1=$(now)
echo "big_relationships_call_ms=$(ms "$t0" "$t1")"
echo "big_relationships_call_bytes=$(wc -c <"$WORK/rels.json")"
page "$BASE/#/brand/$BRAND?at=$AT" big | tee "$WORK/big.txt"
# The same page showing now (no `at`): the live ranking, shared.
page "$BASE/#/brand/$BRAND" big_now

value() { sed -n "s/^$2=//p" "$1"; }
awk -v a="$(value "$WORK/big.txt" big_render_ms)" -v b="$(value "$WORK/story.txt" story_render_ms)" \
    'BEGIN { printf "render_ratio_big_over_story=%.1f\n", a / (b > 0 ? b : 1) }'
