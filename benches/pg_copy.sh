#!/usr/bin/env bash
# Ingest figures for the PostgreSQL store (issue 4): the raw binary-COPY rate
# of 1,000,000 event rows (the ceiling), durable events/s through
# PostgresStore::append in batches of 10,000, and acknowledgement latency
# with 8 concurrent appenders. Prints name=value lines.
#
# Uses FUSION_BENCH_DATABASE_URL (key=value form, a database where it may
# create databases) when set; otherwise starts a throwaway server from the
# local binaries, as the postgres user when run as root, fsync on, and
# removes it at the end. EVENTS=N overrides the stream length.
set -euo pipefail
cd "$(dirname "$0")/.."

events="${EVENTS:-1000000}"
cargo build --release --example pg_append >&2

url="${FUSION_BENCH_DATABASE_URL:-}"
if [[ -z "$url" ]]; then
    bin=$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")
    if [[ ! -x "$bin/initdb" || ! -x "$bin/pg_ctl" ]]; then
        echo "pg_copy.sh: needs PostgreSQL (apt-get install postgresql) or FUSION_BENCH_DATABASE_URL" >&2
        exit 1
    fi
    root=$(mktemp -d /tmp/fusion-pgbench-XXXXXX)
    mkdir "$root/sock"
    as_pg=()
    if [[ $(id -u) == 0 ]]; then
        chown -R postgres: "$root"
        as_pg=(runuser -u postgres --)
    fi
    trap '"${as_pg[@]}" "$bin/pg_ctl" -D "$root/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$root"' EXIT
    "${as_pg[@]}" "$bin/initdb" -D "$root/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
    # Production-like durability (fsync, synchronous_commit on: the defaults);
    # max_wal_size raised as any ingest-heavy server would, so the figure is
    # not one of checkpoint storms.
    opts="-k $root/sock -p 5432 -c listen_addresses='' -c fsync=on -c synchronous_commit=on -c max_wal_size=4GB"
    "${as_pg[@]}" "$bin/pg_ctl" -D "$root/data" -l "$root/log" -w -o "$opts" start >/dev/null
    url="host=$root/sock port=5432 user=postgres dbname=postgres"
    echo "server=$("$bin/postgres" --version | tr ' ' '_')"
    echo "server_settings=fsync=on,synchronous_commit=on,max_wal_size=4GB,shared_buffers=128MB"
fi
echo "cpus=$(nproc)"
# Other work on the machine moves these figures a lot: say how busy it was.
echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
./target/release/examples/pg_append "$url" "$events"
echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
