"""PostgreSQL specifics: recognising a PostgreSQL server in a container (by what runs and what
is on disk, whatever script started it), its data directory and major version, readiness, and
what the cluster's control file says while the server is stopped."""

from __future__ import annotations

import posixpath
import re
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from snapvol.adapters.engine import ContainerInfo, Engine
from snapvol.errors import OperationFailed, SnapvolError

DEFAULT_PGDATA = "/var/lib/postgresql/data"
# PostgreSQL's fast shutdown (SIGINT) checkpoints first; give a busy server time to finish it.
STOP_TIMEOUT = 120


SERVER_PROGRAMS = ("postgres", "postmaster")
# Arguments that make the server program do something else than serve (single-user mode while an
# entrypoint initialises a cluster, bootstrap, printing a setting or its version).
_NOT_SERVING = {"--single", "--boot", "--check", "--describe-config", "-C", "--version", "-V"}
# Where packages put the server's programs when they are not on PATH: Debian and Ubuntu, the
# PGDG RPMs, source builds, Bitnami.
BIN_DIRS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/usr/local/pgsql/bin",
    "/opt/bitnami/postgresql/bin",
)
PROBE_MOUNT = "/snapvol/pgvolume"


def _packaged(program: str) -> str:
    """``program`` in each of ``BIN_DIRS``, as shell words (the globs expand in the container)."""
    return " ".join(f"{d}/{program}" for d in BIN_DIRS)


def _find_program(var: str, program: str, first: str = "") -> str:
    """Shell that sets ``$var`` to ``program`` when it is on PATH, else to the first executable
    one of ``first`` (shell words tried before them) and ``BIN_DIRS`` (else the bare name)."""
    return (
        f"{var}={program}; command -v {program} >/dev/null 2>&1 || "
        f"for p in {first}{_packaged(program)}; "
        f'do if [ -x "$p" ]; then {var}=$p; break; fi; done'
    )


def find_program(var: str, program: str) -> str:
    """Shell that sets ``$var`` to PostgreSQL's ``program``: on PATH, else in a server's bin
    directory (else the bare name)."""
    return _find_program(var, program)


def starts_postgres(info: ContainerInfo) -> bool:
    """Whether the container's own entrypoint or command is the server program (the official
    image's way); a wrapper script of its own is found by ``detect`` instead."""
    return any(
        posixpath.basename(word) in SERVER_PROGRAMS for word in (*info.entrypoint, *info.cmd)
    )


def data_dir(info: ContainerInfo) -> str:
    return posixpath.normpath(info.env("PGDATA") or DEFAULT_PGDATA)


def postmaster_argv(processes: Iterable[str]) -> list[str] | None:
    """The server's command line among a container's processes (``docker top``), or None.

    The postmaster keeps the argv it was started with; its children retitle themselves
    ``postgres: <what they do>``, which never matches.
    """
    for line in processes:
        words = line.split()
        if (
            words
            and posixpath.basename(words[0]) in SERVER_PROGRAMS
            and not _NOT_SERVING.intersection(words[1:])
        ):
            return words
    return None


def data_dir_args(argv: Sequence[str]) -> list[str]:
    """The data directories a server command line names, surest first: ``data_directory``
    (``-c`` or ``--data-directory=``) and then ``-D`` (which may name only the configuration)."""
    setting: list[str] = []
    dash_d: list[str] = []
    words = iter(argv[1:])
    for word in words:
        if word == "-D":
            dash_d.append(next(words, ""))
            continue
        if word.startswith("-D"):
            dash_d.append(word[2:])
            continue
        if word == "-c":
            word = next(words, "")
        elif word.startswith(("-c", "--")):
            word = word[2:]
        else:
            continue
        name, sep, value = word.partition("=")
        if sep and name.replace("-", "_") == "data_directory":
            setting.append(value.strip("'\""))
    return [posixpath.normpath(d) for d in (*setting, *dash_d) if d.startswith("/")]


@dataclass(frozen=True)
class Cluster:
    """A PostgreSQL data directory found on disk (``PG_VERSION`` beside ``global/pg_control``)."""

    path: str
    version: str  # PG_VERSION: the cluster's major version
    owner_uid: str | None = None  # the data directory's owner: the server's own OS user
    owner_name: str | None = None
    named: bool = False  # one of the directories asked about, not one found by searching
    socket_dir: str | None = None  # from postmaster.pid, while a server runs on it
    port: str | None = None


# Run in the container (or in a helper that mounts a volume): for each directory before "--",
# whether it is a cluster; when none is, the clusters found below each one after it (up to 4
# levels down). One line each.
_PROBE_SCRIPT = r"""
cluster() {
  [ -f "$1/PG_VERSION" ] && [ -f "$1/global/pg_control" ] || return 0
  port=""; sockets=""
  if [ -r "$1/postmaster.pid" ]; then
    port=$(sed -n 4p "$1/postmaster.pid"); sockets=$(sed -n 5p "$1/postmaster.pid")
  fi
  owner=$(stat -c '%u %U' "$1" 2>/dev/null | tr ' ' '\t')
  [ -n "$owner" ] || owner=$(printf '\t')
  printf 'cluster\t%s\t%s\t%s\t%s\t%s\t%s\n' "$2" "$(head -c 32 "$1/PG_VERSION" | tr -d '\n\t')" \
    "$owner" "$port" "$sockets" "$1"
  hit=1
}
mode=named
for d in "$@"; do
  if [ "$d" = -- ]; then [ -z "${hit:-}" ] || exit 0; mode=found; continue; fi
  if [ "$mode" = named ]; then cluster "$d" named; continue; fi
  find "$d" -maxdepth 4 -type f -path '*/global/pg_control' 2>/dev/null |
    while IFS= read -r f; do cluster "${f%/global/pg_control}" found; done
done
exit 0
"""


def probe_argv(named: Sequence[str], search: Sequence[str]) -> list[str]:
    return ["sh", "-c", _PROBE_SCRIPT, "snapvol-probe", *named, "--", *search]


def parse_probe(output: str) -> list[Cluster]:
    """The clusters a probe printed, in its order."""
    found: list[Cluster] = []
    for line in output.splitlines():
        fields = line.split("\t", 7)
        if len(fields) != 8 or fields[0] != "cluster":
            continue
        _, how, version, uid, name, port, socket_dir, path = fields
        if not re.fullmatch(r"\d+(\.\d+)?", version) or not path.startswith("/"):
            continue
        found.append(
            Cluster(
                path=posixpath.normpath(path),
                version=version,
                owner_uid=uid if uid.isdigit() else None,
                owner_name=name if name and name != "UNKNOWN" else None,
                named=how == "named",
                port=port.strip() if port.strip().isdigit() else None,
                socket_dir=socket_dir.strip() or None,
            )
        )
    return found


def choose_cluster(clusters: Sequence[Cluster]) -> Cluster | None:
    """The first of the named directories that is a cluster, else among those found the one a
    server has open (its ``postmaster.pid``), else the shallowest."""
    named = [c for c in clusters if c.named]
    if named:
        return named[0]
    found = sorted(clusters, key=lambda c: (c.port is None, c.path.count("/")))
    return found[0] if found else None


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server in a container: where its cluster lives and what it is."""

    data_dir: str  # in the container's file system
    cluster: Cluster | None  # what is on disk there, when it could be read
    running: bool  # a postmaster process was seen

    @property
    def version(self) -> str | None:
        return self.cluster.version if self.cluster else None


def detect(engine: Engine, info: ContainerInfo) -> Server | None:
    """The PostgreSQL server of a container, recognised by what runs and what is on disk.

    Running: a ``postgres``/``postmaster`` process (whatever script started it); its data
    directory is the one its command line names, PGDATA, or the cluster found on its mounts.
    Stopped: the official image's command, or a cluster (``PG_VERSION``) on one of its volumes.
    A running container whose processes cannot be listed is judged like a stopped one.
    """
    if info.status == "running":
        try:
            processes: list[str] | None = engine.top(info.id) or None
        except SnapvolError:
            processes = None
        argv = postmaster_argv(processes or [])
        if argv is None and not starts_postgres(info):
            # Not seeing the processes is no proof that no server runs: what is on disk decides.
            return _on_volumes(engine, info, running=True) if processes is None else None
        named = [*data_dir_args(argv or []), data_dir(info), DEFAULT_PGDATA]
        mounts = [m.destination for m in info.mounts if m.type in ("volume", "bind")]
        try:
            code, out, _ = engine.exec_run(info.id, probe_argv(named, mounts), user="0")
        except SnapvolError:
            code, out = 1, b""
        cluster = choose_cluster(parse_probe(out.decode("utf-8", "replace"))) if code == 0 else None
        path = cluster.path if cluster else (named[0] if argv else data_dir(info))
        return Server(path, cluster, running=argv is not None)
    if starts_postgres(info):
        return Server(data_dir(info), None, running=False)
    return _on_volumes(engine, info, running=False)


def _on_volumes(engine: Engine, info: ContainerInfo, *, running: bool) -> Server | None:
    """The server whose cluster (``PG_VERSION`` beside ``global/pg_control``) is on one of the
    container's named volumes, probed by helpers. ``running``: the container runs, so a cluster
    with a ``postmaster.pid`` is taken to be served (its socket and version are the live ones)."""
    for mount in info.named_volumes:
        cluster = _probe_volume(engine, info.image_id, str(mount.name))
        if cluster is not None:
            rel = posixpath.relpath(cluster.path, PROBE_MOUNT)
            path = posixpath.normpath(posixpath.join(mount.destination, rel))
            served = running and cluster.port is not None
            return Server(path, replace(cluster, path=path), running=served)
    return None


def _probe_volume(engine: Engine, image: str, volume: str) -> Cluster | None:
    """The cluster on a volume, read by a helper from the container's image (None when the image
    has no shell to look with)."""
    try:
        code, out = engine.run_helper(
            image,
            volume,
            PROBE_MOUNT,
            probe_argv([PROBE_MOUNT], [PROBE_MOUNT]),
            read_only=True,
            timeout=60,
            user="0:0",
        )
    except SnapvolError:
        return None
    return choose_cluster(parse_probe(out)) if code == 0 else None


def major_of(version: str) -> str | None:
    """The major version in a version string: "15.8 (Debian...)" -> "15", "9.6.24" -> "9.6"."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?", version)
    if match is None:
        return None
    major = int(match.group(1))
    return str(major) if major >= 10 or match.group(2) is None else f"{major}.{match.group(2)}"


_BINARIES_SCRIPT = (
    f'for p in "$(command -v postgres 2>/dev/null)" {_packaged("postgres")}'
    + '; do [ -n "$p" ] && [ -x "$p" ] && "$p" --version 2>/dev/null; done; exit 0'
)


def parse_binary_versions(output: str) -> list[str]:
    """The major versions ``postgres --version`` printed, once each, in order."""
    found: list[str] = []
    for match in re.finditer(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)", output):
        major = major_of(match.group(1))
        if major is not None and major not in found:
            found.append(major)
    return found


def choose_major(binaries: Sequence[str], cluster: str | None) -> str | None:
    """The major version that will serve a cluster: the image's only one; among several, the
    one the current cluster runs on; without any found, the current cluster's."""
    current = major_of(cluster) if cluster else None
    if len(binaries) == 1:
        return binaries[0]
    if not binaries or current in binaries:
        return current
    return None


def target_major(engine: Engine, info: ContainerInfo, server: Server, volume: str) -> str | None:
    """The PostgreSQL major version that will run a cluster put into ``server``'s container.

    A running postmaster runs its cluster's version. Otherwise the image's own server programs
    (on PATH or in the usual package directories) tell, asked in the running container or in a
    helper from its image; the cluster on disk decides only between several.
    """
    if server.running and server.version:
        return major_of(server.version)
    argv = ["sh", "-c", _BINARIES_SCRIPT]
    output = ""
    try:
        if info.status == "running":
            code, out, _ = engine.exec_run(info.id, argv, user="0")
            output = out.decode("utf-8", "replace") if code == 0 else ""
        else:
            code, text = engine.run_helper(
                info.image_id, volume, PROBE_MOUNT, argv, read_only=True, timeout=60, user="0:0"
            )
            output = text if code == 0 else ""
    except SnapvolError:
        pass
    return choose_major(parse_binary_versions(output), server.version)


def _pid_file_ready(pid_file: Path, since: float) -> bool:
    """Whether ``postmaster.pid`` says a server started after ``since`` accepts connections.

    Its 8th line is the server's status (PostgreSQL 10 and later; what ``pg_ctl start --wait``
    reads). A file last written before ``since`` (the stop request) is a dead server's, not ours.
    """
    try:
        if pid_file.stat().st_mtime < since:
            return False
        lines = pid_file.read_text(errors="replace").splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() in ("ready", "standby")


# pg_isready (on PATH or in a server's bin directory) at its default socket, else at any socket
# in the usual directories: a server of an image's own may listen in /tmp or on another port.
_IS_READY = (
    _find_program("c", "pg_isready") + '; "$c" -q -t 2 && exit 0; '
    "for s in /var/run/postgresql/.s.PGSQL.* /run/postgresql/.s.PGSQL.* /tmp/.s.PGSQL.*; do "
    '[ -S "$s" ] && "$c" -q -t 2 -h "${s%/*}" -p "${s##*.}" && exit 0; done; exit 1'
)


def wait_ready(
    engine: Engine,
    container_id: str,
    timeout: float = 120.0,
    pid_file: Path | None = None,
    since: float = 0.0,
) -> float:
    """Wait until the server accepts connections; returns the seconds waited.

    ``pid_file``: the data directory's ``postmaster.pid`` when this host can read it (the host
    lane), watched every 10 ms for a server started after ``since``; ``pg_isready`` in the
    container is asked too (``_IS_READY``), every 0.25 s (every 50 ms without a ``pid_file``).
    """
    start = time.monotonic()
    every = 0.05 if pid_file is None else 0.25
    probe_at = start if pid_file is None else start + every
    while True:
        if pid_file is not None and _pid_file_ready(pid_file, since):
            return time.monotonic() - start
        if time.monotonic() >= probe_at:
            engine.wait_status(container_id, ["running"], timeout=max(1.0, timeout))
            code, _, _ = engine.exec_run(container_id, ["sh", "-c", _IS_READY])
            if code == 0:
                return time.monotonic() - start
            probe_at = time.monotonic() + every
        if time.monotonic() - start > timeout:
            raise OperationFailed(
                f"PostgreSQL did not accept connections within {timeout:.0f} s after the restart"
            )
        time.sleep(0.01 if pid_file is not None else every)


@dataclass(frozen=True)
class ClusterState:
    """What a stopped cluster's files say about it (never any configuration values)."""

    major_version: str | None
    system_identifier: str | None = None
    checkpoint_lsn: str | None = None
    cluster_state: str | None = None

    def as_meta(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


_CONTROL_FIELDS = {
    "Database system identifier": "system_identifier",
    "Latest checkpoint location": "checkpoint_lsn",
    "Database cluster state": "cluster_state",
}


def parse_controldata(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        if sep and label.strip() in _CONTROL_FIELDS:
            found[_CONTROL_FIELDS[label.strip()]] = value.strip()
    return found


# pg_controldata on PATH, else in a server's own bin directory (Debian keeps it only there), the
# cluster's own version ($v) first.
_FIND_CONTROLDATA = _find_program(
    "pgc", "pg_controldata", first='"/usr/lib/postgresql/$v/bin/pg_controldata" '
)


def read_cluster_state(engine: Engine, image: str, volume: str, subdir: str) -> ClusterState:
    """Run pg_controldata and read PG_VERSION in a read-only helper while the server is stopped."""
    mount = PROBE_MOUNT
    pgdir = posixpath.normpath(posixpath.join(mount, subdir))
    script = (
        f"v=$(cat {shlex.quote(pgdir)}/PG_VERSION 2>/dev/null); echo ${{v:-none}}; "
        f"{_FIND_CONTROLDATA}; "
        f'"$pgc" {shlex.quote(pgdir)} 2>/dev/null || true'
    )
    _code, output = engine.run_helper(
        image, volume, mount, ["sh", "-c", script], read_only=True, timeout=60
    )
    first, _, rest = output.partition("\n")
    major = first.strip() if re.fullmatch(r"\d+(\.\d+)?", first.strip()) else None
    return ClusterState(major_version=major, **parse_controldata(rest))
