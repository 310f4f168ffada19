"""The same round trip through each lane, through the ``Lane`` interface alone: read the awkward
tree of tests/fidelity_tree.py as a recording tar stream, archive it, wipe the volume, replace its
contents with the archive, read it back, and compare whole trees (``os.lstat``, xattrs, content).
The host lane brings back everything; the endpoint lane everything but its documented
differences (tests/integration/test_fidelity.py asserts each one field by field)."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapvol.adapters.engine import Engine
from snapvol.errors import UsageError
from snapvol.pipeline import archive
from snapvol.pipeline.members import Member, same_file
from snapvol.volume.endpoint_lane import EndpointLane
from snapvol.volume.host_lane import HostLane
from snapvol.volume.lane import Lane
from snapvol.volume.target import choose_lane
from tests import fidelity_tree
from tests.docker_helpers import TestBed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds the tree as root")

# What Docker's archive endpoint does not carry (the README's lane table).
ENDPOINT_DIFFERS = {"mtime_ns", "xattrs", "blocks", "mode"}


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine.connect()
    yield engine
    engine.close()


def _lane(engine: Engine, bed: TestBed, volume: str, reader: str) -> Lane:
    lane = choose_lane(engine, engine.volume(volume), reader, bed.image)
    assert lane.name == reader
    assert isinstance(lane, HostLane if reader == "host" else EndpointLane)
    return lane


@pytest.mark.parametrize("reader", ["host", "endpoint"])
def test_a_round_trip_through_the_lane_interface(
    bed: TestBed, engine: Engine, tmp_path: Path, reader: str
) -> None:
    container, volume = bed.plain(mount="/srv/data")
    container.stop(timeout=1)  # cold, as snapvol works on it
    root = Path(engine.volume(volume).mountpoint)
    fidelity_tree.build(root, deep=False)  # the endpoint cannot read paths beyond PATH_MAX
    lane = _lane(engine, bed, volume, reader)
    if reader == "endpoint":  # Docker's extraction would drop an empty xattr: refused
        host = _lane(engine, bed, volume, "host")  # the endpoint does not even read it
        with pytest.raises(UsageError):
            lane.refuse_unwritable(_recorded(host, tmp_path / "probe.tar.zst"))
        os.removexattr(root / "attrs", "user.empty")
    before = fidelity_tree.fingerprint(root)
    used_bytes, entries = lane.usage()
    assert used_bytes is not None and used_bytes > 0 and entries is not None and entries > 0

    dest = tmp_path / "volume.tar.zst"
    members = _recorded(lane, dest)
    assert {m.path for m in members if m.path != "."} == {
        os.fsdecode(k) for k, v in before.items() if v["type"] != stat.S_IFSOCK
    }
    lane.refuse_unwritable(members)  # now nothing the lane would drop

    subprocess.run(["find", str(root), "-mindepth", "1", "-delete"], check=True)
    assert os.listdir(root) == []
    checked: list[str] = []
    read_back = lane.replace(archive.decompressed_chunks(dest), lambda m: checked.append(m.path))
    assert sorted(checked) == sorted(m.path for m in members)  # each header seen before written

    landed = {m.path: m for m in lane.landed(lambda n: None, read_back)}
    assert set(landed) == {m.path for m in members}
    for want in members:
        if want.path != ".":  # the root keeps its own owner and mode
            assert same_file(lane.carried(landed[want.path]), lane.carried(want)), want.path

    after = fidelity_tree.fingerprint(root)
    expected = {k: v for k, v in before.items() if v["type"] != stat.S_IFSOCK}
    if reader == "host":
        assert fidelity_tree.differences(expected, after) == []
    else:
        assert set(after) == set(expected)
        for key, want in expected.items():
            kept = {f: v for f, v in want.items() if f not in ENDPOINT_DIFFERS}
            assert {f: after[key][f] for f in kept} == kept, key


def _recorded(lane: Lane, dest: Path) -> list[Member]:
    """Archive the volume through ``lane`` as a snapshot does; its recorded members."""
    census = lane.census()
    with lane.source() as source:
        archive.write_compressed(source, dest, level=1)
    assert census.left_out(source) == ["service.sock"]  # no tar holds a socket
    return source.members
