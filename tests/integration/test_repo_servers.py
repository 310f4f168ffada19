"""The repository servers the copy tests run against work: real restic reaches each one.

restic itself (no snapvol code) makes a repository, backs up a stream and dumps it back, on a
local path, over SFTP to sshd, over S3 to SeaweedFS and over REST to rclone, all on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.servers import BACKENDS, RepoServer, ServerError, ServerPool, listening


def payload(size: int, seed: int) -> bytes:
    """Incompressible bytes with a compressible stretch, like a tar stream of a database."""
    rng = random.Random(seed)
    return rng.randbytes(size // 2) + b"snapvol\0" * (size // 16) + rng.randbytes(size // 4)


def backup_and_dump(server: RepoServer, data: bytes, name: str = "volume.tar") -> str:
    """`restic backup --stdin` then `restic dump` of the same snapshot; returns its id."""
    out = server.restic("backup", "--json", "--stdin", "--stdin-filename", name, input=data)
    summary = [json.loads(line) for line in out.stdout.splitlines() if line.strip()][-1]
    snapshot_id = summary["snapshot_id"]
    dumped = server.restic("dump", snapshot_id, f"/{name}").stdout
    assert dumped == data
    return str(snapshot_id)


@pytest.mark.parametrize("backend", BACKENDS)
def test_restic_round_trip(backend: str, request: pytest.FixtureRequest) -> None:
    server: RepoServer = request.getfixturevalue(
        {"local": "restic_local", "sftp": "sftp_server", "s3": "s3_server", "rest": "rest_server"}[
            backend
        ]
    )
    assert server.backend == backend
    server.restic("init")
    # restic 0.14 makes format 2 repositories: compression is there for the copies.
    config = json.loads(server.restic("cat", "config").stdout)
    assert config["version"] == 2

    first, second = payload(3 << 20, 1), payload(1 << 20, 2)
    id1 = backup_and_dump(server, first)
    id2 = backup_and_dump(server, second, "db.dump")
    # Both snapshots are there and each still dumps its own bytes.
    snaps = json.loads(server.restic("snapshots", "--json").stdout)
    # restic 0.14 reports the short id in `backup --json`.
    assert sorted(s["short_id"] for s in snaps) == sorted([id1, id2])
    assert server.restic("dump", id1, "/volume.tar").stdout == first
    server.restic("check", "--read-data")


def test_repo_server_parametrizes_every_backend(repo_server: RepoServer) -> None:
    """`repo_server` hands out each backend in turn, ready for `restic init`."""
    assert repo_server.backend in BACKENDS
    repo_server.restic("init")
    backup_and_dump(repo_server, payload(64 << 10, 3))


@pytest.mark.parametrize("fixture", ["sftp_server", "s3_server", "rest_server"])
def test_server_listens_on_loopback_only(fixture: str, request: pytest.FixtureRequest) -> None:
    server: RepoServer = request.getfixturevalue(fixture)
    assert server.process is not None
    addresses = listening(server.process.pid)
    assert addresses, "the server listens nowhere"
    assert {host for host, _ in addresses} == {"127.0.0.1"}, addresses


@pytest.mark.private_server
@pytest.mark.parametrize("fixture", ["sftp_server", "s3_server", "rest_server"])
def test_server_stops_and_starts_with_its_data(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """A test can take the server away (restic fails) and bring it back with the same data."""
    server: RepoServer = request.getfixturevalue(fixture)
    server.restic("init")
    data = payload(1 << 20, 4)
    snapshot_id = backup_and_dump(server, data)
    assert server.process is not None
    pid = server.process.pid
    with server.down():
        assert not server.process.running
        assert not os.path.exists(f"/proc/{pid}")
        # Opening a repository whose server is gone fails at once (no retries) on every backend.
        down = server.restic("snapshots", check=False)
        assert down.returncode != 0
        # (sftp: ssh says "Connection refused", which restic may not pass on; then it says the
        # session could not start, which snapvol reads as unreachable all the same)
        said = down.stderr.lower()
        assert b"connection refused" in said or b"unable to start the sftp session" in said
    assert server.process.running
    assert server.restic("dump", snapshot_id, "/volume.tar").stdout == data


def test_sftp_reached_by_sftp_command_option(sftp_server: RepoServer) -> None:
    """Without the ssh wrapper on PATH, `-o sftp.command=ssh -F ...` reaches the same server."""
    sftp_server.restic("init")
    data = payload(256 << 10, 5)
    snapshot_id = backup_and_dump(sftp_server, data)
    env = sftp_server.restic_env()
    env["PATH"] = os.environ["PATH"]
    argv = ["restic", "-r", sftp_server.repo, *sftp_server.options]
    result = subprocess.run(
        [*argv, "dump", snapshot_id, "/volume.tar"],
        capture_output=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == data


@pytest.mark.private_server
def test_sftp_refuses_a_stranger_key(sftp_server: RepoServer) -> None:
    """The key made for the test is what lets restic in: without it sshd says no."""
    sftp_server.restic("init")
    key = sftp_server.password_file.parent / "client_key"
    key.rename(key.with_name("elsewhere"))
    result = sftp_server.restic("snapshots", check=False)
    assert result.returncode != 0


@pytest.mark.private_server
def test_sftp_server_dies_mid_backup(sftp_server: RepoServer) -> None:
    """The server killed by the backup's own progress: restic fails, the repository is intact,
    and once the server is back a new backup completes."""
    sftp_server.restic("init")
    data = payload(48 << 20, 6)
    with sftp_server.stops_when_stored(4 << 20) as stopped:
        broken = sftp_server.restic(
            "backup", "--stdin", "--stdin-filename", "volume.tar", input=data, check=False
        )
    assert stopped.is_set()
    assert broken.returncode != 0
    sftp_server.start()
    assert json.loads(sftp_server.restic("snapshots", "--json").stdout) == []
    backup_and_dump(sftp_server, data)
    # The killed backup left its lock behind: restic 0.14 refuses exclusive commands (check,
    # forget, prune) until `unlock` removes the stale one.
    assert sftp_server.restic("check", check=False).returncode != 0
    sftp_server.restic("unlock")
    sftp_server.restic("check", "--read-data")


def test_damaged_pack_is_found_by_check(repo_server: RepoServer) -> None:
    """`damage_pack` flips a byte in a stored pack on every backend: `check` alone (metadata)
    passes, `check --read-data` reports it, and `dump` of that data fails instead of lying."""
    repo_server.restic("init")
    data = payload(2 << 20, 7)
    snapshot_id = backup_and_dump(repo_server, data)
    name = repo_server.damage_pack()
    assert name.startswith("data/")
    repo_server.restic("check")
    read = repo_server.restic("check", "--read-data", check=False)
    assert read.returncode != 0
    assert name.split("/")[-1][:8].encode() in read.stdout + read.stderr
    dumped = repo_server.restic("dump", snapshot_id, "/volume.tar", check=False)
    assert dumped.returncode != 0


@contextmanager
def holding_a_lock(server: RepoServer) -> Iterator[None]:
    """Inside the block a `restic backup --stdin` waits for input, holding its lock."""
    argv = ["restic", "-r", server.repo, *server.options, "backup", "--stdin"]
    backup = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=server.restic_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while not server.restic("list", "locks", "--no-lock").stdout.strip():
            assert backup.poll() is None, "the backup ended before it locked"
            assert time.monotonic() < deadline, "the backup never took its lock"
            time.sleep(0.2)
        yield
    finally:
        backup.kill()
        backup.wait()


@pytest.mark.parametrize("backend", ["sftp", "s3", "rest"])
def test_repositories_on_a_shared_server_are_apart(
    backend: str, server_pool: ServerPool, tmp_path: Path
) -> None:
    """Tests share one server per backend, never a repository: each gets a fresh, empty one
    with its own password, and what happens in one is invisible from the other."""
    first = server_pool.repository(backend, tmp_path / "first")
    second = server_pool.repository(backend, tmp_path / "second")
    try:
        assert first.process is second.process
        assert first.repo != second.repo
        assert first.password_file.read_bytes() != second.password_file.read_bytes()
        first.restic("init")
        data = payload(256 << 10, 8)
        backup_and_dump(first, data)
        # The second repository does not exist yet, whatever the first holds.
        assert second.restic("snapshots", check=False).returncode != 0
        second.restic("init")
        assert json.loads(second.restic("snapshots", "--json").stdout) == []
        # A lock held in the second (a backup waiting for its input) does not reach the first:
        # `check` needs an exclusive lock.
        with holding_a_lock(second):
            first.restic("check")
        assert len(json.loads(first.restic("snapshots", "--json").stdout)) == 1
    finally:
        second.close()
        first.close()
    # Closing a repository leaves the shared server running for the next test.
    assert first.process is not None and first.process.running


def test_a_shared_server_refuses_to_be_stopped(sftp_server: RepoServer) -> None:
    """A test that would stop the shared server is told to ask for a private one instead."""
    assert sftp_server.shared
    for action in (sftp_server.stop, sftp_server.start):
        with pytest.raises(ServerError, match="private_server"):
            action()
    with pytest.raises(ServerError, match="private_server"), sftp_server.stops_when_stored(1):
        pass
    assert sftp_server.process is not None and sftp_server.process.running


@pytest.mark.private_server
def test_a_private_server_is_the_test_s_own(
    sftp_server: RepoServer, server_pool: ServerPool, tmp_path: Path
) -> None:
    """A test marked `private_server` gets a server nobody else uses."""
    assert not sftp_server.shared
    shared = server_pool.repository("sftp", tmp_path / "shared")
    try:
        assert sftp_server.process is not shared.process
    finally:
        shared.close()
