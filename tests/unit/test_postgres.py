"""Reading a server's readiness from its postmaster.pid (pure logic on real files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from snapvol.pg.cluster import _pid_file_ready


def pid_file(tmp_path: Path, status: str, *, age: float = 0.0) -> Path:
    path = tmp_path / "postmaster.pid"
    lines = ["123", "/var/lib/postgresql/data", "1700000000", "5432", "/var/run/postgresql", "*"]
    path.write_text("\n".join([*lines, "  4242       524288", status.ljust(8)]) + "\n")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_ready_only_when_a_server_started_after_the_stop_says_so(tmp_path: Path) -> None:
    stopped_at = time.time() - 5
    assert _pid_file_ready(pid_file(tmp_path, "ready"), stopped_at)
    assert _pid_file_ready(pid_file(tmp_path, "standby"), stopped_at)
    assert not _pid_file_ready(pid_file(tmp_path, "starting"), stopped_at)
    assert not _pid_file_ready(pid_file(tmp_path, "ready", age=60), stopped_at)  # a dead server's
    assert not _pid_file_ready(tmp_path / "missing", stopped_at)
    (tmp_path / "postmaster.pid").write_text("123\n/var/lib/postgresql/data\n")  # being written
    assert not _pid_file_ready(tmp_path / "postmaster.pid", stopped_at)
