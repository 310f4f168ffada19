"""What the rescue process decides from the last phase, and that it ends quietly when nothing is
asked of it (the run it guarded ended well). Carrying a rescue out against a real engine:
tests/integration/test_rescue.py and the fault suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snapvol.volume.phases import Dirty, Done, Stopped, encode
from snapvol.volume.rescue import Rescue, RollBack, decide


def test_done_asks_nothing() -> None:
    assert decide(Done()) == Rescue()
    assert not decide(Done()).needed


def test_stopped_starts_the_container_only_if_it_ran() -> None:
    assert decide(Stopped(was_running=True)) == Rescue(start=True)
    assert decide(Stopped(was_running=False)) == Rescue()
    assert not decide(Stopped(was_running=False)).needed


@pytest.mark.parametrize("was_running", [True, False])
def test_dirty_puts_the_safety_snapshot_back_first(was_running: bool) -> None:
    dirty = Dirty(was_running=was_running, volume="pgdata", image="pg:15", safety="s1")
    rescue = decide(dirty)
    roll_back = RollBack(safety="s1", volume="pgdata", image="pg:15")
    assert rescue == Rescue(roll_back, start=was_running)
    assert rescue.needed and rescue.stranded is None


@pytest.mark.parametrize("was_running", [True, False])
def test_dirty_without_a_safety_snapshot_stays_stopped(was_running: bool) -> None:
    rescue = decide(Dirty(was_running=was_running, volume="pgdata", image="pg:15", safety=None))
    assert rescue == Rescue(stranded="pgdata")
    assert rescue.needed and not rescue.start and rescue.roll_back is None


def run_rescue(tmp_path: Path, stream: bytes) -> subprocess.CompletedProcess[str]:
    """The real rescue process, fed ``stream`` and then the pipe's end, with no engine to reach:
    had it tried to recover, it would fail and say so."""
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    args = ["--container", "no-such-container", "--db", str(tmp_path / "m.db")]
    process = subprocess.Popen(
        [sys.executable, "-m", "snapvol.volume.rescue", *args, "--pipe-fd", str(read_fd)],
        pass_fds=[read_fd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    os.close(read_fd)
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(stream)
    out, _ = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, None)


@pytest.mark.parametrize(
    "stream",
    [
        encode(Stopped(was_running=True)) + encode(Done()),
        encode(Stopped(was_running=False)),  # found stopped, left stopped
        encode(Stopped(was_running=True)) + b"garbage\n" + encode(Done()),
        encode(Stopped(was_running=False)) + b'{"phase": "dirty", "was_r',  # died mid-write
    ],
)
def test_the_process_ends_quietly_when_nothing_is_asked(tmp_path: Path, stream: bytes) -> None:
    result = run_rescue(tmp_path, stream)
    assert (result.returncode, result.stdout) == (0, "")
    assert not (tmp_path / "m.db").exists()  # the store is opened only for a rollback
