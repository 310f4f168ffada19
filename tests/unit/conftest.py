"""Fixtures the unit tests of the store's records share: a real store, a backup directory and a
container id, all fresh per test."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapvol import locking
from snapvol.adapters.store import Store


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has just ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a process that runs throughout the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "manifests.db")
    yield opened
    opened.close()


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def cid() -> Iterator[str]:
    """A fresh container id; its lock file, if a test made one, is removed afterwards."""
    container_id = secrets.token_hex(32)
    yield container_id
    path = locking.lock_path(container_id)
    if path.is_file() and not path.is_symlink():
        path.unlink()
