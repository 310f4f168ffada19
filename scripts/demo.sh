#!/usr/bin/env bash
# snapvol's end-to-end demo (`make demo` runs it): start the pc_db PostgreSQL service of
# docker-compose.yml, fill it with the demo app's data, then (as snapvol's commands land) snapshot
# it, break it and restore it.
#
# Existing rows in pc_db are kept (the seed step is skipped) and the postgres_data volume is never
# removed. To show a restore it drops the demo tables, but only after two snapshots of them were
# taken and verified, and the restore brings them back. The service is left running at the end.
#
# Environment (all optional):
#   SNAPVOL_PG_IMAGE   PostgreSQL 15 image for the service (default: what ensure-pg-image.sh says)
#   DEMO_PYTHON        interpreter with the demo installed (default: $VIRTUAL_ENV, .venv, python3)
#   DEMO_USUARIOS, DEMO_PRODUCTOS, DEMO_PEDIDOS, DEMO_SEED   size and seed of the generated data
#                      (default 1000, 200, 20000, 42)
#   DEMO_WAIT          seconds to wait for PostgreSQL to accept connections (default 120)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }
log() { printf 'demo: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

CONTAINER=pc_db
USUARIOS=${DEMO_USUARIOS:-1000}
PRODUCTOS=${DEMO_PRODUCTOS:-200}
PEDIDOS=${DEMO_PEDIDOS:-20000}
SEED=${DEMO_SEED:-42}
WAIT=${DEMO_WAIT:-120}

# --- tools ---------------------------------------------------------------------------------------

if [[ -n "${DEMO_PYTHON:-}" ]]; then
    PY=$DEMO_PYTHON
elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    PY=$VIRTUAL_ENV/bin/python
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY=$ROOT/.venv/bin/python
else
    PY=$(command -v python3) || die "no python3 found; run \`make venv\` (or set DEMO_PYTHON)"
fi
demo() { "$PY" -m demo "$@"; }

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    die "neither \`docker compose\` nor \`docker-compose\` works; install one (make engine does)"
fi
COMPOSE_NAME="${COMPOSE[*]}"
COMPOSE+=(-f "$ROOT/docker-compose.yml")

docker info >/dev/null 2>&1 || die "no Docker engine answers; run \`make engine\` first"

if [[ -z "${SNAPVOL_PG_IMAGE:-}" ]]; then
    SNAPVOL_PG_IMAGE=$(bash "$ROOT/scripts/ensure-pg-image.sh")
fi
export SNAPVOL_PG_IMAGE

# The demo talks to the compose stack only (postgres:***@127.0.0.1:5432/pc_db, the CLI's
# default), whatever PG* variables this shell happens to have.
unset DEMO_DATABASE_URL PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE

# --- the database ------------------------------------------------------------------------------

step "Starting $CONTAINER (image $SNAPVOL_PG_IMAGE) with $COMPOSE_NAME"
exists=false
compose_service=
if docker container inspect "$CONTAINER" >/dev/null 2>&1; then
    exists=true
    compose_service=$(docker container inspect -f \
        '{{index .Config.Labels "com.docker.compose.service"}}' "$CONTAINER")
    # Made from another checkout (compose names a project after its directory): manage it as
    # that project's, or compose would try to create a second pc_db and fail on the name.
    project=$(docker container inspect -f \
        '{{index .Config.Labels "com.docker.compose.project"}}' "$CONTAINER")
    if [[ -n "$project" ]]; then
        COMPOSE+=(-p "$project")
        COMPOSE_NAME+=" -p $project"
    fi
    log "a $CONTAINER container already exists; its data is kept"
fi
if $exists && [[ "$compose_service" != "$CONTAINER" ]]; then
    # Not made by docker compose: compose would refuse the name. Use it as it is.
    log "$CONTAINER was not created by docker compose; starting it as it is"
    docker start "$CONTAINER" >/dev/null
else
    "${COMPOSE[@]}" up -d
fi

step "Waiting (at most ${WAIT} s) for PostgreSQL to accept connections on 127.0.0.1:5432"
deadline=$((SECONDS + WAIT))
until demo ping 2>/dev/null; do
    state=$(docker container inspect -f \
        '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' \
        "$CONTAINER" 2>/dev/null || echo missing)
    case "$state" in
        exited* | dead* | missing | *unhealthy*)
            docker logs --tail 30 "$CONTAINER" >&2 2>&1 || true
            die "$CONTAINER is $state"
            ;;
    esac
    if ((SECONDS >= deadline)); then
        docker logs --tail 30 "$CONTAINER" >&2 2>&1 || true
        demo ping || true # shows why it cannot connect
        die "PostgreSQL in $CONTAINER did not accept connections within ${WAIT} s ($state)"
    fi
    sleep 1
done

# --- the demo app's data -------------------------------------------------------------------------

step "Creating the demo tables"
demo init

step "Filling them with generated data (seed $SEED)"
total=$(demo counts --json | "$PY" -c 'import json, sys; print(sum(json.load(sys.stdin).values()))')
if [[ "$total" == 0 ]]; then
    demo seed --usuarios "$USUARIOS" --productos "$PRODUCTOS" --pedidos "$PEDIDOS" --seed "$SEED"
else
    log "pc_db already holds $total demo rows: keeping them (to start over: python -m demo seed --replace)"
fi

step "Rows per table"
demo counts

step "The first orders, with their users and products"
demo info --limit 5

# --- snapvol: snapshot, break, restore ------------------------------------------------------
# The demo keeps its own store: ./manifests.db and ./backups in the checkout (both git-ignored),
# set explicitly, since snapvol's own default does not depend on the current directory.

export SNAPVOL_DB="${SNAPVOL_DB:-$ROOT/manifests.db}"
export SNAPVOL_BACKUP_DIR="${SNAPVOL_BACKUP_DIR:-$ROOT/backups}"
snapvol() { "$PY" -m snapvol "$@"; }
json_field() { "$PY" -c "import json, sys; print(json.load(sys.stdin)$1)"; }
stamp=$(date +%Y%m%d-%H%M%S)
before=$(demo counts --json)

step "snapvol: logical snapshot (pg_dump inside $CONTAINER, no downtime)"
snapvol snapshot --logical --container "$CONTAINER" --name "demo-logical-$stamp"

step "snapvol: volume snapshot (cold: $CONTAINER stops for a few seconds)"
volume_id=$(snapvol snapshot --volume --container "$CONTAINER" --name "demo-volume-$stamp" --json \
    | json_field '["id"]')

step "snapvol ls"
snapvol ls --limit 10

step "snapvol verify (re-hash both archives against the store)"
snapvol verify "demo-logical-$stamp" "$volume_id"

# Only now, with two verified snapshots on disk, does the demo break anything.
step "An accident: the demo app drops every table (python -m demo eliminar --yes)"
demo eliminar --yes
demo counts || true

step "snapvol restore $volume_id (verifies the archive, takes a safety snapshot, restores, checks)"
snapvol restore "$volume_id" --yes

step "The data came back"
after=$(demo counts --json)
demo counts
if [[ "$after" != "$before" ]]; then
    die "row counts differ after the restore: before $before, after $after"
fi
log "row counts match the snapshot: $after"


step "Done"
cat <<EOF
$CONTAINER is still running (data in the postgres_data volume). Try:
    $PY -m demo --help
    $PY -m demo info --limit 20
Stop it with: (cd $ROOT && $COMPOSE_NAME down)   (never add -v: that deletes postgres_data)
Each run adds snapshots to $SNAPVOL_BACKUP_DIR: list them with
\`$PY -m snapvol --db $SNAPVOL_DB ls\`, delete old ones with
\`$PY -m snapvol --db $SNAPVOL_DB rm ID...\`.
EOF
