"""A copy streams: snapvol's memory does not grow with the archive's size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from snapvol.adapters.store import COMPLETE, Snapshot, Store
from snapvol.pipeline.archive import file_sha256
from tests.servers import RepoServer

CHILD = """
import resource, sys
from snapvol.cli import cli
try:
    cli(["copy"], prog_name="snapvol", standalone_mode=False)
finally:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def peak_rss_of_a_copy(tmp_path: Path, server: RepoServer, mib: int) -> int:
    """Peak RSS (KiB) of a snapvol process copying a ``mib`` MiB snapshot."""
    root = tmp_path / f"size-{mib}"
    backups = root / "backups"
    backups.mkdir(parents=True)
    archive = backups / f"big.0a1b2c{mib:02x}.sql.zst"
    # Never hold the archive whole here: a child inherits its parent's peak RSS across exec.
    with open(archive, "wb") as out:
        writer = zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False)
        for _ in range(mib):
            writer.write(os.urandom(1 << 20))
        writer.close()
    compressed_sha, _size = file_sha256(archive)
    store = Store.open(root / "manifests.db")
    try:
        store.add(
            Snapshot(
                id=f"0a1b2c{mib:02x}",
                name="big",
                kind="logical",
                format="plain",
                container="db",
                status=COMPLETE,
                path=str(archive),
                sha256=compressed_sha,
                raw_bytes=mib << 20,
            )
        )
    finally:
        store.close()
    env = {k: v for k, v in server.restic_env().items() if not k.startswith("SNAPVOL_")}
    env.update(
        SNAPVOL_DB=str(root / "manifests.db"),
        SNAPVOL_BACKUP_DIR=str(backups),
        SNAPVOL_REPOSITORY=server.repo,
        SNAPVOL_RUN_DIR=str(root / "run"),
    )
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "copied 0a1b2c" in done.stderr
    return int(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["restic_local"])
def test_memory_stays_flat_whatever_the_archive_size(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: RepoServer = request.getfixturevalue(backend)
    server.restic("init")
    small = peak_rss_of_a_copy(tmp_path, server, 8)
    large = peak_rss_of_a_copy(tmp_path, server, 160)
    assert large - small < 24 * 1024, (small, large)  # KiB: 160 MiB would show whole
