"""The record of one archive member: what a tar stream held, what the store keeps of it, and the
checks every restore applies to it before anything is written.

The tar reader (``tarscan``), the host lane (``volume.hosttar``) and the manifest store all speak
``Member``; none of them needs another's code to do so. ``as_row``/``from_row`` are the one
place that says how a member becomes a row of the store's ``snapshot_files`` table and back.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

# Member types (tar(5) names them by one-byte flags: tarscan.TYPEFLAGS).
REGULAR = "file"
HARDLINK = "hardlink"
SYMLINK = "symlink"
DIRECTORY = "dir"
FIFO = "fifo"
CHARDEV = "chardev"
BLOCKDEV = "blockdev"

Xattrs = tuple[tuple[str, bytes], ...]  # (name, value), sorted by name
CAPABILITY = "security.capability"


@dataclass(frozen=True)
class Member:
    """One archive member as recorded in the manifest store.

    Names are bytes on disk: ``path`` and ``linkname`` hold them as ``os.fsdecode`` does
    (undecodable bytes as lone surrogates), so ``os.fsencode`` gives the exact bytes back.
    """

    path: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    linkname: str = ""
    sha256: str | None = None
    xattrs: Xattrs = ()
    devmajor: int = 0
    devminor: int = 0

    @property
    def mtime(self) -> int:
        """Whole seconds (floor), as a ustar header holds them."""
        return self.mtime_ns // 10**9


def normalize(name: str) -> str:
    """Member name relative to the archive root: ``./a/b/`` -> ``a/b``; the root itself is ``.``."""
    stripped = name.rstrip("/")
    while stripped.startswith("./"):
        stripped = stripped[2:]
    return stripped or "."


# --- the stored form ------------------------------------------------------------------------------
# SQLite text is UTF-8 and names are bytes: a name that is not UTF-8 is kept exactly in a
# ``*_raw`` BLOB beside a readable form. Times are whole seconds plus the nanoseconds within them
# (any time fits SQLite's integers). Extended attributes are JSON: ``[[name, base64 value], ...]``.


def _name_columns(name: str) -> tuple[str, bytes | None]:
    """A name as stored: UTF-8 text, or a readable form and the exact bytes."""
    try:
        name.encode("utf-8")
        return name, None
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        return raw.decode("utf-8", "backslashreplace"), raw


def _name_from(text: str, raw: bytes | None) -> str:
    return os.fsdecode(raw) if raw is not None else text


def as_row(m: Member) -> dict[str, Any]:
    """The member as the store's columns hold it (``from_row`` reads it back exactly)."""
    path, path_raw = _name_columns(m.path)
    linkname, linkname_raw = _name_columns(m.linkname)
    return {
        "path": path,
        "path_raw": path_raw,
        "type": m.type,
        "size": m.size,
        "mode": m.mode,
        "uid": m.uid,
        "gid": m.gid,
        "mtime": m.mtime,
        "mtime_nsec": m.mtime_ns % 10**9 or None,
        "linkname": linkname,
        "linkname_raw": linkname_raw,
        "sha256": m.sha256,
        # ensure_ascii: a name with undecodable bytes (lone surrogates) survives as \udcXX
        "xattrs": json.dumps([[k, base64.b64encode(v).decode()] for k, v in m.xattrs])
        if m.xattrs
        else None,
        "devmajor": m.devmajor or None,
        "devminor": m.devminor or None,
    }


ROW_COLUMNS = frozenset(as_row(Member(".", DIRECTORY, 0, 0, 0, 0, 0)))
"""The columns ``as_row`` fills: the store's table holds these (and its own keys)."""


def from_row(row: Mapping[str, Any]) -> Member:
    """The member a row written from ``as_row`` holds (absent optional columns: their default)."""
    return Member(
        path=_name_from(row["path"], row.get("path_raw")),
        type=row["type"],
        size=row["size"],
        mode=row["mode"],
        uid=row["uid"],
        gid=row["gid"],
        mtime_ns=row["mtime"] * 10**9 + (row.get("mtime_nsec") or 0),
        linkname=_name_from(row.get("linkname", ""), row.get("linkname_raw")),
        sha256=row.get("sha256"),
        xattrs=tuple(
            (key, base64.b64decode(value)) for key, value in json.loads(row.get("xattrs") or "[]")
        ),
        devmajor=row.get("devmajor") or 0,
        devminor=row.get("devminor") or 0,
    )


# --- what a restore refuses -----------------------------------------------------------------------


def unsafe_reason(member: Member) -> str | None:
    """Why restoring this member could write outside the target directory, or could not be done
    the same on both lanes (None if it is safe).

    Absolute symbolic links and links to nowhere are data, recreated as they were (extraction
    never follows one); a relative link that climbs out of the volume is refused because
    Docker's archive endpoint refuses to create it.
    """
    path = member.path
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "path contains '..'"
    if member.type == HARDLINK:
        target = normalize(member.linkname)
        if target.startswith("/") or ".." in target.split("/"):
            return f"hard link to {member.linkname!r} outside the archive"
    if member.type == SYMLINK:
        target = member.linkname
        if not target:
            return "symbolic link without a target"
        if not target.startswith("/"):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if resolved == ".." or resolved.startswith("../"):
                return f"symbolic link to {target!r} points outside the archive"
    return None


class MemberCheck:
    """``unsafe_reason`` for a stream of members, plus what only the sequence shows: no member
    may lie below a symbolic link member (it would be written through the link)."""

    def __init__(self) -> None:
        self.links: set[str] = set()

    def __call__(self, member: Member) -> str | None:
        reason = unsafe_reason(member)
        if reason is not None:
            return reason
        parent = member.path
        while "/" in parent:
            parent = parent.rpartition("/")[0]
            if parent in self.links:
                return f"its parent {parent!r} is a symbolic link"
        if member.type == SYMLINK:
            self.links.add(member.path)
        return None


def same_file(
    a: Member, b: Member, *, content: bool = True, times: bool = True, xattrs: bool = True
) -> bool:
    """Whether two records describe the same file: type, size, mode, owner, link target, device
    numbers, and with ``times`` the mtime (to the nanosecond), with ``xattrs`` the extended
    attributes, with ``content`` the SHA-256. Hard link targets are compared as member paths."""

    def key(m: Member) -> tuple[object, ...]:
        link = normalize(m.linkname) if m.type == HARDLINK else m.linkname
        return (
            m.type,
            m.size,
            link,
            m.mode,
            m.uid,
            m.gid,
            m.devmajor,
            m.devminor,
            m.mtime_ns if times else None,
            m.xattrs if xattrs else None,
            m.sha256 if content else None,
        )

    return key(a) == key(b)


def first_unlike(
    found: Sequence[Member], recorded: Sequence[Member], *, content: bool = True
) -> Member | None:
    """The first member of ``recorded`` that ``found`` (a stream's members, in its order, as
    many) does not match: another path, or not the same file (``same_file``; its content too
    with ``content``). None: they match."""
    for got, want in zip(found, recorded, strict=True):
        if got.path != want.path or not same_file(got, want, content=content):
            return want
    return None


def relinked(found: Mapping[str, Member], recorded: Mapping[str, Member]) -> dict[str, Member]:
    """``found`` (a tree read back) with each hard-link group named as ``recorded`` names it.

    Which name of an inode a tar calls the file and which the links to it is the order it
    walked the tree in: GNU tar's is the directory's, snapvol's host lane sorts. A tree written
    by one and read back by the other holds the same groups under another first name. Where
    exactly one name of a group is a file in ``recorded``, that name becomes the group's file
    and the others links to it; any other group is left as it is (and compares as it is)."""
    groups: dict[str, list[str]] = {}
    for m in found.values():
        if m.type == HARDLINK:
            groups.setdefault(normalize(m.linkname), []).append(m.path)
    out = dict(found)
    for first, links in groups.items():
        if first not in found or found[first].type != REGULAR:
            continue
        names = [first, *links]
        files = [n for n in names if n in recorded and recorded[n].type == REGULAR]
        if len(files) != 1 or files[0] == first:
            continue
        new = files[0]
        out[new] = replace(found[first], path=new)
        out[first] = replace(found[new], path=first, linkname=new)
        for name in links:
            if name != new:
                out[name] = replace(found[name], linkname=new)
    return out
