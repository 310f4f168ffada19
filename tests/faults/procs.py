"""Driving the real snapvol CLI as a separate process, to signal or kill it at a real point."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.docker_helpers import PgContainer, TestBed


def interruptible() -> None:
    """A child's SIGINT as a shell gives it. A pytest-xdist worker ignores SIGINT, children
    inherit an ignored signal, and Python then installs no KeyboardInterrupt handler: Ctrl-C
    would do nothing. (``preexec_fn``; a person's shell never ignores it.)"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def snapvol_process(*args: str) -> subprocess.Popen[str]:
    """The real CLI in its own process (so it can be signalled or killed)."""
    return subprocess.Popen(
        [sys.executable, "-m", "snapvol", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=interruptible,
    )


def wait_for_partial(backups: Path, min_bytes: int = 64 << 10, timeout: float = 60) -> Path:
    """Wait until a snapshot is really streaming: its .partial file exists and is growing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for partial in backups.glob("*.partial") if backups.exists() else []:
            try:
                if partial.stat().st_size >= min_bytes:
                    return partial
            except FileNotFoundError:
                pass
        time.sleep(0.05)
    raise AssertionError("no snapshot started streaming")


def wait_running(pg: PgContainer, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pg.status == "running":
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{pg.name} not running {timeout} s later (status {pg.status})")


def big_postgres(bed: TestBed, rows: int = 400_000) -> PgContainer:
    """A PostgreSQL whose volume takes many seconds to archive at zstd level 19."""
    from tests.pgdata import fill_demo

    pg = bed.postgres()
    fill_demo(pg, users=200, products=50, orders=2000)
    pg.psql(
        "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload "
        f"FROM generate_series(1, {rows}) g"
    )
    return pg


def fingerprint(pg: PgContainer) -> str:
    """The database's content: a full dump of the small tables and a digest of the big one."""
    digest = pg.psql(
        "SELECT count(*) || ':' || md5(string_agg(md5(id || payload), '' ORDER BY id)) FROM bulk"
    )
    code, out = pg.container.exec_run(
        [
            "pg_dump",
            "-U",
            pg.user,
            "-d",
            pg.database,
            "--exclude-table-data=bulk",
            "--restrict-key=snapvoltest",
        ]
    )
    assert code == 0, out
    return digest + "\n" + out.decode()


def send(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    _out, err = process.communicate(timeout=180)
    return process.returncode, err
