#!/usr/bin/env bash
# Make sure a PostgreSQL 15 image is available to the local Docker engine and print its name on
# stdout (one line, nothing else on stdout; progress goes to stderr). Usage:
#     SNAPVOL_PG_IMAGE=$(bash scripts/ensure-pg-image.sh)
# Order of preference:
#   1. $SNAPVOL_PG_IMAGE, if set and present locally;
#   2. postgres:15 (the official image), if present locally;
#   3. snapvol/postgres:15, if present locally (built by an earlier run of this script);
#   4. `docker pull postgres:15` (short timeout);
#   5. build snapvol/postgres:15 from Debian bookworm's postgresql-15 packages: mmdebstrap makes a
#      root fs, `docker import` loads it as snapvol/postgres:15-rootfs, and the legacy builder adds
#      images/postgres/Dockerfile on top (entrypoint with the official image's contract, ENV,
#      STOPSIGNAL...). About a minute; Docker keeps the images afterwards.
# When snapvol/postgres:15 exists but images/postgres/ changed since it was built, only the top
# layer is rebuilt (a second) if the -rootfs image is still there.
# SNAPVOL_PG_REBUILD=1 rebuilds snapvol/postgres:15 from scratch.
set -euo pipefail

# shellcheck source=need-mmdebstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/need-mmdebstrap.sh"

OFFICIAL=postgres:15
LOCAL=snapvol/postgres:15
ROOTFS=snapvol/postgres:15-rootfs
MIRROR=${SNAPVOL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SNAPVOL_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/images/postgres"

log() { printf 'ensure-pg-image: %s\n' "$*" >&2; }
present() { docker image inspect "$1" >/dev/null 2>&1; }
found() { log "using $1"; printf '%s\n' "$1"; exit 0; }

for f in Dockerfile docker-entrypoint.sh; do
    [[ -f "$SRC/$f" ]] || { log "missing $SRC/$f"; exit 1; }
done

# What the top layer is built from; recorded as a label to notice when it changed.
source_sha() {
    cat "$SRC/Dockerfile" "$SRC/docker-entrypoint.sh" | sha256sum | cut -d' ' -f1
}

# Build $LOCAL = images/postgres/Dockerfile on top of $ROOTFS, from a private copy of the context
# (so the entrypoint is executable whatever the checkout's modes are).
build_top() {
    local ctx old
    old=$(docker image inspect -f '{{.Id}}' "$LOCAL" 2>/dev/null || true)
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/snapvol-pg-ctx.XXXXXX")
    cp "$SRC/Dockerfile" "$SRC/docker-entrypoint.sh" "$ctx/"
    chmod 0755 "$ctx/docker-entrypoint.sh"
    # The legacy builder works with every engine and without a registry or buildx.
    if ! DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$ROOTFS" \
        --build-arg "SOURCE_SHA256=$(source_sha)" -t "$LOCAL" "$ctx" </dev/null >/dev/null; then
        rm -rf "$ctx"
        log "docker build of $LOCAL failed"
        exit 1
    fi
    rm -rf "$ctx"
    # The image it replaces is now untagged: drop it unless a container still uses it.
    if [[ -n "$old" && "$old" != "$(docker image inspect -f '{{.Id}}' "$LOCAL")" ]]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

if ! docker info >/dev/null 2>&1; then
    log "no Docker engine answers; run scripts/ensure-docker.sh first"
    exit 1
fi

# One run at a time on this machine: parallel runs wait and then find the image built.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/snapvol-ensure-pg-image.lock"
    flock 9
fi

if [[ "${SNAPVOL_PG_REBUILD:-0}" != 1 ]]; then
    # (snapvol/postgres:15 itself goes through the freshness check below.)
    if [[ -n "${SNAPVOL_PG_IMAGE:-}" && "$SNAPVOL_PG_IMAGE" != "$LOCAL" ]]; then
        if present "$SNAPVOL_PG_IMAGE"; then
            found "$SNAPVOL_PG_IMAGE"
        fi
        log "SNAPVOL_PG_IMAGE=$SNAPVOL_PG_IMAGE is not present locally; looking for another image"
    fi
    present "$OFFICIAL" && found "$OFFICIAL"
    if present "$LOCAL"; then
        built_from=$(docker image inspect -f '{{index .Config.Labels "org.snapvol.source-sha256"}}' "$LOCAL")
        if [[ "$built_from" == "$(source_sha)" ]]; then
            found "$LOCAL"
        fi
        if present "$ROOTFS"; then
            log "images/postgres/ changed since $LOCAL was built; rebuilding its top layer"
            build_top
            found "$LOCAL"
        fi
        log "images/postgres/ changed since $LOCAL was built and $ROOTFS is gone; rebuilding"
    else
        log "trying docker pull $OFFICIAL"
        if timeout 15 docker pull -q "$OFFICIAL" </dev/null >/dev/null 2>&1 && present "$OFFICIAL"; then
            found "$OFFICIAL"
        fi
        log "cannot pull $OFFICIAL; building $LOCAL from Debian packages"
    fi
fi

need_mmdebstrap "$LOCAL"

start=$(date +%s)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/snapvol-pg-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tarball="$tmp/rootfs.tar"

packages=(
    postgresql-15 postgresql-client-15
    ca-certificates tzdata procps zstd tar gzip xz-utils util-linux
)
include=$(IFS=,; echo "${packages[*]}")

# Everything the image does not need: docs, man pages, translations, apt lists and caches.
nodoc=(
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
)

# Customize hooks run on the finished root fs ($1), after all packages are installed:
# - Debian's postgresql-common made a cluster 15/main at install time; the image has none.
# - a /docker-entrypoint.sh link (the Dockerfile adds the script), the data directory (mode
#   1777 so any --user works, as in the official image), and the init directory.
# shellcheck disable=SC2016 # "$1" is expanded by mmdebstrap's hook shell, not here
hooks=(
    --customize-hook='rm -rf "$1/var/lib/postgresql/15" "$1/etc/postgresql/15"'
    --customize-hook='ln -sf usr/local/bin/docker-entrypoint.sh "$1/docker-entrypoint.sh"'
    --customize-hook='mkdir -p "$1/var/lib/postgresql/data" "$1/docker-entrypoint-initdb.d"'
    --customize-hook='chroot "$1" chown -R postgres:postgres /var/lib/postgresql'
    --customize-hook='chmod 1777 "$1/var/lib/postgresql/data"'
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*.log "$1"/var/log/apt/* "$1"/tmp/*'
)

log "running mmdebstrap (bookworm, minbase + postgresql-15)"
mmdebstrap --variant=minbase --mode=root --format=tar \
    --include="$include" \
    --aptopt='Acquire::Languages "none"' \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --aptopt='APT::Install-Recommends "false"' \
    "${nodoc[@]}" "${hooks[@]}" \
    bookworm "$tarball" \
    "deb $MIRROR bookworm main" \
    "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY_MIRROR bookworm-security main" \
    </dev/null >&2

log "importing the root fs as $ROOTFS"
old_rootfs=$(docker image inspect -f '{{.Id}}' "$ROOTFS" 2>/dev/null || true)
docker import --change 'LABEL org.snapvol.image=postgres-rootfs' \
    --message "Debian bookworm + postgresql-15 root fs, made by snapvol's ensure-pg-image.sh" \
    "$tarball" "$ROOTFS" </dev/null >/dev/null
rm -f "$tarball"

log "building $LOCAL (images/postgres/Dockerfile on $ROOTFS)"
build_top
if [[ -n "$old_rootfs" && "$old_rootfs" != "$(docker image inspect -f '{{.Id}}' "$ROOTFS")" ]]; then
    docker rmi "$old_rootfs" >/dev/null 2>&1 || true
fi

log "built $LOCAL in $(($(date +%s) - start)) s ($(docker image inspect -f '{{.Size}}' "$LOCAL" | awk '{printf "%.0f MB", $1/1e6}'))"
printf '%s\n' "$LOCAL"
