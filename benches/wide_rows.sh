#!/usr/bin/env bash
# benches/wide_rows.sh: the live series with one person's rows thousands of
# brands wide (red team h58; `benches/wide_rows.py` makes the stream): the
# last TAIL events appended one at a time by `examples/live_events`, whose
# name=value lines are printed per mode (`assoc`, `follow`) prefixed with
# the mode and width. LIVE_EVENTS=path measures another build's example
# (main's, for a same-run pair).
#
# Usage: benches/wide_rows.sh [WIDTH] [TAIL]   (defaults 2000, 300)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
width="${1:-2000}"
tail="${2:-300}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
if [ -z "${LIVE_EVENTS:-}" ]; then
    (cd "$root" && cargo build --release --quiet --example live_events)
    LIVE_EVENTS="$root/target/release/examples/live_events"
fi
for mode in assoc follow; do
    python3 "$here/wide_rows.py" "$mode" "$width" "$tail" > "$dir/$mode.ndjson"
    "$LIVE_EVENTS" "$dir/$mode.ndjson" "$tail" | grep -v '^class\.' | sed "s/^/$mode.$width./"
done
