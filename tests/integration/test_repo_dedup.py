"""What a second copy of a host-lane snapshot adds to a restic repository, against what restic's
own backup of the directory adds for the same change: real restic, real files, no engine.

The files imitate PostgreSQL's: 8 KiB pages, each with a run of zeros (its free space). restic
may cut its chunks in any such run, but never less than 512 KiB after the last cut, so in these
files the cuts lie at fixed distances from one another: were a small file that grows before the
big one in the stream, every cut in the big one would move and nothing of it would be found
again. The host lane gives big files first (``hosttar.LEAD``); this proves what that buys.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from snapvol.volume.hosttar import DirTar
from tests import servers
from tests.servers import RepoServer

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="needs restic")

PAGE = 8192
STDIN = ("--stdin", "--stdin-filename", "volume.tar")
MiB = 1 << 20


def _page(rng: random.Random) -> bytes:
    """A page: a header and line pointers, free space (zeros), then tuples."""
    return rng.randbytes(512) + bytes(1024) + rng.randbytes(PAGE - 1536)


def _tree(root: Path, rng: random.Random) -> None:
    (root / "a").mkdir(parents=True)
    (root / "a" / "log").write_bytes(rng.randbytes(70_000))  # before b/ in name order
    (root / "b").mkdir()
    with open(root / "b" / "table", "wb") as f:
        for _ in range(24 * MiB // PAGE):
            f.write(_page(rng))


def _change(root: Path, rng: random.Random) -> None:
    """What a few transactions do: the log grows, two pages of the table are rewritten."""
    with open(root / "a" / "log", "ab") as f:
        f.write(rng.randbytes(25_000))
    with open(root / "b" / "table", "r+b") as f:
        for page in (300, 2100):
            f.seek(page * PAGE)
            f.write(_page(rng))


def _added(repo: RepoServer, *args: str, stream: bytes | None = None) -> int:
    out = repo.restic("backup", "--json", "-q", *args, input=stream).stdout
    summary = json.loads(out.decode().strip().splitlines()[-1])
    return int(summary["data_added"])


def _stream(root: Path) -> bytes:
    return b"".join(DirTar(root))


def test_a_second_copy_adds_what_restic_adds_for_the_directory(
    restic_local: RepoServer, tmp_path: Path
) -> None:
    rng = random.Random(12)
    tree = tmp_path / "volume"
    _tree(tree, rng)
    streams = restic_local  # the tar streams, as `snapvol copy` sends them
    streams.restic("init", "--repository-version=2")
    with servers.repo_server("local", tmp_path / "dirs") as dirs:  # the directory, by restic
        dirs.restic("init", "--repository-version=2")
        firsts = (_added(streams, *STDIN, stream=_stream(tree)), _added(dirs, str(tree)))
        assert min(firsts) > 24 * MiB

        _change(tree, rng)
        second_stream = _added(streams, *STDIN, stream=_stream(tree))
        second_dir = _added(dirs, str(tree))
    # Two rewritten pages cost restic about two chunks (~1-2 MiB) in the directory; the stream
    # must cost no more than that plus the small file's chunk, far from the table's 24 MiB.
    assert second_dir < 4 * MiB
    assert second_stream <= 1.1 * second_dir + MiB, (second_stream, second_dir)
