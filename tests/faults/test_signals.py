"""Guarantees 1 and 2: no container left stopped, interrupted work cleaned up, whatever the end."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.docker_helpers import TestBed
from tests.faults.procs import (
    big_postgres,
    fingerprint,
    send,
    snapvol_process,
    wait_for_partial,
    wait_running,
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_snapshot_restarts_container_and_records_failure(
    bed: TestBed, cmd, tmp_path: Path, signum: int
) -> None:
    pg = big_postgres(bed)
    before = fingerprint(pg)
    proc = snapvol_process("snapshot", "--volume", "--container", pg.name, "--level", "19")
    wait_for_partial(tmp_path / "backups")
    assert pg.status == "exited"  # really mid-stream, with the server stopped

    code, err = send(proc, signum)
    assert code != 0
    assert err.strip().splitlines()[-1].startswith("Error: ")
    assert "Traceback" not in err
    assert pg.status == "running"
    pg.wait_ready()
    assert fingerprint(pg) == before
    assert list((tmp_path / "backups").glob("*")) == []  # partial removed, nothing else written
    [snap] = cmd.json("ls")
    assert snap["status"] == "failed" and "interrupted" in snap["error"]


def test_sigkill_mid_snapshot_watchdog_restarts_and_next_command_cleans_up(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    pg = big_postgres(bed)
    before = fingerprint(pg)
    proc = snapvol_process(
        "snapshot",
        "--volume",
        "--container",
        pg.name,
        "--level",
        "19",
        "--reader",
        "endpoint",  # through a helper container, whose cleanup is checked below
    )
    partial = wait_for_partial(tmp_path / "backups")
    assert pg.status == "exited"

    proc.kill()
    proc.wait()
    waited = wait_running(pg, timeout=15)  # the guarantee: running again within 15 s, unattended
    assert waited < 15
    pg.wait_ready()
    assert fingerprint(pg) == before

    helpers = bed.client.containers.list(all=True, filters={"label": "org.snapvol.helper"})
    assert any(pg.volume in {m.get("Name") for m in h.attrs["Mounts"]} for h in helpers)
    assert partial.exists()  # nothing cleaned it yet: the next command does

    result = cmd("ls", "--json")
    [snap] = json.loads(result.stdout)
    assert snap["status"] == "failed"
    assert "interrupted" in result.stderr and snap["id"] in result.stderr
    assert not partial.exists()

    # The next command that talks to Docker removes the dead run's helper container, and the
    # dead run's lock does not block it.
    snap2 = cmd.json("snapshot", "--volume", "--container", pg.name)
    assert snap2["status"] == "complete"
    helpers = bed.client.containers.list(all=True, filters={"label": "org.snapvol.helper"})
    assert not any(pg.volume in {m.get("Name") for m in h.attrs["Mounts"]} for h in helpers)


def _host_extracting(bed: TestBed, volume: str) -> bool:
    """Whether the volume has been emptied and is being refilled: ``base/`` is back (members come
    in name order) but ``global/`` and ``postmaster.opts`` are not yet."""
    root = Path(bed.client.volumes.get(volume).attrs["Mountpoint"])
    return (
        (root / "base").is_dir()
        and not (root / "global").exists()
        and not (root / "postmaster.opts").exists()
    )


def _endpoint_extracting(bed: TestBed, volume: str) -> bool:
    """Whether a (never started) read-write helper for the archive endpoint exists."""
    helpers = bed.client.api.containers(all=True, filters={"label": "org.snapvol.helper"})
    return any(
        h["State"] == "created"
        and any(m.get("Name") == volume and m.get("RW") for m in h["Mounts"])
        for h in helpers
    )


@pytest.mark.parametrize("reader", ["host", "endpoint"])
def test_sigkill_mid_restore_rolls_back_to_safety_snapshot(
    bed: TestBed, cmd, tmp_path: Path, reader: str
) -> None:
    pg = big_postgres(bed)
    snap = cmd.json("snapshot", "--volume", "--container", pg.name, "--level", "1")
    pg.psql("DELETE FROM bulk WHERE id % 3 = 0; UPDATE usuarios SET nombre = 'cambiado'")
    current = fingerprint(pg)

    proc = snapvol_process("restore", snap["id"], "--yes", "--reader", reader)
    # Kill it once the volume has been emptied and the archive is streaming into it.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if reader == "host" and _host_extracting(bed, pg.volume):
            break
        if reader == "endpoint" and _endpoint_extracting(bed, pg.volume):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the restore ended before it could be killed mid-extraction"
    proc.kill()
    proc.wait()

    wait_running(pg, timeout=120)  # the watchdog puts the safety snapshot back first
    pg.wait_ready()
    assert fingerprint(pg) == current


def test_a_signal_mid_restore_rolls_back_and_exits_130(bed: TestBed, cmd, tmp_path: Path) -> None:
    """Ctrl-C while the volume is being rewritten: the safety snapshot is put back, the
    container runs again, and the exit status is an interruption's (130), not a failure's.
    (SIGTERM unwinds as Ctrl-C does: the snapshot's test above sends both.)"""
    pg = big_postgres(bed)
    snap = cmd.json("snapshot", "--volume", "--container", pg.name, "--level", "1")
    pg.psql("DELETE FROM bulk WHERE id % 3 = 0; UPDATE usuarios SET nombre = 'cambiado'")
    current = fingerprint(pg)

    proc = snapvol_process("restore", snap["id"], "--yes", "--reader", "host")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if _host_extracting(bed, pg.volume):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the restore ended before it could be interrupted mid-extraction"
    code, err = send(proc, signal.SIGINT)
    last = err.strip().splitlines()[-1]
    assert code == 130, err
    assert last.startswith("Error: restore failed (interrupted); the volume was rolled back to ")
    assert "Traceback" not in err
    assert pg.status == "running"
    pg.wait_ready()
    assert fingerprint(pg) == current
