#!/usr/bin/env bash
# benches/http_auth.sh: what authentication and TLS cost a read.
#
# One data directory (a generated stream ingested once), the same load for
# every configuration: wrk rotating over RELATIONSHIPS different
# `GET /v1/relationships/{person}/{brand}` (a Lua script), CONNECTIONS
# connections. Configurations, each a fresh `fusion serve` on that data:
#   open       no key configured (loopback), rate limits off
#   keys       a key configured, every request with `Authorization: Bearer`,
#              rate limits off: the cost of authentication
#   keys_rl    as keys, with the per-key rate limiter on (a budget never
#              reached): the cost of the limiter
#   https      as open, over HTTPS (a self-signed certificate; wrk keeps
#              connections, so this is the cost of encryption, not handshakes)
# ROUNDS rounds of all of them, interleaved, so a noisy neighbour hits each
# alike. Two figures per run: requests/s (what a client sees; on a shared
# machine it moves with the neighbours' load) and the server's CPU time per
# request (utime + stime of the process over the run, divided by the
# requests served; far steadier, and the cost this script is about).
# Prints `name=value` lines on stdout (per round, then the means and the
# ratios of the means); everything else goes to stderr.
#
# Settings (environment): FUSION_BIN (a built binary instead of building
# release), DURATION (10s), CONNECTIONS (32), THREADS (2), ROUNDS (2),
# RELATIONSHIPS (2000), EVENTS (40000).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
RELATIONSHIPS=${RELATIONSHIPS:-2000}
EVENTS=${EVENTS:-40000}

command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "needs openssl for the test certificate" >&2; exit 1; }
# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-auth.XXXXXX")
SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

echo "generating and ingesting $EVENTS events..." >&2
"$BIN" generate --seed 12 --people 4000 --brands 20 --events "$EVENTS" >"$WORK/events.ndjson"
"$BIN" ingest --data-dir "$WORK/data" "$WORK/events.ndjson" >&2
# Relationships that exist: the first distinct (person, brand) of purchases.
python3 - "$WORK/events.ndjson" "$RELATIONSHIPS" >"$WORK/paths.txt" <<'PY'
import json, sys
seen, out = set(), []
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("type") == "purchase" and (e["person"], e["brand"]) not in seen:
        seen.add((e["person"], e["brand"]))
        out.append(f"/v1/relationships/{e['person']}/{e['brand']}")
        if len(out) == int(sys.argv[2]):
            break
print("\n".join(out))
PY
echo "$(wc -l <"$WORK/paths.txt") relationships" >&2
cat >"$WORK/rotate.lua" <<LUA
paths = {}
for line in io.lines("$WORK/paths.txt") do paths[#paths + 1] = line end
local i = math.random(1, #paths)
request = function()
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
end
LUA

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# The key, made on a copy of the data, so `open` keeps a key-less store.
cp -r "$WORK/data" "$WORK/data-keys"
KEY=$("$BIN" keys create --role read --data-dir "$WORK/data-keys")

start() { # data-dir scheme args...
    local dir=$1 scheme=$2
    shift 2
    "$BIN" serve --data-dir "$dir" --bind "127.0.0.1:$PORT" "$@" >"$WORK/serve.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        if curl -sk -o /dev/null --max-time 2 "$scheme://127.0.0.1:$PORT/readyz"; then
            return
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
        sleep 0.2
    done
    echo "the server was not ready" >&2
    exit 1
}

measure() { # name scheme [header]
    local name=$1 scheme=$2 header=${3:-}
    local first
    first=$(head -1 "$WORK/paths.txt")
    local code
    code=$(curl -sk -o /dev/null -w '%{http_code}' ${header:+-H "$header"} "$scheme://127.0.0.1:$PORT$first")
    [ "$code" = 200 ] || { echo "$name: $first answered $code" >&2; exit 1; }
    echo "wrk $name: $THREADS threads, $CONNECTIONS connections, $DURATION" >&2
    local before after
    before=$(cpu_ticks)
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency \
        ${header:+-H "$header"} -s "$WORK/rotate.lua" "$scheme://127.0.0.1:$PORT/" >"$WORK/wrk.txt"
    after=$(cpu_ticks)
    cat "$WORK/wrk.txt" >&2
    if grep -q 'Non-2xx' "$WORK/wrk.txt"; then
        echo "$name: wrk saw errors" >&2
        exit 1
    fi
    local rps requests
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.txt")
    requests=$(awk '/requests in/ { print $1 }' "$WORK/wrk.txt")
    echo "$rps $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
}

# utime + stime of the server, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"
}

declare -A RPS CPU
for round in $(seq 1 "$ROUNDS"); do
    for config in open keys keys_rl https; do
        case $config in
            open) start "$WORK/data" http --rate-per-address 0
                  result=$(measure open http) ;;
            keys) start "$WORK/data-keys" http --rate-per-key 0 --rate-per-address 0
                  result=$(measure keys http "Authorization: Bearer $KEY") ;;
            keys_rl) start "$WORK/data-keys" http --rate-per-key 100000000 --rate-per-address 0
                  result=$(measure keys_rl http "Authorization: Bearer $KEY") ;;
            https) start "$WORK/data" https --rate-per-address 0 \
                      --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"
                  result=$(measure https https) ;;
        esac
        stop_server
        read -r rps cpu <<<"$result"
        echo "${config}_rps_round${round}=$rps"
        echo "${config}_cpu_us_per_request_round${round}=$cpu"
        RPS[$config]=$(awk -v a="${RPS[$config]:-0}" -v b="$rps" 'BEGIN { print a + b }')
        CPU[$config]=$(awk -v a="${CPU[$config]:-0}" -v b="$cpu" 'BEGIN { print a + b }')
    done
done
mean() { awk -v a="$1" -v n="$ROUNDS" 'BEGIN { printf "%.1f", a / n }'; }
for config in open keys keys_rl https; do
    echo "${config}_rps_mean=$(mean "${RPS[$config]}")"
    echo "${config}_cpu_us_per_request_mean=$(mean "${CPU[$config]}")"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "keys_to_open_rps_ratio=$(ratio "${RPS[keys]}" "${RPS[open]}")"
echo "keys_to_open_cpu_ratio=$(ratio "${CPU[keys]}" "${CPU[open]}")"
echo "keys_rl_to_open_cpu_ratio=$(ratio "${CPU[keys_rl]}" "${CPU[open]}")"
echo "https_to_http_rps_ratio=$(ratio "${RPS[https]}" "${RPS[open]}")"
echo "https_to_http_cpu_ratio=$(ratio "${CPU[https]}" "${CPU[open]}")"
