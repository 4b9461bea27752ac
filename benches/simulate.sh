#!/usr/bin/env bash
# benches/simulate.sh: `POST /v1/simulate` latency (issue 13's figure) for
# 1, 100 and 10,000 events on a large store: `fusion generate` EVENTS events
# into an embedded store, `fusion serve` it, then simulate the first N
# events of a second generated stream (another seed, starting where the
# store's ends, so the same people and brands; occasions and brand sales
# reports left out: simulate does not take them). Each size is sent REPS
# times for each movers count in TOPS; the median and the last answer's
# status, relationships scored, movers and precision are printed. A 422 is
# the 5 s work bound answering. The same run measures references on the
# same server, REPS times each: `GET /healthz` and a relationship read
# (the one-event post's person and brand, at the same `at`), so a noisy
# machine shows in them too: compare ratios. Prints `name=value` lines on
# stdout; everything else goes to stderr.
#
# Settings (environment): FUSION_BIN (a built binary instead of building
# release), EVENTS (default 1000000), SEED (42), REPS (3), TOPS ("20"; "1
# 20" separates the movers' walks from the rest), READY_TIMEOUT seconds
# (900), STORE (a data directory to keep: ingested there if it does not
# exist, reused as it is if it does, never deleted; default a temporary
# store deleted on exit).
set -euo pipefail

cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-1000000}
SEED=${SEED:-42}
REPS=${REPS:-3}
TOPS=${TOPS:-20}
READY_TIMEOUT=${READY_TIMEOUT:-900}
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-simulate.XXXXXX")
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

STORE=${STORE:-$WORK/store}
if [ -e "$STORE" ]; then
    echo "reusing the store in $STORE (EVENTS=$EVENTS is taken as what it holds)" >&2
else
    echo "generating and ingesting $EVENTS events..." >&2
    "$BIN" generate --seed "$SEED" --events "$EVENTS" >"$WORK/events.ndjson"
    "$BIN" ingest --data-dir "$STORE" "$WORK/events.ndjson" >&2
    rm -f "$WORK/events.ndjson"
fi
# The what-if events: the same population, after the store's 90 days.
"$BIN" generate --seed $((SEED + 1)) --events 20000 --start 2026-04-01T00:00:00Z --days 7 |
    grep -v -e '"type":"occasion"' -e '"type":"brand_sales"' |
    sed 's/"id":"/"id":"whatif-/' >"$WORK/whatif.all"
# An influencer's post first: the one-event figure is a post that reaches
# the poster's audience (the stream's first event may change nothing).
python3 - "$WORK/whatif.all" >"$WORK/whatif.ndjson" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
first = next(i for i, l in enumerate(lines)
             if (e := json.loads(l))["type"] == "post" and e["person"].startswith("i")
             and abs(e.get("sentiment", 0)) >= 0.3)
print("\n".join([lines[first]] + lines[:first] + lines[first + 1:]))
PY

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$port"
"$BIN" serve --data-dir "$STORE" --bind "127.0.0.1:$port" >"$WORK/serve.log" 2>&1 &
PID=$!
deadline=$(($(date +%s) + READY_TIMEOUT))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/readyz" || true)" = 200 ]; do
    kill -0 "$PID" 2>/dev/null || { echo "fusion serve exited:" >&2; tail -n 20 "$WORK/serve.log" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "fusion serve not ready after ${READY_TIMEOUT}s" >&2; exit 1; }
    sleep 0.5
done
echo "store_events=$EVENTS"
AT=2026-04-09T00:00:00Z

# The median of REPS timings of a curl call, in ms; the last status in
# $WORK/status (it runs in a command substitution's subshell).
median_ms() {
    local times=() out
    for _ in $(seq "$REPS"); do
        out=$(curl -s -o "$WORK/answer.json" -w '%{http_code} %{time_total}' "$@")
        times+=("${out#* }")
        echo "${out%% *}" >"$WORK/status"
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] * 1000 }'
}

read -r ref_person ref_brand < <(head -n 1 "$WORK/whatif.ndjson" |
    python3 -c 'import json, sys; e = json.loads(sys.stdin.read()); print(e["person"], e["brand"])')
echo "reference_healthz_ms=$(median_ms "$BASE/healthz")"
echo "reference_relationship_read_ms=$(median_ms "$BASE/v1/relationships/$ref_person/$ref_brand?at=$AT")"
echo "reference_relationship_read_status=$(cat "$WORK/status")"

for top in $TOPS; do
    for n in 1 100 10000; do
        head -n "$n" "$WORK/whatif.ndjson" |
            python3 -c 'import json, sys; print(json.dumps({"events": [json.loads(l) for l in sys.stdin], "at": sys.argv[1], "top": int(sys.argv[2])}))' "$AT" "$top" \
            >"$WORK/body.json"
        name=simulate_${n}_events_top_${top}
        echo "${name}_ms=$(median_ms -H 'Content-Type: application/json' --data-binary "@$WORK/body.json" "$BASE/v1/simulate")"
        echo "${name}_status=$(cat "$WORK/status")"
        python3 - "$WORK/answer.json" "$name" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
name = sys.argv[2]
if "scored" in a:
    print(f"{name}_scored={a['scored']}")
    print(f"{name}_movers={len(a['movers'])}")
    p = a.get("precision")
    if p:
        print(f"{name}_summaries={p['summaries']}")
        print(f"{name}_error_bound_points={p['error_bound']:.3g}")
else:
    print(f"{name}_problem={a.get('type')}", file=sys.stderr)
    print(a.get("detail"), file=sys.stderr)
PY
    done
done
echo "reference_healthz_after_ms=$(median_ms "$BASE/healthz")"
