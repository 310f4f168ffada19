"""Reading a server's readiness from its postmaster.pid (pure logic on real files), and finding
the server's programs (the shell that does it, run with this machine's sh)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from snapvol.pg.cluster import _find_program, _pid_file_ready


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


def found(script: str, path: str) -> str:
    run = subprocess.run(
        ["/bin/sh", "-c", script + '; printf %s "$x"'],
        env={"PATH": path},
        capture_output=True,
        check=True,
    )
    return run.stdout.decode()


def test_a_program_is_found_on_path_else_where_packages_put_it(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    own = tmp_path / "own_tool"
    missing = tmp_path / "missing_tool"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    first = f"{missing} {own} "
    assert found(_find_program("x", "snapvol_no_such_tool", first), str(bindir)) == str(own)
    assert found(_find_program("x", "snapvol_no_such_tool"), str(bindir)) == "snapvol_no_such_tool"
    (bindir / "snapvol_no_such_tool").write_text("#!/bin/sh\n")
    (bindir / "snapvol_no_such_tool").chmod(0o755)
    on_path = f"{bindir}:/usr/bin:/bin"
    assert (
        found(_find_program("x", "snapvol_no_such_tool", first), on_path) == "snapvol_no_such_tool"
    )
