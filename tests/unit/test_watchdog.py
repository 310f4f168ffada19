"""The guard's end of the watchdog: what it writes, the process it starts, what it imports.

The rescue process started here is the real one; it is only ever told ``Done`` or a phase that
asks nothing of it, and ``DOCKER_HOST`` points nowhere, so no engine is needed (or touched).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snapvol.volume import phases
from snapvol.volume.guard import Downtime
from snapvol.volume.phases import Dirty, Done, Stopped
from snapvol.volume.watchdog import Watchdog, WatchdogConfig, spawn

CONTAINER = "0123456789ab" + "c" * 52  # no such container: the rescue must not need one


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")


def test_without_a_process_every_call_does_nothing() -> None:
    watchdog = Watchdog(None, None)
    watchdog.send(Stopped(was_running=True))
    watchdog.done()
    watchdog.abandon()


def test_phases_go_down_the_pipe_one_line_each() -> None:
    read_fd, write_fd = os.pipe()
    watchdog = Watchdog(None, os.fdopen(write_fd, "wb"))
    dirty = Dirty(was_running=True, volume="v", image="i", safety="s")
    watchdog.send(Stopped(was_running=True))
    watchdog.send(dirty)
    watchdog.abandon()  # closes the pipe without Done
    assert watchdog.pipe is None
    with os.fdopen(read_fd, "rb") as reader:
        lines = reader.read().splitlines(keepends=True)
    assert [phases.decode(line) for line in lines] == [Stopped(was_running=True), dirty]


def test_done_ends_the_rescue_process(tmp_path: Path) -> None:
    watchdog = spawn(WatchdogConfig(db=tmp_path / "m.db"), CONTAINER, is_postgres=True)
    assert watchdog.process is not None
    pid = watchdog.process.pid
    # Its own session: a Ctrl-C at snapvol's terminal does not reach it.
    assert os.getsid(pid) == pid != os.getsid(0)
    watchdog.send(Stopped(was_running=True))
    watchdog.done()
    assert watchdog.pipe is None
    assert watchdog.process.returncode == 0
    log = tmp_path / "run" / f"watchdog-{CONTAINER[:12]}.log"
    assert log.exists() and log.read_text() == ""  # nothing to recover, nothing said


def test_abandoned_the_rescue_acts_on_the_last_phase(tmp_path: Path) -> None:
    watchdog = spawn(WatchdogConfig(db=tmp_path / "m.db"), CONTAINER, is_postgres=False)
    assert watchdog.process is not None
    watchdog.send(Stopped(was_running=False))  # nothing to start: no engine needed
    watchdog.abandon()
    assert watchdog.process.wait(timeout=60) == 0


def test_the_rescue_process_holds_every_lock_until_it_ends(tmp_path: Path) -> None:
    """The container's lock and those of its pod's other containers: none is free while the
    rescue may still start the pod."""
    files = [tmp_path / "container.lock", tmp_path / "sidecar.lock"]
    ours = []
    for lock_file in files:
        lock_file.touch()
        ours.append(os.open(lock_file, os.O_RDWR))
        fcntl.flock(ours[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
    config = WatchdogConfig(db=tmp_path / "m.db", lock_fds=tuple(ours))
    watchdog = spawn(config, CONTAINER, is_postgres=False)
    for fd in ours:
        os.close(fd)  # snapvol died: only the rescue process still holds the locks
    others = [os.open(lock_file, os.O_RDWR) for lock_file in files]
    try:
        for other in others:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        watchdog.done()
        for other in others:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the process
    finally:
        for other in others:
            os.close(other)


def test_done_is_the_last_line() -> None:
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    watchdog = Watchdog(process, os.fdopen(write_fd, "wb"))
    watchdog.send(Stopped(was_running=True))
    watchdog.done()
    assert process.returncode == 0
    with os.fdopen(read_fd, "rb") as reader:
        assert phases.last(reader) == Done()


@pytest.mark.parametrize("module", ["snapvol.volume.watchdog", "snapvol.volume.guard"])
def test_the_client_imports_none_of_the_rescue(module: str) -> None:
    """No cycle through the watchdog: the guard and its client load no volume code beyond it."""
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert module in loaded
    heavy = {
        "snapvol.volume.snapshot",
        "snapvol.volume.restore",
        "snapvol.volume.rescue",
        "snapvol.adapters.store",
    }
    assert not loaded & heavy
    if module == "snapvol.volume.watchdog":
        assert not {m for m in loaded if m.startswith(("snapvol.adapters", "docker"))}
        assert "snapvol.volume.guard" not in loaded


def test_the_guard_reports_phases_with_how_it_found_the_container() -> None:
    """``Downtime`` (the guard) is the writer: each phase carries whether the container ran."""
    read_fd, write_fd = os.pipe()
    down = Downtime(was_running=False, watchdog=Watchdog(None, os.fdopen(write_fd, "wb")))
    down.intact()
    down.rewriting(volume="v", image="i", safety=None)
    down.watchdog.abandon()
    with os.fdopen(read_fd, "rb") as reader:
        told = [phases.decode(line) for line in reader]
    assert told == [
        Stopped(was_running=False),
        Dirty(was_running=False, volume="v", image="i", safety=None),
    ]
