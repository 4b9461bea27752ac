#!/usr/bin/env bash
# The live (incremental) series per event: a `fusion generate` stream is
# folded up to its last K events, then those are appended one at a time and
# the live series caught up after each (checkpoints, every 128 events, are
# batch builds and show in the tail). Prints name=value lines: time per
# event, pushes per event, and where the cost is (per event type and author
# audience; the fan-out share of wide audiences; time per push and visit;
# the share of checkpoint builds in the mean; deferred pushes of
# the lazy audience spill).
#
# Usage: benches/live.sh [EVENTS] [K]   (defaults 200000, 500)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
events="${1:-200000}"
k="${2:-500}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
(cd "$root" && cargo build --release --quiet --example live_events)
"$root/target/release/fusion" generate --events "$events" > "$dir/events.ndjson"
"$root/target/release/examples/live_events" "$dir/events.ndjson" "$k"
