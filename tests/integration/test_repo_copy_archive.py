"""A local archive that is not what its record says is never taken for a copy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from snapvol.adapters.restic import Restic
from snapvol.adapters.store import COMPLETE, Snapshot, Store
from snapvol.pipeline.archive import file_sha256
from snapvol.repo import copy as copy_module
from snapvol.repo import opening as opening_module
from tests.archives import flip_middle_byte
from tests.faults.procs import interruptible
from tests.integration.test_restic_adapter import reading_stdin, wait_for
from tests.servers import RepoServer


def recorded_archive(tmp_path: Path, payload: bytes) -> Path:
    """A complete logical snapshot ``0a1b2c3d`` in the test's store, whose archive holds
    ``payload`` (no Docker needed: the copy only reads the archive and the record)."""
    backups = tmp_path / "backups"
    backups.mkdir(exist_ok=True)
    archive = backups / "dump.0a1b2c3d.sql.zst"
    archive.write_bytes(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(payload))
    store = Store.open(tmp_path / "manifests.db")
    try:
        store.add(
            Snapshot(
                id="0a1b2c3d",
                name="dump",
                kind="logical",
                format="plain",
                container="db",
                status=COMPLETE,
                path=str(archive),
                sha256=file_sha256(archive)[0],
                raw_bytes=len(payload),
            )
        )
    finally:
        store.close()
    return archive


def use(server: RepoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SNAPVOL_REPOSITORY", server.repo)
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(server.password_file))


def snapshots(server: RepoServer) -> list[dict]:
    return json.loads(server.restic("snapshots", "--json").stdout)


def test_a_damaged_archive_is_not_copied(
    restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    archive = recorded_archive(tmp_path, os.urandom(3 << 20))
    flip_middle_byte(archive)
    result = cmd("copy", exit_code=7)
    assert "Error:" in result.stderr and "Traceback" not in result.stderr
    assert snapshots(restic_local) == []
    [snap] = cmd.json("ls")
    assert [c["status"] for c in snap["copies"]] == ["failed"]


def test_an_archive_replaced_by_another_is_not_copied(
    restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    archive = recorded_archive(tmp_path, b"the real dump\n" * 1000)
    archive.write_bytes(zstandard.ZstdCompressor().compress(b"another dump\n" * 1000))
    result = cmd("copy", exit_code=7)
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert "does not match its recorded SHA-256" in line
    assert snapshots(restic_local) == []  # the data snapshot was removed again, no manifest
    [snap] = cmd.json("ls")
    assert [c["status"] for c in snap["copies"]] == ["failed"]


@pytest.mark.private_server
def test_an_unreachable_server_records_nothing(
    sftp_server: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(sftp_server, monkeypatch)
    cmd("repo", "init")
    recorded_archive(tmp_path, b"x" * 1000)
    with sftp_server.down():
        result = cmd("copy", exit_code=14)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot reach repository {sftp_server.repo}")
    [snap] = cmd.json("ls")
    assert snap["copies"] == []
    assert [c["snapshot_id"] for c in cmd.json("copy")] == ["0a1b2c3d"]


# --- the manifest's restic, started beside the data's, is never left to save a manifest ---------


def locks(server: RepoServer) -> list[str]:
    assert server.storage is not None
    return sorted(p.name for p in (server.storage / "locks").iterdir())


def restic_alive(parent: int) -> list[int]:
    """The restic processes under ``parent`` that still run (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
            state, ppid = rest.split()[:2]
            if comm == "restic" and int(ppid) == parent and state != "Z":
                found.append(int(entry.name))
    return found


def all_reading_stdin(parent: int, count: int) -> bool:
    alive = restic_alive(parent)
    return len(alive) == count and all(reading_stdin(pid) for pid in alive)


def held_until_both_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy's archive is read only once both restic processes (data and manifest) opened
    and locked the repository and wait for their stdin."""
    real = copy_module.file_chunks

    def held(path: Path, progress: Any = None) -> Iterator[bytes]:
        wait_for(lambda: all_reading_stdin(os.getpid(), 2), "both restic processes to read")
        yield from real(path, progress)

    monkeypatch.setattr(copy_module, "file_chunks", held)


def test_a_stream_that_fails_midway_leaves_no_manifest_and_no_lock(
    restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    archive = recorded_archive(tmp_path, os.urandom(3 << 20))
    flip_middle_byte(archive)
    held_until_both_read(monkeypatch)
    result = cmd("copy", exit_code=7)
    assert "cannot be decompressed" in result.stderr or "not valid zstd" in result.stderr
    assert restic_alive(os.getpid()) == []
    assert snapshots(restic_local) == [] and locks(restic_local) == []
    [snap] = cmd.json("ls")
    assert [c["status"] for c in snap["copies"]] == ["failed"]


def test_a_refused_archive_leaves_no_manifest_and_no_lock(
    restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data is in the repository, the archive proves not to be the recorded one: the
    manifest's restic, waiting with its lock, is stopped and saves nothing."""
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    archive = recorded_archive(tmp_path, b"the real dump\n" * 1000)
    archive.write_bytes(zstandard.ZstdCompressor().compress(b"the real dump\n" * 1000))
    real = copy_module._check_source
    waiting: list[int] = []

    def checked(*args: Any) -> None:
        wait_for(lambda: all_reading_stdin(os.getpid(), 1), "the manifest's restic to read")
        waiting.extend(restic_alive(os.getpid()))
        real(*args)

    monkeypatch.setattr(copy_module, "_check_source", checked)
    result = cmd("copy", exit_code=7)
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert "does not match its recorded SHA-256" in line
    assert len(waiting) == 1  # the manifest's restic, still waiting for its bytes
    assert restic_alive(os.getpid()) == []
    assert snapshots(restic_local) == [] and locks(restic_local) == []
    [snap] = cmd.json("ls")
    assert [c["status"] for c in snap["copies"]] == ["failed"]


INTERRUPTED = """
import sys, threading
from snapvol.repo import copy

real = copy.file_chunks

def held(path, progress=None):
    chunks = real(path, progress)
    yield next(chunks)
    print("fed", flush=True)
    threading.Event().wait()  # the rest never comes: snapvol is interrupted first

copy.file_chunks = held
sys.argv = ["snapvol", "copy"]
from snapvol.cli import main
main()
"""


def test_ctrl_c_mid_copy_leaves_no_manifest_and_no_lock(
    restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    recorded_archive(tmp_path, os.urandom(3 << 20))
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "fed\n"
        wait_for(lambda: all_reading_stdin(child.pid, 2), "both restic processes to read")
        child.send_signal(signal.SIGINT)  # to snapvol alone, not to its restic processes
        _out, err = child.communicate(timeout=120)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 130 and "Error: interrupted" in err, err
    assert snapshots(restic_local) == [] and locks(restic_local) == []
    [snap] = cmd.json("ls")
    assert [c["status"] for c in snap["copies"]] == ["failed"]
    cmd("prune", "--keep-last", "5", "--yes")  # nothing holds the repository
    [made] = cmd.json("copy")
    assert made["status"] == "complete"
    tags = [set(s["tags"]) for s in snapshots(restic_local)]
    assert sum("snapvol-manifest" in t for t in tags) == 1 and len(tags) == 2


def test_a_copy_that_ended_while_the_repository_was_listed_is_seen(
    restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing starts before the repository's lock is held: when another run copies (and
    lets the lock go) after the listing was taken, the copy lists again under the lock, and
    neither takes that copy for lost nor sends it again."""
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    recorded_archive(tmp_path, os.urandom(1 << 20))
    real_list, real_open = Restic.snapshots, opening_module.open_target
    listed: list[int] = []

    def first_listing(restic: Restic, *args: Any, **kwargs: Any) -> Any:
        present = real_list(restic, *args, **kwargs)
        listed.append(len(present))
        return present

    def meanwhile(restic: Restic) -> Any:
        wait_for(lambda: listed, "the first listing")
        other = subprocess.run(
            [sys.executable, "-m", "snapvol", "copy"], capture_output=True, text=True
        )
        assert other.returncode == 0, other.stderr
        return real_open(restic)

    monkeypatch.setattr(Restic, "snapshots", first_listing)
    monkeypatch.setattr(opening_module, "open_target", meanwhile)
    result = cmd("copy")
    assert listed == [0, 2]  # empty first, then both restic snapshots of the other run's copy
    assert "nothing to copy" in result.stderr and "no longer in" not in result.stderr
    [snap] = cmd.json("ls")
    assert [c["status"] for c in snap["copies"]] == ["complete"]
    assert len(snapshots(restic_local)) == 2
