"""PostgreSQL specifics: recognising a PostgreSQL container, its data directory, readiness, and
what the cluster's control file says while the server is stopped."""

from __future__ import annotations

import posixpath
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from snapvol.engine import ContainerInfo, Engine
from snapvol.errors import OperationFailed

DEFAULT_PGDATA = "/var/lib/postgresql/data"
# PostgreSQL's fast shutdown (SIGINT) checkpoints first; give a busy server time to finish it.
STOP_TIMEOUT = 120


def is_postgres(info: ContainerInfo) -> bool:
    """Whether the container runs a PostgreSQL server (not merely uses a PostgreSQL image)."""
    return any(
        posixpath.basename(word) in ("postgres", "postmaster")
        for word in (*info.entrypoint, *info.cmd)
    )


def data_dir(info: ContainerInfo) -> str:
    return posixpath.normpath(info.env("PGDATA") or DEFAULT_PGDATA)


def major_of_image(info: ContainerInfo) -> str | None:
    """The PostgreSQL major version the container's image runs, from the image's PG_MAJOR."""
    major = info.env("PG_MAJOR")
    return major.split(".")[0] if major else None


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
    container is asked too, every 0.25 s (every 50 ms without a ``pid_file``).
    """
    start = time.monotonic()
    every = 0.05 if pid_file is None else 0.25
    probe_at = start if pid_file is None else start + every
    while True:
        if pid_file is not None and _pid_file_ready(pid_file, since):
            return time.monotonic() - start
        if time.monotonic() >= probe_at:
            engine.wait_status(container_id, ["running"], timeout=max(1.0, timeout))
            code, _, _ = engine.exec_run(container_id, ["pg_isready", "-q", "-t", "2"])
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


def read_cluster_state(engine: Engine, image: str, volume: str, subdir: str) -> ClusterState:
    """Run pg_controldata and read PG_VERSION in a read-only helper while the server is stopped."""
    mount = "/snapvol/pgvolume"
    pgdir = posixpath.normpath(posixpath.join(mount, subdir))
    script = (
        f"cat {shlex.quote(pgdir)}/PG_VERSION 2>/dev/null || echo none; "
        f"pg_controldata {shlex.quote(pgdir)} 2>/dev/null || true"
    )
    _code, output = engine.run_helper(
        image, volume, mount, ["sh", "-c", script], read_only=True, timeout=60
    )
    first, _, rest = output.partition("\n")
    major = first.strip() if re.fullmatch(r"\d+(\.\d+)?", first.strip()) else None
    return ClusterState(major_version=major, **parse_controldata(rest))
