#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL cluster on a loopback port for floodway's tests and
# benchmarks, installing PostgreSQL from Debian's packages when it is missing.
#
#   scripts/start-postgres.sh                 print `export ...` lines (eval "$(scripts/start-postgres.sh)")
#   scripts/start-postgres.sh -- CMD ARGS...  run CMD with the variables exported (make test does this)
#
# Exports:
#   FLOODWAY_TEST_POSTGRES_URL      postgresql://postgres@127.0.0.1:PORT/floodway_test
#   FLOODWAY_TEST_POSTGRES_RESTART  a shell command that restarts the server (the scale test uses it)
#
# Settings (environment): FLOODWAY_PG_PORT (54329), FLOODWAY_PG_DIR (/tmp/floodway-pg-PORT).
# The cluster is left running so the next run reuses it; stop it with
#   pg_ctl stop -D "$FLOODWAY_PG_DIR" (as the user that owns it).
set -euo pipefail

PORT="${FLOODWAY_PG_PORT:-54329}"
DIR="${FLOODWAY_PG_DIR:-/tmp/floodway-pg-$PORT}"
DB="floodway_test"

log() { echo "start-postgres: $*" >&2; }

find_bindir() {
    local dir
    # the newest Debian-packaged server first, then whatever is on PATH
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
    done
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0
    fi
    return 1
}

BINDIR="$(find_bindir || true)"
if [ -z "$BINDIR" ]; then
    log "PostgreSQL is not installed: installing it from Debian's packages"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq postgresql >&2
    BINDIR="$(find_bindir)"
fi

# the server refuses to run as root: run it as `postgres` (created by the package) when root
if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    AS=(runuser -u postgres --)
    OWNER=postgres
else
    AS=()
    OWNER="$(id -un)"
fi

VERSION="$("$BINDIR/pg_ctl" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')"
if [ -f "$DIR/PG_VERSION" ] && [ "$(cat "$DIR/PG_VERSION")" != "$VERSION" ]; then
    log "$DIR was made by PostgreSQL $(cat "$DIR/PG_VERSION"), not $VERSION: starting over"
    "${AS[@]}" "$BINDIR/pg_ctl" stop -D "$DIR" -m immediate >/dev/null 2>&1 || true
    rm -rf "$DIR"
fi
if [ ! -f "$DIR/PG_VERSION" ]; then
    log "creating a cluster in $DIR (PostgreSQL $VERSION, port $PORT)"
    rm -rf "$DIR"
    mkdir -p "$DIR"
    chown "$OWNER" "$DIR"
    chmod 700 "$DIR"
    "${AS[@]}" "$BINDIR/initdb" -D "$DIR" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    cat >>"$DIR/postgresql.conf" <<CONF

# floodway test cluster: loopback only, room for several worker processes
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 300
shared_buffers = 256MB
log_min_messages = warning
log_min_error_statement = panic
CONF
fi

if ! "${AS[@]}" "$BINDIR/pg_ctl" status -D "$DIR" >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:$PORT"
    rm -f "$DIR/postmaster.pid"
    "${AS[@]}" "$BINDIR/pg_ctl" start -D "$DIR" -l "$DIR/server.log" -w -t 60 >/dev/null
fi

PSQL=("$BINDIR/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
for _ in $(seq 1 100); do
    if "${PSQL[@]}" -tAc "SELECT 1" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
if [ "$("${PSQL[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
    "${PSQL[@]}" -c "CREATE DATABASE $DB" >/dev/null
fi

URL="postgresql://postgres@127.0.0.1:$PORT/$DB"
RESTART="${AS[*]} $BINDIR/pg_ctl restart -D $DIR -m fast -w -t 60 -l $DIR/server.log"
log "ready: $URL"

if [ "${1:-}" = "--" ]; then
    shift
    export FLOODWAY_TEST_POSTGRES_URL="$URL"
    export FLOODWAY_TEST_POSTGRES_RESTART="$RESTART"
    exec "$@"
fi
printf 'export FLOODWAY_TEST_POSTGRES_URL=%q\n' "$URL"
printf 'export FLOODWAY_TEST_POSTGRES_RESTART=%q\n' "$RESTART"
