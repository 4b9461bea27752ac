#!/usr/bin/env bash
# benches/body_memory.sh: peak memory of `fusion serve` for one adversarial
# request body (issue 9, item 6: a 30 MB `[0,0,…]` took 4.4 GB).
#
# For each body, a fresh server on an empty embedded store gets one POST
# /v1/events; the server's peak resident set (VmHWM) is read before and
# after. Bodies: `zeros`, an array of 0s (every element a rejection), and
# `valid`, an array of minimal valid events (every element kept and stored).
# Prints `name=value` lines on stdout (MB, and the peak over the body size);
# everything else goes to stderr.
#
# Settings (environment): FUSION_BIN (a built binary instead of building
# release), BODY_MB (default 30).
set -euo pipefail

cd "$(dirname "$0")/.."

BODY_MB=${BODY_MB:-30}

# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-body.XXXXXX")
PID=
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

python3 - "$WORK" "$BODY_MB" <<'EOF'
import sys
work, mb = sys.argv[1], int(sys.argv[2])
size = mb * 1_000_000
with open(f"{work}/zeros.json", "w") as f:
    f.write("[" + ",".join(["0"] * (size // 2)) + "]")
with open(f"{work}/valid.json", "w") as f:
    f.write("[")
    n, written = 0, 1
    while written < size:
        e = ('{"id":"e%d","type":"purchase","time":"2026-11-01T10:00:00Z",'
             '"person":"p%d","brand":"b%d","amount":1}' % (n, n % 1000, n % 10))
        f.write(("," if n else "") + e)
        written += len(e) + 1
        n += 1
    f.write("]")
EOF

vmhwm_mb() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

for body in zeros valid; do
    bytes=$(stat -c %s "$WORK/$body.json")
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    RUST_LOG=warn "$BIN" serve --bind "127.0.0.1:$port" --data-dir "$WORK/data-$body" >&2 &
    PID=$!
    for _ in $(seq 1 600); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    idle=$(vmhwm_mb "$PID")
    start=$(date +%s.%N)
    status=$(curl -s -o "$WORK/answer" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary "@$WORK/$body.json" "http://127.0.0.1:$port/v1/events")
    end=$(date +%s.%N)
    peak=$(vmhwm_mb "$PID")
    answer=$(stat -c %s "$WORK/answer")
    echo "$body: status $status, answer $answer bytes" >&2
    echo "${body}_body_mb=$(awk "BEGIN {printf \"%.1f\", $bytes / 1e6}")"
    echo "${body}_status=$status"
    echo "${body}_idle_vmhwm_mb=$idle"
    echo "${body}_peak_vmhwm_mb=$peak"
    echo "${body}_peak_over_body=$(awk "BEGIN {printf \"%.1f\", $peak * 1048576 / $bytes}")"
    echo "${body}_answer_bytes=$answer"
    echo "${body}_seconds=$(awk "BEGIN {printf \"%.2f\", $end - $start}")"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
