"""Copies of snapshots in real restic repositories (local, sftp, s3), and what goes wrong."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapvol.adapters.restic import Restic
from snapvol.adapters.store import Store
from snapvol.pipeline.archive import decompressed_chunks
from snapvol.pipeline.tarscan import ContentDigest, TarScanner
from snapvol.repo import copy as copy_module
from snapvol.repo import manifest
from tests.docker_helpers import PgContainer, TestBed
from tests.integration.test_repo_copy_archive import restic_alive
from tests.integration.test_restic_adapter import wait_for
from tests.servers import RepoServer, ResticLog, use_repository, write_password_file


def use(server: RepoServer, monkeypatch: pytest.MonkeyPatch, password: Path | None = None) -> None:
    use_repository(server, monkeypatch, password=password)


def content_digest(stream: bytes) -> str:
    """The content digest of a tar stream, every file hashed from its bytes (as a restore does)."""
    digest = ContentDigest()
    scanner = TarScanner(lambda _m: None, digest=digest)
    scanner.feed(stream)
    scanner.close()
    return digest.hexdigest()


def raw_of(path: str) -> bytes:
    return b"".join(decompressed_chunks(Path(path)))


def dump(server: RepoServer, restic_snapshot: str, filename: str) -> bytes:
    return server.restic("dump", restic_snapshot, "/" + filename).stdout


def restic_snapshots(server: RepoServer) -> list[dict[str, Any]]:
    return json.loads(server.restic("snapshots", "--json").stdout)


def full_id(server: RepoServer, ref: str | None) -> str:
    """The full id of the one restic snapshot ``ref`` names: snapvol records ids as restic
    printed them (restic 0.14: an 8-digit prefix)."""
    assert ref
    [found] = [s["id"] for s in restic_snapshots(server) if s["id"].startswith(ref)]
    return str(found)


def fill(container: Any, mib: int) -> None:
    code, out = container.exec_run(
        ["sh", "-c", f"head -c {mib}M /dev/urandom > /srv/data/big && echo hi > /srv/data/small"]
    )
    assert code == 0, out


@contextlib.contextmanager
def restic_command_lines() -> Iterator[list[bytes]]:
    """The command lines of every restic process seen while the block runs (what ``ps``
    shows any user)."""
    seen: list[bytes] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    with contextlib.suppress(OSError):
                        line = Path(f"/proc/{entry}/cmdline").read_bytes()
                        if b"restic" in line.split(b"\0")[0] and b"backup" in line:
                            seen.append(line)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def check_copy(server: RepoServer, snap: dict[str, Any], db: Path) -> None:
    """The repository holds exactly the local archive's bytes, and a manifest that decodes to
    the record and its members."""
    [copy] = [c for c in snap["copies"] if c["status"] == "complete"]
    record = Store.open(db, create=False)
    try:
        [row] = record.copies(snapshot_id=snap["id"], status="complete")
        local = record.get(snap["id"])
        members = record.members(snap["id"])
    finally:
        record.close()
    assert local is not None and copy["restic_snapshot"] == row.data_snapshot
    raw = raw_of(snap["path"])
    filename = manifest.data_filename(local)
    assert dump(server, row.data_snapshot, filename) == raw
    assert row.raw_bytes == len(raw)
    if local.kind == "volume":  # the tar stream's content digest, computed here from the bytes
        assert row.raw_sha256 is None and row.content_sha256 == content_digest(raw)
    else:
        assert row.raw_sha256 == hashlib.sha256(raw).hexdigest() and row.content_sha256 is None
    decoded = manifest.decode(
        dump(server, row.manifest_snapshot, manifest.manifest_filename(local))
    )
    assert decoded.snapshot.model_dump(exclude={"pid"}) == local.model_dump(exclude={"pid"})
    assert decoded.members == members
    assert decoded.data == manifest.DataRef(
        row.data_snapshot, filename, row.raw_sha256, len(raw), row.content_sha256
    )
    tags = {s["id"]: set(s["tags"]) for s in restic_snapshots(server)}
    data_tags = tags[full_id(server, row.data_snapshot)]
    assert data_tags == set(manifest.tags_for(local, manifest.DATA))
    assert tags[full_id(server, row.manifest_snapshot)] == set(
        manifest.tags_for(local, manifest.MANIFEST)
    )


def test_a_copy_opens_the_repository_four_times_and_no_more(
    bed: TestBed, restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each restic process opens the repository (key derivation: ~0.6 s here), so a copy runs
    only those it needs: the repository's id, its listing, the data, the manifest; and the
    manifest's is started beside the data's, so that it opens the repository meanwhile."""
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    calls = ResticLog(tmp_path / "wrapper", monkeypatch)
    real = copy_module._check_source
    waiting: list[bytes] = []

    def cmdlines() -> list[bytes]:
        found = []
        for pid in restic_alive(os.getpid()):
            with contextlib.suppress(OSError):
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        return found

    def checked(*args: Any) -> None:  # the data is in: which restic runs still?
        waiting.extend(cmdlines())
        real(*args)

    monkeypatch.setattr(copy_module, "_check_source", checked)
    real_config = Restic.config

    def config(self: Restic) -> Any:  # runs only beside the listing's restic
        wait_for(lambda: any(b"snapshots" in c for c in cmdlines()), "the listing's restic")
        return real_config(self)

    monkeypatch.setattr(Restic, "config", config)
    [made] = cmd.json("copy", snap["id"])
    [manifest_backup] = waiting
    assert b"backup\0" in manifest_backup and b"--tag=snapvol-manifest\0" in manifest_backup
    assert sorted(calls.subcommands()) == ["backup", "backup", "cat", "snapshots"]
    # reading needs no lock (restic 0.14 waits 200 ms after taking one)
    assert sorted(ln.split()[0] for ln in calls.lines()) == [
        "--no-lock",
        "--no-lock",
        "backup",
        "backup",
    ]
    [listed] = cmd.json("ls")
    check_copy(restic_local, listed, tmp_path / "manifests.db")
    assert made["restic_snapshot"] == listed["copies"][0]["restic_snapshot"]


def test_copying_a_snapshot_already_there_writes_nothing_and_leaves_no_lock(
    bed: TestBed, restic_local: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    cmd("copy", snap["id"])

    def snapshot_ids() -> list[str]:  # restic lists snapshots of one time in any order
        return sorted(
            s["id"] for s in json.loads(restic_local.restic("snapshots", "--json").stdout)
        )

    before = snapshot_ids()
    again = cmd("copy", snap["id"])
    assert f"{snap['id']} ({snap['name']}) is already in" in again.stderr
    assert snapshot_ids() == before and len(before) == 2  # its data and its manifest
    assert restic_local.restic("list", "locks", "--no-lock").stdout == b""


@pytest.mark.parametrize("record", ["a file's mode", "the archive's SHA-256"])
def test_a_record_the_archive_does_not_match_is_not_copied(
    bed: TestBed, restic_local: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch, record: str
) -> None:
    """A copy takes each file's SHA-256 from the record, which the archive's own SHA-256 vouches
    for; it still reads every header. A record that no longer describes the archive (a file's
    mode changed in the store), or an archive with no SHA-256 of its own, whose files are then
    hashed again: what the copy would send must restore, or nothing is sent."""
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    fill(container, 1)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    with sqlite3.connect(os.environ["SNAPVOL_DB"]) as db:
        if record == "a file's mode":
            db.execute(
                "UPDATE snapshot_files SET mode = mode + 1 - 2 * (mode & 1) "
                "WHERE snapshot_id = ? AND type = 'file'",
                (snap["id"],),
            )
        else:  # as a snapshot imported from a repository is, and a file's content recorded wrong
            db.execute("UPDATE snapshots SET sha256 = NULL WHERE id = ?", (snap["id"],))
            db.execute(
                "UPDATE snapshot_files SET sha256 = ? WHERE snapshot_id = ? AND type = 'file'",
                ("0" * 64, snap["id"]),
            )

    result = cmd("copy", snap["id"], exit_code=7)
    assert "differs from the record at" in result.stderr.splitlines()[-1], result.stderr
    assert json.loads(restic_local.restic("snapshots", "--json").stdout) == []
    [listed] = cmd.json("ls")
    assert [c["status"] for c in listed["copies"]] == ["failed"]


@pytest.mark.parametrize("backend", ["restic_local", "sftp_server"])
def test_volume_and_logical_snapshots_are_copied_exactly(
    backend: str,
    request: pytest.FixtureRequest,
    bed: TestBed,
    pg: PgContainer,
    cmd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server: RepoServer = request.getfixturevalue(backend)
    use(server, monkeypatch)
    init = cmd.json("repo", "init")
    assert init["repository"] == server.repo and len(init["id"]) == 64
    container, _vol = bed.plain()
    fill(container, 3)
    vol = cmd.json("snapshot", "--volume", "--container", container.name)
    logical = cmd.json("snapshot", "--logical", "--container", pg.name)
    plain = cmd.json("snapshot", "--logical", "--format", "plain", "--container", pg.name)

    copied = cmd.json("copy")
    assert [c["snapshot_id"] for c in copied] == [vol["id"], logical["id"], plain["id"]]
    assert all(c["status"] == "complete" and c["bytes_added"] > 0 for c in copied)
    listed = {s["id"]: s for s in cmd.json("ls")}
    for snap in (vol, logical, plain):
        assert [c["repository"] for c in listed[snap["id"]]["copies"]] == [server.repo]
        check_copy(server, listed[snap["id"]], tmp_path / "manifests.db")
    count = len(restic_snapshots(server))
    assert count == 6

    again = cmd("copy")  # nothing missing: nothing copied
    assert "nothing to copy" in again.stderr
    assert len(restic_snapshots(server)) == count
    assert cmd.json("copy", vol["id"]) == []  # named, yet already there

    newer = cmd.json("snapshot", "--volume", "--container", container.name)
    assert [c["snapshot_id"] for c in cmd.json("copy")] == [newer["id"]]
    assert len(restic_snapshots(server)) == count + 2
    # the same data again: restic deduplicates it against the first copy
    [row] = next(c for c in cmd.json("ls") if c["id"] == newer["id"])["copies"]
    assert row["bytes_added"] < 1 << 20


def test_snapshot_copy_to_s3(
    bed: TestBed, s3_server: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(s3_server, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    fill(container, 2)
    snap = cmd.json("snapshot", "--volume", "--copy", "--container", container.name)
    assert container.reload() or container.status == "running"
    assert [c["status"] for c in snap["copies"]] == ["complete"]
    check_copy(s3_server, snap, tmp_path / "manifests.db")
    # the secret key is nowhere snapvol writes
    secret = s3_server.env["AWS_SECRET_ACCESS_KEY"].encode()
    assert secret not in (tmp_path / "manifests.db").read_bytes()


@pytest.mark.private_server
def test_server_stops_mid_copy_then_the_next_copy_completes(
    bed: TestBed, sftp_server: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(sftp_server, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    fill(container, 40)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    archive = Path(snap["path"])
    before = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert before == snap["sha256"]

    with restic_command_lines() as seen, sftp_server.stops_when_stored(4 << 20) as stopped:
        failed = cmd("copy", exit_code=14)
    assert stopped.is_set()
    assert seen  # restic ran for seconds: the watcher saw it
    password = sftp_server.password_file.read_bytes().strip()
    assert not [ln for ln in seen if password in ln or sftp_server.repo.encode() in ln]
    errors = [ln for ln in failed.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and failed.stderr.count("Traceback") == 0
    assert f"snapshot {snap['id']}" in errors[0] and "kept here, unchanged" in errors[0]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == before
    [listed] = cmd.json("ls")
    assert listed["status"] == "complete"
    assert [c["status"] for c in listed["copies"]] == ["failed"]

    sftp_server.start()
    assert [c["snapshot_id"] for c in cmd.json("copy")] == [snap["id"]]
    [listed] = cmd.json("ls")
    assert sorted(c["status"] for c in listed["copies"]) == ["complete", "failed"]
    check_copy(sftp_server, listed, tmp_path / "manifests.db")
    # only the complete copy has a manifest in the repository
    manifests = [s for s in restic_snapshots(sftp_server) if "snapvol-manifest" in s["tags"]]
    assert len(manifests) == 1


def copies_in(db: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT status, error FROM copies"))


def test_missing_repository_and_wrong_password(
    bed: TestBed, restic_local: RepoServer, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(restic_local, monkeypatch)
    container, _vol = bed.plain()
    fill(container, 1)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)

    missing = cmd("copy", exit_code=14)
    assert missing.stderr.strip().splitlines() == [
        f"Error: no restic repository at {restic_local.repo}: create it with `snapvol repo init`"
    ]
    assert copies_in(tmp_path / "manifests.db") == []

    cmd("repo", "init")
    wrong = write_password_file(tmp_path / "wrong-password")
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(wrong))
    refused = cmd("copy", exit_code=14)
    assert refused.stderr.strip().splitlines() == [
        f"Error: wrong password for repository {restic_local.repo} (or no key found)"
    ]
    assert copies_in(tmp_path / "manifests.db") == []

    # a snapshot that succeeds is kept when its copy cannot be made, and the error says so
    after = cmd("snapshot", "--volume", "--copy", "--container", container.name, exit_code=14)
    [line] = [ln for ln in after.stderr.splitlines() if ln.startswith("Error:")]
    assert "is complete and kept" in line and "wrong password" in line
    listed = cmd.json("ls")
    assert [s["status"] for s in listed] == ["complete", "complete"]
    assert all(s["copies"] == [] for s in listed)
    assert Path(snap["path"]).is_file()

    for secret in (wrong.read_bytes().strip(), restic_local.password_file.read_bytes().strip()):
        assert secret not in (tmp_path / "manifests.db").read_bytes()
        assert secret.decode() not in refused.output + after.output + missing.output


def test_no_repository_given_stops_before_the_snapshot(bed: TestBed, cmd) -> None:
    container, _vol = bed.plain()
    result = cmd("snapshot", "--volume", "--copy", "--container", container.name, exit_code=2)
    assert "no repository: give --repo or set SNAPVOL_REPOSITORY" in result.stderr
    assert "created the manifest store" not in result.stderr
