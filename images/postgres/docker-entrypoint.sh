#!/usr/bin/env bash
# Entrypoint of the snapvol/postgres:15 image (built by scripts/ensure-pg-image.sh from Debian's
# postgresql-15 packages when the official postgres:15 image cannot be pulled).
#
# It follows the contract of the official image's docker-entrypoint.sh:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD, POSTGRES_DB (default $POSTGRES_USER),
#   PGDATA (default /var/lib/postgresql/data), POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR,
#   POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), the *_FILE variants of those variables,
#   and /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz|*.sql.xz|*.sql.zst run once on first start.
# An empty data directory is initialised by initdb (the password goes through --pwfile from a
# private temporary file, never through a process argument), then a temporary server listening on
# the unix socket only creates the database and runs the init scripts, and is stopped again.
# Started as root, it fixes the ownership of the data directory and re-executes itself as user
# postgres, so that `postgres` ends up as PID 1 (exec, no wrapper), and gets docker's SIGINT
# (STOPSIGNAL) directly: a fast, clean shutdown. Any other command is exec'd as given.
set -Eeo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# file_env VAR [DEFAULT]: VAR from $VAR, or from the file named by $VAR_FILE (docker secrets).
file_env() {
    local var="$1" def="${2:-}" fvar="${1}_FILE"
    local val="$def"
    if [[ -n "${!var:-}" && -n "${!fvar:-}" ]]; then
        die "both $var and $fvar are set (but they are exclusive)"
    fi
    if [[ -n "${!var:-}" ]]; then
        val="${!var}"
    elif [[ -n "${!fvar:-}" ]]; then
        val="$(<"${!fvar}")"
    fi
    export "$var"="$val"
    unset "$fvar"
}

setup_env() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
    export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
    DATABASE_ALREADY_EXISTS=
    if [[ -s "$PGDATA/PG_VERSION" ]]; then
        DATABASE_ALREADY_EXISTS=true
    fi
}

# As root: create the data, socket and WAL directories and give them to postgres.
create_dirs_as_root() {
    mkdir -p "$PGDATA"
    chmod 00700 "$PGDATA" || :
    mkdir -p /var/run/postgresql
    chmod 03775 /var/run/postgresql || :
    if [[ -n "${POSTGRES_INITDB_WALDIR:-}" ]]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        chown -R postgres:postgres "$POSTGRES_INITDB_WALDIR"
        chmod 700 "$POSTGRES_INITDB_WALDIR"
    fi
    # Only walk the tree when something is not ours: chown -R on a big data dir is slow.
    if [[ "$(stat -c %U "$PGDATA")" != postgres ]] \
        || [[ -n "$(find "$PGDATA" -mindepth 1 \! -user postgres -print -quit 2>/dev/null)" ]]; then
        chown -R postgres:postgres "$PGDATA"
    fi
    chown postgres:postgres /var/run/postgresql
}

# As the postgres user (or any non-root uid): make sure we can use the directories.
create_dirs_as_user() {
    mkdir -p "$PGDATA" 2>/dev/null || :
    chmod 00700 "$PGDATA" 2>/dev/null || :
    mkdir -p /var/run/postgresql 2>/dev/null || :
    [[ -w "$PGDATA" ]] || die "data directory $PGDATA is not writable by uid $(id -u)"
}

verify_minimum_env() {
    if [[ -z "$POSTGRES_PASSWORD" && "$POSTGRES_HOST_AUTH_METHOD" != trust ]]; then
        cat >&2 <<'EOT'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.
EOT
        exit 1
    fi
    if [[ "$POSTGRES_HOST_AUTH_METHOD" == trust ]]; then
        log "warning: POSTGRES_HOST_AUTH_METHOD=trust: every TCP connection is accepted without password"
    fi
}

init_database_dir() {
    local pwdir pwfile host_auth
    if [[ -n "${POSTGRES_INITDB_WALDIR:-}" ]]; then
        set -- --waldir "$POSTGRES_INITDB_WALDIR" "$@"
    fi
    host_auth="$POSTGRES_HOST_AUTH_METHOD"
    # The password travels in a file only readable by us, removed right after initdb:
    # it never appears in a command line (ps) nor in the image.
    pwdir="$(mktemp -d)"
    pwfile="$pwdir/pwfile"
    (umask 077 && printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile")
    local rc=0
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a word list, as in the official image
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host="$host_auth" \
        $POSTGRES_INITDB_ARGS "$@" || rc=$?
    rm -rf "$pwdir"
    [[ $rc -eq 0 ]] || die "initdb failed (exit $rc)"
}

setup_config() {
    {
        printf '\n# added by docker-entrypoint.sh\n'
        printf "listen_addresses = '*'\n"
    } >>"$PGDATA/postgresql.conf"
    {
        printf '\n# added by docker-entrypoint.sh: the unix socket is trusted (inside the container\n'
        printf '# only), every TCP connection needs the password.\n'
        printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
    } >>"$PGDATA/pg_hba.conf"
}

# The temporary server listens on a private unix socket directory only (no TCP), so that
# nothing, not even a `pg_isready` health check on the default socket, sees the half-initialised
# server as ready. PGHOST points there for our psql calls and for the init scripts.
psql_local() {
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc "$@"
}

docker_process_sql() {
    psql_local --dbname "$POSTGRES_DB" "$@"
}

setup_db() {
    local exists
    exists="$(psql_local --dbname postgres --set db="$POSTGRES_DB" --tuples-only \
        <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")"
    if [[ -z "${exists//[[:space:]]/}" ]]; then
        psql_local --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >/dev/null
        log "created database $POSTGRES_DB"
    fi
}

temp_server_start() {
    TEMP_SOCKET_DIR="$(mktemp -d /tmp/pg-init-socket.XXXXXX)"
    PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories=$TEMP_SOCKET_DIR -p ${PGPORT:-5432}" \
        start >/dev/null
    export PGHOST="$TEMP_SOCKET_DIR"
    unset PGHOSTADDR
}

temp_server_stop() {
    PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    unset PGHOST
    rm -rf "$TEMP_SOCKET_DIR"
}

process_init_files() {
    local f
    for f in "$@"; do
        case "$f" in
            *.sh)
                if [[ -x "$f" ]]; then
                    log "running $f"
                    "$f"
                else
                    log "sourcing $f"
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql) log "running $f"; docker_process_sql -f "$f" ;;
            *.sql.gz) log "running $f"; gunzip -c "$f" | docker_process_sql ;;
            *.sql.xz) log "running $f"; xz -dc "$f" | docker_process_sql ;;
            *.sql.zst) log "running $f"; zstd -dc "$f" | docker_process_sql ;;
            *) log "ignoring $f" ;;
        esac
    done
}

main() {
    # `docker run IMAGE -c shared_buffers=...`: options for the server.
    if [[ "${1:-}" == -* ]]; then
        set -- postgres "$@"
    fi
    if [[ "${1:-}" != postgres ]]; then
        exec "$@"
    fi
    # postgres --help / --version / -C: nothing to initialise.
    local arg
    for arg in "$@"; do
        case "$arg" in
            -'?' | --help | --describe-config | -V | --version | -C | --single) exec "$@" ;;
        esac
    done

    setup_env
    if [[ "$(id -u)" == 0 ]]; then
        create_dirs_as_root
        # Re-run this script as postgres; its final exec makes the server PID 1.
        exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
    fi
    create_dirs_as_user

    if [[ -z "$DATABASE_ALREADY_EXISTS" ]]; then
        verify_minimum_env
        if [[ -n "$(ls -A "$PGDATA" 2>/dev/null)" ]]; then
            log "warning: $PGDATA is not empty but has no PG_VERSION; initdb will probably refuse"
        fi
        log "initialising a new cluster in $PGDATA"
        init_database_dir
        setup_config
        export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
        temp_server_start
        setup_db
        shopt -s nullglob
        process_init_files /docker-entrypoint-initdb.d/*
        shopt -u nullglob
        temp_server_stop
        unset PGPASSWORD
        log "PostgreSQL init process complete; ready for start up."
    else
        log "PostgreSQL database directory appears to contain a database; skipping initialisation"
    fi
    exec "$@"
}

main "$@"
