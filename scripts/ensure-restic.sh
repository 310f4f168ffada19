#!/usr/bin/env bash
# Make sure restic (repository format 2, with compression: Debian's 0.14 or later) and OpenSSH's
# sshd (the SFTP tests run their own sshd on a loopback port) are installed. Does nothing when
# both are there; on Debian as root it installs them with apt, and neither starts the system sshd
# nor lets it start at boot.
# Anywhere else it says what to do and exits non-zero.
set -euo pipefail

log() { printf 'ensure-restic: %s\n' "$*" >&2; }

# restic prints "restic 0.14.0 compiled with go1.19.8 on linux/amd64".
restic_ok() {
    local ver
    ver=$(restic version 2>/dev/null | awk '{print $2}') || return 1
    [[ -n $ver ]] || return 1
    local major minor
    IFS=. read -r major minor _ <<<"$ver"
    ((major > 0 || minor >= 14))
}

sshd_ok() { [[ -x /usr/sbin/sshd ]] && command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; }

if restic_ok && sshd_ok; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    restic_ok || log "restic 0.14 or later is missing (Debian: apt-get install restic)."
    sshd_ok || log "OpenSSH's sshd is missing (Debian: apt-get install openssh-server)."
    log "install them and retry."
    exit 1
fi

packages=()
restic_ok || packages+=(restic)
sshd_ok || packages+=(openssh-server openssh-client)
log "installing ${packages[*]} with apt"

# The tests start sshd themselves on a free loopback port: keep the package's maintainer scripts
# from starting (or enabling at boot) the system service on port 22. policy-rc.d is Debian's way to
# say so; ours is removed again unless one was already there.
policy=/usr/sbin/policy-rc.d
own_policy=
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
fi
cleanup() { if [[ -n $own_policy ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT
# The package enables ssh.service for the next boot; Debian's units and init script do not run
# sshd while this file exists. Only on a machine that had no sshd: one already there is left alone.
if ! sshd_ok && [[ ! -e /etc/ssh/sshd_not_to_be_run ]]; then
    mkdir -p /etc/ssh
    printf '%s\n' "Made by snapvol's scripts/ensure-restic.sh: its tests run their own sshd on" \
        "127.0.0.1. Remove this file to let the system's sshd start." >/etc/ssh/sshd_not_to_be_run
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt (a parallel setup step) instead of failing on its lock.
apt=(apt-get -qq -o DPkg::Lock::Timeout=300)
# apt's chatter is shown only when it fails.
run_apt() {
    local out
    if ! out=$("${apt[@]}" "$@" </dev/null 2>&1); then
        printf '%s\n' "$out" >&2
        log "apt-get $* failed"
        exit 1
    fi
}
run_apt update
run_apt install -y --no-install-recommends "${packages[@]}"

if ! restic_ok; then
    log "restic is still missing or older than 0.14 ($(restic version 2>&1 || true))"
    exit 1
fi
if ! sshd_ok; then
    log "/usr/sbin/sshd is still missing after installing openssh-server"
    exit 1
fi
log "ready: $(restic version), $(/usr/sbin/sshd -V 2>&1 | head -n 1 || true)"
