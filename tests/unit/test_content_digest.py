"""A tar stream's content digest (``tarscan.ContentDigest``): what a copy computes from the
record's file hashes without reading the files' data again must be what a restore computes from
the bytes it reads, and any change to the stream, a header byte or a file's byte, must change it.
Real streams: GNU tar's and the host lane's of the awkward tree (sparse files, xattrs, ACLs, hard
links, long and non-UTF-8 names, devices)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from snapvol.pipeline.members import REGULAR, Member
from snapvol.pipeline.tarscan import (
    BLOCK,
    ContentDigest,
    TarFormatError,
    TarScanner,
    _checksum_ok,
)
from snapvol.volume.hosttar import DirTar
from tests import fidelity_tree


def _digest(stream: bytes, file_sha256: Callable[[Member], str | None] | None = None) -> str:
    digest = ContentDigest(file_sha256)
    members: list[Member] = []
    scanner = TarScanner(members.append, hash_files=file_sha256 is None, digest=digest)
    for at in range(0, len(stream), 7777):  # chunks that cut headers and data anywhere
        scanner.feed(stream[at : at + 7777])
    scanner.close()
    return digest.hexdigest()


def _members(stream: bytes) -> list[Member]:
    found: list[Member] = []
    scanner = TarScanner(found.append)
    scanner.feed(stream)
    scanner.close()
    return found


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("tree")
    fidelity_tree.build(root, socket_too=False, deep=False)
    gnu = subprocess.run(
        [
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--sparse",
            "--posix",
            "-C",
            str(root),
            "-cf",
            "-",
            ".",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return {"gnu": gnu, "host lane": b"".join(DirTar(root))}


@pytest.mark.parametrize("kind", ["gnu", "host lane"])
def test_the_digest_from_recorded_hashes_is_the_digest_of_the_bytes(
    streams: dict[str, bytes], kind: str
) -> None:
    stream = streams[kind]
    recorded = {m.path: m.sha256 for m in _members(stream) if m.type == REGULAR}
    assert any(m.size > 1 << 20 for m in _members(stream))  # the sparse files are there
    from_record = _digest(stream, lambda m: recorded.get(m.path))
    assert from_record == _digest(stream)

    wrong = dict(recorded)
    wrong[next(iter(wrong))] = "0" * 64  # a record that says other content
    assert _digest(stream, lambda m: wrong.get(m.path)) != from_record
    with pytest.raises(TarFormatError, match="no SHA-256"):
        _digest(stream, lambda m: None)


@pytest.mark.parametrize("kind", ["gnu", "host lane"])
def test_any_changed_byte_changes_the_digest(streams: dict[str, bytes], kind: str) -> None:
    """A byte of a header (its checksum made right again, so that the stream still parses), of
    a file's data, of padding, of the end: each changes the digest of what is read, or the
    stream no longer parses."""
    stream = streams[kind]
    want = _digest(stream)
    headers = 0
    for at in _offsets(stream):
        altered, in_header = _flipped(stream, at)
        try:
            got = _digest(altered)
        except TarFormatError:
            continue  # a size that no longer fits the stream: refused, which is as good
        headers += in_header
        assert got != want, at
    assert headers >= 3  # headers that still parse, yet digest otherwise


def _is_header(block: bytes) -> bool:
    try:
        return any(block) and _checksum_ok(block)
    except ValueError:  # data that is no header
        return False


def _header_blocks(stream: bytes) -> set[int]:
    return {at for at in range(0, len(stream), BLOCK) if _is_header(stream[at : at + BLOCK])}


def _flipped(stream: bytes, at: int) -> tuple[bytes, bool]:
    """``stream`` with one bit of byte ``at`` flipped; a header's checksum put right."""
    altered = bytearray(stream)
    altered[at] ^= 0x01
    block = at - at % BLOCK
    if _is_header(stream[block : block + BLOCK]):
        fixed = bytearray(altered[block : block + BLOCK])
        fixed[148:156] = b" " * 8
        fixed[148:156] = b"%06o\0 " % sum(fixed)
        altered[block : block + BLOCK] = fixed
        return bytes(altered), True
    return bytes(altered), False


def _offsets(stream: bytes) -> list[int]:
    """Byte offsets spread over the whole stream (data, padding, the end), and a time digit
    and a mode digit in a few headers (not in the checksum field itself)."""
    step = max(1, len(stream) // 23)
    spread = {*range(0, len(stream), step), len(stream) - 1}
    blocks = sorted(_header_blocks(stream))
    in_headers = {b + field for b in blocks[:: max(1, len(blocks) // 4)] for field in (103, 140)}
    return sorted(spread - {a for b in blocks for a in range(b + 148, b + 156)} | in_headers)


def test_a_sparse_files_map_is_covered(tmp_path: Path) -> None:
    """A PAX 1.0 sparse member's map (its data's first block: the segments, then padding) is
    no file content: a changed byte of it changes the digest, or the stream no longer parses."""
    (tmp_path / "d").mkdir()
    with open(tmp_path / "d" / "sparse", "wb") as f:
        f.seek(1 << 20)
        f.write(b"x" * 5000)
        f.truncate(3 << 20)
    stream = subprocess.run(
        ["tar", "--sparse", "--posix", "-C", str(tmp_path / "d"), "-cf", "-", "sparse"],
        check=True,
        capture_output=True,
    ).stdout
    want = _digest(stream)
    headers = sorted(_header_blocks(stream))
    map_block = headers[-1] + BLOCK  # the file's own header, then its data: the map first
    assert stream[map_block : map_block + 2] == b"2\n"  # the data after the hole, and the end
    for at in (map_block + 8, map_block + 300, map_block + BLOCK - 1):  # numbers, padding
        altered = bytearray(stream)
        altered[at] ^= 0x01
        try:
            got = _digest(bytes(altered))
        except TarFormatError:
            continue
        assert got != want, at - map_block


def test_a_record_whose_sha256_is_not_one_is_a_tar_format_error(
    streams: dict[str, bytes],
) -> None:
    stream = streams["host lane"]
    for bad in ("not-hex", "ABC" * 21 + "D", 12):
        with pytest.raises(TarFormatError, match="no SHA-256"):
            _digest(stream, lambda m, bad=bad: bad)  # type: ignore[misc]
