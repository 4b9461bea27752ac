#!/usr/bin/env bash
# scripts/schemathesis.sh: checks the served OpenAPI spec against a live
# `fusion serve --demo` with schemathesis (PyPI), twice: without keys (the
# open service) and with an admin key. Each run: a bounded number of
# examples per operation (EXAMPLES), a fixed seed, and the checks "no 5xx"
# and "no answer that violates the spec" (status code, content type,
# headers, body schema); the keyed run also checks that every operation the
# spec says needs a key refuses a request without one (ignored_auth).
# Prints `name=value` lines (the example counts) on stdout; schemathesis's
# report goes to stderr. Exits non-zero on any failure.
#
# Settings (environment): FUSION_BIN (default: target/debug/fusion, built if
# missing), EXAMPLES (50), SEED (1).
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES=${EXAMPLES:-50}
SEED=${SEED:-1}
command -v st >/dev/null || {
    echo "needs schemathesis: pip install 'schemathesis==4.*' (scripts/test does it)" >&2
    exit 1
}
if [ -n "${FUSION_BIN:-}" ]; then
    BIN=$FUSION_BIN
else
    cargo build --locked --quiet
    BIN=$PWD/target/debug/fusion
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-schemathesis.XXXXXX")
SERVER_PID=""
stop() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap 'stop; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run NAME [KEY]: a fresh server (rate limits off: the fuzzer is fast), then
# schemathesis against its spec.
run() {
    local name=$1 key=${2:-} port
    port=$(free_port)
    FUSION_ADMIN_KEY=$key RUST_LOG=warn "$BIN" serve --demo --data-dir "$WORK/$name" \
        --bind "127.0.0.1:$port" --rate-per-key 0 --rate-per-address 0 \
        --feed-lifetime 0.2 \
        >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    local ready=""
    for _ in $(seq 1 300); do
        if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/readyz"; then
            ready=yes
            break
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    [ -n "$ready" ] || { echo "$name: the server did not start" >&2; cat "$WORK/$name.log" >&2; exit 1; }
    local checks=not_a_server_error,status_code_conformance,content_type_conformance
    checks=$checks,response_headers_conformance,response_schema_conformance
    local auth=()
    if [ -n "$key" ]; then
        checks=$checks,ignored_auth
        auth=(-H "Authorization: Bearer $key")
    fi
    echo "schemathesis ($name): $EXAMPLES examples per operation, seed $SEED" >&2
    local status=0
    # From the scratch directory: schemathesis keeps its example database
    # (.schemathesis/) in the current directory.
    (cd "$WORK" && st run "http://127.0.0.1:$port/openapi.json" --checks "$checks" \
        --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 --no-color \
        --report junit --report-junit-path "$WORK/$name.xml" \
        "${auth[@]}") >"$WORK/$name.out" 2>&1 || status=$?
    cat "$WORK/$name.out" >&2
    if grep -q 'panicked' "$WORK/$name.log"; then
        echo "$name: the server panicked:" >&2
        grep -A3 'panicked' "$WORK/$name.log" >&2
        status=1
    fi
    stop
    local cases
    cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$WORK/$name.out" | tail -1)
    echo "schemathesis_${name}_test_cases=${cases:-0}"
    return $status
}

failed=0
run open || failed=1
run keys "schemathesis-admin-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" || failed=1
exit $failed
