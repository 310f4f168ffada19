"""The archive pipeline's zstd helpers: frame walking, streaming decompression, checks and
writing precompressed streams."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from snapvol.errors import IntegrityError, OperationFailed
from snapvol.pipeline import archive

# Seeded, not os.urandom: parameters derived from it must be the same in every test worker.
_RANDOM = random.Random(20261203)
DATA = _RANDOM.randbytes(200_000) + b"a" * 300_000 + _RANDOM.randbytes(100_000).hex().encode()
COMPRESSED = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(DATA)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(COMPRESSED) * 2 - 1), max_size=8))
def test_walker_and_frames_follow_two_frames_whatever_the_chunking(cuts: list[int]) -> None:
    stream = COMPRESSED * 2
    points = [0, *sorted(set(cuts)), len(stream)]
    walker = archive.ZstdFrameWalker("x")
    decompressor = archive.ZstdFrames("x")
    out = b""
    for start, end in itertools.pairwise(points):
        walker.feed(stream[start:end])
        out += b"".join(decompressor.feed(stream[start:end]))
    walker.close()
    decompressor.close()
    assert walker.frames == decompressor.frames == 2
    assert out == DATA * 2


@pytest.mark.parametrize("cut", [1, 4, 5, 100, len(COMPRESSED) // 2, len(COMPRESSED) - 5])
def test_truncated_zstd_is_refused(cut: int) -> None:
    for helper in (archive.ZstdFrameWalker("x"), archive.ZstdFrames("x")):
        with pytest.raises(IntegrityError, match=r"truncated|no zstd frame"):
            result = helper.feed(COMPRESSED[:cut])
            if result is not None:
                list(result)
            helper.close()


def test_corrupt_zstd_is_refused() -> None:
    damaged = bytearray(COMPRESSED)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(IntegrityError):
        list(archive.unzstd([bytes(damaged)], "x"))
    with pytest.raises(IntegrityError, match="not zstd data"):
        archive.ZstdFrameWalker("x").feed(b"PGDMP....")


def test_write_precompressed(tmp_path: Path) -> None:
    dest = tmp_path / "a.dump.zst"
    result = archive.write_precompressed(
        iter([COMPRESSED[:1000], COMPRESSED[1000:]]), dest, raw_size=lambda: len(DATA)
    )
    assert dest.read_bytes() == COMPRESSED
    assert (result.size_bytes, result.raw_bytes) == (len(COMPRESSED), len(DATA))
    assert result.sha256 == archive.file_sha256(dest)[0]

    def failing() -> Any:
        yield COMPRESSED[:1000]
        raise OperationFailed("pg_dump failed (exit 1): boom")

    for chunks, error in (
        (iter([COMPRESSED[:-10]]), IntegrityError),
        (failing(), OperationFailed),
    ):
        other = tmp_path / "b.dump.zst"
        with pytest.raises(error):
            archive.write_precompressed(chunks, other, raw_size=lambda: 0)
        assert list(tmp_path.iterdir()) == [dest]
