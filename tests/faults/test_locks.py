"""One operation per container whatever the environment: a cron job (no XDG_RUNTIME_DIR), a login
shell and another store all meet on the same lock, and no one's recovery judges another's run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from snapvol import locking
from tests.docker_helpers import TestBed
from tests.faults.procs import big_postgres, fingerprint, wait_for_partial


def environment(tmp_path: Path, name: str, store: str) -> dict[str, str]:
    """A process environment of its own (HOME, runtime dirs) using the store ``store``."""
    home = tmp_path / f"home-{name}"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPVOL_", "XDG_"))}
    env.update(
        HOME=str(home),
        SNAPVOL_RUN_DIR=str(home / "run"),
        SNAPVOL_DB=str(tmp_path / f"{store}.db"),
        SNAPVOL_BACKUP_DIR=str(tmp_path / f"{store}-backups"),
        SNAPVOL_PG_IMAGE=os.environ.get("SNAPVOL_PG_IMAGE", ""),
    )
    if name != "cron":  # cron gives no XDG_RUNTIME_DIR
        env["XDG_RUNTIME_DIR"] = str(home / "xdg")
    return env


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "snapvol", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapvol", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        timeout=600,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    return out, err


def wait_held(container_id: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if locking.is_held(container_id):
            return
        time.sleep(0.02)
    raise AssertionError(f"the first operation never held the lock (exit {proc.poll()})")


def test_two_environments_one_operation_on_a_container(bed: TestBed, tmp_path: Path) -> None:
    pg = big_postgres(bed)
    container_id = bed.client.containers.get(pg.name).id
    before = fingerprint(pg)
    shell = environment(tmp_path, "shell", store="main")
    cron = environment(tmp_path, "cron", store="main")  # same store, another environment
    other = environment(tmp_path, "other", store="other")  # another store too
    paused: list[subprocess.Popen[str]] = []
    try:
        # 1. A snapshot from the shell, paused mid-stream with the container stopped.
        first = start(shell, "snapshot", "--volume", "--container", pg.name, "--json")
        partial = wait_for_partial(tmp_path / "main-backups")
        first.send_signal(signal.SIGSTOP)
        paused.append(first)
        assert pg.status == "exited"

        refused = run(other, "snapshot", "--volume", "--container", pg.name)
        assert refused.returncode == 9, refused.stderr
        assert refused.stderr.strip() == refused.stderr.strip().splitlines()[0]
        assert refused.stderr.startswith(
            f"Error: another snapvol operation is running on {pg.name}: "
            f"`snapvol snapshot --volume` (pid {first.pid}, since "
        )
        assert json.loads(run(other, "ls", "--json").stdout) == []  # refused before recording

        listed = run(cron, "ls", "--json")  # reading from cron: never blocked, judges nothing
        assert listed.returncode == 0 and "interrupted" not in listed.stderr, listed.stderr
        assert [s["status"] for s in json.loads(listed.stdout)] == ["in_progress"]
        assert partial.exists()

        first.send_signal(signal.SIGCONT)
        paused.clear()
        out, _ = finish(first)
        snap = json.loads(out)
        assert snap["status"] == "complete"
        pg.wait_ready()

        # 2. A restore from cron, paused once it holds the lock; the shell's restore is refused.
        pg.psql("DELETE FROM bulk WHERE id % 3 = 0; UPDATE usuarios SET nombre = 'cambiado'")
        assert fingerprint(pg) != before
        restore = start(cron, "restore", snap["id"], "--yes", "--json")
        wait_held(container_id, restore)
        restore.send_signal(signal.SIGSTOP)
        paused.append(restore)

        second = run(shell, "restore", snap["id"], "--yes")
        assert second.returncode == 9, second.stderr
        assert f"`snapvol restore {snap['id']}` (pid {restore.pid}, since " in second.stderr
        assert run(other, "snapshot", "--volume", "--container", pg.name).returncode == 9

        restore.send_signal(signal.SIGCONT)
        paused.clear()
        out, _ = finish(restore)
        safety = json.loads(out)["safety_snapshot"]
    finally:
        for proc in paused:  # let a failed test's paused process end (its watchdog cleans up)
            proc.send_signal(signal.SIGCONT)
            proc.kill()

    # The data is the snapshot's, whole, and every snapshot recorded complete verifies.
    pg.wait_ready()
    assert fingerprint(pg) == before
    recorded = json.loads(run(other, "--db", str(tmp_path / "main.db"), "ls", "--json").stdout)
    assert sorted((s["id"], s["status"]) for s in recorded) == sorted(
        [(snap["id"], "complete"), (safety["id"], "complete")]
    )
    verified = run(shell, "verify", "--json")
    assert verified.returncode == 0, verified.stderr
    assert sorted((r["id"], r["ok"]) for r in json.loads(verified.stdout)) == sorted(
        [(snap["id"], True), (safety["id"], True)]
    )
