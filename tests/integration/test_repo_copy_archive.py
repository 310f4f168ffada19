"""A local archive that is not what its record says is never taken for a copy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import zstandard

from snapvol.adapters.store import COMPLETE, Snapshot, Store
from snapvol.pipeline.archive import file_sha256
from tests.archives import flip_middle_byte
from tests.servers import RepoServer


def recorded_archive(tmp_path: Path, payload: bytes) -> Path:
    """A complete logical snapshot ``0a1b2c3d`` in the test's store, whose archive holds
    ``payload`` (no Docker needed: the copy only reads the archive and the record)."""
    backups = tmp_path / "backups"
    backups.mkdir(exist_ok=True)
    archive = backups / "dump.0a1b2c3d.sql.zst"
    archive.write_bytes(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(payload))
    store = Store.open(tmp_path / "manifests.db")
    try:
        store.add(
            Snapshot(
                id="0a1b2c3d",
                name="dump",
                kind="logical",
                format="plain",
                container="db",
                status=COMPLETE,
                path=str(archive),
                sha256=file_sha256(archive)[0],
                raw_bytes=len(payload),
            )
        )
    finally:
        store.close()
    return archive


def use(server: RepoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SNAPVOL_REPOSITORY", server.repo)
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(server.password_file))


def snapshots(server: RepoServer) -> list[dict]:
    return json.loads(server.restic("snapshots", "--json").stdout)


def test_a_damaged_archive_is_not_copied(
    restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    archive = recorded_archive(tmp_path, os.urandom(3 << 20))
    flip_middle_byte(archive)
    result = cmd("copy", exit_code=7)
    assert "Error:" in result.stderr and "Traceback" not in result.stderr
    assert snapshots(restic_local) == []
    [snap] = cmd.json("ls")
    assert [c["status"] for c in snap["copies"]] == ["failed"]


def test_an_archive_replaced_by_another_is_not_copied(
    restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    archive = recorded_archive(tmp_path, b"the real dump\n" * 1000)
    archive.write_bytes(zstandard.ZstdCompressor().compress(b"another dump\n" * 1000))
    result = cmd("copy", exit_code=7)
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert "does not match its recorded SHA-256" in line
    assert snapshots(restic_local) == []  # the data snapshot was removed again, no manifest
    [snap] = cmd.json("ls")
    assert [c["status"] for c in snap["copies"]] == ["failed"]


@pytest.mark.private_server
def test_an_unreachable_server_records_nothing(
    sftp_server: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(sftp_server, monkeypatch)
    cmd("repo", "init")
    recorded_archive(tmp_path, b"x" * 1000)
    with sftp_server.down():
        result = cmd("copy", exit_code=14)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot reach repository {sftp_server.repo}")
    [snap] = cmd.json("ls")
    assert snap["copies"] == []
    assert [c["snapshot_id"] for c in cmd.json("copy")] == ["0a1b2c3d"]
