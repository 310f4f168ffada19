#!/usr/bin/env bash
# Make sure Podman (Debian's 4.3 or later) is installed, for the tests that run snapvol against
# Podman's Docker-compatible API. Does nothing when it is there; on Debian as root it installs it
# with apt (it starts no service: the tests start `podman system service` on a socket of their
# own and stop it). Anywhere else it says what to do and exits non-zero. catatonit too (a Recommends
# of Debian's podman, left out by --no-install-recommends): `podman kube play` builds its pods'
# infra (pause) image from it.
set -euo pipefail

log() { printf 'ensure-podman: %s\n' "$*" >&2; }

have_catatonit() {
    command -v catatonit >/dev/null 2>&1 || [[ -x /usr/libexec/podman/catatonit ]]
}

if command -v podman >/dev/null 2>&1 && have_catatonit; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "podman or catatonit is missing (Debian: apt-get install podman catatonit); install them and retry."
    exit 1
fi
log "installing podman and catatonit with apt"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null >/dev/null || true
apt-get install -y -qq --no-install-recommends podman catatonit </dev/null >/dev/null
command -v podman >/dev/null 2>&1 || { log "podman did not install"; exit 1; }
have_catatonit || { log "catatonit did not install"; exit 1; }
