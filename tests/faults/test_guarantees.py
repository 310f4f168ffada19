"""Guarantees 3 to 7: locking, disk full, hostile archives and stores, bad input, secrets."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from snapvol.adapters.store import Snapshot, Store
from snapvol.pipeline.members import Member
from snapvol.pipeline.tarscan import TarScanner
from tests.docker_helpers import TestBed
from tests.faults.procs import big_postgres, send, snapvol_process, wait_for_partial


def test_one_operation_per_container_and_ls_still_works(
    bed: TestBed, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAPVOL_BACKUP_DIR", "backups")  # relative, as the default is
    pg = big_postgres(bed)
    first = cmd.json("snapshot", "--volume", "--container", pg.name, "--level", "1")
    proc = snapvol_process("snapshot", "--volume", "--container", pg.name, "--level", "19")
    partial = wait_for_partial(tmp_path / "backups")

    refused = cmd("snapshot", "--volume", "--container", pg.name, exit_code=9)
    line = refused.stderr.strip()
    assert line.startswith("Error: another snapvol operation is running on " + pg.name)
    assert "snapshot --volume" in line and f"pid {proc.pid}" in line
    cmd("restore", first["id"], "--yes", exit_code=9)
    listed = cmd.json("ls")  # reading is never blocked
    assert {s["status"] for s in listed} == {"complete", "in_progress"}
    assert partial.exists()  # and the running snapshot's partial file is not taken for a leftover

    code, _ = send(proc, signal.SIGTERM)
    assert code != 0
    # The lock went with the process: the next operation runs.
    again = cmd.json("snapshot", "--volume", "--container", pg.name, "--level", "1")
    assert again["status"] == "complete"


@pytest.fixture
def small_fs(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "snapvol-test", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_mid_snapshot(bed: TestBed, cmd, small_fs: Path, monkeypatch) -> None:
    pg = bed.postgres()
    pg.psql("CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
    monkeypatch.setenv("SNAPVOL_BACKUP_DIR", str(small_fs))
    result = cmd("snapshot", "--volume", "--container", pg.name, exit_code=12)
    assert result.stderr.strip().startswith("Error: no space left in ")
    assert "partial archive was removed" in result.stderr
    assert list(small_fs.iterdir()) == []
    [snap] = cmd.json("ls")
    assert snap["status"] == "failed" and "no space left" in snap["error"]
    assert pg.status == "running"
    pg.wait_ready()


def _evil_archive(tmp_path: Path, kind: str) -> tuple[Path, list[Member]]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(info: tarfile.TarInfo, data: bytes = b"") -> None:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        root = tarfile.TarInfo(".")
        root.type = tarfile.DIRTYPE
        add(root)
        add(tarfile.TarInfo("innocent.txt"), b"hola\n")
        evil = tarfile.TarInfo(
            {
                "absolute": "/etc/snapvol-evil",
                "dotdot": "../../escape",
                "symlink": "link",
                "below-a-link": "esc/passwd",
                "hardlink": "hard",
            }[kind]
        )
        if kind == "symlink":
            evil.type, evil.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        elif kind == "below-a-link":  # an absolute link is data; writing through it is not
            esc = tarfile.TarInfo("esc")
            esc.type, esc.linkname = tarfile.SYMTYPE, "/etc"
            add(esc)
        elif kind == "hardlink":
            evil.type, evil.linkname = tarfile.LNKTYPE, "../outside"
        add(evil, b"x" if kind in ("absolute", "dotdot", "below-a-link") else b"")
    raw = buf.getvalue()
    members: list[Member] = []
    scanner = TarScanner(members.append)
    scanner.feed(raw)
    path = tmp_path / f"evil-{kind}.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    return path, members


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "below-a-link", "hardlink"])
def test_archive_that_would_escape_the_volume_is_refused_untouched(
    bed: TestBed, cmd, tmp_path: Path, kind: str
) -> None:
    container, vol = bed.plain()
    container.exec_run(["sh", "-c", "echo keep > /srv/data/precious"])
    path, members = _evil_archive(tmp_path, kind)
    store = Store.open(tmp_path / "manifests.db")
    data = path.read_bytes()
    store.add(
        Snapshot(
            id="e0e0e0e0",
            name="evil",
            kind="volume",
            container=container.name,
            container_id=container.id,
            volume=vol,
            path=str(path),
        )
    )
    store.complete(
        "e0e0e0e0",
        members,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        raw_bytes=sum(m.size for m in members),
    )
    store.close()

    result = cmd("restore", "evil", "--yes", exit_code=7)
    assert "would land outside the volume" in result.stderr
    assert "nothing was changed" in result.stderr
    _code, out = container.exec_run(["sh", "-c", "ls -A /srv/data; cat /srv/data/precious"])
    assert out.decode().split() == ["precious", "keep"]
    assert len(cmd.json("ls")) == 1  # no safety snapshot: nothing was even stopped
    container.reload()
    assert container.status == "running"


@pytest.mark.parametrize("content", [b"this is not a database at all\n" * 100, "sqlite-other"])
def test_foreign_or_corrupt_store_is_refused_and_never_overwritten(
    cmd, tmp_path: Path, content
) -> None:
    db = tmp_path / "manifests.db"
    if content == "sqlite-other":
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
            conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
        conn.close()
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    for args in (["ls"], ["restore", "abc", "--yes"], ["snapshot", "--volume"]):
        result = cmd(*args, exit_code=6)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "not a snapvol manifest store" in result.stderr
    assert db.read_bytes() == before


def test_bad_input_gets_one_clear_line(bed: TestBed, cmd, tmp_path: Path, monkeypatch) -> None:
    store = Store.open(tmp_path / "manifests.db")
    for sid in ("abcd0001", "abcd0002"):
        store.add(Snapshot(id=sid, name=f"s-{sid}", kind="volume", container="x", path="/nope"))
    store.close()

    def error(*args: str, code: int) -> str:
        result = cmd(*args, exit_code=code)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        return lines[0]

    assert "no snapshot with id or name 'zzzz'" in error("restore", "zzzz", "--yes", code=3)
    assert "matches several snapshots" in error("restore", "abcd", "--yes", code=2)
    assert "4 or more hex digits" in error("restore", "abc", "--yes", code=3)
    assert "is in_progress, not complete" in error("restore", "abcd0001", "--yes", code=7)
    assert "invalid snapshot name" in error("snapshot", "--volume", "--name", "../x", code=2)
    assert "invalid snapshot name" in error("snapshot", "--volume", "--name", ".hidden", code=2)
    assert "no container named" in error("snapshot", "--volume", "--container", "nope-x", code=3)
    pg = bed.postgres()
    assert "no volume named 'nope-vol'" in error(
        "snapshot", "--volume", "--container", pg.name, "--volume-name", "nope-vol", code=3
    )
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert "cannot reach the Docker engine" in error(
        "snapshot", "--volume", "--container", pg.name, code=4
    )


def test_permission_denied_on_the_docker_socket(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run snapvol as an unprivileged user")
    work = Path("/tmp") / f"snapvol-test-nobody-{os.getpid()}"
    work.mkdir(mode=0o777, exist_ok=True)
    os.chmod(work, 0o777)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPVOL_", "DOCKER_"))}
    env.update(
        SNAPVOL_DB=str(work / "m.db"),
        SNAPVOL_BACKUP_DIR=str(work / "b"),
        SNAPVOL_RUN_DIR=str(work / "run"),
        HOME=str(work),
    )
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(
        [*as_nobody, sys.executable, "-c", "import snapvol.cli, docker"],
        capture_output=True,
        env=env,
        cwd=work,
        timeout=60,
    )
    if probe.returncode != 0:
        subprocess.run(["rm", "-rf", str(work)], check=False)
        pytest.skip("this checkout or its venv is not readable by an unprivileged user")
    result = subprocess.run(
        [*as_nobody, sys.executable, "-m", "snapvol", "snapshot", "--volume", "--container", "x"],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=60,
    )
    subprocess.run(["rm", "-rf", str(work)], check=False)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip() == (
        "Error: permission denied on the Docker socket: run as a user in the 'docker' group "
        "or as root"
    )


def test_secrets_never_stored_or_printed_and_files_are_private(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    pg = bed.postgres()
    snap = cmd("snapshot", "--volume", "--container", pg.name, "--json")
    restored = cmd("restore", "--yes", "--json", __import__("json").loads(snap.stdout)["id"])
    listed = cmd("ls", "--json")
    secret = pg.password.encode()
    for text in (snap.stdout, snap.stderr, restored.stdout, restored.stderr, listed.stdout):
        assert pg.password not in text
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.name.endswith(".tar.zst"):
            assert secret not in path.read_bytes(), path  # store, WAL, watchdog logs, locks
    assert (tmp_path / "manifests.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
    for archive in (tmp_path / "backups").iterdir():
        assert archive.stat().st_mode & 0o777 == 0o600
