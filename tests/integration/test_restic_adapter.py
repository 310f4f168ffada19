"""The restic adapter against real restic and a real repository in a local directory.

Streams are generated (seeded, incompressible) and compared whole by their SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from snapvol.adapters.restic import Repository, Restic
from snapvol.errors import (
    RepositoryAuthError,
    RepositoryDamagedError,
    RepositoryExistsError,
    RepositoryLockedError,
    RepositoryMissingError,
    RepositorySnapshotMissingError,
    RepositoryUnreachableError,
)

PASSWORD = "pw-Zq8-unguessable-42"
MiB = 1 << 20

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="needs restic")


def stream(size: int, seed: int = 1, patch: tuple[int, bytes] | None = None) -> Iterator[bytes]:
    """``size`` seeded random bytes in 1 MiB chunks; ``patch`` overwrites bytes at an offset."""
    rng = random.Random(seed)
    pos = 0
    while pos < size:
        chunk = bytearray(rng.randbytes(min(MiB, size - pos)))
        if patch is not None:
            at, data = patch
            lo, hi = max(at, pos), min(at + len(data), pos + len(chunk))
            if lo < hi:
                chunk[lo - pos : hi - pos] = data[lo - at : hi - at]
        pos += len(chunk)
        yield bytes(chunk)


def digest(chunks: Iterator[bytes]) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


def write_password(path: Path, text: str = PASSWORD) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def restic_for(location: Path, password_file: Path) -> Restic:
    return Restic(Repository.configure(str(location), password_file, environ={}))


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo-Kx7secretplace"


@pytest.fixture
def restic(tmp_path: Path, repo_dir: Path) -> Restic:
    r = restic_for(repo_dir, write_password(tmp_path / "pw"))
    config = r.init()
    assert config.version == 2 and len(config.id) == 64
    return r


def restic_children(parent: int | None = None) -> list[int]:
    """restic processes whose parent is ``parent`` (this process by default; zombies included:
    they must be reaped)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == parent and comm == "restic":
            found.append(int(entry.name))
    return found


def wait_for(predicate: object, what: str, limit: float = 120.0) -> None:
    """Poll until ``predicate()`` holds; ``limit`` only keeps a broken test from hanging."""
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_backup_stream_then_dump_gives_the_same_bytes(restic: Restic) -> None:
    size = 12 * MiB + 12345
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    seen: list[int] = []
    summary = restic.backup_stream(
        stream(size),
        "vol.tar",
        tags=["snapvol", "ref-abc"],
        host="hostA",
        time=when,
        progress=seen.append,
    )
    assert summary.total_bytes == size == sum(seen)
    assert restic.file_size(summary.snapshot_id, "vol.tar") == size
    assert size <= summary.data_added < size + MiB  # incompressible: all of it is new
    assert len(summary.snapshot_id) == 64

    (snap,) = restic.snapshots(tags=["snapvol"])
    assert snap.id == summary.snapshot_id
    assert (snap.tags, snap.paths, snap.hostname, snap.time) == (
        ("snapvol", "ref-abc"),
        ("/vol.tar",),
        "hostA",
        when,
    )
    assert restic.snapshots(tags=["snapvol", "other"]) == []

    with restic.dump(summary.snapshot_id, "vol.tar") as out:
        assert digest(iter(out)) == digest(stream(size))
    assert restic_children() == []


def test_second_backup_of_nearly_the_same_stream_adds_little(restic: Restic) -> None:
    size = 40 * MiB
    first = restic.backup_stream(stream(size), "db.dump")
    second = restic.backup_stream(stream(size, patch=(size // 2, b"\xff" * 4096)), "db.dump")
    assert first.data_added >= size
    # restic's chunks are 0.5 to 8 MiB: one changed spot rewrites at most two of them.
    assert 0 < second.data_added <= 16 * MiB + MiB
    third = restic.backup_stream(stream(size), "db.dump")
    assert third.data_added < MiB  # the same stream again: only metadata
    with restic.dump(second.snapshot_id, "db.dump") as out:
        assert digest(iter(out)) == digest(stream(size, patch=(size // 2, b"\xff" * 4096)))


def test_a_failing_source_makes_no_snapshot(restic: Restic, repo_dir: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield from stream(3 * MiB)
        raise ValueError("the volume went away")

    with pytest.raises(ValueError, match="went away"):
        restic.backup_stream(broken(), "vol.tar")
    assert restic.snapshots() == []
    assert restic_children() == []
    assert list((repo_dir / "locks").iterdir()) == []  # restic was interrupted, not killed


def test_wrong_password_is_one_clear_line(
    restic: Restic, tmp_path: Path, repo_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    restic.backup_stream(stream(MiB), "vol.tar")
    wrong = restic_for(repo_dir, write_password(tmp_path / "wrong", "not-" + PASSWORD))
    with pytest.raises(RepositoryAuthError) as info:
        wrong.snapshots()
    assert info.value.message == f"wrong password for repository {repo_dir} (or no key found)"
    with pytest.raises(RepositoryAuthError):
        wrong.backup_stream(stream(2 * MiB), "vol.tar")
    with pytest.raises(RepositoryAuthError), wrong.dump("latest", "vol.tar") as out:
        list(out)
    assert len(restic.snapshots()) == 1  # nothing was added
    printed = capfd.readouterr()
    assert PASSWORD not in printed.out + printed.err
    assert restic_children() == []


def test_missing_repository(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-repo-here"
    restic = restic_for(nowhere, write_password(tmp_path / "pw"))
    assert restic.exists() is False
    with pytest.raises(RepositoryMissingError) as info:
        restic.snapshots()
    assert (
        info.value.message
        == f"no restic repository at {nowhere}: create it with `snapvol repo init`"
    )
    assert not nowhere.exists()  # looking made nothing


def test_init_twice_is_refused(restic: Restic) -> None:
    assert restic.exists() is True
    with pytest.raises(RepositoryExistsError):
        restic.init()


def test_dump_of_an_unknown_snapshot_or_file(restic: Restic) -> None:
    summary = restic.backup_stream(stream(MiB), "vol.tar")
    with pytest.raises(RepositorySnapshotMissingError), restic.dump("deadbeef", "vol.tar") as out:
        list(out)
    with pytest.raises(RepositorySnapshotMissingError), restic.dump(summary.snapshot_id, "x") as o:
        list(o)


def test_a_dump_left_early_leaves_no_restic(restic: Restic, repo_dir: Path) -> None:
    summary = restic.backup_stream(stream(24 * MiB), "vol.tar")
    with restic.dump(summary.snapshot_id, "vol.tar") as out:
        pid = out.pid
        for _chunk in out:
            break  # the consumer gives up after the first chunk
        assert pid in restic_children()
    assert restic_children() == []
    assert not Path(f"/proc/{pid}").exists() or pid not in restic_children()
    assert list((repo_dir / "locks").iterdir()) == []


def test_ps_shows_neither_password_nor_repository(
    restic: Restic, repo_dir: Path, tmp_path: Path
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> Iterator[bytes]:
        chunks = stream(4 * MiB)
        yield next(chunks)
        started.set()
        release.wait(120)
        yield from chunks

    result: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: result.update(summary=restic.backup_stream(slow(), "vol.tar"))
    )
    worker.start()
    try:
        started.wait(120)
        wait_for(lambda: restic_children(), "restic to start")
        (pid,) = restic_children()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        environ_mode = Path(f"/proc/{pid}/environ").stat().st_mode
    finally:
        release.set()
        worker.join(300)
    assert b"backup" in argv  # it is the backup we sampled
    joined = b" ".join(argv)
    assert PASSWORD.encode() not in joined
    assert str(repo_dir).encode() not in joined and b"Kx7secretplace" not in joined
    assert str(tmp_path / "pw").encode() not in joined
    # ... they travel in the environment, which only the owner (and root) can read.
    assert f"RESTIC_REPOSITORY={repo_dir}".encode() in environ
    assert f"RESTIC_PASSWORD_FILE={tmp_path / 'pw'}".encode() in environ
    assert environ_mode & 0o077 == 0
    assert "summary" in result


def test_lock_held_by_another_restic(restic: Restic, repo_dir: Path) -> None:
    release = threading.Event()
    started = threading.Event()

    def held() -> Iterator[bytes]:
        yield b"x" * 1024
        started.set()
        release.wait(120)

    worker = threading.Thread(target=lambda: restic.backup_stream(held(), "vol.tar"))
    worker.start()
    try:
        started.wait(120)
        wait_for(lambda: any((repo_dir / "locks").iterdir()), "the backup's lock")
        with pytest.raises(RepositoryLockedError) as info:
            restic.check()  # check wants the lock for itself
    finally:
        release.set()
        worker.join(300)
    assert info.value.exit_code == 9
    assert "restic unlock" in info.value.message
    assert restic.check().ok


def test_check_read_data_reports_a_damaged_pack(restic: Restic, repo_dir: Path) -> None:
    summary = restic.backup_stream(stream(6 * MiB), "vol.tar")
    assert restic.check(read_data=True).ok
    pack = max(
        (p for p in (repo_dir / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    pack.chmod(0o600)
    with pack.open("r+b") as f:
        f.seek(pack.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))

    report = restic.check(read_data=True)
    assert not report.ok
    assert any(pack.name in line and "does not match" in line for line in report.problems)
    assert not restic.check(subset="100%").ok
    with pytest.raises(RepositoryDamagedError), restic.dump(summary.snapshot_id, "vol.tar") as out:
        list(out)
    assert restic_children() == []


def test_forget_prune_removes_the_snapshot_and_its_data(restic: Restic, repo_dir: Path) -> None:
    keep = restic.backup_stream(stream(2 * MiB, seed=1), "a")
    drop = restic.backup_stream(stream(5 * MiB, seed=2), "b")
    before = sum(p.stat().st_size for p in (repo_dir / "data").rglob("*") if p.is_file())
    restic.forget([drop.snapshot_id], prune=True)
    assert [s.id for s in restic.snapshots()] == [keep.snapshot_id]
    after = sum(p.stat().st_size for p in (repo_dir / "data").rglob("*") if p.is_file())
    assert after < before - 4 * MiB
    restic.forget([])  # nothing to do
    with restic.dump(keep.snapshot_id, "a") as out:
        assert digest(iter(out)) == digest(stream(2 * MiB, seed=1))


KILLED_CHILD = """
import os, sys, time
from snapvol.adapters.restic import Repository, Restic

restic = Restic(Repository.configure(sys.argv[1], sys.argv[2], environ={}))

def source():
    yield os.urandom(4 << 20)
    print("fed", flush=True)
    time.sleep(600)

restic.backup_stream(source(), "vol.tar")
"""


def test_a_killed_snapvol_leaves_no_truncated_snapshot(
    restic: Restic, repo_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL of snapvol mid-copy: restic must not take the end of its stdin for the end of the
    stream and save a truncated snapshot (without ``--pdeathsig`` it sometimes does: it dies of
    SIGPIPE only if it writes a status line first, hence three rounds); and the lock it leaves
    must not block the next run."""
    for _round in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_CHILD, str(repo_dir), str(tmp_path / "pw")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "fed\n"
            wait_for(lambda c=child.pid: restic_children(c), "restic under the child")
            (grandchild,) = restic_children(child.pid)
        finally:
            child.kill()
            child.wait()
        wait_for(lambda g=grandchild: not Path(f"/proc/{g}").exists(), "restic to go")
        assert restic.snapshots() == []
    assert any((repo_dir / "locks").iterdir())  # killed: restic could not remove its lock
    assert restic.check().ok  # wants an exclusive lock: the stale ones are removed first


FLAT_CHILD = """
import hashlib, os, re, sys
from pathlib import Path
from snapvol.adapters.restic import Repository, Restic

restic = Restic(Repository.configure(sys.argv[1], sys.argv[2], environ={}))
size = int(sys.argv[3])
sent = hashlib.sha256()

def source():
    for _ in range(size >> 20):
        chunk = os.urandom(1 << 20)
        sent.update(chunk)
        yield chunk

summary = restic.backup_stream(source(), "big.tar")
got = hashlib.sha256()
with restic.dump(summary.snapshot_id, "big.tar") as out:
    for chunk in out:
        got.update(chunk)
assert got.digest() == sent.digest() and summary.total_bytes == size
status = Path("/proc/self/status").read_text()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) << 10)
"""


def test_memory_stays_flat_whatever_the_stream_size(
    restic: Restic, repo_dir: Path, tmp_path: Path
) -> None:
    """A 160 MiB stream in and out: the Python process's peak RSS stays far below it."""
    size = 160 * MiB
    out = subprocess.run(
        [sys.executable, "-c", FLAT_CHILD, str(repo_dir), str(tmp_path / "pw"), str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    peak = int(out.stdout)
    assert peak < 80 * MiB, f"peak RSS {peak >> 20} MiB for a {size >> 20} MiB stream"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_one_line_without_its_credentials(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    location = f"rest:http://alice:Sup3rS3cret@127.0.0.1:{port}/repo/"
    restic = Restic(Repository.configure(location, write_password(tmp_path / "pw"), environ={}))
    with pytest.raises(RepositoryUnreachableError) as info:
        restic.snapshots()
    message = info.value.message
    assert message.startswith(f"cannot reach repository rest:http://127.0.0.1:{port}/repo/: ")
    assert "connection refused" in message
    assert "Sup3rS3cret" not in message and "alice" not in message and "\n" not in message
    with pytest.raises(RepositoryUnreachableError):
        restic.backup_stream(stream(MiB), "vol.tar")
    printed = capfd.readouterr()
    assert "Sup3rS3cret" not in printed.out + printed.err


def test_an_unreachable_sftp_server(tmp_path: Path) -> None:
    port = closed_port()
    ssh = f"ssh -p {port} -o BatchMode=yes -o StrictHostKeyChecking=no nobody@127.0.0.1 -s sftp"
    restic = Restic(
        Repository.configure(
            "sftp:nobody@127.0.0.1:/srv/repo",
            write_password(tmp_path / "pw"),
            environ={},
            options=[f"sftp.command={ssh}"],
        )
    )
    with pytest.raises(RepositoryUnreachableError, match="cannot reach repository sftp:nobody@"):
        restic.exists()


def reading_stdin(pid: int) -> bool:
    """Whether a thread of ``pid`` waits in read(0, ...) (x86-64: syscall 0)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "syscall").read_text().split()[:2] == ["0", "0x0"]:
                return True
        except OSError:
            continue
    return False


def test_a_backup_started_ahead_is_finished_or_cancelled_without_a_trace(
    restic: Restic, repo_dir: Path
) -> None:
    """``start_backup_stream`` opens the repository before the stream is known: cancelled
    while it waits for its stdin, restic saves nothing and leaves no lock; finished, it saves
    exactly the stream."""
    pending = restic.start_backup_stream("manifest.json", tags=["t"])
    wait_for(lambda: reading_stdin(pending.pid), "restic to wait for its stream")
    assert any((repo_dir / "locks").iterdir())
    pending.cancel()
    pending.cancel()  # once is enough
    assert restic_children() == []
    assert restic.snapshots() == [] and list((repo_dir / "locks").iterdir()) == []
    with pytest.raises(RuntimeError):
        pending.finish([b"too late"])

    with restic.start_backup_stream("manifest.json", tags=["t"]) as pending:
        wait_for(lambda: reading_stdin(pending.pid), "restic to wait for its stream")
        summary = pending.finish(stream(3 * MiB), full_id=True)
    assert restic_children() == []
    [snap] = restic.snapshots()
    assert snap.id == summary.snapshot_id and snap.tags == ("t",)
    with restic.dump(summary.snapshot_id, "manifest.json") as out:
        assert digest(iter(out)) == digest(stream(3 * MiB))
