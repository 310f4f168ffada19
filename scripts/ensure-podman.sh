#!/usr/bin/env bash
# Make sure Podman (Debian's 4.3 or later) is installed, for the tests that run snapvol against
# Podman's Docker-compatible API. Does nothing when it is there; on Debian as root it installs it
# with apt (it starts no service: the tests start `podman system service` on a socket of their
# own and stop it). Anywhere else it says what to do and exits non-zero.
set -euo pipefail

log() { printf 'ensure-podman: %s\n' "$*" >&2; }

if command -v podman >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "podman is missing (Debian: apt-get install podman); install it and retry."
    exit 1
fi
log "installing podman with apt"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null >/dev/null || true
apt-get install -y -qq --no-install-recommends podman </dev/null >/dev/null
command -v podman >/dev/null 2>&1 || { log "podman did not install"; exit 1; }
