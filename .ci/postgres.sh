#!/bin/sh
# A throwaway PostgreSQL on loopback for the store's tests (recipe: /work/shared/SERVICES.md).
#
#   eval "$(.ci/postgres.sh start)"   # starts it; exports DATABASE_URL and CASCADE_TEST_PG_URL
#   .venv/bin/python -m pytest tests/test_store*.py
#   .ci/postgres.sh stop              # stops it and removes its data folder
#
# `start` prints only `export ...` lines on stdout (progress goes to stderr). It re-runs cleanly
# whether a previous cluster is running, stopped or was killed. Installs Debian's `postgresql`
# when no server binaries exist. As root the server runs as user `postgres` (initdb refuses root).
# Settings: PGPORT (54329), PGDIR (/tmp/cascade-pg; short: the unix socket lives there).
set -eu
PGPORT=${PGPORT:-54329}
PGDIR=${PGDIR:-/tmp/cascade-pg}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pgbin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1
}

stop() {
    PGBIN=$(pgbin)
    if [ -n "$PGBIN" ] && [ -f "$PGDIR/data/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$PGDIR"
}

start() {
    if [ -z "$(pgbin)" ]; then
        echo "installing postgresql (Debian)" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    fi
    PGBIN=$(pgbin)
    stop
    if [ "$(id -u)" = 0 ]; then install -d -o postgres -g postgres "$PGDIR"; else mkdir -p "$PGDIR"; fi
    as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --no-locale >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=off" start >&2
    as_pg "$PGBIN/psql" -h "$PGDIR" -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -q \
        -c "CREATE ROLE cascade LOGIN PASSWORD 'cascade'" -c "CREATE DATABASE cascade_test OWNER cascade" >&2
    url="postgresql+psycopg://cascade:cascade@127.0.0.1:$PGPORT/cascade_test"
    echo "export DATABASE_URL='$url'"
    echo "export CASCADE_TEST_PG_URL='$url'"
    echo "postgres $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT (data in $PGDIR)" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
