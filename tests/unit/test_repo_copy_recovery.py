"""In-progress copies whose snapvol process is gone are marked failed; live ones are left."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from snapvol.adapters.store import COMPLETE, FAILED, IN_PROGRESS, Copy, Store
from snapvol.output import Reporter
from snapvol.repo.copy import recover_copies


class Said(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warn(self, message: str) -> None:
        self.lines.append(message)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_dead_copies_fail_live_and_foreign_ones_stay(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "m.db")
    here = socket.gethostname()
    try:
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            for cid, pid, host in (
                ("dead", dead_pid(), here),
                ("nopid", None, here),
                ("live", sleeper.pid, here),
                ("mine", os.getpid(), here),
                ("elsewhere", dead_pid(), "another-host"),
            ):
                store.add_copy(
                    Copy(
                        id=cid,
                        snapshot_id="s",
                        repository_id="R",
                        repository="/r",
                        pid=pid,
                        host=host,
                    )
                )
            store.add_copy(
                Copy(
                    id="done",
                    snapshot_id="s",
                    repository_id="R",
                    repository="/r",
                    status=COMPLETE,
                    host=here,
                )
            )
            said = Said()
            recovered = recover_copies(store, said)
        finally:
            sleeper.kill()
            sleeper.wait()
        assert sorted(c.id for c in recovered) == ["dead", "nopid"]
        status = {c.id: c.status for c in store.copies()}
        assert status == {
            "dead": FAILED,
            "nopid": FAILED,
            "live": IN_PROGRESS,
            "mine": IN_PROGRESS,
            "elsewhere": IN_PROGRESS,
            "done": COMPLETE,
        }
        assert all("interrupted" in (c.error or "") for c in store.copies(status=FAILED))
        assert len(said.lines) == 2 and "snapvol copy" in said.lines[0]
    finally:
        store.close()


def test_any_command_recovers_an_interrupted_copy(tmp_path: Path, cmd) -> None:
    store = Store.open(tmp_path / "manifests.db")
    try:
        store.add_copy(
            Copy(
                id="dead",
                snapshot_id="s",
                repository_id="R",
                repository="/r",
                pid=dead_pid(),
                host=socket.gethostname(),
            )
        )
    finally:
        store.close()
    result = cmd("ls")
    assert "the copy of snapshot s to /r was interrupted; marked failed" in result.stderr
    store = Store.open(tmp_path / "manifests.db")
    try:
        assert [c.status for c in store.copies()] == [FAILED]
    finally:
        store.close()
