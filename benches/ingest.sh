#!/usr/bin/env bash
# benches/ingest.sh: end-to-end ingest throughput into the embedded store.
#
# Owns one figure: how many events per second `fusion ingest` loads from an
# NDJSON file into a fresh embedded store (API.md, "Command line"). The time
# of `fusion generate` and of `wc -l` on the same file are printed beside it
# as references: the first is the cost of producing the input, the second the
# floor of merely reading it. Prints `name=value` lines on stdout; everything
# else goes to stderr.
#
# Settings (environment): FUSION_BIN (a built binary to use instead of
# building release), EVENTS (default 1000000), SEED (42),
# INGEST_TIMEOUT seconds (900).
set -euo pipefail

cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-1000000}
SEED=${SEED:-42}
INGEST_TIMEOUT=${INGEST_TIMEOUT:-900}

# shellcheck source=benches/fusion_bin.sh
source benches/fusion_bin.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusion-bench-ingest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FILE="$WORK/events.ndjson"

now() { date +%s.%N; }
# Seconds between two `now` stamps, with millisecond precision.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# Events per second, guarding against a zero duration on a very fast step.
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 0.001; printf "%.0f", n / s }'; }

echo "generating $EVENTS events..." >&2
t0=$(now)
"$BIN" generate --seed "$SEED" --events "$EVENTS" >"$FILE"
t1=$(now)
generate_s=$(elapsed "$t0" "$t1")

t0=$(now)
lines=$(wc -l <"$FILE")
t1=$(now)
wc_s=$(elapsed "$t0" "$t1")
if [ "$lines" -ne "$EVENTS" ]; then
    echo "fusion generate wrote $lines lines, expected $EVENTS" >&2
    exit 1
fi

echo "ingesting into a fresh embedded store..." >&2
t0=$(now)
status=0
timeout "$INGEST_TIMEOUT" "$BIN" ingest --data-dir "$WORK/data" "$FILE" >"$WORK/ingest.out" 2>&1 || status=$?
t1=$(now)
if [ "$status" -ne 0 ]; then
    echo "fusion ingest failed (status $status; 124 means it ran over ${INGEST_TIMEOUT}s):" >&2
    tail -n 20 "$WORK/ingest.out" >&2
    exit 1
fi
ingest_s=$(elapsed "$t0" "$t1")
cat "$WORK/ingest.out" >&2

echo "events=$EVENTS"
echo "file_bytes=$(wc -c <"$FILE" | tr -d ' ')"
echo "generate_s=$generate_s"
echo "generate_events_per_s=$(rate "$EVENTS" "$generate_s")"
echo "wc_s=$wc_s"
echo "ingest_s=$ingest_s"
echo "ingest_events_per_s=$(rate "$EVENTS" "$ingest_s")"
# The counts ingest prints (accepted / duplicate / rejected), when it names them.
for count in accepted duplicates rejected; do
    value=$(grep -oiE "${count%s}s?[^0-9]{0,3}[0-9]+" "$WORK/ingest.out" | head -n 1 | grep -oE '[0-9]+$' || true)
    if [ -n "$value" ]; then
        echo "ingest_$count=$value"
    fi
done
