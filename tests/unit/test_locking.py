"""The container lock: one machine-wide place, whatever the environment or the user, and a shared
directory treated as hostile. Real flocks on real files in the real lock directory."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import snapvol
from snapvol import locking, recovery
from snapvol.adapters.store import IN_PROGRESS, Snapshot, Store
from snapvol.errors import LockedError, OperationFailed
from snapvol.names import archive_filename, new_id

SOURCE = str(Path(snapvol.__file__).resolve().parent.parent)
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def cid() -> Iterator[str]:
    """A fresh container id; its lock file is removed afterwards."""
    container_id = secrets.token_hex(32)
    path = locking.lock_path(container_id)
    yield container_id
    if path.is_symlink() or path.exists():
        path.unlink()


def environment(tmp_path: Path, name: str) -> dict[str, str]:
    """A separate environment, as a cron job or another login has: its own runtime dirs, HOME."""
    home = tmp_path / name
    home.mkdir(mode=0o777)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPVOL_", "XDG_"))}
    env.update(
        HOME=str(home),
        SNAPVOL_RUN_DIR=str(home / "run"),
        XDG_RUNTIME_DIR=str(home / "xdg"),
        SNAPVOL_DB=str(tmp_path / "manifests.db"),
        SNAPVOL_BACKUP_DIR=str(tmp_path / "backups"),
        PYTHONPATH=SOURCE,
    )
    return env


HOLD = """
import sys
from snapvol import locking
try:
    held = locking.acquire(sys.argv[1], "db", "restore dos")
except Exception as err:
    print(type(err).__name__, err, flush=True)
    sys.exit(9)
print("held", flush=True)
sys.stdin.read()
"""


def holder(env: dict[str, str], container_id: str, *prefix: str, python: str = sys.executable):
    """Another process holding the lock (as another user with ``prefix``) until its stdin ends."""
    proc = subprocess.Popen(
        [*prefix, python, "-c", HOLD, container_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd="/",
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_one_lock_whatever_the_environment(
    cid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_a = environment(tmp_path, "a")
    proc, line = holder(env_a, cid)
    try:
        assert line == "held\n"
        for key in ("SNAPVOL_RUN_DIR", "XDG_RUNTIME_DIR", "HOME"):  # ours differ from env_a's
            monkeypatch.setenv(key, str(tmp_path / "b" / key))
        monkeypatch.delenv("XDG_RUNTIME_DIR")  # like cron
        assert locking.is_held(cid)
        with pytest.raises(LockedError) as refused:
            locking.acquire(cid, "db", "snapshot --volume")
        assert str(refused.value) == (
            f"another snapvol operation is running on db: `snapvol restore dos` (pid {proc.pid}, "
            f"since {json.loads(locking.lock_path(cid).read_text())['started']}); "
            "try again when it ends"
        )
    finally:
        stop(proc)
    assert not locking.is_held(cid)
    held = locking.acquire(cid, "db", "snapshot --volume")  # the lock went with its holder
    try:
        assert locking.is_held(cid)
        assert locking.lock_path(cid).parent in {d / "snapvol" for d in locking.SYSTEM_LOCK_DIRS}
    finally:
        held.release()
    assert not locking.is_held(cid)


def as_nobody(tmp_path: Path) -> dict[str, str]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("running a process as another user needs root and setpriv")
    env = environment(tmp_path, "nobody")
    probe = subprocess.run(
        [*NOBODY, "/usr/bin/python3", "-c", "import snapvol.locking"], env=env, cwd="/"
    )
    if probe.returncode != 0:
        pytest.skip("this checkout is not readable by an unprivileged user")
    return env


def test_another_user_is_refused_and_named(cid: str, tmp_path: Path) -> None:
    """Another user's snapvol sees our lock, and we see theirs, named. (The unprivileged user
    cannot reach the Docker socket, so this is at the locking level; /usr/bin/python3 because
    the venv's interpreter lives under /root.)"""
    env = as_nobody(tmp_path)
    held = locking.acquire(cid, "db", "snapshot --volume")
    try:
        proc, line = holder(env, cid, *NOBODY, python="/usr/bin/python3")
        proc.wait(timeout=30)
        assert proc.returncode == 9
        assert line.startswith("LockedError another snapvol operation is running on db: ")
        assert f"`snapvol snapshot --volume` (pid {os.getpid()}, user root (uid 0), since " in line
    finally:
        held.release()

    # The file root created is theirs to lock too; a refused root names the other user.
    proc, line = holder(env, cid, *NOBODY, python="/usr/bin/python3")
    try:
        assert line == "held\n"
        assert locking.is_held(cid)
        with pytest.raises(LockedError, match=rf"\(pid {proc.pid}, user nobody \(uid 65534\),"):
            locking.acquire(cid, "db", "snapshot --volume")
    finally:
        stop(proc)
    assert not locking.is_held(cid)


def make_hostile(kind: str, path: Path, victim: Path) -> None:
    if kind == "symlink":
        path.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(path, 0o666)
    elif kind == "hardlink":
        os.link(victim, path)
    elif kind == "stranger":  # a user outside the docker group, who could delete it while held
        if os.geteuid() != 0:
            pytest.skip("giving a file to another user needs root")
        path.write_text("")
        os.chmod(path, 0o666)
        os.chown(path, 65534, 65534)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "hardlink", "stranger"])
def test_a_hostile_file_in_the_lock_directory_is_refused_untouched(cid: str, kind: str) -> None:
    path = locking.lock_path(cid)
    if not path.parent.is_dir():  # created as snapvol creates it
        other = secrets.token_hex(32)
        locking.acquire(other, "x", "x").release()
        locking.lock_path(other).unlink()
    victim = path.parent / f"victim-{cid}"  # same filesystem, for the hard link
    victim.write_text("precious\n")
    try:
        make_hostile(kind, path, victim)
        before = os.lstat(path)
        with pytest.raises(OperationFailed, match=f"cannot use lock file {path}: "):
            locking.acquire(cid, "db", "snapshot --volume")
        assert victim.read_text() == "precious\n"
        after = os.lstat(path)
        assert (after.st_ino, after.st_mode, after.st_size) == (
            before.st_ino,
            before.st_mode,
            before.st_size,
        )
        if kind in ("symlink", "fifo"):
            assert locking.is_held(cid)  # cannot be checked: recovery must leave the record
    finally:
        victim.unlink()


@pytest.mark.parametrize("kind", ["symlink", "open base"])
def test_a_hostile_lock_directory_is_refused(
    cid: str, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "lock"
    base.mkdir()
    os.chmod(base, 0o1777)
    monkeypatch.setattr(locking, "SYSTEM_LOCK_DIRS", (base,))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if kind == "symlink":
        (base / "snapvol").symlink_to(elsewhere)
        expected = "is not a directory"
    else:  # anyone could rename our directory away and put theirs in its place
        os.chmod(base, 0o777)
        expected = "writable by others without the sticky bit"
    with pytest.raises(OperationFailed, match=expected):
        locking.acquire(cid, "db", "snapshot --volume")
    assert locking.is_held(cid)  # cannot be checked: treated as held
    assert list(elsewhere.iterdir()) == []


def test_root_takes_over_a_lock_directory_a_stranger_made(
    cid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its owner (a user outside the docker group) could remove anyone's lock file."""
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    base = tmp_path / "lock"
    (base / "snapvol").mkdir(parents=True)
    os.chmod(base / "snapvol", 0o755)
    os.chown(base / "snapvol", 65534, 65534)
    monkeypatch.setattr(locking, "SYSTEM_LOCK_DIRS", (base,))
    assert locking.is_held(cid)  # a reader cannot trust it, and does not change it
    assert (base / "snapvol").stat().st_uid == 65534
    locking.acquire(cid, "db", "snapshot --volume").release()
    info = (base / "snapvol").stat()
    assert (info.st_uid, info.st_gid, oct(info.st_mode & 0o7777)) == (0, 0, oct(0o1777))
    assert not locking.is_held(cid)


def test_a_reader_never_creates_the_lock_directory(
    cid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locking, "SYSTEM_LOCK_DIRS", (tmp_path,))
    assert not locking.is_held(cid)
    assert list(tmp_path.iterdir()) == []


def test_the_lock_directory_is_created_sticky_and_open_to_all(
    cid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "lock"
    base.mkdir()
    monkeypatch.setattr(locking, "SYSTEM_LOCK_DIRS", (tmp_path / "absent", base))
    old = os.umask(0o077)
    try:
        held = locking.acquire(cid, "db", "snapshot --volume")
    finally:
        os.umask(old)
    try:
        assert held.path == base / "snapvol" / f"{cid}.lock"
        assert oct((base / "snapvol").stat().st_mode & 0o7777) == oct(0o1777)
        assert oct(held.path.stat().st_mode & 0o777) == oct(0o666)
    finally:
        held.release()
    monkeypatch.setattr(locking, "SYSTEM_LOCK_DIRS", (tmp_path / "absent",))
    with pytest.raises(OperationFailed, match="no system lock directory"):
        locking.acquire(cid, "db", "snapshot --volume")


def record(
    db: Path, container_id: str, pid: int, created: datetime, host: str | None = None
) -> tuple[Snapshot, Path]:
    sid = new_id()
    name = f"snap-{container_id[:8]}"
    partial = db.parent / "backups" / (archive_filename(name, sid, ".tar.zst") + ".partial")
    partial.parent.mkdir(exist_ok=True, mode=0o700)
    partial.write_bytes(b"half an archive")
    store = Store.open(db)
    try:
        snap = store.add(
            Snapshot(
                id=sid,
                name=name,
                kind="volume",
                status=IN_PROGRESS,
                container="db",
                container_id=container_id,
                path=str(partial)[: -len(".partial")],
                pid=pid,
                host=host or socket.gethostname(),
                created_at=created,
            )
        )
    finally:
        store.close()
    return snap, partial


def ls_from(env: dict[str, str]) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "snapvol", "ls", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listed: list[dict[str, object]] = json.loads(result.stdout)
    return listed


def test_ls_from_another_environment_leaves_a_running_snapshot_alone(
    cid: str, tmp_path: Path
) -> None:
    proc, line = holder(environment(tmp_path, "a"), cid)
    try:
        assert line == "held\n"
        snap, partial = record(tmp_path / "manifests.db", cid, proc.pid, datetime.now(UTC))
        [listed] = ls_from(environment(tmp_path, "b"))
        assert (listed["id"], listed["status"]) == (snap.id, IN_PROGRESS)
        assert partial.read_bytes() == b"half an archive"
    finally:
        stop(proc)
    # Its holder gone, it is an interrupted run: the next command, from anywhere, cleans up.
    [listed] = ls_from(environment(tmp_path, "c"))
    assert (listed["id"], listed["status"]) == (snap.id, "failed")
    assert not partial.exists()


def test_a_record_is_interrupted_only_when_its_lock_is_free_and_its_process_gone(
    cid: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        alive, _ = record(tmp_path / "a.db", cid, sleeper.pid, now + timedelta(seconds=5))
        assert recovery._still_running(alive)  # lock free, but its process runs (an older snapvol)
        reused, _ = record(tmp_path / "b.db", cid, sleeper.pid, now - timedelta(hours=1))
        assert not recovery._still_running(reused)  # that pid started after the record: reused
    finally:
        sleeper.kill()
        sleeper.wait()
    gone, _ = record(tmp_path / "c.db", cid, sleeper.pid, now)
    assert not recovery._still_running(gone)
    held = locking.acquire(cid, "db", "snapshot --volume")
    try:
        assert recovery._still_running(gone)  # a holder of the lock (a watchdog, say): running
    finally:
        held.release()
    elsewhere, _ = record(tmp_path / "d.db", cid, sleeper.pid, now, host="another-host")
    assert recovery._still_running(elsewhere)  # another machine's: never judged from here


def test_an_id_that_is_not_an_engines_never_names_a_path(tmp_path: Path) -> None:
    """A damaged or hostile store's container id is hashed, never used as a file name."""
    hostile = "../../../" + str(tmp_path / "victim")
    path = locking.lock_path(hostile)
    assert path.parent == locking.lock_dir()
    assert path.name == f"x{hashlib.sha256(hostile.encode()).hexdigest()}.lock"
    assert locking.lock_path("ABCDEF") != locking.lock_dir() / "ABCDEF.lock"  # engine ids: lower
    held = locking.acquire(hostile, "db", "snapshot --volume")
    try:
        assert held.path == path and locking.is_held(hostile)
        assert not (tmp_path / "victim").exists() and not (tmp_path / "victim.lock").exists()
    finally:
        held.release()
        path.unlink()


def test_release_twice_is_harmless(cid: str) -> None:
    held = locking.acquire(cid, "db", "snapshot --volume")
    held.release()
    held.release()
    assert held.fd == -1 and not locking.is_held(cid)


@pytest.mark.parametrize(
    ("written", "named"),
    [
        (b"", "an operation that is starting"),
        (b"{not json", "an operation that is starting"),
        (b'{"pid": 1}', "an operation that is starting"),
        (b'["a list"]', "an operation that is starting"),
        (
            json.dumps(
                {"pid": 7, "operation": "rm \x1b[2J" + "x" * 200, "started": "now\n"}
            ).encode(),
            "`snapvol rm ?[2J" + "x" * 113 + "` (pid 7, since now?)",
        ),
    ],
)
def test_what_a_holder_wrote_is_shown_only_when_sound_and_printable(
    cid: str, written: bytes, named: str
) -> None:
    """Anyone may write the lock file: what it says is parsed defensively and sanitised."""
    held = locking.acquire(cid, "db", "snapshot --volume")
    try:
        os.ftruncate(held.fd, 0)
        os.pwrite(held.fd, written, 0)
        with pytest.raises(LockedError) as refused:
            locking.acquire(cid, "db", "restore x")
        assert str(refused.value) == (
            f"another snapvol operation is running on db: {named}; try again when it ends"
        )
    finally:
        held.release()


# --- holding: the one way a command holds container locks (all or none, each once) ---


@pytest.fixture
def ids() -> Iterator[list[str]]:
    """Three fresh container ids; their lock files are removed afterwards."""
    made = [secrets.token_hex(32) for _ in range(3)]
    yield made
    for container_id in made:
        locking.lock_path(container_id).unlink(missing_ok=True)


def test_every_lock_is_held_inside_and_released_after(ids: list[str]) -> None:
    with locking.holding([(i, f"c{n}") for n, i in enumerate(ids)], "rm") as held:
        assert len(held) == 3
        assert all(locking.is_held(i) for i in ids)
    assert not any(locking.is_held(i) for i in ids)


def test_a_container_named_twice_is_locked_once(ids: list[str]) -> None:
    twice = [(ids[0], "db"), (ids[0], "db"), (ids[1], "web")]
    with locking.holding(twice, "rm") as held:  # a second flock of our own would be refused
        assert [lock.path for lock in held] == [locking.lock_path(i) for i in ids[:2]]


def test_one_refused_lock_releases_those_already_taken(ids: list[str]) -> None:
    other = locking.acquire(ids[1], "web", "restore dos")
    try:
        with (
            pytest.raises(LockedError, match="`snapvol restore dos`"),
            locking.holding([(ids[0], "db"), (ids[1], "web"), (ids[2], "cache")], "rm"),
        ):
            pytest.fail("the block must not run without every lock")
        assert not locking.is_held(ids[0]) and not locking.is_held(ids[2])
    finally:
        other.release()


def test_locks_are_released_when_the_block_fails(ids: list[str]) -> None:
    with pytest.raises(RuntimeError), locking.holding([(ids[0], "db")], "rm"):
        assert locking.is_held(ids[0])
        raise RuntimeError("boom")
    assert not locking.is_held(ids[0])


def _old(path: Path, days: float = 8) -> None:
    path.write_text("")
    then = datetime.now(UTC).timestamp() - days * 86400
    os.utime(path, (then, then))


def test_lock_files_no_one_took_for_a_week_are_swept_unless_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "lock"
    (base / "snapvol").mkdir(parents=True)
    (base / "snapvol").chmod(0o1777)  # as snapvol makes it
    monkeypatch.setattr(locking, "SYSTEM_LOCK_DIRS", (base,))
    ids = {k: secrets.token_hex(32) for k in ("stale", "held", "fresh", "taken")}
    for key in ("stale", "held"):
        _old(locking.lock_path(ids[key]))
    locking.lock_path(ids["fresh"]).write_text("")
    hashed = locking.lock_path("repository-0123")  # not a container's: never swept
    _old(hashed)
    holder = locking.acquire(ids["held"], "db", "snapshot --volume")
    _old(locking.lock_path(ids["held"]))  # held for over a week, say
    try:
        locking.acquire(ids["taken"], "other", "snapshot --volume").release()
        left = {p.name for p in base.joinpath("snapvol").iterdir()}
        assert left == {
            locking.lock_path(i).name for i in (ids["held"], ids["fresh"], ids["taken"])
        } | {hashed.name}
        assert locking.is_held(ids["held"])  # its holder kept its lock and its file
    finally:
        holder.release()


def test_a_lock_file_swept_between_its_open_and_its_flock_is_not_the_one_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving forced: an acquirer opens an old file, a sweep removes it, the acquirer
    flocks the removed file; it must see that and lock the file that is there now."""
    base = tmp_path / "lock"
    (base / "snapvol").mkdir(parents=True)
    (base / "snapvol").chmod(0o1777)  # as snapvol makes it
    monkeypatch.setattr(locking, "SYSTEM_LOCK_DIRS", (base,))
    cid = secrets.token_hex(32)
    path = locking.lock_path(cid)
    _old(path)
    opened = locking._open_lock
    swept: list[int] = []

    def open_then_sweep(dir_fd: int, where: Path) -> tuple[int, bool]:
        found = opened(dir_fd, where)
        if not swept:  # once: another run's sweep, right after our open
            swept.append(os.fstat(found[0]).st_ino)
            locking._sweep(dir_fd, keep="")
            assert not where.exists()
        return found

    monkeypatch.setattr(locking, "_open_lock", open_then_sweep)
    held = locking.acquire(cid, "db", "snapshot --volume")
    try:
        assert path.exists() and os.fstat(held.fd).st_ino == path.stat().st_ino
        assert locking.is_held(cid)
    finally:
        held.release()


def test_a_holder_has_said_who_it_is_before_it_sweeps(
    cid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep reads the whole directory: a caller refused meanwhile must already be told
    who holds the lock now, not who held it last (the interleaving forced: the sweep is where
    the description is read)."""
    seen: list[str] = []
    real = locking._sweep

    def sweep(dir_fd: int, keep: str) -> None:
        fd = os.open(keep, os.O_RDONLY, dir_fd=dir_fd)
        try:
            seen.append(locking._describe_holder(fd))
        finally:
            os.close(fd)
        real(dir_fd, keep)

    locking.acquire(cid, "db", "snapshot --volume").release()  # the last holder's words
    monkeypatch.setattr(locking, "_sweep", sweep)
    held = locking.acquire(cid, "db", "restore 1234abcd")
    held.release()
    assert len(seen) == 1 and seen[0].startswith(f"`snapvol restore 1234abcd` (pid {os.getpid()}")
