#!/usr/bin/env bash
# benches/http_read.sh: read throughput and latency of `fusion serve`.
#
# Owns two figures and their ratio: requests/s and p50/p99 latency of
# `GET /healthz` (the floor: routing and HTTP alone) and of
# `GET /v1/relationships/artist/sweater` (a real score read with its
# explanation, from the seed story loaded by `serve --demo`). The ratio says
# how much a score read costs over an empty request. Traffic goes only to
# 127.0.0.1; the server is started here and killed on exit. Prints
# `name=value` lines on stdout; everything else goes to stderr.
#
# Then (issue #11) reads of many different relationships: a second server
# on a store of ROTATE_EVENTS generated events, wrk rotating over
# ROTATE_PAIRS (person, brand) pairs named by its events, against the same
# server's `/healthz`: `rotated_*` and `rotated_to_healthz_ratio`; then the
# same rotation with every request at its own `at` (a second after the
# store's events), so that no answer comes from the answer cache:
# `rotated_uncached_*`. Each rotation prints the server's CPU per request
# (`*_server_cpu_us`, from /proc: user plus system time over requests),
# and the server's resident memory before and after them.
#
# Settings (environment): FUSION_BIN (a built binary to use instead of
# building release), PORT (default: a free one), DURATION (10s),
# CONNECTIONS (32), THREADS (2), READY_TRIES (150, 0.2 s apart),
# ROTATE_EVENTS (200000; 0 skips the rotation), ROTATE_PAIRS (2000).
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
READY_TRIES=${READY_TRIES:-150}
RELATIONSHIP_PATH=/v1/relationships/artist/sweater

if ! command -v wrk >/dev/null; then
    echo "installing wrk..." >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    timeout 300 $SUDO apt-get install -y wrk >&2 ||
        { timeout 300 $SUDO apt-get update >&2 && timeout 300 $SUDO apt-get install -y wrk >&2; }
fi
command -v curl >/dev/null || { echo "curl is needed to poll /readyz" >&2; exit 1; }

# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh

if [ -z "${PORT:-}" ]; then
    # Ask the kernel for a free port; fall back to a random high one.
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000)))
fi
BASE="http://127.0.0.1:$PORT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-http.XXXXXX")
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        # Give it a moment to shut down cleanly, then insist.
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN" serve --demo --data-dir "$WORK/data" --bind "127.0.0.1:$PORT" --rate-per-address 0 >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!

echo "waiting for $BASE/readyz..." >&2
ready=""
for _ in $(seq 1 "$READY_TRIES"); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "fusion serve exited before it was ready:" >&2
        tail -n 20 "$WORK/serve.log" >&2
        exit 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)
    if [ "$code" = "200" ]; then
        ready=yes
        break
    fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "fusion serve was not ready after $READY_TRIES tries:" >&2
    tail -n 20 "$WORK/serve.log" >&2
    exit 1
fi

# Measuring 404s would flatter the score read: check it answers first.
code=$(curl -s -o "$WORK/relationship.json" -w '%{http_code}' --max-time 5 "$BASE$RELATIONSHIP_PATH" || true)
if [ "$code" != "200" ]; then
    echo "GET $RELATIONSHIP_PATH answered $code, expected 200 (is the demo story loaded?)" >&2
    head -c 500 "$WORK/relationship.json" >&2 || true
    exit 1
fi

# wrk prints latencies as 812.00us, 1.25ms or 1.02s; normalise to ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000
        else if (v ~ /ms$/) n = n
        else if (v ~ /m$/) n *= 60000
        else if (v ~ /s$/) n *= 1000
        printf "%.3f", n
    }'
}

# Runs wrk against one path and prints `<name>_rps=`, `_p50_ms=`, `_p99_ms=`
# (and `_non2xx=` when wrk saw any). Leaves the rate in $LAST_RPS.
measure() {
    local name=$1 path=$2 out="$WORK/wrk-$1.txt" script=${3:-}
    echo "wrk ${THREADS} threads, ${CONNECTIONS} connections, $DURATION: GET $path ${script:+(script $script)}" >&2
    timeout 120 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency \
        ${script:+-s "$script"} "$BASE$path" >"$out"
    cat "$out" >&2
    LAST_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    local p50 p99 non2xx
    p50=$(awk '$1 == "50%" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    if [ -z "$LAST_RPS" ] || [ -z "$p50" ] || [ -z "$p99" ]; then
        echo "could not read wrk's report for $path" >&2
        exit 1
    fi
    echo "${name}_rps=$LAST_RPS"
    echo "${name}_p50_ms=$(to_ms "$p50")"
    echo "${name}_p99_ms=$(to_ms "$p99")"
    if [ -n "$non2xx" ]; then
        echo "${name}_non2xx=$non2xx"
    fi
}

# ratio A B: A / B to three decimals ("nan" when B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'; }

measure healthz /healthz
healthz_rps=$LAST_RPS
measure relationship "$RELATIONSHIP_PATH"
relationship_rps=$LAST_RPS
echo "relationship_to_healthz_ratio=$(ratio "$relationship_rps" "$healthz_rps")"

# The same read, but every request at a different evaluation time, so no
# answer comes from the read cache: the cost of computing a score with its
# explanation and trend.
cat >"$WORK/uncached.lua" <<'LUA'
counter = 0
request = function()
    counter = counter + 1
    local t = 1794000000 + (counter * 7919 + math.random(0, 999999)) % 5000000
    return wrk.format("GET", string.format("/v1/relationships/artist/sweater?at=%s", os.date("!%Y-%m-%dT%H:%M:%SZ", t)))
end
LUA
measure relationship_uncached "$RELATIONSHIP_PATH" "$WORK/uncached.lua"
echo "relationship_uncached_to_healthz_ratio=$(ratio "$LAST_RPS" "$healthz_rps")"

# Many different relationships on a generated store: no answer repeats
# within a second, so this is the cost of a score read with its reasons.
ROTATE_EVENTS=${ROTATE_EVENTS:-200000}
ROTATE_PAIRS=${ROTATE_PAIRS:-2000}
if [ "$ROTATE_EVENTS" -gt 0 ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    echo "generating and ingesting $ROTATE_EVENTS events..." >&2
    "$BIN" generate --seed 42 --events "$ROTATE_EVENTS" >"$WORK/rotate.ndjson"
    "$BIN" ingest --data-dir "$WORK/rotate" "$WORK/rotate.ndjson" >/dev/null 2>&1
    python3 - "$WORK/rotate.ndjson" "$ROTATE_PAIRS" >"$WORK/paths.txt" <<'PY'
import json, sys
seen = []
for line in open(sys.argv[1]):
    e = json.loads(line)
    if "person" in e and "brand" in e and (e["person"], e["brand"]) not in seen:
        seen.append((e["person"], e["brand"]))
        if len(seen) >= int(sys.argv[2]):
            break
for p, b in seen:
    print(f"/v1/relationships/{p}/{b}")
PY
    "$BIN" serve --data-dir "$WORK/rotate" --bind "127.0.0.1:$PORT" --rate-per-address 0 >"$WORK/serve-rotate.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 $((READY_TRIES * 4))); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)
        [ "$code" = "200" ] && break
        sleep 0.2
    done
    # rotate_lua FILE [QUERY]: a wrk script reading the pairs in turn;
    # QUERY is a Lua expression of `counter` appended to each path (an
    # evaluation time per request: no answer from the answer cache).
    rotate_lua() {
        local query=${2:-'""'}
        cat >"$1" <<LUA
paths = {}
for line in io.lines("$WORK/paths.txt") do paths[#paths + 1] = line end
counter = 0
request = function()
    counter = counter + 1
    return wrk.format("GET", paths[(counter % #paths) + 1] .. $query)
end
LUA
    }
    rotate_lua "$WORK/rotate.lua"
    echo "rotated_pairs=$(wc -l <"$WORK/paths.txt")"
    measure rotated_healthz /healthz
    rotated_healthz_rps=$LAST_RPS
    # The server's CPU time in clock ticks (user + system), and per request
    # of the last wrk run.
    ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
    cpu_per_request() {
        local before=$1 after=$2 out=$3 requests
        requests=$(awk '/requests in/ { print $1 }' "$out")
        awk -v a="$after" -v b="$before" -v n="$requests" -v hz="$(getconf CLK_TCK)" \
            'BEGIN { if (n > 0) printf "%.1f", (a - b) / hz * 1e6 / n; else print "nan" }'
    }
    # Resident memory before the reads and after both rotations: what the
    # reads' caches (walks, people's sums, reasons, answers) hold.
    rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status"; }
    echo "rotated_rss_before_mb=$(rss_mb)"
    before=$(ticks)
    measure rotated /v1/relationships "$WORK/rotate.lua"
    echo "rotated_server_cpu_us=$(cpu_per_request "$before" "$(ticks)" "$WORK/wrk-rotated.txt")"
    echo "rotated_to_healthz_ratio=$(ratio "$LAST_RPS" "$rotated_healthz_rps")"
    rotate_lua "$WORK/rotate-uncached.lua" \
        '"?at=" .. os.date("!%Y-%m-%dT%H:%M:%SZ", 1790000000 + (counter * 7919) % 5000000)'
    before=$(ticks)
    measure rotated_uncached /v1/relationships "$WORK/rotate-uncached.lua"
    echo "rotated_uncached_server_cpu_us=$(cpu_per_request "$before" "$(ticks)" "$WORK/wrk-rotated_uncached.txt")"
    echo "rotated_rss_after_mb=$(rss_mb)"
    echo "rotated_uncached_to_healthz_ratio=$(ratio "$LAST_RPS" "$rotated_healthz_rps")"
fi
