# benches/pg_server.sh: sourced by the PostgreSQL benches that start a
# throwaway server (benches/converge.sh, benches/stream.sh with
# STREAM_DATABASE=1). Sets `admin` (a key=value connection string where
# databases may be created) and `stop_server` (what the caller's cleanup
# evals). Uses FUSION_BENCH_DATABASE_URL when set; otherwise starts a server
# from the local binaries in "$1" (a directory the caller removes), as the
# postgres user when run as root, fsync and synchronous_commit on: the
# settings of benches/pg_ingest.sh.
pg_server_start() {
    local work=$1
    admin="${FUSION_BENCH_DATABASE_URL:-}"
    stop_server=""
    if [[ -n "$admin" ]]; then return; fi
    local bin
    bin=$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")
    if [[ ! -x "$bin/initdb" || ! -x "$bin/pg_ctl" ]]; then
        echo "needs PostgreSQL (apt-get install postgresql) or FUSION_BENCH_DATABASE_URL" >&2
        exit 1
    fi
    chmod 755 "$work"  # the server user must reach its directory below
    mkdir "$work/pg" "$work/pg/sock"
    as_pg=()
    if [[ $(id -u) == 0 ]]; then
        chown -R postgres: "$work/pg"
        as_pg=(runuser -u postgres --)
    fi
    "${as_pg[@]}" "$bin/initdb" -D "$work/pg/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
    local opts="-k $work/pg/sock -p 5432 -c listen_addresses='' -c fsync=on -c synchronous_commit=on -c max_wal_size=4GB"
    "${as_pg[@]}" "$bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -o "$opts" start >/dev/null
    stop_server="${as_pg[*]} $bin/pg_ctl -D $work/pg/data -m fast stop >/dev/null 2>&1 || true"
    admin="host=$work/pg/sock port=5432 user=postgres dbname=postgres"
    echo "server=$("$bin/postgres" --version | tr ' ' '_')"
}
