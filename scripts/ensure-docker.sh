#!/usr/bin/env bash
# Make sure a Docker engine answers. Does nothing when `docker info` already works; on Debian as
# root it installs docker.io (and docker-compose) with apt, starts dockerd in the background and
# waits for it. Anywhere else it says what to do and exits non-zero.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "no Docker engine answers and this is not Debian as root."
    log "start your Docker engine (or install one: https://docs.docker.com/engine/install/) and retry."
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then
    log "installing docker.io and docker-compose with apt"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends docker.io docker-compose >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd"
    mkdir -p /var/log
    # setsid: the engine must not die with the shell (or the CI step) that started it.
    setsid dockerd >/var/log/snapvol-dockerd.log 2>&1 </dev/null &
fi

for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
        log "engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
        exit 0
    fi
    sleep 0.5
done
log "dockerd did not answer within 60 s; see /var/log/snapvol-dockerd.log"
tail -n 20 /var/log/snapvol-dockerd.log >&2 || true
exit 1
