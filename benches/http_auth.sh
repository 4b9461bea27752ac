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
# alike. Prints `name=value` lines on stdout (per round, then the ratios of
# the means); everything else goes to stderr.
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
if [ -n "${FUSION_BIN:-}" ]; then
    BIN=$FUSION_BIN
else
    echo "building release..." >&2
    cargo build --release --quiet
    BIN=target/release/fusion
fi

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
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency \
        ${header:+-H "$header"} -s "$WORK/rotate.lua" "$scheme://127.0.0.1:$PORT/" >"$WORK/wrk.txt"
    cat "$WORK/wrk.txt" >&2
    if grep -q 'Non-2xx' "$WORK/wrk.txt"; then
        echo "$name: wrk saw errors" >&2
        exit 1
    fi
    awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.txt"
}

declare -A SUM
for round in $(seq 1 "$ROUNDS"); do
    for config in open keys keys_rl https; do
        case $config in
            open) start "$WORK/data" http --rate-per-address 0
                  rps=$(measure open http) ;;
            keys) start "$WORK/data-keys" http --rate-per-key 0 --rate-per-address 0
                  rps=$(measure keys http "Authorization: Bearer $KEY") ;;
            keys_rl) start "$WORK/data-keys" http --rate-per-key 100000000 --rate-per-address 0
                  rps=$(measure keys_rl http "Authorization: Bearer $KEY") ;;
            https) start "$WORK/data" https --rate-per-address 0 \
                      --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"
                  rps=$(measure https https) ;;
        esac
        stop_server
        echo "${config}_rps_round${round}=$rps"
        SUM[$config]=$(awk -v a="${SUM[$config]:-0}" -v b="$rps" 'BEGIN { print a + b }')
    done
done
ratio() { awk -v a="${SUM[$1]}" -v b="${SUM[$2]}" 'BEGIN { printf "%.3f", a / b }'; }
for config in open keys keys_rl https; do
    echo "${config}_rps_mean=$(awk -v a="${SUM[$config]}" -v n="$ROUNDS" 'BEGIN { printf "%.0f", a / n }')"
done
echo "keys_to_open_ratio=$(ratio keys open)"
echo "keys_rl_to_open_ratio=$(ratio keys_rl open)"
echo "https_to_http_ratio=$(ratio https open)"
