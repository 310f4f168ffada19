"""restoring: the snapshot a restore starts from, checked before any container is looked up."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapvol import restoring
from snapvol.adapters.store import COMPLETE, FAILED, IN_PROGRESS, Snapshot
from snapvol.errors import IntegrityError


def snap(status: str = COMPLETE, kind: str = "volume", path: str = "/old/n.abcd1234.tar.zst"):
    return Snapshot(id="abcd1234", name="n", kind=kind, status=status, container="c", path=path)


@pytest.mark.parametrize("status", [FAILED, IN_PROGRESS])
def test_only_a_complete_snapshot_is_restorable(status: str, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match=f"is {status}, not complete"):
        restoring.restorable(snap(status), tmp_path)


def test_the_archive_in_the_backup_dir_is_the_one_read(tmp_path: Path) -> None:
    (tmp_path / "n.abcd1234.tar.zst").write_bytes(b"x")
    assert restoring.restorable(snap(), tmp_path).path == str(tmp_path / "n.abcd1234.tar.zst")


def test_elsewhere_the_recorded_path_is_kept(tmp_path: Path) -> None:
    assert restoring.restorable(snap(), tmp_path).path == "/old/n.abcd1234.tar.zst"


def test_a_dump_file_or_a_logical_snapshot_restores_a_database() -> None:
    assert restoring.is_logical(None)
    assert restoring.is_logical(snap(kind="logical"))
    assert not restoring.is_logical(snap(kind="volume"))
