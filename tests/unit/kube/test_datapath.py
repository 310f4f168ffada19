"""The Kubernetes source's data path: a real tar of a real directory, through the exec channel
interface, into the archive pipeline the engine lanes use, and back.

The tar is GNU tar run on this host (``LocalExec``, see conftest) with the helper pod's mount
mapped to a directory, handed over frame by frame through the same ``ExecChannel`` calls the
client's exec websocket answers; no pod and no websocket are involved. The end-to-end tests
drive the cold snapshot and restore against kmock (a stateful fake of the API server) for
every API call, with that local exec for the data: never against a real cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
from pathlib import Path
from typing import Any

import kmock as km
import pytest

from snapvol.errors import IntegrityError, OperationFailed
from snapvol.kube import cold
from snapvol.kube.claims import resolve
from snapvol.kube.client import Kube
from snapvol.kube.lane import PodLane
from snapvol.kube.scale import ANNOTATION
from snapvol.pipeline import archive
from snapvol.pipeline.members import Member
from snapvol.pipeline.tarscan import ScannedStream
from tests.unit.kube.conftest import DEPLOYMENTS, NS, LocalExec, make_kube

pytestmark = pytest.mark.asyncio


def build_tree(root: Path, *, seed: int = 1) -> None:
    """A small tree with what a database volume holds and a few awkward entries."""
    root.mkdir(parents=True)
    (root / "base" / "16384").mkdir(parents=True)
    (root / "pg_wal").mkdir(mode=0o700)
    (root / "empty-dir").mkdir()
    big = hashlib.shake_256(f"big{seed}".encode()).digest(3 * (1 << 20) + 123)  # many frames
    (root / "base" / "16384" / "1259").write_bytes(big)
    (root / "PG_VERSION").write_text("15\n")
    (root / "empty").write_bytes(b"")
    (root / "pg_wal" / "000000010000000000000001").write_bytes(bytes(range(256)) * 64)
    (root / "postgresql.conf").write_text(f"# seed {seed}\nshared_buffers = 128MB\n")
    os.chmod(root / "postgresql.conf", 0o600)
    os.chown(root / "postgresql.conf", 999, 999)
    os.link(root / "PG_VERSION", root / "PG_VERSION.hardlink")
    os.symlink("base/16384/1259", root / "relative-link")
    os.symlink("/nowhere/at/all", root / "dangling-link")
    os.mkfifo(root / "a-fifo")
    (root / "naïve ünïcode name").write_text("x")
    os.utime(root / "PG_VERSION", ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry below ``root``: what tar carries of it (times in whole seconds)."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            rel = str(path.relative_to(root))
            content: object = None
            if stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            size = info.st_size if stat.S_ISREG(info.st_mode) else 0
            found[rel] = (
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                size,
                content,
                info.st_mtime_ns // 10**9,
            )
    return found


def recorded(members: list[Member]) -> dict[str, tuple[Any, ...]]:
    """The same view of what the pipeline recorded (a hard link is the file it links to)."""
    kinds = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
             "fifo": stat.S_IFIFO, "hardlink": stat.S_IFREG}  # fmt: skip
    by_path = {m.path: m for m in members}
    found = {}
    for m in members:
        if m.path == ".":
            continue
        data = by_path[m.linkname.removeprefix("./")] if m.type == "hardlink" else m
        content = data.sha256 if data.type == "file" else (m.linkname or None)
        found[m.path] = (
            kinds[m.type],
            m.mode & 0o7777,
            m.uid,
            m.gid,
            data.size,
            content,
            m.mtime_ns // 10**9,
        )
    return found


class _LocalKube:
    """Only what ``PodLane`` calls: ``exec``."""

    def __init__(self, execs: LocalExec) -> None:
        self.exec = execs


def _lane(src: Path, execs: LocalExec | None = None) -> tuple[PodLane, LocalExec]:
    execs = execs or LocalExec()
    execs.mounts["helper"] = src
    return PodLane(_LocalKube(execs), "helper", NS, "pgdata"), execs  # type: ignore[arg-type]


async def test_a_real_tar_through_the_exec_channel_into_the_archive(tmp_path: Path):
    src = tmp_path / "claim"
    build_tree(src)
    lane, execs = _lane(src)
    copy = await asyncio.to_thread(cold._archive, lane, tmp_path / "snap.tar.zst", 3, None)

    assert recorded(copy.members) == tree(src)
    assert copy.sockets == []
    (tar,) = [c for c in execs.channels if c.argv[0] == "tar"]
    assert tar.frames > 40  # a stream of many frames, not one buffer
    # The file on disk is what the record says: its SHA-256, and a tar of the same members.
    path = tmp_path / "snap.tar.zst"
    assert copy.result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    again = ScannedStream(archive.decompressed_chunks(path))
    for _ in again:
        pass
    assert again.members == copy.members
    assert copy.result.raw_bytes == len(b"".join(archive.decompressed_chunks(path)))
    # What ran in the pod: tar of the mount, the census beside it, and (a PostgreSQL data
    # directory: PG_VERSION at the root) cat of its PG_VERSION.
    commands = sorted(call[2][0] for call in execs.calls)
    assert commands == ["cat", "sh", "tar"]
    assert (copy.pg_version, copy.pg_subdir) == ("15", "")


async def test_a_socket_is_left_out_and_reported(tmp_path: Path):
    src = tmp_path / "claim"
    build_tree(src)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "pg.sock"))
    try:
        lane, _ = _lane(src)
        copy = await asyncio.to_thread(cold._archive, lane, tmp_path / "s.tar.zst", 3, None)
    finally:
        sock.close()
    assert copy.sockets == ["pg.sock"]
    assert "pg.sock" not in recorded(copy.members)


async def test_a_failing_tar_leaves_no_archive(tmp_path: Path):
    lane, _ = _lane(tmp_path / "does-not-exist")
    with pytest.raises(OperationFailed) as err:
        await asyncio.to_thread(cold._archive, lane, tmp_path / "x.tar.zst", 3, None)
    assert "the command failed (exit 2: command terminated with non-zero exit code" in str(
        err.value
    )
    assert "Cannot open: No such file or directory" in str(err.value)  # tar's own stderr
    assert list(tmp_path.iterdir()) == []


async def test_a_short_census_refuses_the_archive(tmp_path: Path):
    src = tmp_path / "claim"
    build_tree(src)
    execs = LocalExec()
    # find counts one entry more than tar gives: as if tar had silently skipped one.
    execs.rewrite = lambda argv: (
        [argv[0], argv[1], argv[2].replace("wc -c", "wc -c | awk '{print $1+1}'")]
        if argv[0] == "sh" else argv
    )  # fmt: skip
    lane, _ = _lane(src, execs)
    with pytest.raises(OperationFailed, match=r"tar in the helper pod gave 14 of the claim's 15"):
        await asyncio.to_thread(cold._archive, lane, tmp_path / "c.tar.zst", 3, None)


async def test_replace_writes_through_stdin_and_reads_back(tmp_path: Path):
    src, dst = tmp_path / "claim", tmp_path / "restored"
    build_tree(src)
    build_tree(dst, seed=2)  # what the claim held before: replaced, not merged
    (dst / "only-in-old").write_text("gone after the restore")
    lane, _ = _lane(src)
    copy = await asyncio.to_thread(cold._archive, lane, tmp_path / "r.tar.zst", 3, None)
    into, _ = _lane(dst)
    checked: list[str] = []

    def run() -> list[Member]:
        into.replace(
            archive.decompressed_chunks(tmp_path / "r.tar.zst"), lambda m: checked.append(m.path)
        )
        return into.landed(lambda n: None)

    landed = await asyncio.to_thread(run)
    assert tree(dst) == tree(src)
    assert checked == [m.path for m in copy.members]  # every member seen before it was sent
    assert recorded(landed) == recorded(copy.members)


# --- end to end against the API fake ------------------------------------------------------------


class _FakeExecKube(Kube):
    """The real adapter for every API call, with exec run on this host."""

    def __init__(self, kmock: km.KubernetesEmulator, execs: LocalExec) -> None:
        base = make_kube(kmock)
        super().__init__(base.api, NS)
        self.exec = execs  # type: ignore[method-assign]


async def test_cold_snapshot_and_restore_end_to_end(cluster, controllers, tmp_path: Path):
    src, dst = tmp_path / "claim", tmp_path / "other"
    build_tree(src)
    build_tree(dst, seed=3)
    before_restore = tree(dst)
    execs = LocalExec()
    execs.mounts["snapvol-read-snap1"] = src
    execs.mounts["snapvol-write-rest1"] = dst
    execs.mounts["snapvol-write-rest2"] = dst
    kube = _FakeExecKube(cluster, execs)
    snap = tmp_path / "snap.tar.zst"

    def snapshot() -> cold.ColdCopy:
        target = resolve(kube, "deployment", "db")
        return cold.snapshot_claim(kube, target, snap, operation="snap1", timeout=10)

    copy = await asyncio.to_thread(snapshot)
    assert recorded(copy.members) == tree(src)
    deployment = cluster.objects[DEPLOYMENTS, NS, "db"]
    assert deployment["spec"]["replicas"] == 1
    assert ANNOTATION not in (deployment["metadata"].get("annotations") or {})
    # The API calls, in order: look up, record + scale down, wait, helper, scale back.
    writes = [(r.method, r.resource.plural, r.name) for r in cluster if r.method != "GET"]
    assert writes == [
        ("PATCH", "deployments", "db"),
        ("POST", "pods", None),
        ("DELETE", "pods", "snapvol-read-snap1"),
        ("PATCH", "deployments", "db"),
    ]

    # A restore whose read-back does not match is rolled back to what the claim held.
    wrong = [
        m if m.path != "PG_VERSION" else Member(**{**m.__dict__, "mode": 0o777})
        for m in copy.members
    ]

    def restore(members: list[Member], op: str) -> cold.Restored:
        target = resolve(kube, "deployment", "db")
        return cold.restore_claim(
            kube, target, snap, members, tmp_path / f"safety-{op}.tar.zst", operation=op
        )

    with pytest.raises(OperationFailed) as err:
        await asyncio.to_thread(restore, wrong, "rest1")
    assert str(err.value) == (
        "restoring claim pgdata failed (archive member 'PG_VERSION' does not match the store); "
        "what it held before was put back and checked"
    )
    assert isinstance(err.value.__cause__, IntegrityError)
    assert tree(dst) == before_restore
    assert cluster.objects[DEPLOYMENTS, NS, "db"]["spec"]["replicas"] == 1

    done = await asyncio.to_thread(restore, copy.members, "rest2")
    assert done.rolled_back is False
    assert tree(dst) == tree(src)
    assert recorded(done.safety.members) == before_restore  # the safety copy: the old claim
    assert cluster.objects[DEPLOYMENTS, NS, "db"]["spec"]["replicas"] == 1
