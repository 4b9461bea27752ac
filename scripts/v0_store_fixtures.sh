#!/usr/bin/env bash
# Writes the fixture stores of the previous stored format (issue #10, item 3)
# with a `fusion` binary built from the code that wrote that format (main at
# 28437ce, before log positions and StoredEventV1):
#   fixtures/stores/v0-embedded/events.redb   the embedded store
#   fixtures/stores/v0-postgres.sql           pg_dump --inserts of the database
#   fixtures/stores/v0-expected.json          what that binary answered
# tests/it/old_stores.rs opens both with today's code and compares its answers
# with v0-expected.json. Run once; the fixtures are committed, and re-running
# with a newer binary would not write the old format any more.
#
# Usage: scripts/v0_store_fixtures.sh [FUSION_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
FUSION=$(realpath "${1:-target/release/fusion}")
OUT=fixtures/stores
PORT=18431
AT=2026-11-20T00:00:00Z
PAIRS="artist/sweater artist/bistro fan1/bistro fan1/sweater fan2/sweater fan3/sweater fan4/sweater fan5/bistro fan6/bistro fan2/bistro"
TIMELINES="fan1 sweater artist fan5"
work=$(mktemp -d)
cleanup() {
    [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
    if [ -n "${pgdata:-}" ]; then runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

serve() { # args: store flags
    "$FUSION" serve --bind 127.0.0.1:$PORT "$@" >"$work/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 1 200); do
        curl -sf "localhost:$PORT/readyz" >/dev/null && return 0
        sleep 0.1
    done
    cat "$work/serve.log"; exit 1
}

load() {
    python3 - "$PORT" "$OUT/v0-entities.json" <<'PY'
import json, sys, urllib.request
port, path = sys.argv[1], sys.argv[2]
for e in json.load(open(path)):
    req = urllib.request.Request(f"http://localhost:{port}/v1/entities/{e['id']}",
        data=json.dumps(e["body"]).encode(), method="PUT",
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY
    cat fixtures/seed_story.ndjson "$OUT/v0-extra.ndjson" | curl -sf -X POST \
        -H 'Content-Type: application/x-ndjson' --data-binary @- "localhost:$PORT/v1/events" >"$work/ingest.json"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["accepted"]==39 and not r["rejected"], r' "$work/ingest.json"
}

answers() { # prints the expected-answers document
    python3 - "$PORT" "$AT" "$PAIRS" "$TIMELINES" <<'PY'
import json, sys, urllib.request
port, at, pairs, timelines = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
get = lambda p: json.load(urllib.request.urlopen(f"http://localhost:{port}{p}"))
doc = {"at": at,
       "relationships": {p: get(f"/v1/relationships/{p}?at={at}") for p in pairs},
       "timelines": {e: get(f"/v1/entities/{e}/events?limit=1000") for e in timelines}}
print(json.dumps(doc, indent=1, sort_keys=True))
PY
}

stop() { kill -TERM "$server"; wait "$server" || true; server=; }

# The embedded store.
rm -rf "$OUT/v0-embedded"
serve --data-dir "$OUT/v0-embedded"
load
answers >"$OUT/v0-expected.json"
stop

# PostgreSQL: a throwaway server, the same requests, then a dump.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdata="$work/pg"
mkdir -p "$work/sock" && chown -R postgres: "$work"
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -A trust -U postgres -E UTF8 --no-sync >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l "$work/pg.log" -w \
    -o "-k $work/sock -p 5499 -c listen_addresses=''" start >/dev/null
url="host=$work/sock port=5499 user=postgres dbname=postgres"
serve --database-url "$url"
load
answers >"$work/pg-answers.json"
stop
cmp "$OUT/v0-expected.json" "$work/pg-answers.json"
# The materialised scores are derived data (rewritten by serve): left out.
pg_dump --no-owner --no-privileges --inserts --exclude-table-data=relationship_scores \
    -h "$work/sock" -p 5499 -U postgres postgres \
    | grep -v '^\\' | grep -v '^--' | grep -v '^$' >"$OUT/v0-postgres.sql"
ls -la "$OUT"
