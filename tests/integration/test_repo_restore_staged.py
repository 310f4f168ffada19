"""A volume restore from a repository in one pass: streamed, checked and staged beside the
volume while the service runs, then swapped in (real restic, real engine, real PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from snapvol.volume import staged
from tests import fidelity_tree
from tests.docker_helpers import TestBed
from tests.integration.test_repo_fetch import (  # noqa: F401 (repo_env is a fixture)
    _gone,
    _volume_dir,
    copy_made_by_hand,
    repo_env,
)
from tests.integration.test_volume_safety import MOUNT, TREE, option_volume, run, seen
from tests.pgdata import fill_demo
from tests.servers import RepoServer


def _started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def _staging_dirs(root: Path) -> list[str]:
    """What snapvol staged beside the volume's directory (and did not remove)."""
    return sorted(p.name for p in root.parent.iterdir() if p.name.startswith("snapvol-staging-"))


def _markers(tmp_path: Path) -> list[str]:
    run_dir = tmp_path / "run"
    return sorted(p.name for p in run_dir.glob("*.staging")) if run_dir.exists() else []


def test_postgres_comes_back_whole_and_runs_while_its_copy_is_staged(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    restic = repo_env(restic_local)
    pg = bed.postgres()
    fill_demo(pg)
    before = pg.dump()
    snap = cmd.json("snapshot", "--volume", "--container", pg.name)
    cmd("copy", snap["id"])
    pg.psql("DELETE FROM pedidos WHERE pedido_id % 2 = 0; CREATE TABLE extra (x int);")
    assert pg.dump() != before
    root = _volume_dir(bed, pg.volume)
    started = _started_at(pg.container)

    seen: dict[str, Any] = {}
    counted = staged._counted

    def watched(chunks: Any, advance: Any) -> Any:
        """Once the first chunk has gone by, the service still answers, never restarted."""
        for chunk in counted(chunks, advance):
            yield chunk
            if not seen:
                seen["answer"] = pg.psql("SELECT count(*) FROM extra")
                seen["started"] = _started_at(pg.container)
                seen["staging"] = _staging_dirs(root)

    monkeypatch.setattr(staged, "_counted", watched)
    result = cmd("restore", snap["id"], "--from-repo", "--yes", "--json")

    assert seen["answer"] == "0" and seen["started"] == started
    assert len(seen["staging"]) == 1
    assert json.loads(result.stdout)["one_pass"] is True
    assert "in one pass, checked, no local archive kept" in result.stderr
    # The plan shows where it is read from, not a local archive's SHA-256 as verified.
    assert f"{restic.repo.display}: checked as it is read" in result.stderr
    assert "verified" not in result.stderr
    assert _started_at(pg.container) != started  # stopped and started for the swap
    pg.wait_ready()
    assert pg.dump() == before
    assert _staging_dirs(root) == [] and _markers(tmp_path) == []
    # The safety snapshot holds the data from before, and puts it back.
    safety = json.loads(result.stdout)["safety_snapshot"]
    cmd("restore", safety["id"], "--yes", "--no-safety-snapshot")
    pg.wait_ready()
    assert pg.psql("SELECT count(*) FROM extra") == "0"


def test_every_kind_of_file_and_the_root_come_back_as_recorded(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
) -> None:
    """The whole tree, root included: the root gets the snapshot's owner, mode and attributes,
    as a restore through the host lane gives it; the current root's own (a default ACL that
    would be inherited, a stray attribute, another owner and mode) do not survive."""
    repo_env(restic_local)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    fidelity_tree.build(root, socket_too=False, deep=True)
    os.chown(root, 1234, 4321)
    os.chmod(root, 0o750)
    os.setxattr(root, "user.kept", b"in the snapshot")
    before = fidelity_tree.fingerprint(root, skip_root=False)
    root_xattrs = sorted(os.listxattr(root))
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    cmd("copy", snap["id"])
    _gone(snap)
    subprocess.run(["rm", "-rf", str(root / "dir")], check=True)
    (root / "added-later").write_text("not in the snapshot")
    os.chown(root, 0, 0)
    os.chmod(root, 0o711)
    os.removexattr(root, "user.kept")
    os.setxattr(root, "user.stale", b"from before the restore")
    os.setxattr(root, "system.posix_acl_default", fidelity_tree.DEFAULT_ACL)

    result = cmd.json("restore", snap["id"], "--yes", "--no-safety-snapshot")

    assert result["one_pass"] is True
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root, skip_root=False)) == []
    assert sorted(os.listxattr(root)) == root_xattrs
    assert os.getxattr(root, "user.kept") == b"in the snapshot"
    assert not Path(snap["path"]).exists()
    container.reload()
    assert container.status == "running"


@pytest.mark.parametrize("wrong", ["files", "content_sha256"])
def test_wrong_data_in_the_repository_is_refused_before_the_container_stops(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    tmp_path: Path,
    wrong: str,
) -> None:
    """``files``: a copy whose data and manifest agree, but a file is not the one the store
    recorded (refused by the member check); ``content_sha256``: the store's record of the copy
    says other data than the repository holds (refused at the stream's end, after all of it
    was extracted into the staging directory)."""
    restic = repo_env(restic_local)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    (root / "f").write_bytes(b"A" * 300_000)
    (root / "g").write_bytes(os.urandom(200_000))
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    if wrong == "files":
        copy_made_by_hand(restic, snap["id"], replace=(b"A" * 3000, b"B" * 3000))
    else:
        cmd("copy", snap["id"])
        import sqlite3

        with sqlite3.connect(os.environ["SNAPVOL_DB"]) as db:
            db.execute("UPDATE copies SET content_sha256 = ?", ("0" * 64,))
    (root / "f").write_bytes(b"C")
    current = fidelity_tree.fingerprint(root, skip_root=False)
    started = _started_at(container)

    result = cmd("restore", snap["id"], "--from-repo", "--yes", exit_code=7)

    # One error line, the last: the one-pass restore reads the copy once the plan is shown.
    assert result.stderr.count("Error:") == 1
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert line.startswith(f"Error: the repository's copy of snapshot {snap['id']} ")
    assert line.endswith("nothing was changed")
    if wrong == "files":  # found reading the staged copy back, file by file
        assert "does not match the store's record" in line and "'f'" in line
    else:
        assert "does not match the content digest of the store's record" in line
    assert (
        fidelity_tree.differences(current, fidelity_tree.fingerprint(root, skip_root=False)) == []
    )
    assert _started_at(container) == started  # never stopped
    assert container.status == "running"
    assert _staging_dirs(root) == [] and _markers(tmp_path) == []
    assert [s["id"] for s in cmd.json("ls")] == [snap["id"]]  # no safety snapshot taken


def test_a_disk_too_full_for_the_copy_is_refused_before_reading(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The staging copy must fit beside the volume: measured (statvfs of the real filesystem,
    seen as if nearly full) before restic is asked for a byte."""
    repo_env(restic_local)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    (root / "f").write_bytes(os.urandom(1 << 20))
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    cmd("copy", snap["id"])
    (root / "f").write_bytes(b"changed")
    current = fidelity_tree.fingerprint(root, skip_root=False)
    started = _started_at(container)
    real = os.statvfs

    def nearly_full(path: Any) -> Any:
        found = real(path)
        if Path(path) != root.parent:
            return found
        fields = list(found)
        fields[4] = (512 << 10) // found.f_frsize  # f_bavail: half a megabyte left
        return os.statvfs_result(fields)

    from snapvol.volume import staging

    dumped: list[Any] = []
    monkeypatch.setattr(staging.os, "statvfs", nearly_full)
    monkeypatch.setattr(staged, "_counted", lambda chunks, advance: dumped.append(1) or iter(()))
    result = cmd("restore", snap["id"], "--from-repo", "--yes", exit_code=12)

    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert line.startswith("Error: not enough space beside volume") and line.endswith(
        "; nothing was changed"
    )
    assert dumped == []
    assert (
        fidelity_tree.differences(current, fidelity_tree.fingerprint(root, skip_root=False)) == []
    )
    assert _started_at(container) == started
    assert _staging_dirs(root) == [] and _markers(tmp_path) == []


def test_a_volume_with_driver_options_takes_the_two_pass_path(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Docker mounts such a volume only while a container uses it: the archive endpoint
    writes it, after the archive was fetched and checked; nothing is staged."""
    repo_env(restic_local)
    device = tmp_path / "device"
    device.mkdir()
    vol = option_volume(bed, type="none", o="bind", device=str(device))
    container, _ = bed.plain(mount=MOUNT, volume=vol)
    run(container, TREE)
    before = seen(container)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    cmd("copy", snap["id"])
    _gone(snap)
    run(container, f"cd {MOUNT} && rm -rf deep random.bin && echo new > new.txt")

    result = cmd("restore", snap["id"], "--yes", "--json")

    assert json.loads(result.stdout)["one_pass"] is False
    assert f"Fetched snapshot {snap['id']}" in result.stderr
    assert Path(snap["path"]).is_file()
    container.reload()
    assert container.status == "running"
    assert seen(container) == before
    assert _staging_dirs(_volume_dir(bed, vol)) == []


def test_a_mount_point_and_the_endpoint_lane_take_the_two_pass_path(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A volume directory with something mounted on it cannot be swapped: the host lane
    writes into it after a fetch. And ``--reader endpoint`` always fetches first."""
    restic = repo_env(restic_local)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    (root / "dir").mkdir()
    (root / "dir" / "f").write_bytes(os.urandom(100_000))
    os.symlink("dir/f", root / "link")
    (root / "mode").write_text("x")
    os.chmod(root / "mode", 0o640)
    before = fidelity_tree.fingerprint(root)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    cmd("copy", snap["id"])
    _gone(snap)

    mounted = tmp_path / "mounted"
    mounted.mkdir()
    subprocess.run(["cp", "-a", f"{root}/.", str(mounted)], check=True)
    subprocess.run(["mount", "--bind", str(mounted), str(root)], check=True)
    try:
        (root / "added-later").write_text("not in the snapshot")
        result = cmd("restore", snap["id"], "--yes", "--json", "--no-safety-snapshot")
        assert json.loads(result.stdout)["one_pass"] is False
        assert f"Fetched snapshot {snap['id']}" in result.stderr
        assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []
        assert _staging_dirs(root) == []
    finally:
        subprocess.run(["umount", str(root)], check=True)

    _gone(snap)
    (root / "added-later").write_text("not in the snapshot")
    result = cmd("restore", snap["id"], "--yes", "--json", "--reader", "endpoint")
    assert json.loads(result.stdout)["one_pass"] is False
    assert (
        f"Fetched snapshot {snap['id']} ({snap['name']}) from {restic.repo.display}"
        in result.stderr
    )
    assert not (root / "added-later").exists()
    assert (root / "dir" / "f").read_bytes() == (mounted / "dir" / "f").read_bytes()
    assert _staging_dirs(root) == []
    fetched = Path(snap["path"])  # the two-pass path keeps the archive it fetched
    assert fetched.is_file() and fetched.stat().st_mode & 0o777 == 0o600
    assert not list(fetched.parent.glob("*.partial"))
    [again] = [s for s in cmd.json("ls") if s["id"] == snap["id"]]
    assert again["sha256"] == hashlib.sha256(fetched.read_bytes()).hexdigest()
    assert again["size_bytes"] == fetched.stat().st_size
    cmd("verify", snap["id"])  # the fetched archive passes verify as it is


def test_an_exchange_that_fails_changes_nothing_and_starts_the_container_again(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel refuses the swap itself (EBUSY: something was mounted on the volume's
    directory after it was checked): one line, the volume as it was, the service running."""
    import errno

    from snapvol.volume import staging

    repo_env(restic_local)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    fidelity_tree.build(root, socket_too=False, deep=False)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    cmd("copy", snap["id"])
    (root / "added-later").write_text("not in the snapshot")
    current = fidelity_tree.fingerprint(root, skip_root=False)
    real = staging.exchange

    def busy(first: Path, second: Path) -> None:
        if second == root:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(first), None, str(second))
        real(first, second)  # the probe of two empty directories

    monkeypatch.setattr(staging, "exchange", busy)
    result = cmd(
        "restore", snap["id"], "--from-repo", "--yes", "--no-safety-snapshot", exit_code=11
    )

    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert line == (
        f"Error: swapping the restored copy in as volume {vol} failed "
        f"({os.strerror(errno.EBUSY)}); the volume was not changed"
    )
    assert (
        fidelity_tree.differences(current, fidelity_tree.fingerprint(root, skip_root=False)) == []
    )
    container.reload()
    assert container.status == "running"
    assert _staging_dirs(root) == [] and _markers(tmp_path) == []
