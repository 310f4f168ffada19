"""The awkward tree of issue 9, built straight into a directory, and its exhaustive fingerprint.

Everything a Linux filesystem holds that a volume backup must bring back exactly: hard-link
groups, sparse files, user xattrs, POSIX ACLs and a file capability (written as raw xattrs, so no
``setfacl``/``setcap`` is needed), set-id, sticky and 000 modes, owners beyond 2^21, times before
1970, after 2038 and with nanoseconds, names that are not UTF-8 or hold a newline, absolute,
relative and dangling symbolic links, a FIFO, a device node, empty directories and a path longer
than PATH_MAX. Needs root.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import struct
import subprocess
from pathlib import Path

MIB = 1 << 20
SPARSE_SIZE = 64 * MIB
DEEP_NAME = b"d" * 200
DEEP_LEVELS = 22  # 22 * 201 bytes: well over PATH_MAX (4096)


def acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL as the kernel's ``system.posix_acl_*`` xattr: (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


UNDEF = 0xFFFFFFFF
ACCESS_ACL = acl((1, 7, UNDEF), (2, 4, 1000), (4, 5, UNDEF), (0x10, 5, UNDEF), (0x20, 4, UNDEF))
DEFAULT_ACL = acl((1, 7, UNDEF), (4, 5, UNDEF), (8, 6, 2000), (0x10, 7, UNDEF), (0x20, 0, UNDEF))
# vfs_cap_data revision 2, effective: cap_net_bind_service (bit 10) permitted
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)

TIMES = {
    "before-1970": -315_360_000_123_456_789,
    "after-2038": 4_102_444_800_999_999_999,
    "nanoseconds": 1_700_000_000_000_000_001,
    "almost-a-second": 1_600_000_000_999_999_999,
}
BEYOND_2262 = 13_569_465_600_123_456_789  # year 2400: more nanoseconds than int64 holds


def _sparse(path: Path, pieces: dict[int, bytes], size: int) -> None:
    with open(path, "wb") as f:
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
        f.truncate(size)


def build(root: Path, *, socket_too: bool = True, deep: bool = True) -> None:
    """Fill the (existing, empty) directory ``root`` with the awkward tree."""
    r = os.fsencode(root)
    (root / "plain.txt").write_text("hola\n")
    (root / "big.bin").write_bytes(os.urandom(3 * MIB + 7))
    # hard-link group of three names, one in a subdirectory
    (root / "sub").mkdir()
    os.link(root / "big.bin", root / "hard-1")
    os.link(root / "big.bin", root / "sub" / "hard-2")
    # sparse files: holes inside and at the end; only a hole; data at the very end
    _sparse(root / "sparse-holes", {0: b"head" * 1024, 20 * MIB: b"middle" * 700}, SPARSE_SIZE)
    _sparse(root / "sparse-empty", {}, SPARSE_SIZE)
    _sparse(root / "sparse-tail", {SPARSE_SIZE - 5000: os.urandom(5000)}, SPARSE_SIZE)
    # extended attributes, ACLs, a capability
    (root / "attrs").write_bytes(b"with attributes\n")
    os.setxattr(root / "attrs", "user.plain", b"value")
    os.setxattr(root / "attrs", "user.binary", b"\0\n\xff\xfe not utf-8 \x00")
    os.setxattr(root / "attrs", "user.empty", b"")
    os.setxattr(root / "attrs", "system.posix_acl_access", ACCESS_ACL)
    (root / "acl-dir").mkdir()
    os.setxattr(root / "acl-dir", "system.posix_acl_default", DEFAULT_ACL)
    os.setxattr(root / "acl-dir", "user.on-a-dir", b"dir value")
    (root / "capable").write_bytes(b"#!/bin/sh\necho bind\n")
    os.chmod(root / "capable", 0o755)
    os.setxattr(root / "capable", "security.capability", CAPABILITY)
    # modes and owners
    (root / "setuid").write_bytes(b"s\n")
    os.chmod(root / "setuid", 0o4755)
    (root / "setgid-dir").mkdir()
    os.chmod(root / "setgid-dir", 0o2775)
    (root / "sticky").mkdir()
    os.chmod(root / "sticky", 0o1777)
    (root / "nothing-allowed").write_bytes(b"000\n")
    os.chmod(root / "nothing-allowed", 0)
    (root / "closed-dir").mkdir()
    (root / "closed-dir" / "inside").write_bytes(b"in a 000 directory\n")
    (root / "big-owner").write_bytes(b"uid and gid beyond 2^21\n")
    os.chown(root / "big-owner", 3_000_000, 2**31 + 5)
    # names
    os.mkdir(r + b"/latin1-\xf1and\xfa")
    with open(r + b"/latin1-\xf1and\xfa/caf\xe9", "wb") as f:
        f.write(b"not utf-8\n")
    with open(r + b"/line\nbreak", "wb") as f:
        f.write(b"a newline in the name\n")
    with open(r + b"/back\\slash \t tab", "wb") as f:
        f.write(b"odd characters\n")
    os.symlink(b"caf\xe9", r + b"/latin1-\xf1and\xfa/link-\xe9")
    # symbolic links: absolute (a tablespace), relative, dangling, to a directory
    (root / "pg_tblspc").mkdir()
    os.symlink("/var/lib/postgresql/tablespaces/ts1", root / "pg_tblspc" / "16384")
    os.symlink("plain.txt", root / "relative")
    os.symlink("sub/../plain.txt", root / "relative-up-and-back")
    os.symlink("no/such/file", root / "dangling")
    os.symlink("sub", root / "to-a-dir")
    os.lchown(root / "relative", 1234, 4321)
    # special files and empty directories
    os.mkfifo(root / "fifo")
    os.chown(root / "fifo", 70, 70)
    os.mknod(root / "null-device", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "empty-dir").mkdir()
    (root / "nested" / "empty" / "dirs").mkdir(parents=True)
    if socket_too:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(root / "service.sock"))
        sock.close()
    if deep:
        _deep(root)
    # times, last: creating entries changes their directories' times
    for name, ns in TIMES.items():
        (root / f"time-{name}").write_bytes(name.encode())
        os.utime(root / f"time-{name}", ns=(ns, ns))
    os.utime(root / "dangling", ns=(TIMES["nanoseconds"],) * 2, follow_symlinks=False)
    (root / "time-year-2400").write_bytes(b"2400")
    stamp = "@{}.{:09d}".format(*divmod(BEYOND_2262, 10**9))  # beyond what os.utime takes
    subprocess.run(["touch", "-d", stamp, str(root / "time-year-2400")], check=True)
    os.chmod(root / "closed-dir", 0)
    os.utime(root / "sub", ns=(TIMES["before-1970"],) * 2)
    os.utime(root / "empty-dir", ns=(TIMES["after-2038"],) * 2)


def _deep(root: Path) -> None:
    """A file whose path is longer than PATH_MAX, made one directory at a time."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEEP_LEVELS):
            os.mkdir(DEEP_NAME, dir_fd=fd)
            child = os.open(DEEP_NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open(b"far-away", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, b"beyond PATH_MAX\n")
        os.close(out)
    finally:
        os.close(fd)


def _xattrs(dir_fd: int, name: bytes) -> tuple[tuple[str, bytes], ...]:
    path = f"/proc/self/fd/{dir_fd}/".encode() + name
    names = os.listxattr(path, follow_symlinks=False)
    return tuple(sorted((k, os.getxattr(path, k, follow_symlinks=False)) for k in names))


def _content(dir_fd: int, name: bytes) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        sha = hashlib.sha256()
        while piece := os.read(fd, MIB):
            sha.update(piece)
        return sha.hexdigest()
    finally:
        os.close(fd)


def fingerprint(root: Path, *, skip_root: bool = True) -> dict[bytes, dict[str, object]]:
    """Every entry below ``root`` by its byte path: type, mode, owner, size, mtime_ns, xattrs,
    link target, device, hard-link group, content hash and allocated blocks (regular files;
    a directory's size and blocks depend on its history, not its content)."""
    entries: dict[bytes, dict[str, object]] = {}
    inodes: dict[tuple[int, int], list[bytes]] = {}
    for top, dirs, files, dir_fd in os.fwalk(os.fsencode(root), follow_symlinks=False):
        rel_dir = os.path.relpath(top, os.fsencode(root))
        for name in dirs + files:
            rel = name if rel_dir == b"." else rel_dir + b"/" + name
            st = os.lstat(name, dir_fd=dir_fd)
            kind = stat.S_IFMT(st.st_mode)
            entry: dict[str, object] = {
                "type": kind,
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns,
                "xattrs": _xattrs(dir_fd, name),
            }
            if stat.S_ISREG(kind):
                entry["size"] = st.st_size
                entry["blocks"] = st.st_blocks
                entry["sha256"] = _content(dir_fd, name)
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(kind):
                entry["target"] = os.readlink(name, dir_fd=dir_fd)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                entry["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            entries[rel] = entry
    for names in inodes.values():
        for name in names:
            entries[name]["links"] = tuple(sorted(names))
    if not skip_root:
        st = os.lstat(root)
        entries[b"."] = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    return entries


def differences(before: dict, after: dict) -> list[str]:
    """Readable differences between two fingerprints (empty when equal)."""
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a != b:
            if a is None or b is None:
                out.append(f"{key!r}: {'missing' if b is None else 'unexpected'}")
            else:
                fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                out.append(
                    f"{key!r}: " + ", ".join(f"{k} {a.get(k)!r}->{b.get(k)!r}" for k in fields)
                )
    return out
