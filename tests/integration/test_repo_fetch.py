"""Restores from a restic repository: the archive fetched, checked and put back in the backup
directory before the normal restore runs (real restic, real engine, real PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapvol.adapters.restic import Repository, Restic
from snapvol.adapters.store import Store
from snapvol.pipeline import archive
from snapvol.repo import manifest
from tests import fidelity_tree
from tests.docker_helpers import TestBed
from tests.pgdata import fill_demo
from tests.servers import RepoServer


def _volume_dir(bed: TestBed, name: str) -> Path:
    return Path(bed.client.volumes.get(name).attrs["Mountpoint"])


def _restic(server: RepoServer) -> Restic:
    return Restic(
        Repository.configure(
            server.repo, server.password_file, env=server.env, options=server.options
        )
    )


@pytest.fixture
def repo_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point snapvol at a server's repository through its environment, as a user would."""

    def use(server: RepoServer) -> Restic:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("SNAPVOL_REPOSITORY", server.repo)
        monkeypatch.setenv("SNAPVOL_COPY", "no")  # snapshots here; copies when the test says
        monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(server.password_file))
        restic = _restic(server)
        if not restic.exists():
            restic.init()
        return restic

    yield use


def copy_made_by_hand(
    restic: Restic,
    snapshot_id: str,
    *,
    tamper: bool = False,
    replace: tuple[bytes, bytes] | None = None,
) -> None:
    """A copy as SPEC12 lays it out: the raw stream, then its manifest (``tamper``: the
    manifest's SHA-256 is not the data's; ``replace``: the data has these bytes replaced, and
    the manifest's SHA-256 and size are those of the changed data)."""
    store = Store.open(Path(os.environ["SNAPVOL_DB"]), create=False)
    try:
        snap = store.get(snapshot_id)
        assert snap is not None
        members = store.members(snap.id)
    finally:
        store.close()
    sha = hashlib.sha256()
    size = 0

    def chunks() -> Iterator[bytes]:
        nonlocal size
        for chunk in archive.decompressed_chunks(Path(snap.path)):
            if replace is not None:
                chunk = chunk.replace(*replace)
            sha.update(chunk)
            size += len(chunk)
            yield chunk

    filename = manifest.data_filename(snap)
    summary = restic.backup_stream(
        chunks(), filename, tags=manifest.tags_for(snap, manifest.DATA), host=snap.host
    )
    digest = sha.hexdigest()
    if tamper:
        digest = hashlib.sha256(b"not the data").hexdigest()
    ref = manifest.DataRef(summary.snapshot_id, filename, digest, size)
    restic.backup_stream(
        [manifest.encode(snap, members, ref)],
        manifest.manifest_filename(snap),
        tags=manifest.tags_for(snap, manifest.MANIFEST),
        host=snap.host,
    )


def copied(cmd: Any, snapshot_id: str) -> None:
    """A real copy, made by `snapvol copy`."""
    cmd("copy", snapshot_id)


def _gone(snap: dict[str, Any]) -> None:
    Path(snap["path"]).unlink()
    assert not Path(snap["path"]).exists()


def test_volume_snapshot_restores_from_a_local_repository(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    restic = repo_env(restic_local)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    fidelity_tree.build(root, socket_too=False, deep=False)
    before = fidelity_tree.fingerprint(root)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    copied(cmd, snap["id"])
    _gone(snap)
    (root / "added-later").write_text("not in the snapshot")
    subprocess.run(["rm", "-rf", str(root / "dir")], check=False)

    with monkeypatch.context() as m:  # no repository given: the copy is named
        m.delenv("SNAPVOL_REPOSITORY")
        result = cmd("restore", snap["id"], "--yes", exit_code=3)
        assert f"it was copied to {restic.repo.display}: give --repo" in result.stderr
        assert result.stderr.count("\n") == 1

    result = cmd("restore", snap["id"], "--yes", "--json")  # the archive is missing: read
    assert f"read from {restic.repo.display} in one pass" in result.stderr  # the host lane
    assert json.loads(result.stdout)["one_pass"] is True
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []
    assert not Path(snap["path"]).exists()  # no local archive kept

    # The archive fetched and kept by the two-pass path: test_repo_restore_staged.py
    # (a mount point, the endpoint lane).


def test_logical_snapshot_restores_from_sftp_with_from_repo(
    bed: TestBed, cmd: Any, sftp_server: RepoServer, repo_env: Any
) -> None:
    repo_env(sftp_server)
    pg = bed.postgres()
    fill_demo(pg)
    before = pg.dump()
    snap = cmd.json("snapshot", "--logical", "--container", pg.name)
    copied(cmd, snap["id"])
    _gone(snap)
    pg.psql("DELETE FROM pedidos WHERE pedido_id % 2 = 0; CREATE TABLE extra (x int);")
    assert pg.dump() != before

    cmd("restore", snap["id"], "--from-repo", "--yes")
    assert pg.dump() == before
    assert Path(snap["path"]).is_file()


def test_volume_restore_from_sftp(
    bed: TestBed, cmd: Any, sftp_server: RepoServer, repo_env: Any
) -> None:
    repo_env(sftp_server)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    fidelity_tree.build(root, socket_too=False, deep=False)
    before = fidelity_tree.fingerprint(root)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    copied(cmd, snap["id"])
    _gone(snap)
    (root / "added-later").write_text("x")

    cmd("restore", snap["id"], "--yes")
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []


def test_without_a_repository_a_missing_archive_is_refused(bed: TestBed, cmd: Any) -> None:
    container, vol = bed.plain()
    (_volume_dir(bed, vol) / "f").write_text("data")
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    _gone(snap)
    result = cmd("restore", snap["id"], "--yes", exit_code=3)
    assert "missing" in result.stderr
    result = cmd("restore", snap["id"], "--from-repo", "--yes", exit_code=2)
    assert "no repository" in result.stderr


def test_damaged_pack_refuses_before_the_target_is_touched(
    bed: TestBed, cmd: Any, restic_local: RepoServer, repo_env: Any
) -> None:
    repo_env(restic_local)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    (root / "big").write_bytes(os.urandom(3 << 20))
    (root / "small").write_text("kept")
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    copied(cmd, snap["id"])
    _gone(snap)
    (root / "small").write_text("changed after the snapshot")
    current = fidelity_tree.fingerprint(root)
    restic_local.damage_pack()

    result = cmd("restore", snap["id"], "--yes", exit_code=7)
    assert result.stderr.count("Error:") == 1
    assert fidelity_tree.differences(current, fidelity_tree.fingerprint(root)) == []
    container.reload()
    assert container.status == "running"
    backups = Path(snap["path"]).parent
    assert sorted(p.name for p in backups.iterdir()) == []  # no archive, no partial, no safety
    assert [s["id"] for s in cmd.json("ls")] == [snap["id"]]


def test_a_manifest_that_does_not_match_the_data_is_refused(
    bed: TestBed, cmd: Any, restic_local: RepoServer, repo_env: Any
) -> None:
    restic = repo_env(restic_local)
    pg = bed.postgres()
    fill_demo(pg)
    snap = cmd.json("snapshot", "--logical", "--container", pg.name)
    copy_made_by_hand(restic, snap["id"], tamper=True)
    _gone(snap)
    pg.psql("CREATE TABLE extra (x int);")
    current = pg.dump()

    result = cmd("restore", snap["id"], "--yes", exit_code=7)
    assert "SHA-256" in result.stderr and result.stderr.count("Error:") == 1
    assert pg.dump() == current
    assert list(Path(snap["path"]).parent.iterdir()) == []


def test_data_whose_files_differ_from_the_store_is_refused(
    bed: TestBed, cmd: Any, restic_local: RepoServer, repo_env: Any
) -> None:
    """The data and its manifest agree (SHA-256, size), but a file's content is not the one
    the store recorded: the tar scan refuses it before the volume is touched."""
    restic = repo_env(restic_local)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    (root / "f").write_bytes(b"A" * 3000)
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    copy_made_by_hand(restic, snap["id"], replace=(b"A" * 3000, b"B" * 3000))
    _gone(snap)
    (root / "f").write_bytes(b"C")
    current = fidelity_tree.fingerprint(root)

    result = cmd("restore", snap["id"], "--yes", exit_code=7)
    # The fetch's tar scan says where; the one-pass restore (the host lane here) finds it
    # reading its staged copy back, before the volume is touched.
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert "does not match the store's record" in line and "'f'" in line
    assert result.stderr.count("Error:") == 1
    assert fidelity_tree.differences(current, fidelity_tree.fingerprint(root)) == []
    assert list(Path(snap["path"]).parent.iterdir()) == []


def test_a_newer_manifest_that_is_not_the_recorded_copy_is_refused(
    bed: TestBed, cmd: Any, restic_local: RepoServer, repo_env: Any
) -> None:
    """Someone with the password writes a consistent copy of changed data (a plain dump, so no
    file list to compare): the copy this store recorded is the one restored; once that copy is
    gone, the newer one is refused, its manifest not matching the store's record of the copy."""
    restic = repo_env(restic_local)
    pg = bed.postgres()
    pg.psql("CREATE TABLE marca (v text); INSERT INTO marca VALUES ('original-value');")
    snap = cmd.json("snapshot", "--logical", "--format", "plain", "--container", pg.name)
    [made] = cmd.json("copy", snap["id"])
    copy_made_by_hand(restic, snap["id"], replace=(b"original-value", b"tampered-value"))
    _gone(snap)
    pg.psql("UPDATE marca SET v = 'current';")

    cmd("restore", snap["id"], "--yes", "--no-safety-snapshot")
    assert pg.psql("SELECT v FROM marca") == "original-value"

    _gone(snap)
    pg.psql("UPDATE marca SET v = 'current';")
    restic_local.restic("forget", made["restic_snapshot"], made["manifest_snapshot"])
    result = cmd("restore", snap["id"], "--yes", exit_code=7)
    assert "does not match the copy this store recorded" in result.stderr
    assert pg.psql("SELECT v FROM marca") == "current"
    assert list(Path(snap["path"]).parent.iterdir()) == []


def test_wrong_password_is_one_line(
    bed: TestBed,
    cmd: Any,
    restic_local: RepoServer,
    repo_env: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo_env(restic_local)
    container, vol = bed.plain()
    (_volume_dir(bed, vol) / "f").write_text("data")
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    copied(cmd, snap["id"])
    _gone(snap)
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not the password\n")
    wrong.chmod(0o600)
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(wrong))
    result = cmd("restore", snap["id"], "--yes", exit_code=14)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error:")
    assert (_volume_dir(bed, vol) / "f").read_text() == "data"
    result = cmd("ls", "--repo", exit_code=14)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error:")


def test_ls_repo_and_import_rebuild_a_lost_store(
    bed: TestBed, cmd: Any, restic_local: RepoServer, repo_env: Any, tmp_path: Path
) -> None:
    repo_env(restic_local)
    container, vol = bed.plain()
    root = _volume_dir(bed, vol)
    fidelity_tree.build(root, socket_too=False, deep=False)
    before = fidelity_tree.fingerprint(root)
    pg = bed.postgres()
    fill_demo(pg)
    db_before = pg.dump()
    vsnap = cmd.json("snapshot", "--volume", "--container", container.name)
    lsnap = cmd.json("snapshot", "--logical", "--container", pg.name)
    copied(cmd, vsnap["id"])
    copied(cmd, lsnap["id"])
    # The machine is lost: store and backups gone; only the repository is left.
    Path(os.environ["SNAPVOL_DB"]).unlink()
    for p in Path(vsnap["path"]).parent.iterdir():
        p.unlink()

    listed = cmd.json("ls", "--repo")  # no store needed
    assert {s["id"] for s in listed} == {vsnap["id"], lsnap["id"]}
    assert not Path(os.environ["SNAPVOL_DB"]).exists()
    table = cmd("ls", "--repo")
    assert vsnap["name"] in table.stdout and lsnap["name"] in table.stdout

    imported = cmd.json("repo", "import")
    assert sorted(s["id"] for s in imported["imported"]) == sorted([vsnap["id"], lsnap["id"]])
    rebuilt = {s["id"]: s for s in cmd.json("ls")}
    for original in (vsnap, lsnap):
        got = rebuilt[original["id"]]
        for key in (
            "name",
            "kind",
            "container",
            "volume",
            "created_at",
            "raw_bytes",
            "file_count",
            "pg_version",
            "database",
            "format",
            "meta",
        ):
            assert got[key] == original[key], key
        assert got["status"] == "complete" and got["sha256"] is None
    again = cmd.json("repo", "import")  # twice: nothing new, nothing duplicated
    assert again["imported"] == []
    assert len(cmd.json("ls")) == 2

    (root / "added-later").write_text("x")
    cmd("restore", vsnap["id"], "--yes")
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []
    pg.psql("DROP TABLE pedidos;")
    cmd("restore", lsnap["id"], "--yes")
    assert pg.dump() == db_before
    assert json.loads(cmd("ls", "--json").stdout)


@pytest.mark.parametrize("kind", ["volume", "logical"])
def test_a_drill_of_a_snapshot_only_the_repository_holds_fetches_it_first(
    bed: TestBed, cmd: Any, restic_local: RepoServer, repo_env: Any, kind: str
) -> None:
    """The archive is gone here (a new machine, a lost disk): without a repository the drill
    says where the copy is; with one, the archive is fetched, checked, and drilled."""
    repo_env(restic_local)
    pg = bed.postgres()
    fill_demo(pg)
    snap = cmd.json("snapshot", f"--{kind}", "--container", pg.name)
    copied(cmd, snap["id"])
    _gone(snap)
    without = {k: v for k, v in os.environ.items() if k != "SNAPVOL_REPOSITORY"}
    refused = subprocess.run(
        [sys.executable, "-m", "snapvol", "drill", snap["id"]],
        env=without,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 3, refused.stderr  # not found
    assert f"it was copied to {restic_local.repo}: give --repo" in refused.stderr

    drill = cmd.json("drill", snap["id"])
    assert drill["ok"] is True, drill
    assert drill["counts"]["pc_db"]["public.pedidos"] == int(
        pg.psql("SELECT count(*) FROM pedidos")
    )
    assert Path(snap["path"]).is_file()  # fetched, and the record names it
    cmd("verify", snap["id"])
