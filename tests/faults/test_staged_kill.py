"""SIGKILL of a staged restore from a repository: the volume is whole (old or new) whenever
snapvol dies, the rescue only starts the container, and the next command removes the staging
directory (real restic, real engine, real PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.docker_helpers import PgContainer, TestBed
from tests.faults.procs import wait_running
from tests.integration.test_repo_fetch import (  # noqa: F401 (repo_env is a fixture)
    _volume_dir,
    repo_env,
)
from tests.pgdata import fill_demo
from tests.servers import RepoServer

KILLER = Path(__file__).with_name("staged_kill.py")


def _started_at(pg: PgContainer) -> str:
    pg.container.reload()
    return str(pg.container.attrs["State"]["StartedAt"])


def _staged(root: Path) -> list[Path]:
    return sorted(p for p in root.parent.iterdir() if p.name.startswith("snapvol-staging-"))


def _killed_restore(point: str, snap_id: str) -> subprocess.CompletedProcess[str]:
    """``snapvol restore`` from the repository, killed by itself at ``point``."""
    done = subprocess.run(
        [sys.executable, str(KILLER), point, "restore", snap_id, "--from-repo", "--yes"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr  # SIGKILL, not an ordinary end
    return done


def _snapshotted(bed: TestBed, cmd: Any) -> tuple[PgContainer, str, str, dict[str, Any]]:
    """A PostgreSQL with data, snapshotted and copied, then changed: (it, the snapshot's dump,
    the current dump, the snapshot)."""
    pg = bed.postgres()
    fill_demo(pg, users=200, products=50, orders=2000)
    pg.psql(
        "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g"
    )
    before = pg.dump()
    snap = cmd.json("snapshot", "--volume", "--container", pg.name)
    cmd("copy", snap["id"])
    pg.psql("DELETE FROM bulk WHERE id % 3 = 0; CREATE TABLE extra (x int);")
    current = pg.dump()
    assert current != before
    return pg, before, current, snap


def test_sigkill_while_staging_leaves_the_volume_and_the_service_alone(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    repo_env(restic_local)
    pg, _before, current, snap = _snapshotted(bed, cmd)
    root = _volume_dir(bed, pg.volume)
    started = _started_at(pg)

    _killed_restore("staging", snap["id"])

    [left] = _staged(root)  # killed mid-way: the copy is there, partly written
    assert any(left.iterdir())
    assert _started_at(pg) == started and pg.status == "running"  # never stopped
    assert pg.dump() == current
    result = cmd("ls")  # the next command, whatever it is, removes what the dead run left
    assert f"removed {left}, left by an interrupted restore" in result.stderr
    assert _staged(root) == []
    assert list((tmp_path / "run").glob("*.staging")) == []
    assert pg.dump() == current


def test_sigkill_right_after_the_swap_the_rescue_starts_the_restored_service(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    repo_env(restic_local)
    pg, before, _current, snap = _snapshotted(bed, cmd)
    root = _volume_dir(bed, pg.volume)

    _killed_restore("swapped", snap["id"])

    wait_running(pg, timeout=30)  # the rescue, unattended: the volume is whole, so it starts
    pg.wait_ready()
    assert pg.dump() == before  # the restored data, complete
    [old] = _staged(root)  # the previous contents, swapped out, not yet removed
    assert (old / "PG_VERSION").is_file()
    result = cmd("ls")
    assert f"removed {old}, left by an interrupted restore" in result.stderr
    assert _staged(root) == []
    assert list((tmp_path / "run").glob("*.staging")) == []
    safety = [s for s in cmd.json("ls") if s["id"] != snap["id"]]
    assert len(safety) == 1 and safety[0]["status"] == "complete"  # taken before the swap
    assert pg.dump() == before
