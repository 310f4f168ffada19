"""The staging directory beside a volume: the exchange, the space check, and what a killed run
leaves, removed only when it is snapvol's own (real files, real processes, a real tmpfs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snapvol.errors import DiskFullError
from snapvol.output import Reporter
from snapvol.volume import staging

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def _volume(tmp_path: Path) -> Path:
    data = tmp_path / "volumes" / "v" / "_data"
    data.mkdir(parents=True)
    (data / "old").write_text("old contents")
    return data


def test_the_exchange_swaps_two_directories_at_once(tmp_path: Path) -> None:
    data = _volume(tmp_path)
    staged = staging.Staging.create(data.parent)
    (staged.path / "new").write_text("new contents")
    assert staging.usable_beside(data)

    staging.exchange(staged.path, data)

    assert sorted(os.listdir(data)) == ["new"]
    assert sorted(os.listdir(staged.path)) == ["old"]
    staged.remove()
    assert sorted(os.listdir(data.parent)) == ["_data"]
    assert not staged.marker.exists()


def test_a_failed_exchange_changes_nothing(tmp_path: Path) -> None:
    data = _volume(tmp_path)
    with pytest.raises(OSError):
        staging.exchange(data.parent / "missing", data)
    assert sorted(os.listdir(data)) == ["old"]


@needs_root
def test_a_mount_on_or_below_the_directory_is_not_usable(tmp_path: Path) -> None:
    """A bind mount from the same filesystem too, which ``os.path.ismount`` does not see."""
    data = _volume(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for point in (data, data / "sub"):
        point.mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", str(elsewhere), str(point)], check=True)
        try:
            assert staging.mounts_at_or_below(data) == [str(point)]
            assert not staging.usable_beside(data)
        finally:
            subprocess.run(["umount", str(point)], check=True)
    assert staging.usable_beside(data)
    assert sorted(os.listdir(data.parent)) == ["_data"]  # the probe left nothing


@needs_root
def test_a_copy_that_cannot_fit_is_refused_on_a_real_small_filesystem(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=200", "tmpfs", str(small)], check=True
    )
    try:
        staging.check_space(small, 1 << 20, 10, "v")  # fits
        with pytest.raises(
            DiskFullError, match=r"not enough space beside volume v .*nothing was changed"
        ):
            staging.check_space(small, 8 << 20, 10, "v")
        with pytest.raises(DiskFullError, match="not enough inodes beside volume v"):
            staging.check_space(small, 1 << 20, 500, "v")
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_only_snapvols_own_leftovers_of_dead_runs_are_removed(tmp_path: Path) -> None:
    data = _volume(tmp_path)
    parent = data.parent
    dead, alive = _dead_pid(), os.getpid()
    names = {
        f"snapvol-staging-{dead}-0123abcd": True,  # ours, its run gone
        f"snapvol-staging-{dead}-0123abcd-probe": True,
        f"snapvol-staging-{alive}-89abcdef": False,  # a run still going
        f"snapvol-staging-{dead}-xyz": False,  # not our naming
        f"snapvol-staging-{dead}-0123abcd.old": False,
        "someone-elses": False,
    }
    for name in names:
        (parent / name).mkdir()
        (parent / name / "f").write_text("x")
    (parent / f"snapvol-staging-{dead}-fedcba98").write_text("a file, not a directory")
    os.symlink(tmp_path / "outside", parent / f"snapvol-staging-{dead}-11111111")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "kept").write_text("never followed")

    staging.remove_strays(parent, Reporter())

    left = set(os.listdir(parent))
    assert left == {
        "_data",
        f"snapvol-staging-{dead}-fedcba98",
        f"snapvol-staging-{dead}-11111111",
    } | {n for n, removed in names.items() if not removed}
    assert (tmp_path / "outside" / "kept").exists()
    assert sorted(os.listdir(data)) == ["old"]


def test_markers_name_what_the_recovery_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _volume(tmp_path)
    run = tmp_path / "run"
    monkeypatch.setenv("SNAPVOL_RUN_DIR", str(run))
    dead = _dead_pid()
    mine = staging.Staging.create(data.parent)  # this process: alive, kept
    left = data.parent / f"snapvol-staging-{dead}-0123abcd"
    left.mkdir()
    (left / "f").write_text("x")
    (run / f"{left.name}.staging").write_text(f"{left}\n")
    # A marker whose content names something else (not snapvol's writing): nothing removed.
    other = tmp_path / "precious"
    other.mkdir()
    (run / f"snapvol-staging-{dead}-22222222.staging").write_text(f"{other}\n")

    staging.remove_leftovers(Reporter())

    assert not left.exists() and not (run / f"{left.name}.staging").exists()
    assert other.exists()
    assert mine.path.exists() and mine.marker.exists()
    assert sorted(os.listdir(data)) == ["old"]


@needs_root
def test_a_runtime_directory_not_ours_does_not_stop_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recovery runs at the start of every command: a runtime directory owned by someone
    else (which the watchdog refuses) is left alone, and nothing in it is read or removed."""
    run = tmp_path / "run"
    run.mkdir()
    (run / f"snapvol-staging-{_dead_pid()}-0123abcd.staging").write_text(f"{tmp_path}\n")
    os.chown(run, 1234, 1234)
    monkeypatch.setenv("SNAPVOL_RUN_DIR", str(run))

    staging.remove_leftovers(Reporter())

    assert len(list(run.iterdir())) == 1 and tmp_path.exists()
