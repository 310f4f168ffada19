"""Looking inside snapshots (issue 13, item 4): `show --files`, `diff A B`, `extract`; the
awkward tree of tests/fidelity_tree.py, compared whole."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests import fidelity_tree
from tests.docker_helpers import PgContainer, TestBed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds the tree as root")


def _volume_dir(bed: TestBed, name: str) -> Path:
    return Path(bed.client.volumes.get(name).attrs["Mountpoint"])


def _snapshot(cmd, container: str) -> dict:
    cmd("snapshot", "--volume", "--container", container, "--json")
    return cmd.json("ls")[0]


def _no_sockets(prints: dict[bytes, dict]) -> dict[bytes, dict]:
    return {k: v for k, v in prints.items() if v["type"] != stat.S_IFSOCK}


def test_diff_lists_exactly_what_changed_between_two_snapshots(bed: TestBed, cmd) -> None:
    container, vol = bed.plain(mount="/srv/data")
    root = _volume_dir(bed, vol)
    fidelity_tree.build(root, deep=False)
    a = _snapshot(cmd, container.name)

    (root / "plain.txt").write_text("adiós\n")  # content (and mtime)
    os.chmod(root / "setuid", 0o755)  # mode only
    os.utime(root / "setuid", ns=(os.lstat(root / "setuid").st_mtime_ns,) * 2)
    os.remove(root / "fifo")
    with open(os.fsencode(root) + b"/new\nline-\xff", "wb") as f:
        f.write(b"added\n")
    os.setxattr(root / "attrs", "user.plain", b"other")
    os.utime(root, ns=(1, 1))  # the root's own time: keep its change out of the way
    b = _snapshot(cmd, container.name)

    found = cmd.json("diff", a["id"], b["id"])
    assert found["from"] == a["id"] and found["to"] == b["id"]
    assert found["added"] == [os.fsdecode(b"new\nline-\xff")]
    assert found["removed"] == ["fifo"]
    changed = {c["path"]: c["what"] for c in found["changed"]}
    assert changed.pop("plain.txt") == ["content", "mtime"]
    assert changed.pop("setuid") == ["mode"]
    assert changed.pop("attrs") == ["xattrs"]
    assert set(changed) <= {"."}  # the root changed as entries came and went

    text = cmd("diff", a["id"], b["id"])
    assert "+ new\\nline-\\xff" in text.stdout.splitlines()  # one path, one line
    assert "- fifo" in text.stdout.splitlines()
    assert "M setuid  (mode)" in text.stdout.splitlines()
    assert "1 added, 1 removed" in text.stderr
    assert cmd.json("diff", b["id"], b["id"]) == {
        "from": b["id"],
        "to": b["id"],
        "added": [],
        "removed": [],
        "changed": [],
    }


def test_extract_writes_the_whole_tree_exactly_and_touches_no_container(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    container, vol = bed.plain(mount="/srv/data")
    root = _volume_dir(bed, vol)
    fidelity_tree.build(root)
    snap = _snapshot(cmd, container.name)
    container.reload()
    started = container.attrs["State"]["StartedAt"]
    before = _no_sockets(fidelity_tree.fingerprint(root))

    out = tmp_path / "out"
    done = cmd("extract", snap["id"], "--to", str(out), "--json")
    assert "each checked against its recorded SHA-256" in done.stderr
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(out)) == []
    container.reload()
    assert container.status == "running" and container.attrs["State"]["StartedAt"] == started

    again = cmd("extract", snap["id"], "--to", str(out), exit_code=2)
    assert "not empty" in again.stderr
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(out)) == []


def test_extract_of_some_paths_brings_them_their_parents_and_their_hard_links(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    container, vol = bed.plain(mount="/srv/data")
    root = _volume_dir(bed, vol)
    fidelity_tree.build(root, deep=False)
    snap = _snapshot(cmd, container.name)
    out = tmp_path / "some"
    latin = os.fsdecode(b"latin1-\xf1and\xfa")
    cmd("extract", snap["id"], "sub/hard-2", f"/{latin}", "--to", str(out))

    every = fidelity_tree.fingerprint(root)
    got = fidelity_tree.fingerprint(out)
    # sub/hard-2 is a hard link to big.bin, which comes along (the link needs it)
    want = {b"sub", b"sub/hard-2", b"big.bin", *(k for k in every if k.startswith(b"latin1-"))}
    assert set(got) == want
    for key in want - {b"sub/hard-2", b"big.bin"}:
        assert got[key] == every[key], key
    for key in (b"sub/hard-2", b"big.bin"):  # one inode here, of two names
        assert got[key]["sha256"] == every[key]["sha256"]
        assert got[key]["links"] == (b"big.bin", b"sub/hard-2")

    missing = cmd("extract", snap["id"], "no/such/thing", "--to", str(tmp_path / "x"), exit_code=2)
    assert "holds no 'no/such/thing'" in missing.stderr
    assert not (tmp_path / "x").exists()


def test_extract_refuses_a_tampered_archive_and_leaves_nothing(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    container, vol = bed.plain(mount="/srv/data")
    (_volume_dir(bed, vol) / "file").write_bytes(os.urandom(100_000))
    snap = _snapshot(cmd, container.name)
    archive = Path(snap["path"])
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    refused = cmd("extract", snap["id"], "--to", str(tmp_path / "out"), exit_code=7)
    assert "does not match its recorded SHA-256" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_show_files_lists_them_as_tar_does(bed: TestBed, cmd) -> None:
    container, vol = bed.plain(mount="/srv/data")
    root = _volume_dir(bed, vol)
    (root / "sub").mkdir()
    (root / "sub" / "f").write_bytes(b"12345")
    os.symlink("sub/f", root / "link")
    snap = _snapshot(cmd, container.name)
    shown = cmd("show", snap["id"], "--files").stdout.splitlines()
    rows = {line.split()[-1]: line.split() for line in shown if line.startswith(("-", "d", "l"))}
    assert rows["sub/f"][:3] == ["-rw-r--r--", "0/0", "5"]
    assert rows["sub"][0].startswith("d")
    [link] = [line for line in shown if line.startswith("l")]
    assert link.split()[-3:] == ["link", "->", "sub/f"]
    files = {f["path"]: f for f in cmd.json("show", snap["id"], "--files")["files"]}
    assert files["sub/f"]["size"] == 5 and files["link"]["linkname"] == "sub/f"
    assert set(files) == {".", "sub", "sub/f", "link"}


def test_extract_of_a_logical_snapshot_writes_its_dump(bed: TestBed, cmd, tmp_path: Path) -> None:
    pg: PgContainer = bed.postgres()
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    cmd("snapshot", "--logical", "--container", pg.name)
    snap = cmd.json("ls")[0]
    done = cmd.json("extract", snap["id"], "--to", str(tmp_path / "dumps"))
    dump = Path(done["to"])
    assert dump.name == f"{snap['name']}.{snap['id']}.dump"
    raw = subprocess.run(["zstd", "-dc", snap["path"]], check=True, capture_output=True).stdout
    assert dump.read_bytes() == raw and done["bytes"] == len(raw)
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    again = cmd("extract", snap["id"], "--to", str(tmp_path / "dumps"), exit_code=2)
    assert "never overwrites" in again.stderr
    assert cmd("extract", snap["id"], "x", "--to", str(tmp_path), exit_code=2)
    shutil.rmtree(tmp_path / "dumps")
