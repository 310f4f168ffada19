"""`snapvol snapshot`'s options: typed, built once into SnapshotOptions, checked before anything
is looked up. No engine is reached: the core calls are replaced where it would be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from snapvol.adapters.store import COMPLETE, Snapshot
from snapvol.cli import snapshot
from snapvol.options import MAX_LEVEL, MIN_LEVEL, SnapshotOptions
from snapvol.pg.logical import DumpOptions


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """What the command hands the volume and logical lanes (each returns a finished snapshot)."""
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def lane(kind: str) -> Any:
        def run(app: Any, *args: Any) -> Snapshot:
            seen.append((kind, args))
            return Snapshot(
                id="ab12cd34", name="n", kind=kind, status=COMPLETE, container="c", path="/x"
            )

        return run

    monkeypatch.setattr(snapshot, "_volume", lane("volume"))
    monkeypatch.setattr(snapshot, "_logical", lane("logical"))
    monkeypatch.setattr(snapshot, "_judged", lambda _app, snap, _max_shrink: snap)
    return seen


def test_volume_options_are_built_once_and_typed(cmd: Any, calls: list[Any]) -> None:
    cmd(
        "snapshot", "--volume", "--name", "n1", "--level", "7", "--container", "c",
        "--volume-name", "v", "--reader", "endpoint", "--helper-image", "img",
        "--stop-timeout", "9",
    )  # fmt: skip
    lane = snapshot._Lane("endpoint", "img", 9)
    assert calls == [("volume", (SnapshotOptions("n1", 7), "c", "v", lane))]


def test_logical_options_default_to_the_custom_format(cmd: Any, calls: list[Any]) -> None:
    cmd("snapshot", "--logical", "--database", "d", "--user", "u")
    cmd("snapshot", "--logical", "--format", "plain")
    assert calls == [
        ("logical", (SnapshotOptions(None, 3), "pc_db", "d", "u", DumpOptions("custom"))),
        ("logical", (SnapshotOptions(None, 3), "pc_db", None, None, DumpOptions("plain"))),
    ]


def test_a_bad_name_is_refused_before_anything_else(
    cmd: Any, calls: list[Any], tmp_path: Path
) -> None:
    # Checked before the flags that do not fit, and before any store or container is opened.
    result = cmd("snapshot", "--volume", "--name", "a/b", "--format", "plain", exit_code=2)
    assert result.stderr.startswith("Error: ") and "goes with" not in result.stderr
    assert "a/b" in result.stderr
    assert calls == [] and not (tmp_path / "manifests.db").exists()


def test_flags_of_the_other_kind_are_refused(cmd: Any, calls: list[Any]) -> None:
    result = cmd("snapshot", "--volume", "--user", "u", exit_code=2)
    assert result.stderr == "Error: --user goes with --logical\n"
    result = cmd("snapshot", "--logical", "--reader", "host", exit_code=2)
    assert result.stderr == "Error: --reader goes with --volume\n"
    result = cmd("snapshot", "--logical", "--helper-image", "i", exit_code=2)
    assert result.stderr == "Error: --helper-image goes with --volume\n"
    assert calls == []


def test_the_level_range_is_the_core_one(cmd: Any, calls: list[Any]) -> None:
    for level in (MIN_LEVEL - 1, MAX_LEVEL + 1):
        result = cmd("snapshot", "--volume", "--level", str(level), exit_code=2)
        assert f"{MIN_LEVEL}<=x<={MAX_LEVEL}" in result.stderr
    cmd("snapshot", "--volume", "--level", str(MAX_LEVEL))
    assert calls[0][1][0] == SnapshotOptions(None, MAX_LEVEL)


def test_snapshot_argument_combinations(cmd: Any) -> None:
    result = cmd("snapshot", "--logical", "--volume-name", "v", exit_code=2)
    assert "--volume-name goes with --volume" in result.stderr
    result = cmd("snapshot", "--volume", "--format", "plain", exit_code=2)
    assert "--format goes with --logical" in result.stderr


def test_a_configured_repository_means_copy_unless_told_not_to(
    cmd: Any, calls: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SNAPVOL_REPOSITORY", str(tmp_path / "repo"))
    # the repository is opened (here: refused, no password) before anything is looked up
    result = cmd("snapshot", "--volume", exit_code=2)
    assert result.stderr.splitlines() == [
        f"Error: no password for repository {tmp_path / 'repo'}: give --password-file or set "
        "SNAPVOL_PASSWORD_FILE (or RESTIC_PASSWORD_FILE, RESTIC_PASSWORD_COMMAND, RESTIC_PASSWORD)"
    ]
    assert calls == []
    cmd("snapshot", "--volume", "--no-copy")
    assert len(calls) == 1
    monkeypatch.setenv("SNAPVOL_COPY", "no")  # a repository for restores; copies run by cron
    cmd("snapshot", "--volume")
    assert len(calls) == 2
    cmd("snapshot", "--volume", "--copy", exit_code=2)  # the flag beats the variable
    monkeypatch.delenv("SNAPVOL_REPOSITORY")
    cmd("snapshot", "--volume", "--copy", exit_code=2)
    monkeypatch.delenv("SNAPVOL_COPY")
    cmd("snapshot", "--volume")  # no repository: nothing to copy to
    assert len(calls) == 3
