"""Copies and prune when things go wrong around the repository: two copies at once, a copy cut
off between its data and its manifest, a manifest that cannot be read, a repository that went
away, and a repository that lost a copy the store still records. Real restic, real servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from snapvol.adapters import restic as restic_api
from snapvol.repo import manifest
from tests.docker_helpers import TestBed
from tests.integration.test_prune_repo import restic_ids, take
from tests.integration.test_repo_copy import check_copy, fill, full_id, use
from tests.servers import RepoServer


def restic_snapshots(server: RepoServer) -> list[dict[str, Any]]:
    return json.loads(server.restic("snapshots", "--json").stdout)


def tagged(server: RepoServer, snapshot_id: str, kind: str) -> list[str]:
    """The restic ids of snapvol snapshot ``snapshot_id``'s data or manifest snapshots."""
    wanted = {manifest.TAG, manifest.id_tag(snapshot_id), kind}
    return [s["id"] for s in restic_snapshots(server) if wanted <= set(s.get("tags") or ())]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def wait_for_child(pid: int, needle: bytes, process: subprocess.Popen[str]) -> int:
    """The child of ``pid`` whose command line holds ``needle``, once it runs (no clock: the
    loop ends when it appears or the parent exits)."""
    while process.poll() is None:
        for child in children(pid):
            try:
                if needle in Path(f"/proc/{child}/cmdline").read_bytes():
                    return child
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError(f"snapvol ended first: {process.communicate()}")


def clone_store(source: Path, target: Path) -> None:
    """Another store made from this one (a copied file), the way a user moves one."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def test_two_copies_of_one_snapshot_at_once_send_it_once(
    bed: TestBed,
    restic_local: RepoServer,
    cmd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    fill(container, 8)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    other_db = tmp_path / "other.db"
    clone_store(tmp_path / "manifests.db", other_db)

    first = subprocess.Popen(
        [sys.executable, "-m", "snapvol", "copy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_child(first.pid, b"backup", first)
        os.kill(first.pid, signal.SIGSTOP)  # its restic now waits for data that does not come
        # The second, from the other store (which knows of no copy), while the first is held.
        monkeypatch.setenv("SNAPVOL_DB", str(other_db))
        second = cmd("copy", exit_code=9)
        lines = second.stderr.strip().splitlines()
        assert [ln for ln in lines if ln.startswith("Error:")] == lines[-1:], second.stderr
        assert f"repository {restic_local.repo}" in lines[-1]
        assert f"`snapvol copy` (pid {first.pid}" in lines[-1]
        assert restic_snapshots(restic_local) == []
    except BaseException:
        first.kill()
        raise
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    data = tagged(restic_local, snap["id"], manifest.DATA_TAG)
    made = tagged(restic_local, snap["id"], manifest.MANIFEST_TAG)
    assert len(data) == 1 and len(made) == 1
    monkeypatch.setenv("SNAPVOL_DB", str(tmp_path / "manifests.db"))
    [listed] = cmd.json("ls")
    check_copy(restic_local, listed, tmp_path / "manifests.db")

    # The other store, run again, makes a copy of its own: it never takes over restic snapshots
    # the first store wrote (its prune would forget them under the first); restic deduplicates.
    monkeypatch.setenv("SNAPVOL_DB", str(other_db))
    [again] = cmd.json("copy")
    assert again["bytes_added"] < 64 << 10, again
    theirs = tagged(restic_local, snap["id"], manifest.DATA_TAG)
    assert len(theirs) == 2 and set(data) < set(theirs)
    [listed] = cmd.json("ls")
    assert [
        (c["status"], full_id(restic_local, c["restic_snapshot"])) for c in listed["copies"]
    ] == [("complete", (set(theirs) - set(data)).pop())]
    assert "nothing to copy" in cmd("copy").stderr


@contextmanager
def dies_once_data_saved(
    server: RepoServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[threading.Event]:
    """The interleaving forced: the server is killed right after the copy's data snapshot is
    saved and before its manifest's restic (started beside it, waiting) is given its bytes, so
    the manifest never arrives. Inside the block only."""
    real = restic_api.PendingBackup.finish
    stopped = threading.Event()
    finished: list[Any] = []

    def finish(self: restic_api.PendingBackup, *args: Any, **kwargs: Any) -> Any:
        if finished:  # the data's is done (a copy feeds the manifest's restic last): now
            server.stop()
            stopped.set()
        finished.append(self)
        return real(self, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(restic_api.PendingBackup, "finish", finish)
        yield stopped


def stranger(server: RepoServer, tags: list[str], name: str) -> str:
    """A restic snapshot that snapvol did not write (or of another snapvol snapshot)."""
    result = server.restic(
        "backup",
        "--stdin",
        f"--stdin-filename={name}",
        "--json",
        *[f"--tag={t}" for t in tags],
        input=b"not snapvol's\n",
    )
    summary = [json.loads(ln) for ln in result.stdout.splitlines() if b"summary" in ln]
    short = str(summary[-1]["snapshot_id"])  # restic 0.14 says the short id here
    [full] = [s["id"] for s in restic_snapshots(server) if s["id"].startswith(short)]
    return str(full)


@pytest.mark.private_server
@pytest.mark.parametrize("cleaner", ["copy", "prune"])
def test_data_left_without_a_manifest_is_forgotten_by_the_next_copy_or_prune(
    cleaner: str,
    bed: TestBed,
    sftp_server: RepoServer,
    cmd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(sftp_server, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    fill(container, 4)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)

    with dies_once_data_saved(sftp_server, monkeypatch) as stopped:
        failed = cmd("copy", exit_code=14)
    assert stopped.is_set(), failed.stderr
    sftp_server.start()
    [orphan] = tagged(sftp_server, snap["id"], manifest.DATA_TAG)
    assert tagged(sftp_server, snap["id"], manifest.MANIFEST_TAG) == []
    [listed] = cmd.json("ls")
    assert [c["status"] for c in listed["copies"]] == ["failed"]
    # Snapshots snapvol must not touch: same id but not snapvol's tags, and another snapvol
    # snapshot's data without a manifest (this store never copied it).
    lookalike = stranger(sftp_server, [manifest.id_tag(snap["id"]), manifest.DATA_TAG], "a")
    elsewhere = stranger(
        sftp_server, [manifest.TAG, manifest.id_tag("0123456789ab"), manifest.DATA_TAG], "b"
    )
    kept = {lookalike, elsewhere}

    if cleaner == "copy":
        [made] = cmd.json("copy")
        assert made["snapshot_id"] == snap["id"]
        [listed] = cmd.json("ls")
        check_copy(sftp_server, listed, tmp_path / "manifests.db")
        made_ids = [full_id(sftp_server, made[k]) for k in ("restic_snapshot", "manifest_snapshot")]
        assert tagged(sftp_server, snap["id"], manifest.DATA_TAG) == made_ids[:1]
        assert tagged(sftp_server, snap["id"], manifest.MANIFEST_TAG) == made_ids[1:]
        remaining = {s["id"] for s in restic_snapshots(sftp_server)}
        assert remaining == kept | set(made_ids)
    else:
        done = cmd("prune", "--keep-last", "5", "--yes")
        assert "restic snapshot(s)" in done.stderr
        assert {s["id"] for s in restic_snapshots(sftp_server)} == kept
        assert orphan not in kept
        [listed] = cmd.json("ls")
        assert listed["status"] == "complete"
    sftp_server.restic("check")


def test_prune_skips_a_copy_whose_manifest_is_malformed_and_prunes_the_rest(
    bed: TestBed, restic_local: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    a, b, c = (take(cmd, container, n) for n in ("a", "b", "c"))
    real = manifest.encode

    def truncated(snap: Any, members: Any, data: Any) -> bytes:
        raw = real(snap, members, data)
        return raw[: len(raw) // 2] if snap.id == a else raw

    monkeypatch.setattr(manifest, "encode", truncated)
    cmd("copy")
    monkeypatch.setattr(manifest, "encode", real)
    cmd("rm", a, b, "--yes")  # prune must read their manifests now
    before = restic_ids(restic_local)
    assert set(before) == {a, b, c}

    result = cmd("prune", "--keep-last", "1", "--yes", exit_code=7)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and a in errors[0] and "Traceback" not in result.stderr
    warned = [ln for ln in result.stderr.splitlines() if f"snapshot {a}" in ln]
    assert len(warned) >= 2 and "neither kept nor forgotten" in result.stderr
    # b went by the policy, c stays; a, unreadable, is never deleted
    assert restic_ids(restic_local) == {a: before[a], c: before[c]}
    assert {s["id"] for s in cmd.json("ls")} == {c}
    again = cmd.json("prune", "--keep-last", "1", "--dry-run", exit_code=7)
    assert set(again) == {"snapshots", "copies", "leftovers"} and again["copies"][0]["id"] == c


@pytest.mark.private_server
def test_an_unreachable_repository_does_not_stop_the_local_prune(
    bed: TestBed, sftp_server: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(sftp_server, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    a, b = (take(cmd, container, n) for n in ("a", "b"))
    cmd("copy")
    before = restic_ids(sftp_server)

    with sftp_server.down():
        plan = cmd.json("prune", "--keep-last", "1", "--dry-run", exit_code=14)
        assert plan["copies"] is None
        assert {p["id"]: p["action"] for p in plan["snapshots"]} == {a: "remove", b: "keep"}
        done = cmd("prune", "--keep-last", "1", "--yes", "--json", exit_code=14)
        assert [s["id"] for s in json.loads(done.stdout)["snapshots"]] == [a]
        assert json.loads(done.stdout)["copies"] is None
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and sftp_server.repo in errors[0]
        assert {s["id"] for s in cmd.json("ls")} == {b}
    assert restic_ids(sftp_server) == before

    # Back again: the repository's history is judged on its own; a's copy goes now.
    done = cmd.json("prune", "--keep-last", "1", "--yes")
    assert done["snapshots"] == [] and [x["id"] for x in done["copies"]] == [a]
    assert restic_ids(sftp_server) == {b: before[b]}

    # Without a repository the JSON has the same keys, copies null.
    monkeypatch.delenv("SNAPVOL_REPOSITORY")
    plan = cmd.json("prune", "--keep-last", "1", "--dry-run")
    assert set(plan) == {"snapshots", "copies", "leftovers"}
    assert plan["copies"] is None and plan["leftovers"] is None
    assert [(p["id"], p["action"]) for p in plan["snapshots"]] == [(b, "keep")]


def test_copy_makes_again_the_copies_the_repository_lost(
    bed: TestBed, restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    a, b, c, d = (take(cmd, container, n) for n in ("a", "b", "c", "d"))
    first = {x["snapshot_id"]: x for x in cmd.json("copy")}
    # Forgotten by hand: a's manifest only (its data stays, orphaned), b's whole copy, d's data
    # only (its manifest stays, and a restore from the repository must never find it).
    restic_local.restic("forget", first[a]["manifest_snapshot"])
    restic_local.restic("forget", first[b]["restic_snapshot"], first[b]["manifest_snapshot"])
    restic_local.restic("forget", first[d]["restic_snapshot"])

    again = cmd("copy", "--json")
    assert [x["snapshot_id"] for x in json.loads(again.stdout)] == [a, b, d]
    assert "no longer in" in again.stderr
    listed = {s["id"]: s for s in cmd.json("ls")}
    for snap_id in (a, b, d):
        assert sorted(x["status"] for x in listed[snap_id]["copies"]) == ["complete", "lost"]
        check_copy(restic_local, listed[snap_id], tmp_path / "manifests.db")
    assert [x["status"] for x in listed[c]["copies"]] == ["complete"]
    # a's old data and d's old manifest went too: one data and one manifest snapshot each
    assert all(len(ids) == 2 for ids in restic_ids(restic_local).values())
    left = {s["id"] for s in restic_snapshots(restic_local)}
    gone = (first[a]["restic_snapshot"], first[d]["manifest_snapshot"])
    assert len(gone[0]) >= 8 and len(gone[1]) >= 8
    assert not any(i.startswith(g) for i in left for g in gone)
    assert "nothing to copy" in cmd("copy").stderr


def test_copy_after_the_repository_was_made_anew_copies_everything_again(
    bed: TestBed, restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    a = take(cmd, container, "a")
    cmd("copy")
    assert restic_local.storage is not None
    shutil.rmtree(restic_local.storage)
    cmd("repo", "init")

    again = cmd("copy", "--json")
    assert [x["snapshot_id"] for x in json.loads(again.stdout)] == [a]
    assert "made anew" in again.stderr
    [listed] = cmd.json("ls")
    assert sorted(x["status"] for x in listed["copies"]) == ["complete", "lost"]
    check_copy(restic_local, listed, tmp_path / "manifests.db")


def test_rotated_disks_at_one_path_each_keep_their_copies(
    bed: TestBed, restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two repositories take turns at one path (two disks mounted there in rotation): each
    copy stays recorded with its own disk, and a disk that comes back is not sent again what
    it holds."""
    use(restic_local, monkeypatch)
    assert restic_local.storage is not None
    disk_a, disk_b = tmp_path / "disk-a", tmp_path / "disk-b"
    cmd("repo", "init")
    container, _vol = bed.plain()
    a = take(cmd, container, "a")
    cmd("copy")
    held_by_a = restic_ids(restic_local)
    shutil.move(restic_local.storage, disk_a)

    cmd("repo", "init")  # disk B mounted at the same path
    b = take(cmd, container, "b")
    assert sorted(x["snapshot_id"] for x in cmd.json("copy")) == sorted([a, b])
    shutil.move(restic_local.storage, disk_b)

    shutil.move(disk_a, restic_local.storage)  # disk A is back
    back = cmd("copy", "--json")
    assert [x["snapshot_id"] for x in json.loads(back.stdout)] == [b]  # a is there already
    assert f"snapshot {a} is in {restic_local.repo} again" in back.stderr
    now = restic_ids(restic_local)
    assert now[a] == held_by_a[a] and len(now[b]) == 2
    listed = {s["id"]: s for s in cmd.json("ls")}
    assert sorted(x["status"] for x in listed[a]["copies"]) == ["complete", "lost"]
    assert "nothing to copy" in cmd("copy").stderr
    restored = cmd("restore", a, "--from-repo", "--yes", "--container", container.name)
    assert "Restored" in restored.stderr


def test_prune_forgets_the_half_a_forget_left_of_a_copy(
    bed: TestBed, restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy's data forgotten but not its manifest (restic lost the server in between, or a
    forget by hand): the manifest alone would be listed and fail a restore; prune forgets it,
    and only it."""
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    a, b = take(cmd, container, "a"), take(cmd, container, "b")
    made = {x["snapshot_id"]: x for x in cmd.json("copy")}
    restic_local.restic("forget", full_id(restic_local, made[a]["restic_snapshot"]))
    before = restic_ids(restic_local)
    assert len(before[a]) == 1 and len(before[b]) == 2
    half = full_id(restic_local, made[a]["manifest_snapshot"])
    planned = cmd.json("prune", "--keep-last", "5", "--dry-run")
    assert planned["leftovers"] == [half]
    assert restic_ids(restic_local) == before

    done = cmd("prune", "--keep-last", "5", "--yes")
    assert "1 restic snapshot(s)" in done.stderr
    assert restic_ids(restic_local) == {b: before[b]}
    assert [m["id"] for m in cmd.json("ls", "--repo")] == [b]
