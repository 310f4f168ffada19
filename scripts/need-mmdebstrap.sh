# Sourced by the image scripts: `need_mmdebstrap WHAT` makes sure mmdebstrap is here (installed
# with apt when we are root), or says it is needed to build WHAT and exits. Uses the caller's log.
need_mmdebstrap() {
    command -v mmdebstrap >/dev/null 2>&1 && return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        log "mmdebstrap is needed to build $1 (Debian: apt-get install mmdebstrap)"
        exit 1
    fi
    log "installing mmdebstrap with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null >&2 || log "apt-get update failed; trying the install anyway"
    apt-get install -y -qq --no-install-recommends mmdebstrap </dev/null >&2
}
