"""The command line as a new user meets it (issue 13): where global options may go, `-y`,
Ctrl-C at a question, one kind of snapshot at a time. Over a real store file (no Docker)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from snapvol.adapters.store import Snapshot, Store
from tests.faults.procs import interruptible


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    """A store (at SNAPVOL_DB) holding one complete volume snapshot, `uno`, and its archive."""
    path = Path(os.environ["SNAPVOL_DB"])
    archive = Path(os.environ["SNAPVOL_BACKUP_DIR"]) / "uno.1234abcd.tar.zst"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"not really an archive")
    store = Store.open(path)
    try:
        snap = store.add(Snapshot(id="1234abcd", name="uno", kind="volume", container="db"))
        store.complete(snap.id, path=str(archive), sha256="a" * 64, size_bytes=21)
    finally:
        store.close()
    return path


def test_global_options_may_follow_the_command(store_file: Path, tmp_path: Path, cmd) -> None:
    other = tmp_path / "other.db"
    missing = cmd("ls", "--db", str(other), exit_code=6)
    assert f"no manifest store at {other}" in missing.stderr
    # after the command wins over before it, and over SNAPVOL_DB
    again = cmd("--db", str(tmp_path / "before.db"), "ls", "--db", str(other), exit_code=6)
    assert f"no manifest store at {other}" in again.stderr
    assert [s["id"] for s in cmd.json("ls", "--db", str(store_file))] == ["1234abcd"]


def test_a_store_named_after_the_command_brings_its_own_backup_dir(
    store_file: Path, tmp_path: Path, cmd
) -> None:
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "manifests.db").write_bytes(store_file.read_bytes())
    env_dir = os.environ.pop("SNAPVOL_BACKUP_DIR")
    try:
        gone = cmd("rm", "uno", "-y", "--db", str(moved / "manifests.db"), "--json")
    finally:
        os.environ["SNAPVOL_BACKUP_DIR"] = env_dir
    assert [s["id"] for s in cmd.json("ls", "--db", str(moved / "manifests.db"))] == []
    assert '"1234abcd"' in gone.stdout
    # the archive lives outside the moved store's backups/: snapvol did not write it there,
    # so it was not deleted
    assert (Path(env_dir) / "uno.1234abcd.tar.zst").exists()


def test_a_commands_own_option_keeps_its_meaning(store_file: Path, cmd) -> None:
    refused = cmd("ls", "--repo", exit_code=2)  # ls --repo: list the repository (none given)
    assert "no repository" in refused.stderr


def test_snapshot_refuses_two_kinds_at_once(store_file: Path, cmd) -> None:
    both = cmd("snapshot", "--volume", "--logical", exit_code=2)
    assert "choose one of --volume" in both.stderr and "one snapshot takes one kind" in both.stderr
    neither = cmd("snapshot", exit_code=2)
    assert "choose one of --volume" in neither.stderr


def test_rm_and_prune_take_dash_y(store_file: Path, cmd) -> None:
    planned = cmd("prune", "--keep-last", "1", "-y", "--dry-run")
    assert "dry run" in planned.stderr
    cmd("rm", "uno", "-y")
    assert cmd.json("ls") == []


def _on_the_terminal() -> None:
    """In the child: the pty is its controlling terminal, and SIGINT is as a shell gives it."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    interruptible()


def _wait_reading_stdin(pid: int) -> None:
    """Until ``pid`` is blocked in read(0, ...): a Ctrl-C between input() writing its prompt and
    starting to read would wait for the next line (CPython checks signals only when read()
    is interrupted), a window no person's key press falls into. x86-64: read is syscall 0."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
        if fields[:2] == ["0", "0x0"]:
            return
        time.sleep(0.02)
    raise AssertionError(f"snapvol (pid {pid}) never waited for an answer")


def _prompt_then(signal_bytes: bytes, *args: str) -> tuple[int, str]:
    """Run the real CLI on a terminal, wait for its question, type ``signal_bytes``."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapvol", *args],
        stdin=child,
        stdout=child,
        stderr=child,
        start_new_session=True,  # its own session, so the terminal is its controlling one
        preexec_fn=_on_the_terminal,
    )
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 30
    while b"[y/N]: " not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            seen += os.read(main, 4096)
    assert b"[y/N]: " in seen, seen
    _wait_reading_stdin(proc.pid)
    os.write(main, signal_bytes)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                data = os.read(main, 4096)
            except OSError:
                break
            if not data:
                break
            seen += data
        elif proc.poll() is not None:
            break
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running after {signal_bytes!r}: {seen!r}") from None
    finally:
        os.close(main)
    return code, seen.decode(errors="replace")


def test_ctrl_c_at_a_question_is_an_interruption_on_its_own_line(store_file: Path) -> None:
    code, seen = _prompt_then(b"\x03", "rm", "uno")
    assert code == 130, seen
    assert "\nError: interrupted; nothing was deleted" in seen.replace("\r\n", "\n")
    code, seen = _prompt_then(b"\x04", "rm", "uno")  # Ctrl-D: the input ended
    assert code == 10, seen
    assert "\nError: cancelled; nothing was deleted" in seen.replace("\r\n", "\n")
    assert Store.open(store_file).snapshots()[0].id == "1234abcd"
