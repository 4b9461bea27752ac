#!/usr/bin/env bash
# Red team h63: a seeded SIGKILL soak of the served path, not in CI.
#
# Runs the kill tests of tests/it/redteam8.rs with many seeds: for each,
# three clients post late and out-of-order batches to a real `fusion serve`
# (a snapshot every 90 events, a feed subscriber attached), the server is
# SIGKILLed three times (twice on PostgreSQL) once a seeded share of the
# stream is acknowledged, restarted, and at the end every acknowledged
# event must be there once and the scores, rankings, explanations and log
# position must be a fresh open's (snapshots removed), bit for bit.
#
# Red team h69 added the erasure (BACKEND erasure, erasure-embedded,
# erasure-postgres): tests/it/redteam9.rs's kill test, one SIGKILL per seed
# a seeded 0 to 60 ms after a person's erasure was sent while two clients
# stream; after the restart the erasure is whole, or (not acknowledged) not
# done at all and whole once retried, no kept snapshot holds the person,
# and the state is a fresh open's.
#
# Usage: scripts/redteam/kill_soak.sh [SEEDS] [FIRST_SEED] [BACKEND]
#   SEEDS       seeds per backend (default 20)
#   FIRST_SEED  first seed (default 100); seeds FIRST_SEED.. FIRST_SEED+SEEDS-1
#   BACKEND     embedded, postgres or both (default both): the stream's
#               kills; erasure-embedded, erasure-postgres or erasure (both):
#               the erasure's
# A failure names its seed; run it again with SEEDS=1 FIRST_SEED=that seed.
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds=${1:-20}
first=${2:-100}
backend=${3:-both}
case "$backend" in
  embedded) filter='redteam8::kills_mid_stream_lose_nothing_acknowledged_and_restart_to_a_fresh_opens_bits' ; exact=--exact ;;
  postgres) filter='redteam8::kills_mid_stream_lose_nothing_acknowledged_and_restart_to_a_fresh_opens_bits_on_postgres' ; exact=--exact ;;
  both) filter='redteam8::kills_mid_stream' ; exact= ;;
  erasure-embedded) filter='redteam9::an_erasure_killed_at_any_moment_is_whole_or_not_done_and_never_leaves_a_copy' ; exact=--exact ;;
  erasure-postgres) filter='redteam9::an_erasure_killed_at_any_moment_is_whole_or_not_done_and_never_leaves_a_copy_on_postgres' ; exact=--exact ;;
  erasure) filter='redteam9::an_erasure_killed_at_any_moment' ; exact= ;;
  *) echo "BACKEND: embedded, postgres, both, erasure-embedded, erasure-postgres or erasure" >&2; exit 2 ;;
esac
started=$(date +%s)
FUSION_KILL_SOAK=$seeds FUSION_KILL_SEED=$first \
  nice -n 5 cargo test --locked --test it -- $exact "$filter" --nocapture --test-threads 2
echo "kill_soak_seeds=$seeds first_seed=$first backend=$backend seconds=$(( $(date +%s) - started ))"
