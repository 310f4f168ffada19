"""The rescue process against a real engine: told a last phase, then the pipe closes as when
snapvol is killed. (Killing snapvol itself in every phase: tests/faults.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from snapvol.volume.phases import Dirty, Phase, Stopped, encode
from tests.docker_helpers import TestBed


def rescue(container_id: str, db: Path, *told: Phase) -> subprocess.CompletedProcess[str]:
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapvol.volume.rescue",
            "--container",
            container_id,
            "--db",
            str(db),
            "--pipe-fd",
            str(read_fd),
        ],
        pass_fds=[read_fd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    os.close(read_fd)
    with os.fdopen(write_fd, "wb") as pipe:
        for phase in told:
            pipe.write(encode(phase))
    out, _ = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, None)


def stopped_sleeper(bed: TestBed) -> tuple[str, str]:
    container, volume = bed.plain()
    container.stop(timeout=10)
    container.reload()
    assert container.status == "exited"
    return str(container.id), volume


def status(bed: TestBed, container_id: str) -> str:
    return str(bed.client.containers.get(container_id).status)


def test_stopped_while_running_starts_it_again(bed: TestBed, tmp_path: Path) -> None:
    container_id, _ = stopped_sleeper(bed)
    result = rescue(container_id, tmp_path / "m.db", Stopped(was_running=True))
    assert result.returncode == 0, result.stdout
    assert status(bed, container_id) == "running"
    assert "starting it" in result.stdout and "running again" in result.stdout


def test_dirty_without_a_safety_snapshot_stays_stopped(bed: TestBed, tmp_path: Path) -> None:
    container_id, volume = stopped_sleeper(bed)
    dirty = Dirty(was_running=True, volume=volume, image=bed.image, safety=None)
    result = rescue(container_id, tmp_path / "m.db", Stopped(was_running=True), dirty)
    assert result.returncode == 1
    assert status(bed, container_id) == "exited"
    assert f"rewriting volume {volume} with no safety snapshot" in result.stdout


def test_dirty_with_an_unknown_safety_snapshot_stays_stopped(bed: TestBed, tmp_path: Path) -> None:
    container_id, volume = stopped_sleeper(bed)
    dirty = Dirty(was_running=True, volume=volume, image=bed.image, safety="no-such-snapshot")
    result = rescue(container_id, tmp_path / "m.db", dirty)
    assert result.returncode == 1
    assert status(bed, container_id) == "exited"
    assert "safety snapshot no-such-snapshot is not usable" in result.stdout
