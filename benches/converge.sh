#!/usr/bin/env bash
# benches/converge.sh: cross-server visibility lag on PostgreSQL (issue
# #11, item 4; `engine::follow`). Two `fusion serve --database-url` on one
# fresh database; a client posts one event at a time to A and, from A's
# acknowledgement, asks B for the same relationship with `min_position` =
# A's `Fusion-Position` (B answers once it has folded that far): the time
# from the acknowledgement to B's answer is the lag. The reference, in the
# same run: the same read asked of A itself. Prints name=value lines:
# samples, remote_lag_ms_p50/p99, local_lag_ms_p50/p99 and their ratio.
# Settings (environment): SAMPLES (500), FOLLOW_INTERVAL (1, seconds),
# FUSION_BIN, FUSION_BENCH_DATABASE_URL (else a throwaway server).
set -euo pipefail
cd "$(dirname "$0")/.."

samples=${SAMPLES:-500}
interval=${FOLLOW_INTERVAL:-1}
if [[ -z "${FUSION_BIN:-}" ]]; then
    cargo build --release --quiet --bin fusion --example pg_ingest >&2
fi
fusion=${FUSION_BIN:-./target/release/fusion}
helper=./target/release/examples/pg_ingest

work=$(mktemp -d /tmp/fusion-converge-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n "${stop_server:-}" ]]; then eval "$stop_server"; fi
    rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=benches/pg_server.sh
source benches/pg_server.sh
pg_server_start "$work"
echo "cpus=$(nproc)"
echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
url=$("$helper" db "$admin" bench_converge)

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ports=()
for name in a b; do
    port=$(free_port)
    mkdir "$work/$name"
    RUST_LOG=warn "$fusion" serve --bind "127.0.0.1:$port" --data-dir "$work/$name" \
        --database-url "$url" --rate-per-address 0 --follow-interval "$interval" 2>"$work/$name.log" &
    pids+=($!)
    ports+=("$port")
    until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
        kill -0 "${pids[-1]}" 2>/dev/null || { tail -n 20 "$work/$name.log" >&2; exit 1; }
        sleep 0.2
    done
done
echo "follow_interval_s=$interval"
python3 benches/converge_lag.py "http://127.0.0.1:${ports[0]}" "http://127.0.0.1:${ports[1]}" "$samples"
