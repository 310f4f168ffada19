"""The host lane's in-process tar, against real files and GNU tar (no Docker)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from snapvol.errors import IntegrityError, OperationFailed
from snapvol.pipeline.members import Member
from snapvol.pipeline.tarscan import TarScanner
from snapvol.volume import hosttar
from tests import fidelity_tree

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners can only be set by root")


def make_tree(root: Path) -> None:
    """One of everything a volume holds, with owners, odd modes and awkward names."""
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(3 * hosttar.CHUNK + 12345))
    (root / "small.txt").write_text("hola\n")
    (root / "empty").write_bytes(b"")
    (root / "deep" / "er").mkdir(parents=True)
    (root / "deep" / "er" / "f").write_bytes(b"x" * 70000)
    (root / "deep" / "er" / "g").write_bytes(os.urandom(hosttar.LEAD))  # leads, after big.bin
    (root / "a").mkdir()
    (root / "a" / "inner").write_text("in a\n")
    (root / "a.txt").write_text("after a/ in tar's order\n")
    (root / ("n" * 150)).write_text("a name longer than ustar's 100 bytes\n")
    os.makedirs(os.fsencode(root) + b"/latin1-\xf1and\xfa")  # not UTF-8
    (root / "link").symlink_to("small.txt")
    (root / "dangling").symlink_to("nowhere/at/all")
    os.link(root / "big.bin", root / "hard.bin")
    os.mkfifo(root / "pipe")
    os.chown(root / "deep" / "er" / "f", 1234, 4321)
    os.lchown(root / "link", 99, 98)
    os.chmod(root / "small.txt", 0o640)
    os.chmod(root / "deep" / "er", 0o2750)
    os.chmod(root / "deep", 0o500)  # its children are created before it gets this mode
    os.utime(root / "small.txt", (1_600_000_000, 1_600_000_000))


def stream(root: Path) -> tuple[bytes, list[Member]]:
    tar = hosttar.DirTar(root)
    return b"".join(tar), tar.members


GNU_TAR_EXACT = ["--format=posix", "--xattrs", "--xattrs-include=*", "--numeric-owner"]


def gnu_tar(root: Path, names: list[str] | None = None) -> bytes:
    """What GNU tar writes when asked to keep everything (nanosecond times, xattrs): the tree
    in name order, or ``names`` alone in their order."""
    order = ["--sort=name", "."] if names is None else ["--no-recursion", "-T", "-"]
    return subprocess.run(
        ["tar", "-C", str(root), *GNU_TAR_EXACT, "-cf", "-", *order],
        input=b"".join(os.fsencode(n) + b"\n" for n in names or ()),
        check=True,
        capture_output=True,
    ).stdout


def scanned(data: bytes) -> list[Member]:
    members: list[Member] = []
    scanner = TarScanner(members.append)
    scanner.feed(data)
    scanner.close()
    return members


def extract(data: bytes, root: Path, check=lambda m: None) -> dict[str, str]:
    root.mkdir(exist_ok=True)
    chunks = [data[i : i + 777_777] for i in range(0, len(data), 777_777)]
    return hosttar.extract(root, chunks, check)


def without_root(members: dict[str, Member]) -> dict[str, Member]:
    return {k: v for k, v in members.items() if k != "."}


@needs_root
def test_round_trip_keeps_every_file_owner_mode_link_and_time(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    data, members = stream(src)
    assert {m.path: m for m in members} == hosttar.scan(src)
    assert scanned(data) == members  # what a snapshot records is what the stream holds

    dst = tmp_path / "dst"
    read_back = extract(data, dst)
    files = {m.path: m.sha256 for m in members if m.type == "file"}
    assert read_back == files  # every file read back from disk as soon as it was written
    assert hosttar.scan(dst, known=read_back) == hosttar.scan(dst) == hosttar.scan(src)
    assert os.stat(dst / "hard.bin").st_ino == os.stat(dst / "big.bin").st_ino
    assert (dst / "deep").stat().st_mode & 0o7777 == 0o500
    assert (dst / "deep" / "er").stat().st_mode & 0o7777 == 0o2750


@needs_root
def test_streams_are_interchangeable_with_gnu_tar(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    ours, members = stream(src)
    paths = [m.path for m in members]
    by_name = [m.path for m in scanned(gnu_tar(src))]
    # Depth first in name order, but in each directory the files of LEAD bytes or more, and
    # the directories holding one, first, biggest first: a small file that grows does not
    # move them in the stream (restic finds their chunks again).
    lead = ["big.bin", "hard.bin", "deep", "deep/er", "deep/er/g", "deep/er/f"]
    assert paths == [".", *lead, *[p for p in by_name if p not in [".", *lead]]]
    assert members[paths.index("hard.bin")].linkname == "./big.bin"
    as_gnu = [p if p == "." else f"./{p}" for p in paths]
    assert scanned(gnu_tar(src, as_gnu)) == members  # same members, same records as GNU tar

    by_gnu = tmp_path / "by-gnu"
    by_gnu.mkdir()
    subprocess.run(
        ["tar", "-C", str(by_gnu), *GNU_TAR_EXACT, "--same-owner", "--sparse", "-xpf", "-"],
        input=ours,
        check=True,
    )
    assert hosttar.scan(by_gnu) == hosttar.scan(src)

    from_gnu = tmp_path / "from-gnu"
    extract(gnu_tar(src), from_gnu)
    assert hosttar.scan(from_gnu) == hosttar.scan(src)


def _crafted(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, content in members:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


@pytest.mark.parametrize("via", ["file", "hardlink"])
def test_extraction_never_goes_through_a_symbolic_link(tmp_path: Path, via: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("not yours\n")
    last = (
        _info("./esc/pwned")
        if via == "file"
        else _info("./pwned", tarfile.LNKTYPE, linkname="./esc/target")
    )
    data = _crafted(
        (_info("./esc", tarfile.SYMTYPE, linkname=str(outside)), b""),
        (last, b"evil\n" if via == "file" else b""),
    )
    with pytest.raises(IntegrityError, match="not a directory in the volume"):
        extract(data, tmp_path / "dst")  # no check at all: the extractor itself refuses
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert not (tmp_path / "dst" / "pwned").exists()


@pytest.mark.parametrize("name", ["./../escape", "/abs-escape", "./a/../../escape"])
def test_extraction_never_climbs_out_of_the_root(tmp_path: Path, name: str) -> None:
    data = _crafted((_info("./a", tarfile.DIRTYPE), b""), (_info(name), b"evil\n"))
    with pytest.raises(IntegrityError, match="would leave the volume"):
        extract(data, tmp_path / "dst")  # no check at all: the extractor itself refuses
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]
    assert not Path("/abs-escape").exists()


def test_a_hard_link_never_reaches_out_of_the_root(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("not yours\n")
    data = _crafted((_info("./h", tarfile.LNKTYPE, linkname="../outside"), b""))
    with pytest.raises(IntegrityError, match="would leave the volume"):
        extract(data, tmp_path / "dst")
    assert os.stat(tmp_path / "outside").st_nlink == 1


def test_a_refused_member_is_never_created(tmp_path: Path) -> None:
    data = _crafted((_info("./ok"), b"fine\n"), (_info("./bad"), b"refused\n"))

    def check(member: Member) -> None:
        if member.path == "bad":
            raise IntegrityError("bad is not in the store")

    with pytest.raises(IntegrityError, match="not in the store"):
        extract(data, tmp_path / "dst", check)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["ok"]


def test_truncated_stream_is_an_integrity_error(tmp_path: Path) -> None:
    data = _crafted((_info("./f"), b"x" * 5000))
    with pytest.raises(IntegrityError, match="truncated"):
        extract(data[:2048], tmp_path / "dst")


def test_a_file_that_changes_while_it_is_read_fails_the_stream(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "growing").write_bytes(b"\0" * (2 * hosttar.CHUNK))
    chunks = iter(hosttar.DirTar(root))
    next(chunks)  # headers: the file has been measured and opened
    with open(root / "growing", "ab") as f:
        f.write(b"more")
    with pytest.raises(OperationFailed, match="changed while it was read"):
        list(chunks)


def test_an_unreadable_volume_is_a_read_error_not_a_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "src"
    (root / "locked").mkdir(parents=True)
    real_listdir = os.listdir

    def listdir(fd: int) -> list[str]:  # what a non-root reader meets in a volume
        if os.readlink(f"/proc/self/fd/{fd}").endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_listdir(fd)

    monkeypatch.setattr(hosttar.os, "listdir", listdir)
    with pytest.raises(OperationFailed, match=r"reading .*locked failed: Permission denied"):
        list(hosttar.DirTar(root))


@needs_root
def test_usage_counts_what_du_and_find_count(tmp_path: Path) -> None:
    from snapvol.volume import hostpath

    src = tmp_path / "src"
    make_tree(src)
    du = subprocess.run(["du", "-s", "-B1", str(src)], capture_output=True, text=True, check=True)
    found = subprocess.run(
        ["find", str(src), "-mindepth", "1"], capture_output=True, check=True
    ).stdout.count(b"\n")
    assert hostpath.usage(src) == (int(du.stdout.split()[0]), found)
    assert hostpath.usage(tmp_path / "missing") == (None, None)


def _without_sockets(prints: dict[bytes, dict]) -> dict[bytes, dict]:
    return {k: v for k, v in prints.items() if v.get("type") != stat.S_IFSOCK}


@needs_root
def test_the_awkward_tree_round_trips_exactly(tmp_path: Path) -> None:
    """Issue 9's tree, read by DirTar and written back by extract: equal in every lstat field,
    xattr, link target, hard-link group, content and allocated block; the socket skipped."""
    src = tmp_path / "src"
    src.mkdir()
    fidelity_tree.build(src)
    before = fidelity_tree.fingerprint(src)
    tar = hosttar.DirTar(src)
    data = b"".join(tar)
    assert tar.skipped == ["service.sock"]
    assert scanned(data) == tar.members  # what a snapshot records is what the stream holds
    assert {m.path: m for m in tar.members} == hosttar.scan(src)

    dst = tmp_path / "dst"
    read_back = extract(data, dst)
    after = fidelity_tree.fingerprint(dst)
    assert fidelity_tree.differences(_without_sockets(before), after) == []
    assert hosttar.scan(dst, known=read_back) == hosttar.scan(src)
    # holes kept: the sparse files use a few blocks, not SPARSE_SIZE
    assert after[b"sparse-empty"]["blocks"] == 0
    assert after[b"sparse-holes"]["blocks"] * 512 < fidelity_tree.MIB


@needs_root
def test_gnu_tar_extracts_our_sparse_files_with_their_holes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fidelity_tree.build(src, socket_too=False, deep=False)
    by_gnu = tmp_path / "by-gnu"
    by_gnu.mkdir()
    subprocess.run(
        ["tar", "-C", str(by_gnu), *GNU_TAR_EXACT, "--same-owner", "--sparse", "-xpf", "-"],
        input=b"".join(hosttar.DirTar(src)),
        check=True,
    )
    before, after = fidelity_tree.fingerprint(src), fidelity_tree.fingerprint(by_gnu)
    for name in (b"sparse-holes", b"sparse-empty", b"sparse-tail", b"big.bin", b"attrs"):
        assert after[name] == before[name]


@needs_root
def test_the_roots_own_acls_and_xattrs_never_leak_into_what_is_restored(tmp_path: Path) -> None:
    """The volume's root is kept, not recreated: a default ACL on it would be inherited by every
    entry created below it, and its xattrs would outlive the restore. Neither is in the archive,
    so the restored tree must not have them."""
    src = tmp_path / "src"
    make_tree(src)
    data, _ = stream(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    try:
        os.setxattr(dst, "system.posix_acl_default", fidelity_tree.DEFAULT_ACL)
        os.setxattr(dst, "user.stale", b"from before the restore")
    except OSError as err:
        pytest.skip(f"this filesystem keeps no ACLs or user xattrs: {err}")
    extract(data, dst)
    assert hosttar.scan(dst) == hosttar.scan(src)
