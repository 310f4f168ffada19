"""The fetch's fast path: a copy this store recorded is dumped by ONE restic process, checked
against the store's record; only when restic finds no such snapshot is the manifest looked up
(real restic, real engine). restic is found on PATH: a wrapper earlier on it logs each run."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests import fidelity_tree
from tests.docker_helpers import TestBed
from tests.integration.test_repo_fetch import (  # noqa: F401 (repo_env is a fixture)
    _gone,
    _volume_dir,
    copy_made_by_hand,
    repo_env,
)
from tests.servers import RepoServer, ResticLog


@pytest.fixture
def restic_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ResticLog:
    """Every restic process snapvol starts from now on (``clear()`` forgets those so far)."""
    return ResticLog(tmp_path / "bin", monkeypatch)


def _set_copies(**columns: Any) -> None:
    """Change every recorded copy in the store by hand (as a careless or hostile user could)."""
    with sqlite3.connect(os.environ["SNAPVOL_DB"]) as db:
        for column, value in columns.items():
            db.execute(f"UPDATE copies SET {column} = {value}")


def _volume_snapshot(bed: TestBed, cmd: Any) -> tuple[Any, Path, dict[str, Any], Any]:
    """A volume with a tree of every kind of file, snapshotted: (container, its root, the
    snapshot, the tree's fingerprint)."""
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    fidelity_tree.build(root, socket_too=False, deep=False)
    before = fidelity_tree.fingerprint(root)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    return container, root, snap, before


def _changed(root: Path) -> None:
    (root / "added-later").write_text("not in the snapshot")
    subprocess.run(["rm", "-rf", str(root / "dir")], check=True)


@pytest.mark.parametrize("short_ids", [False, True], ids=["full-ids", "short-ids"])
def test_a_recorded_copy_is_fetched_by_one_restic_process(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    restic_runs: ResticLog,
    short_ids: bool,
) -> None:
    """No listing, no manifest, no `cat config`: `restic dump` of the recorded data snapshot,
    by its full id or by the 8-digit prefix restic 0.14's `backup --json` prints."""
    repo_env(restic_local)
    _container, root, snap, before = _volume_snapshot(bed, cmd)
    [made] = cmd.json("copy", snap["id"])
    if short_ids:
        _set_copies(
            data_snapshot="substr(data_snapshot, 1, 8)",
            manifest_snapshot="substr(manifest_snapshot, 1, 8)",
        )
    _gone(snap)
    _changed(root)
    restic_runs.clear()

    result = cmd("restore", snap["id"], "--from-repo", "--yes", "--no-safety-snapshot")
    data_id = made["restic_snapshot"][:8] if short_ids else made["restic_snapshot"]
    assert restic_runs.lines() == [f"dump -- {data_id} /{snap['name']}.{snap['id']}.tar"]
    assert "in one pass" in result.stderr  # the host lane: staged beside the volume
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []

    # The two-pass path (which keeps the fetched archive) reads it the same way: the
    # fetch and the staged restore share fetch.read_checked.


def test_a_forgotten_recorded_copy_falls_back_to_the_manifest(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    restic_runs: ResticLog,
) -> None:
    """The copy this store made was forgotten by hand; another copy of the same data (made
    elsewhere, unknown to this store) is found through its manifest."""
    restic = repo_env(restic_local)
    _container, root, snap, before = _volume_snapshot(bed, cmd)
    [made] = cmd.json("copy", snap["id"])
    copy_made_by_hand(restic, snap["id"])
    restic_local.restic("forget", made["restic_snapshot"], made["manifest_snapshot"])
    _gone(snap)
    _changed(root)
    restic_runs.clear()

    cmd("restore", snap["id"], "--yes", "--no-safety-snapshot")
    runs = restic_runs.subcommands()
    assert runs[0] == "dump" and "snapshots" in runs and runs[-1] == "dump"
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []


def test_a_repository_made_anew_falls_back_to_its_manifest_or_says_it_has_none(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
) -> None:
    """The repository at the recorded location was initialised again: the recorded copy is
    not there. Without a copy: today's one-line error, nothing touched; with one that another
    store made there: restored from it."""
    restic = repo_env(restic_local)
    container, root, snap, before = _volume_snapshot(bed, cmd)
    cmd("copy", snap["id"])
    _changed(root)
    current = fidelity_tree.fingerprint(root)
    archive = Path(snap["path"])
    kept = archive.read_bytes()
    assert restic_local.storage is not None
    shutil.rmtree(restic_local.storage)
    restic.init()

    result = cmd("restore", snap["id"], "--from-repo", "--yes", exit_code=3)
    assert result.stderr == (
        f"Error: the repository {restic.repo.display} holds no copy of snapshot {snap['id']}\n"
    )
    assert fidelity_tree.differences(current, fidelity_tree.fingerprint(root)) == []
    assert list(archive.parent.iterdir()) == [archive] and archive.read_bytes() == kept
    container.reload()
    assert container.status == "running"

    copy_made_by_hand(restic, snap["id"])  # as another store would (this one records none)
    _gone(snap)
    cmd("restore", snap["id"], "--yes", "--no-safety-snapshot")
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []


@pytest.mark.parametrize("column", ["content_sha256", "raw_bytes"])
def test_a_copy_that_does_not_match_the_record_is_refused_without_fallback(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    restic_runs: ResticLog,
    column: str,
) -> None:
    """The store's record of the copy says other data than the repository holds (the record
    altered here; the same as data altered there): refused before the volume is touched, and
    never retried through the manifest, which would agree with the data."""
    repo_env(restic_local)
    container, root, snap, _before = _volume_snapshot(bed, cmd)
    cmd("copy", snap["id"])
    if column == "content_sha256":
        _set_copies(content_sha256=f"'{hashlib.sha256(b'other data').hexdigest()}'")
    else:  # the snapshot's own size too, or the size check before the dump refuses it
        _set_copies(raw_bytes="raw_bytes - 512")
        with sqlite3.connect(os.environ["SNAPVOL_DB"]) as db:
            db.execute("UPDATE snapshots SET raw_bytes = raw_bytes - 512")
    _gone(snap)
    _changed(root)
    current = fidelity_tree.fingerprint(root)
    restic_runs.clear()

    result = cmd("restore", snap["id"], "--yes", exit_code=7)
    # One error line, the last: the one-pass restore reads the copy once the plan is shown.
    assert result.stderr.count("Error:") == 1
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    assert "the store's record" in result.stderr
    assert restic_runs.subcommands() == ["dump"]
    assert fidelity_tree.differences(current, fidelity_tree.fingerprint(root)) == []
    assert list(Path(snap["path"]).parent.iterdir()) == []
    container.reload()
    assert container.status == "running"


def _stale_exclusive_lock(server: RepoServer) -> None:
    """The lock a killed `restic check` leaves (as a killed prune would): exclusive, of a
    process gone from this host."""
    assert server.storage is not None
    locks = server.storage / "locks"
    check = subprocess.Popen(
        ["restic", "-r", server.repo, "check", "--read-data"],
        env=server.restic_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def written() -> bool:  # a lock file in place, not the temporary one being written
        return any(re.fullmatch("[0-9a-f]{64}", p.name) for p in locks.iterdir())

    try:
        for _ in range(60_000):
            if check.poll() is not None or written():
                break
            time.sleep(0.001)
    finally:
        check.kill()
        check.wait()
    assert written(), "restic check ended before it could be killed"


def test_a_stale_lock_is_removed_and_the_dump_started_again(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    restic_runs: ResticLog,
) -> None:
    """As the manifest lookup did before it (`restic snapshots` then `unlock`): a lock left by
    a restic killed on this host does not stop the fetch."""
    repo_env(restic_local)
    _container, root, snap, before = _volume_snapshot(bed, cmd)
    cmd("copy", snap["id"])
    _gone(snap)
    _changed(root)
    _stale_exclusive_lock(restic_local)
    restic_runs.clear()

    cmd("restore", snap["id"], "--yes", "--no-safety-snapshot")
    assert restic_runs.subcommands() == ["dump", "unlock", "dump"]
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []
