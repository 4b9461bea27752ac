#!/usr/bin/env bash
# benches/stream.sh: a live stream against `fusion serve` (issue #11).
#
# Owns the stream figures: a server on a store of STORE_EVENTS generated
# events takes an open-loop stream (examples/stream.rs) while readers poll
# relationships, brand rankings and summaries and marker events measure
# freshness; printed per scenario: offered and absorbed events/s, ack
# p50/p99, read p50/p99 per kind, freshness p50/p99 (ack until a marker
# heads its brand's ranking), feed latency p50/p99 (ack until its change
# arrives on a `GET /v1/stream` subscriber), the longest hold of
# the state's write lock, the live thread's longest hold of the fold lock
# and the fold thread's waits for it over 0.5 s, whole-state builds and checkpoint refolds for late
# events (counts, mean seconds; from /metrics), ranking builds (p50/p99 and
# each phase's mean, from /metrics) and the served ranking's lag behind the
# log at each read (events and ms, p50/p99; and in the server, the age of the
# ranking each read was answered from, p50/p99), the server's peak memory, and the
# absorbed rate as a fraction of bulk `fusion ingest` measured in the same
# run. Scenarios: `batches` (RATE events/s in BATCH-event NDJSON requests
# from CLIENTS clients) and `singles` (SINGLE_RATE events/s, one event per
# request, from 64 clients); each gets its own copy of the store and its
# own server. Prints `name=value` lines on stdout; the rest goes to stderr.
#
# Also printed: the split of an acknowledgement in the server (mean
# commit, mean wait for the fold after it, mean ingest request; on
# PostgreSQL also the mean wait for and hold of the `log_head` lock),
# and a change's transit from its earliest event's stamp to the fold
# thread (p50/p99; past the reorder window, stragglers refold);
# METRICS_OUT=PREFIX keeps each scenario's /metrics in PREFIX.<scenario>.
#
# The generator is open loop up to 8 requests in flight per client
# (SINGLE_INFLIGHT, 2, per client of `singles`: 128 in flight, so above a
# mean acknowledgement of 25.6 ms the generator, not the server, sets the
# rate). Settings (environment): FUSION_BIN and STREAM_BIN (built binaries instead
# of building release), STORE_EVENTS (200000; 1000000 for the note), RATE
# (20000), BATCH (500), CLIENTS (4), SINGLE_RATE (5000), SECONDS (15),
# STORE_FILE (a store of STORE_EVENTS generated events, kept and reused),
# SCENARIOS ("batches singles"), SERVE_FLAGS (extra `serve` flags),
# READY_TRIES (1500, 0.2 s apart), PATIENCE (0: every request is sent
# however long an overwhelmed server takes; N: requests not sent N s after
# the stream's end are given up and count as not absorbed), WAIT_RANKINGS
# (0; 1: the stream starts once the rankings are ready and one ranking is
# built: a server in service). STREAM_DATABASE=1: on PostgreSQL instead
# (a fresh database per scenario, loaded with `fusion ingest
# --database-url`, which is then the bulk reference; the server from
# FUSION_BENCH_DATABASE_URL or a throwaway one, benches/pg_server.sh).
# FOLLOWER=1 (with STREAM_DATABASE=1): a second server on the same
# database, which takes no requests but follows the log, and its lag
# behind the first during the stream (benches/follow_lag.py: positions
# and milliseconds, p50/p99/max, and its catch-up after the stream);
# it shares the cores, so its figures are not those of one server.
set -euo pipefail

cd "$(dirname "$0")/.."

STORE_EVENTS=${STORE_EVENTS:-200000}
RATE=${RATE:-20000}
BATCH=${BATCH:-500}
CLIENTS=${CLIENTS:-4}
SINGLE_RATE=${SINGLE_RATE:-5000}
SECONDS_EACH=${SECONDS:-15}
SCENARIOS=${SCENARIOS:-batches singles}
SERVE_FLAGS=${SERVE_FLAGS:-}
READY_TRIES=${READY_TRIES:-1500}
PATIENCE=${PATIENCE:-0}
SINGLE_INFLIGHT=${SINGLE_INFLIGHT:-2}

command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
if [ -z "${FUSION_BIN:-}" ] || [ -z "${STREAM_BIN:-}" ]; then
    echo "building release..." >&2
    cargo build --release --quiet --bin fusion --example stream --example pg_ingest
fi
DATABASE=${STREAM_DATABASE:-0}
PG_HELPER=${PG_HELPER_BIN:-target/release/examples/pg_ingest}
BIN=${FUSION_BIN:-target/release/fusion}
STREAM=${STREAM_BIN:-target/release/examples/stream}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-stream.XXXXXX")
SERVER_PID=""
FOLLOWER_PID=""
cleanup() {
    if [ -n "$FOLLOWER_PID" ]; then
        kill "$FOLLOWER_PID" 2>/dev/null || true
        wait "$FOLLOWER_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "${stop_server:-}" ]; then eval "$stop_server"; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
if [ "$DATABASE" = 1 ]; then
    # shellcheck source=benches/pg_server.sh
    source benches/pg_server.sh
    pg_server_start "$WORK"
fi
echo "backend=$([ "$DATABASE" = 1 ] && echo postgres || echo embedded)"
echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"

# load NAME: the generated store into a new place for scenario NAME; sets
# PLACE to the `serve` flags that name it.
load() {
    if [ "$DATABASE" = 1 ]; then
        local url
        url=$("$PG_HELPER" db "$admin" "bench_stream_$1")
        "$BIN" ingest --database-url "$url" "$WORK/store.ndjson" >/dev/null 2>&1
        mkdir -p "$WORK/$1.dir"
        PLACE=(--data-dir "$WORK/$1.dir" --database-url "$url")
    else
        "$BIN" ingest --data-dir "$WORK/$1" "$WORK/store.ndjson" >/dev/null 2>&1
        PLACE=(--data-dir "$WORK/$1")
    fi
}

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# STORE_FILE=PATH keeps the generated store there and reuses it when it
# is there already (runs of one size against several binaries).
if [ -n "${STORE_FILE:-}" ] && [ -s "$STORE_FILE" ]; then
    ln -s "$(realpath "$STORE_FILE")" "$WORK/store.ndjson"
else
    echo "generating a store of $STORE_EVENTS events..." >&2
    "$BIN" generate --seed 42 --events "$STORE_EVENTS" >"$WORK/store.ndjson"
    if [ -n "${STORE_FILE:-}" ]; then cp "$WORK/store.ndjson" "$STORE_FILE"; fi
fi
t0=$(now)
load bulk
t1=$(now)
BULK=$(awk -v n="$STORE_EVENTS" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
# The stream's content (ids and times are rewritten at send).
"$BIN" generate --seed 43 --events 20000 >"$WORK/stream.ndjson"
echo "store_events=$STORE_EVENTS"
echo "bulk_ingest_events_per_s=$BULK"

# wait_ready PORT PID LOG: until the server on PORT answers /readyz (its
# log's tail and exit when it stops or READY_TRIES pass).
wait_ready() {
    local tries=0
    until curl -sf "http://127.0.0.1:$1/readyz" >/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -ge "$READY_TRIES" ] || ! kill -0 "$2" 2>/dev/null; then
            echo "the server on port $1 did not become ready" >&2
            tail -n 20 "$3" >&2
            exit 1
        fi
        sleep 0.2
    done
}

# scenario NAME RATE BATCH CLIENTS [SETTING]: a server on a copy of the
# store, the stream (SETTING: one more key=value for examples/stream.rs).
scenario() {
    local name=$1 rate=$2 batch=$3 clients=$4 extra=${5:-}
    local port
    load "$name"
    port=$(free_port)
    # shellcheck disable=SC2086
    RUST_LOG=warn "$BIN" serve --bind "127.0.0.1:$port" "${PLACE[@]}" --rate-per-address 0 $SERVE_FLAGS 2>"$WORK/$name.log" &
    SERVER_PID=$!
    local tries=0
    wait_ready "$port" "$SERVER_PID" "$WORK/$name.log"
    # WAIT_RANKINGS=1: the stream starts once the rankings are built too
    # (the live series' first build and the first ranking), so the reads
    # measure a server in service, not its start.
    if [ "${WAIT_RANKINGS:-0}" = 1 ]; then
        tries=0
        until curl -sf "http://127.0.0.1:$port/readyz" | grep -q '"rankings": *"ready"'; do
            tries=$((tries + 1))
            if [ "$tries" -ge "$READY_TRIES" ]; then
                echo "the rankings did not become ready" >&2
                exit 1
            fi
            sleep 0.2
        done
        curl -sf "http://127.0.0.1:$port/v1/brands?limit=1" >/dev/null || true
    fi
    local sampler=""
    if [ "$DATABASE" = 1 ] && [ "${FOLLOWER:-0}" = 1 ]; then
        local fport
        fport=$(free_port)
        mkdir -p "$WORK/$name.follower"
        RUST_LOG=warn "$BIN" serve --bind "127.0.0.1:$fport" --data-dir "$WORK/$name.follower" \
            "${PLACE[@]:2}" --rate-per-address 0 $SERVE_FLAGS 2>"$WORK/$name.follower.log" &
        FOLLOWER_PID=$!
        wait_ready "$fport" "$FOLLOWER_PID" "$WORK/$name.follower.log"
        python3 benches/follow_lag.py "http://127.0.0.1:$port" "http://127.0.0.1:$fport" \
            "$WORK/$name.stop" >"$WORK/$name.follow" &
        sampler=$!
    fi
    echo "$name: $rate events/s in $batch-event requests from $clients clients for ${SECONDS_EACH}s" >&2
    "$STREAM" "http://127.0.0.1:$port" "$WORK/store.ndjson" "$WORK/stream.ndjson" \
        rate="$rate" batch="$batch" clients="$clients" seconds="$SECONDS_EACH" patience="$PATIENCE" $extra >"$WORK/$name.out"
    sed "s/^/${name}_/" "$WORK/$name.out"
    if [ -n "$sampler" ]; then
        touch "$WORK/$name.stop"
        wait "$sampler"
        sed "s/^/${name}_/" "$WORK/$name.follow"
        echo "${name}_follower_followed_events=$(curl -s "http://127.0.0.1:$fport/metrics" | awk '$1 == "fusion_followed_events_total" { n = $2 } END { printf "%d", n }')"
        kill "$FOLLOWER_PID"
        wait "$FOLLOWER_PID" 2>/dev/null || true
        FOLLOWER_PID=""
    fi
    local absorbed
    absorbed=$(awk -F= '$1 == "absorbed_events_per_s" { print $2 }' "$WORK/$name.out")
    echo "${name}_absorbed_to_bulk_ratio=$(awk -v a="$absorbed" -v b="$BULK" 'BEGIN { printf "%.5f", a / b }')"
    local hold metrics
    metrics=$(curl -s "http://127.0.0.1:$port/metrics")
    hold=$(awk '$1 == "fusion_write_lock_hold_max_seconds" { print $2 }' <<<"$metrics")
    if [ "$DATABASE" = 1 ]; then
        # One server: whatever its follower folded was its own, read
        # between commit and fold (folded once; the cost is the read).
        echo "${name}_followed_events=$(awk '$1 == "fusion_followed_events_total" { n = $2 } END { printf "%d", n }' <<<"$metrics")"
        # The `log_head` row lock that numbers events: a committed
        # append's mean wait for it and mean hold (grant to commit).
        echo "${name}_log_head_wait_mean_ms=$(awk '$1 == "fusion_log_head_wait_seconds_sum" { s = $2 } $1 == "fusion_log_head_wait_seconds_count" { n = $2 } END { printf "%.2f", (n > 0 ? s / n * 1000 : 0) }' <<<"$metrics")"
        echo "${name}_log_head_hold_mean_ms=$(awk '$1 == "fusion_log_head_hold_seconds_sum" { s = $2 } $1 == "fusion_log_head_hold_seconds_count" { n = $2 } END { printf "%.2f", (n > 0 ? s / n * 1000 : 0) }' <<<"$metrics")"
    fi
    # Whole-state builds by the fold thread for late events, and their mean.
    echo "${name}_fold_rebuilds_late=$(awk '$1 == "fusion_fold_rebuilds_total{cause=\"late\"}" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    echo "${name}_fold_rebuild_mean_s=$(awk '$1 == "fusion_fold_rebuild_seconds_sum" { s = $2 } $1 == "fusion_fold_rebuild_seconds_count" { n = $2 } END { printf "%.3f", (n > 0 ? s / n : 0) }' <<<"$metrics")"
    # Append requests per commit (group commit), on average.
    echo "${name}_commit_group_requests_mean=$(awk '$1 == "fusion_commit_group_requests_sum" { s = $2 } $1 == "fusion_commit_group_requests_count" { n = $2 } END { printf "%.2f", (n > 0 ? s / n : 0) }' <<<"$metrics")"
    # The commit's mean time (an fsync and the group's writes).
    echo "${name}_commit_mean_ms=$(awk '$1 == "fusion_commit_seconds_sum" { s = $2 } $1 == "fusion_commit_seconds_count" { n = $2 } END { printf "%.2f", (n > 0 ? s / n * 1000 : 0) }' <<<"$metrics")"
    # The wait for the fold after the commit, and a whole ingest request
    # in the server (2xx), means: with the commit, the split of an ack.
    # A change's transit from its earliest event's stamp to the fold
    # thread (the upper bound of the bucket holding p50/p99): past the
    # reorder window, stragglers refold.
    for q in 50 99; do
        echo "${name}_write_transit_p${q}_ms=$(awk -v q="$q" 'index($1, "fusion_write_transit_seconds_bucket") == 1 { split($1, a, "le=\""); sub(/".*/, "", a[2]); le[++n] = a[2]; c[n] = $2 } END { if (n == 0 || c[n] == 0) { print "nan"; exit } for (i = 1; i <= n; i++) if (c[i] >= c[n] * q / 100) { print (le[i] == "+Inf" ? "inf" : le[i] * 1000); exit } }' <<<"$metrics")"
    done
    echo "${name}_fold_wait_mean_ms=$(awk '$1 == "fusion_fold_wait_seconds_sum" { s = $2 } $1 == "fusion_fold_wait_seconds_count" { n = $2 } END { printf "%.2f", (n > 0 ? s / n * 1000 : 0) }' <<<"$metrics")"
    echo "${name}_ingest_request_mean_ms=$(awk 'index($1, "fusion_http_request_duration_seconds_sum{") == 1 && $1 ~ /route="\/v1\/events"/ && $1 ~ /method="POST"/ && $1 ~ /status="2/ { s += $2 } index($1, "fusion_http_request_duration_seconds_count{") == 1 && $1 ~ /route="\/v1\/events"/ && $1 ~ /method="POST"/ && $1 ~ /status="2/ { n += $2 } END { printf "%.2f", (n > 0 ? s / n * 1000 : 0) }' <<<"$metrics")"
    if [ -n "${METRICS_OUT:-}" ]; then
        cp /dev/stdin "$METRICS_OUT.$name" <<<"$metrics"
    fi
    # Refolds for late events from an event-time checkpoint (the events
    # after it), their mean time, of it the mean time producing those
    # events (split from the fold thread's memory, or read from the store),
    # and mean events folded.
    echo "${name}_fold_refolds=$(awk '$1 == "fusion_fold_refolds_total" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    echo "${name}_fold_refold_mean_s=$(awk '$1 == "fusion_fold_refold_seconds_sum" { s = $2 } $1 == "fusion_fold_refold_seconds_count" { n = $2 } END { printf "%.3f", (n > 0 ? s / n : 0) }' <<<"$metrics")"
    echo "${name}_fold_refold_read_mean_s=$(awk '$1 == "fusion_fold_refold_read_seconds_sum" { s = $2 } $1 == "fusion_fold_refold_read_seconds_count" { n = $2 } END { printf "%.3f", (n > 0 ? s / n : 0) }' <<<"$metrics")"
    echo "${name}_fold_refold_mean_events=$(awk '$1 == "fusion_fold_refold_events_sum" { s = $2 } $1 == "fusion_fold_refold_events_count" { n = $2 } END { printf "%.0f", (n > 0 ? s / n : 0) }' <<<"$metrics")"
    # Where the refolds' tails came from (task h55: the fold thread's memory
    # of recent events, else the store), and that memory at the end.
    for source in memory store mismatch; do
        echo "${name}_fold_refold_tails_${source}=$(awk -v s="$source" '$1 == "fusion_fold_refold_tails_total{source=\"" s "\"}" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    done
    echo "${name}_fold_recent_events_end=$(awk '$1 == "fusion_fold_recent_events" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    echo "${name}_fold_recent_bytes_end=$(awk '$1 == "fusion_fold_recent_bytes" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    # The live series' checkpoint builds (installed, thrown away by a new
    # state) and refolds that continued it instead (task h31).
    echo "${name}_live_builds=$(awk '$1 == "fusion_live_builds_total" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    echo "${name}_live_builds_discarded=$(awk '$1 == "fusion_live_builds_discarded_total" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    echo "${name}_live_build_mean_s=$(awk '$1 == "fusion_live_build_seconds_sum" { s = $2 } $1 == "fusion_live_build_seconds_count" { n = $2 } END { printf "%.3f", (n > 0 ? s / n : 0) }' <<<"$metrics")"
    echo "${name}_live_resumes=$(awk '$1 == "fusion_live_resumes_total" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    # Whether the live series kept up: its lag when the stream ended, and
    # how long it took to catch up after (given up after 60 s).
    echo "${name}_live_lag_events_end=$(awk '$1 == "fusion_live_lag_events" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    local lag_start lag
    lag_start=$(date +%s.%N)
    lag=$(curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "fusion_live_lag_events" { n = $2 } END { print n + 0 }')
    while [ "$lag" != 0 ] && awk -v s="$lag_start" -v n="$(date +%s.%N)" 'BEGIN { exit !(n - s < 60) }'; do
        sleep 0.1
        lag=$(curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "fusion_live_lag_events" { n = $2 } END { print n + 0 }')
    done
    echo "${name}_live_catch_up_s=$(awk -v s="$lag_start" -v n="$(date +%s.%N)" -v l="$lag" 'BEGIN { if (l != 0) print "never"; else printf "%.1f", n - s }')"
    # The longest write-lock hold and live event once the catch-up is
    # over (session 31): `write_lock_hold_max_ms` above is read when the
    # stream ends, and the catch-up after it held the lock 100 to 351 ms
    # with single events, unseen there.
    local after
    after=$(curl -s "http://127.0.0.1:$port/metrics")
    echo "${name}_after_catch_up_write_lock_hold_max_ms=$(awk '$1 == "fusion_write_lock_hold_max_seconds" { h = $2 } END { printf "%.1f", h * 1000 }' <<<"$after")"
    echo "${name}_after_catch_up_live_event_max_ms=$(awk '$1 == "fusion_live_event_max_seconds" { h = $2 } END { printf "%.1f", h * 1000 }' <<<"$after")"
    # A listing and a summary in the server (2xx, means): what the reads'
    # latency is besides waiting for a worker or the CPU (task h42).
    for route in "ranking /v1/brands/{brand}/relationships" "summary /v1/brands/{brand}"; do
        echo "${name}_read_${route%% *}_server_mean_ms=$(awk -v r="route=\"${route#* }\"" 'index($1, "fusion_http_request_duration_seconds_sum{") == 1 && index($1, r) && $1 ~ /method="GET"/ && $1 ~ /status="2/ { s += $2 } index($1, "fusion_http_request_duration_seconds_count{") == 1 && index($1, r) && $1 ~ /method="GET"/ && $1 ~ /status="2/ { n += $2 } END { printf "%.2f", (n > 0 ? s / n * 1000 : 0) }' <<<"$metrics")"
    done
    # Ranking builds (task h42): p50/p99 of the whole build (the upper
    # bound of the histogram's bucket that holds it) and each phase's mean.
    echo "${name}_ranking_builds=$(awk '$1 == "fusion_ranking_build_seconds_count{phase=\"total\"}" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    # Where each build's scores of now came from (session 31): the live
    # series caught up, as it stands while it lags, or a batch evaluation.
    for rows in live lagging batch; do
        echo "${name}_ranking_builds_${rows}=$(awk -v r="$rows" '$1 == "fusion_ranking_builds_total{rows=\"" r "\"}" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    done
    for q in 50 99; do
        echo "${name}_ranking_build_p${q}_s=$(awk -v q="$q" 'index($1, "fusion_ranking_build_seconds_bucket{phase=\"total\"") == 1 { split($1, a, "le=\""); sub(/".*/, "", a[2]); le[++n] = a[2]; c[n] = $2 } END { if (n == 0 || c[n] == 0) { print "nan"; exit } for (i = 1; i <= n; i++) if (c[i] >= c[n] * q / 100) { print le[i]; exit } }' <<<"$metrics")"
    done
    # The age of the ranking each listing, summary or dashboard read was
    # answered from, in the server (task h46): p50/p99 as bucket bounds.
    for q in 50 99; do
        echo "${name}_ranking_age_p${q}_s=$(awk -v q="$q" 'index($1, "fusion_ranking_age_seconds_bucket{") == 1 { split($1, a, "le=\""); sub(/".*/, "", a[2]); le[++n] = a[2]; c[n] = $2 } END { if (n == 0 || c[n] == 0) { print "nan"; exit } for (i = 1; i <= n; i++) if (c[i] >= c[n] * q / 100) { print le[i]; exit } }' <<<"$metrics")"
    done
    for phase in read evaluate past rank total; do
        echo "${name}_ranking_build_${phase}_mean_s=$(awk -v p="$phase" '$1 == "fusion_ranking_build_seconds_sum{phase=\"" p "\"}" { s = $2 } $1 == "fusion_ranking_build_seconds_count{phase=\"" p "\"}" { n = $2 } END { printf "%.3f", (n > 0 ? s / n : 0) }' <<<"$metrics")"
    done
    # Relationship reads in the server (task h49): per phase, p50/p99 (the
    # upper bound of the bucket that holds it), mean and count (`walk` is
    # per walk taken; the others per uncached read).
    for phase in lock walk pass reasons json total; do
        echo "${name}_relationship_${phase}_n=$(awk -v p="$phase" '$1 == "fusion_relationship_read_seconds_count{phase=\"" p "\"}" { n = $2 } END { print n + 0 }' <<<"$metrics")"
        echo "${name}_relationship_${phase}_mean_ms=$(awk -v p="$phase" '$1 == "fusion_relationship_read_seconds_sum{phase=\"" p "\"}" { s = $2 } $1 == "fusion_relationship_read_seconds_count{phase=\"" p "\"}" { n = $2 } END { printf "%.2f", (n > 0 ? s / n * 1000 : 0) }' <<<"$metrics")"
        for q in 50 99; do
            echo "${name}_relationship_${phase}_p${q}_ms=$(awk -v q="$q" -v p="$phase" 'index($1, "fusion_relationship_read_seconds_bucket{phase=\"" p "\"") == 1 { split($1, a, "le=\""); sub(/".*/, "", a[2]); le[++n] = a[2]; c[n] = $2 } END { if (n == 0 || c[n] == 0) { print "nan"; exit } for (i = 1; i <= n; i++) if (c[i] >= c[n] * q / 100) { print (le[i] == "+Inf" ? le[i] : le[i] * 1000); exit } }' <<<"$metrics")"
        done
    done
    echo "${name}_write_lock_hold_max_ms=$(awk -v h="${hold:-nan}" 'BEGIN { printf "%.1f", h * 1000 }')"
    # The fold lock (task h60): the live thread's longest hold of it and
    # its mean hold by what it held it for (a build's plan, an install, a
    # slice of catch-up; 0 / nan on a build without the metric), and the
    # fold thread's waits for it over 0.5 s: a round's `lock` phase, and a
    # checkpoint's copy, whose timer includes its wait for the lock.
    echo "${name}_live_fold_lock_hold_max_ms=$(awk '$1 == "fusion_live_fold_lock_hold_max_seconds" { h = $2 } END { printf "%.1f", h * 1000 }' <<<"$metrics")"
    for what in plan install slice; do
        echo "${name}_live_fold_lock_${what}_mean_ms=$(awk -v w="$what" '$1 == "fusion_live_fold_lock_hold_seconds_sum{what=\"" w "\"}" { s = $2 } $1 == "fusion_live_fold_lock_hold_seconds_count{what=\"" w "\"}" { n = $2 } END { printf "%.2f", (n > 0 ? s / n * 1000 : 0) }' <<<"$metrics")"
        # Holds and holds over 50 ms (task h66; an install holds none since).
        echo "${name}_live_fold_lock_${what}_n=$(awk -v w="$what" '$1 == "fusion_live_fold_lock_hold_seconds_count{what=\"" w "\"}" { n = $2 } END { print n + 0 }' <<<"$metrics")"
        echo "${name}_live_fold_lock_${what}_over_50ms=$(awk -v w="$what" 'index($1, "fusion_live_fold_lock_hold_seconds_bucket{") == 1 && index($1, "what=\"" w "\"") { if (index($1, "le=\"0.05\"")) h = $2; if (index($1, "le=\"+Inf\"")) n = $2 } END { print n - h }' <<<"$metrics")"
    done
    # What holds a slice past its budget (task h66): events over 50 ms by
    # cause (`check`: a drift check after it; `pushes`: its pushes alone),
    # the longest event and its pushes, and the drift rebuilds made off the
    # locks (0 / nan on a build without the metrics).
    for cause in check pushes; do
        echo "${name}_live_long_events_${cause}=$(awk -v c="$cause" '$1 == "fusion_live_long_events_total{cause=\"" c "\"}" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    done
    echo "${name}_live_event_max_ms=$(awk '$1 == "fusion_live_event_max_seconds" { h = $2 } END { printf "%.1f", h * 1000 }' <<<"$metrics")"
    echo "${name}_live_event_max_pushes=$(awk '$1 == "fusion_live_event_max_pushes" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    for outcome in installed discarded; do
        echo "${name}_live_drift_builds_${outcome}=$(awk -v o="$outcome" '$1 == "fusion_live_drift_builds_total{outcome=\"" o "\"}" { n = $2 } END { print n + 0 }' <<<"$metrics")"
    done
    echo "${name}_live_drift_build_mean_s=$(awk '$1 == "fusion_live_drift_build_seconds_sum" { s = $2 } $1 == "fusion_live_drift_build_seconds_count" { n = $2 } END { printf "%.3f", (n > 0 ? s / n : 0) }' <<<"$metrics")"
    for phase in lock checkpoint; do
        echo "${name}_fold_${phase}_over_500ms=$(awk -v p="$phase" 'index($1, "fusion_fold_round_seconds_bucket{") == 1 && index($1, "phase=\"" p "\"") { if (index($1, "le=\"0.5\"")) h = $2; if (index($1, "le=\"+Inf\"")) n = $2 } END { print n - h }' <<<"$metrics")"
    done
    echo "${name}_peak_rss_mb=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER_PID/status")"
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

for s in $SCENARIOS; do
    case $s in
        batches) scenario batches "$RATE" "$BATCH" "$CLIENTS" ;;
        singles) scenario singles "$SINGLE_RATE" 1 64 "inflight=$SINGLE_INFLIGHT" ;;
        *) echo "unknown scenario $s" >&2; exit 1 ;;
    esac
done
