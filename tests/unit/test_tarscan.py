"""The tar reader: pax times, and headers as ``hosttar`` writes them read back exactly
(the member record and its checks: test_members.py)."""

from __future__ import annotations

import io
import tarfile

import pytest

from snapvol.pipeline.members import Member
from snapvol.pipeline.tarscan import TarScanner, format_time_ns, parse_time_ns
from snapvol.volume import hosttar
from tests.samples import member


@pytest.mark.parametrize(
    "ns",
    [
        0,
        1,
        -1,
        999_999_999,
        -315_360_000_123_456_789,
        1_600_000_000_999_999_999,
        4_102_444_800_999_999_999,
        -(10**9),
        253_402_300_799_000_000_000,
    ],
)
def test_pax_times_are_exact_to_the_nanosecond(ns: int) -> None:
    assert parse_time_ns(format_time_ns(ns)) == ns


def test_pax_times_as_other_tars_write_them() -> None:
    assert parse_time_ns(b"1700000000.5") == 1_700_000_000_500_000_000
    assert parse_time_ns(b"-1.25") == -1_250_000_000
    assert parse_time_ns(b"12") == 12 * 10**9
    assert parse_time_ns(b"1.1234567891234") == 1_123_456_789  # beyond ns: cut, as tar does


def _stream(*members: Member) -> bytes:
    return b"".join(hosttar.header(m) for m in members) + bytes(1024)


def _scan(data: bytes) -> list[Member]:
    found: list[Member] = []
    scanner = TarScanner(found.append, hash_files=False)
    scanner.feed(data)
    scanner.close()
    return found


def test_headers_keep_every_field_exactly() -> None:
    """Names as bytes, times to the ns before 1970 and after 2038, owners beyond 2^21,
    devices, xattrs with binary values: what ``hosttar.header`` writes, the scanner reads."""
    odd = "latin1-\udcf1and\udcfa/line\nbreak " + "x" * 120
    members = [
        member("d", "dir", mode=0o1777, mtime_ns=-315_360_000_123_456_789),
        member(odd, uid=3_000_000, gid=2**31 + 5, mtime_ns=4_102_444_800_999_999_999),
        member("l", "symlink", linkname="/var/lib/" + "t" * 120, mtime_ns=7),
        member("n", "chardev", devmajor=1, devminor=3, mode=0o666),
        member("y", mtime_ns=13_569_465_600_123_456_789),
        member(
            "x",
            xattrs=(("security.capability", b"\x01\0\0\x02"), ("user.b", b"\0\n\xff")),
            mode=0o4755,
        ),
    ]
    assert _scan(_stream(*members)) == members


def test_python_tarfile_reads_our_headers() -> None:
    data = _stream(member("f", mtime_ns=1_600_000_000_999_999_999, uid=3_000_000))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        info = tar.getmembers()[0]
    assert (info.name, info.uid, info.pax_headers["mtime"]) == (
        "./f",
        3_000_000,
        "1600000000.999999999",
    )
