#!/usr/bin/env bash
# Make sure the snapvol image (images/snapvol/Dockerfile) holds this checkout's snapvol, and print
# its name on stdout (one line; progress goes to stderr). Usage:
#     SNAPVOL_IMAGE=$(bash scripts/ensure-snapvol-image.sh)
# The image is snapvol/snapvol:dev, rebuilt only when snapvol's sources, pyproject.toml or
# images/snapvol/ changed since it was built (label org.snapvol.source-sha256). Its base:
#   1. $SNAPVOL_IMAGE_BASE, if set;
#   2. python:3.11-slim, if present locally;
#   3. snapvol/python:3.11-rootfs, made once with mmdebstrap from Debian bookworm (python3,
#      python3-venv, restic, zstd) and loaded with `docker import` (about a minute).
# The wheels of snapvol and its dependencies are made here with the venv's pip (PyPI, pip's cache).
set -euo pipefail

# shellcheck source=need-mmdebstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/need-mmdebstrap.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=snapvol/snapvol:dev
ROOTFS=snapvol/python:3.11-rootfs
PY=${PYTHON:-$ROOT/.venv/bin/python}
MIRROR=${SNAPVOL_DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'ensure-snapvol-image: %s\n' "$*" >&2; }
present() { docker image inspect "$1" >/dev/null 2>&1; }

if ! docker info >/dev/null 2>&1; then
    log "no Docker engine answers; run scripts/ensure-docker.sh first"
    exit 1
fi
if [[ ! -x "$PY" ]]; then
    log "no $PY: run \`make venv\` first (or set PYTHON)"
    exit 1
fi

# One run at a time on this machine: parallel runs wait and then find the image built.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/snapvol-ensure-snapvol-image.lock"
    flock 9
fi

source_sha() {
    (cd "$ROOT" && find snapvol images/snapvol pyproject.toml -type f \
        ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum) \
        | sha256sum | cut -d' ' -f1
}
sha=$(source_sha)
if present "$IMAGE" && [[ $(docker image inspect -f \
    '{{index .Config.Labels "org.snapvol.source-sha256"}}' "$IMAGE") == "$sha" ]]; then
    log "using $IMAGE"
    echo "$IMAGE"
    exit 0
fi

base=${SNAPVOL_IMAGE_BASE:-}
if [[ -z "$base" ]]; then
    if present python:3.11-slim; then
        base=python:3.11-slim
    else
        base=$ROOTFS
    fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/snapvol-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [[ "$base" == "$ROOTFS" ]] && ! present "$ROOTFS"; then
    need_mmdebstrap "$ROOTFS"
    log "building $ROOTFS from Debian bookworm (about a minute)"
    mmdebstrap --quiet --variant=apt --include=python3,python3-venv,restic,zstd,ca-certificates,tzdata \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$tmp/rootfs.tar" "$MIRROR" >&2
    docker import "$tmp/rootfs.tar" "$ROOTFS" >/dev/null
    rm -f "$tmp/rootfs.tar"
fi

log "building $IMAGE on $base"
mkdir -p "$tmp/ctx/wheels"
cp "$ROOT/images/snapvol/Dockerfile" "$tmp/ctx/"
# A copy of the sources (pip builds in the tree it is given; the checkout stays as it is).
(cd "$ROOT" && tar -cf - --exclude=__pycache__ snapvol pyproject.toml README.md) \
    | tar -xf - -C "$tmp/ctx"
mkdir -p "$tmp/src" && mv "$tmp/ctx/snapvol" "$tmp/ctx/pyproject.toml" "$tmp/ctx/README.md" "$tmp/src/"
# Their chatter (pip's warnings, the legacy builder's notice) is shown only when they fail.
if ! "$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir "$tmp/ctx/wheels" \
    "$tmp/src" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    log "pip wheel failed"
    exit 1
fi
if ! DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" --build-arg "SOURCE_SHA256=$sha" \
    -t "$IMAGE" "$tmp/ctx" </dev/null >"$tmp/build.log" 2>&1; then
    cat "$tmp/build.log" >&2
    log "docker build of $IMAGE failed"
    exit 1
fi
log "built $IMAGE"
echo "$IMAGE"
