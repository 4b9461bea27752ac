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
cd "$(dirname "$0")/.."
width="${1:-2000}" tail="${2:-300}"
if [ -z "${LIVE_EVENTS:-}" ]; then
    cargo build --release --quiet --example live_events
    LIVE_EVENTS=target/release/examples/live_events
fi
for mode in assoc follow; do
    "$LIVE_EVENTS" <(python3 benches/wide_rows.py "$mode" "$width" "$tail") "$tail" |
        grep -v '^class\.' | sed "s/^/$mode.$width./"
done
