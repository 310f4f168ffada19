"""The destination: where archives go, where a recorded one is read, and what may be deleted
(snapvol's own file for a record, in the current backup directory only)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from snapvol.adapters.store import Snapshot
from snapvol.pipeline.destination import LocalDirectory, archive_name, partial_name
from tests.samples import tree


def snap(name: str, sid: str, path: str) -> Snapshot:
    return Snapshot(id=sid, name=name, kind="volume", container="c", path=path)


def test_archive_name_is_only_snapvols_own_naming() -> None:
    assert archive_name(snap("a", "abcd0001", "/x/a.abcd0001.tar.zst")) == ("a.abcd0001.tar.zst")
    assert archive_name(snap("a", "abcd0001", "/x/a.abcd0001.sql.zst"))
    assert archive_name(snap("a", "abcd0001", "/x/a.abcd0001.dump.zst"))
    for bad in (
        snap("a", "abcd0001", "/etc/passwd"),
        snap("a", "abcd0001", "/x/a.abcd0002.tar.zst"),  # another record's id
        snap("b", "abcd0001", "/x/a.abcd0001.tar.zst"),  # another record's name
        snap("a", "abcd0001", "/x/a.abcd0001.tar.zst.partial"),
        snap("a", "abcd0001", "/x/a.abcd0001.mkv"),
        snap("..", "abcd0001", "/x/...abcd0001.tar.zst"),
        snap("a", "ab/d0001", "/x/a.ab/d0001.tar.zst"),
        snap("a", "abcd0001", ""),
    ):
        assert archive_name(bad) is None, bad.path


def test_unlink_removes_only_a_regular_file_directly_in_the_directory(tmp_path: Path) -> None:
    backups, outside = tmp_path / "backups", tmp_path / "outside"
    backups.mkdir()
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    (backups / "a.abcd0001.tar.zst").symlink_to(outside / "victim")
    (backups / "b.abcd0002.tar.zst").mkdir()
    (backups / "c.abcd0003.tar.zst").write_bytes(b"ours")
    assert not LocalDirectory(backups).unlink("a.abcd0001.tar.zst")
    assert not LocalDirectory(backups).unlink("b.abcd0002.tar.zst")
    assert not LocalDirectory(backups).unlink("missing")
    assert not LocalDirectory(tmp_path / "no-such-dir").unlink("c.abcd0003.tar.zst")
    for bad in ("../outside/victim", "", ".", ".."):
        with pytest.raises(ValueError):
            LocalDirectory(backups).unlink(bad)
    assert LocalDirectory(backups).unlink("c.abcd0003.tar.zst")
    assert tree(tmp_path) == {
        "backups": "dir",
        "backups/a.abcd0001.tar.zst": f"-> {outside / 'victim'}",
        "backups/b.abcd0002.tar.zst": "dir",
        "outside": "dir",
        "outside/victim": b"precious",
    }


def test_prepare_makes_an_owner_only_directory_and_location_is_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    real.mkdir(mode=0o755)
    made = LocalDirectory(tmp_path / "new" / "backups")
    made.prepare()
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "backups").st_mode) == 0o700
    via_link = LocalDirectory(tmp_path / "link")
    via_link.prepare()
    assert via_link.location("a.abcd0001.tar.zst") == str(real / "a.abcd0001.tar.zst")
    with pytest.raises(ValueError):
        via_link.location("../a.abcd0001.tar.zst")


def test_find_reads_this_directorys_copy_whatever_the_recorded_path(tmp_path: Path) -> None:
    here = LocalDirectory(tmp_path)
    moved = snap("a", "abcd0001", "/elsewhere/a.abcd0001.tar.zst")
    assert here.find(moved) is None
    (tmp_path / "a.abcd0001.tar.zst").write_bytes(b"x")
    assert here.find(moved) == str(tmp_path.resolve() / "a.abcd0001.tar.zst")
    (tmp_path / "b.abcd0002.tar.zst").symlink_to(tmp_path / "a.abcd0001.tar.zst")
    assert here.find(snap("b", "abcd0002", "/elsewhere/b.abcd0002.tar.zst")) is None
    assert here.find(snap("a", "abcd0001", "/elsewhere/a.abcd0001.mkv")) is None


def test_remove_takes_the_archive_and_its_partial_and_nothing_else(tmp_path: Path) -> None:
    backups, outside = tmp_path / "backups", tmp_path / "outside"
    backups.mkdir()
    outside.mkdir()
    for name in ("a.abcd0001.tar.zst", "a.abcd0001.tar.zst.partial", "a.abcd0001.mkv"):
        (backups / name).write_bytes(b"x")
    (outside / "b.abcd0002.tar.zst").write_bytes(b"theirs")
    here = LocalDirectory(backups)
    assert here.remove(snap("a", "abcd0001", str(outside / "a.abcd0001.tar.zst")))
    assert not here.remove(snap("a", "abcd0001", str(backups / "a.abcd0001.tar.zst")))
    assert not here.remove(snap("b", "abcd0002", str(outside / "b.abcd0002.tar.zst")))
    assert tree(tmp_path) == {
        "backups": "dir",
        "backups/a.abcd0001.mkv": b"x",
        "outside": "dir",
        "outside/b.abcd0002.tar.zst": b"theirs",
    }


def test_partials_are_the_partial_names_and_only_they_are_removed_as_such(
    tmp_path: Path,
) -> None:
    here = LocalDirectory(tmp_path)
    assert here.partials() == []
    assert partial_name("a.abcd0001.tar.zst") == "a.abcd0001.tar.zst.partial"
    for name in ("a.abcd0001.tar.zst.partial", "movie.mkv.partial", "a.abcd0001.tar.zst"):
        (tmp_path / name).write_bytes(b"x")
    assert here.partials() == ["a.abcd0001.tar.zst.partial", "movie.mkv.partial"]
    with pytest.raises(ValueError):
        here.remove_partial("a.abcd0001.tar.zst")
    assert here.remove_partial("movie.mkv.partial")
    assert not here.remove_partial("movie.mkv.partial")
    assert sorted(os.listdir(tmp_path)) == ["a.abcd0001.tar.zst", "a.abcd0001.tar.zst.partial"]
    assert LocalDirectory(tmp_path / "missing").partials() == []


# --- archive_name ---------------------------------------------------------------------------------


def lsnap(name: str, sid: str, path: str) -> Snapshot:
    return Snapshot(id=sid, name=name, kind="volume", container="c", path=path)


@pytest.mark.parametrize(
    ("name", "sid", "path"),
    [
        ("a", "ABCDEF01", "/x/a.ABCDEF01.tar.zst"),  # any letters and digits, as older ids
        ("a.b-c_d", "abcd0001", "/x/a.b-c_d.abcd0001.dump.zst"),  # dots in the name
        ("-a", "abcd0001", "a-relative/-a.abcd0001.sql.zst"),  # the directory plays no part
        ("a", "x" * 64, f"/x/a.{'x' * 64}.tar.zst"),
        ("n" * 128, "abcd0001", f"/x/{'n' * 128}.abcd0001.tar.zst"),
    ],
)
def test_archive_name_of_snapvols_own_naming(name: str, sid: str, path: str) -> None:
    assert archive_name(lsnap(name, sid, path)) == Path(path).name


@pytest.mark.parametrize(
    ("name", "sid", "path"),
    [
        ("a", "x" * 65, f"/x/a.{'x' * 65}.tar.zst"),  # no id is that long
        ("a", "abcd-001", "/x/a.abcd-001.tar.zst"),
        ("a", "", "/x/a..tar.zst"),
        ("n" * 129, "abcd0001", f"/x/{'n' * 129}.abcd0001.tar.zst"),
        ("a", "abcd0001", "/x/a.abcd0001.TAR.ZST"),
        ("a", "abcd0001", "/x/a.abcd0001"),
        ("a", "abcd0001", "/x/A.abcd0001.tar.zst"),
    ],
)
def test_archive_name_of_anything_else_is_none(name: str, sid: str, path: str) -> None:
    assert archive_name(lsnap(name, sid, path)) is None


# --- remove -------------------------------------------------------------------------------------
