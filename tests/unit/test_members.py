"""The member record: its stored form, the checks a restore applies to it, and the comparison the
read-back uses."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from snapvol.adapters.store import FileEntry, Snapshot, Store
from snapvol.pipeline.members import (
    DIRECTORY,
    HARDLINK,
    REGULAR,
    ROW_COLUMNS,
    SYMLINK,
    Member,
    MemberCheck,
    as_row,
    from_row,
    normalize,
    relinked,
    same_file,
    unsafe_reason,
)
from tests.samples import member


def test_normalize_strips_leading_dot_slashes_and_trailing_slashes() -> None:
    assert normalize("./a/b/") == "a/b"
    assert normalize("././a") == "a"
    assert normalize("./") == "."
    assert normalize(".") == "."
    assert normalize("a/./b") == "a/./b"  # only the leading ones: the rest is the name


# --- the stored form -----------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8") | st.sampled_from(["\udcff", "\udce9", "\udc80"]))
members = st.builds(
    Member,
    path=names,
    type=st.sampled_from([REGULAR, DIRECTORY, SYMLINK, HARDLINK, "fifo", "chardev"]),
    size=st.integers(0, 2**62),
    mode=st.integers(0, 0o7777),
    uid=st.integers(0, 2**32 - 1),
    gid=st.integers(0, 2**32 - 1),
    mtime_ns=st.integers(-(2**70), 2**70),
    linkname=names,
    sha256=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
    xattrs=st.lists(st.tuples(names, st.binary(max_size=40)), max_size=3).map(
        lambda kv: tuple(sorted(kv))
    ),
    devmajor=st.integers(0, 4095),
    devminor=st.integers(0, 2**20),
)


@settings(max_examples=200, deadline=None)
@given(members)
def test_a_row_gives_the_member_back_exactly(m: Member) -> None:
    assert from_row(as_row(m)) == m


def test_a_name_that_is_not_utf8_is_kept_as_its_bytes() -> None:
    row = as_row(member("caf\udce9", SYMLINK, linkname="t\udcff"))
    assert row["path_raw"] == b"caf\xe9" and row["path"] == "caf\\xe9"
    assert row["linkname_raw"] == b"t\xff"
    plain = as_row(member("café"))
    assert plain["path"] == "café" and plain["path_raw"] is None


def test_a_time_is_whole_seconds_and_the_nanoseconds_within() -> None:
    row = as_row(member("f", mtime_ns=-1))
    assert (row["mtime"], row["mtime_nsec"]) == (-1, 999_999_999)
    assert as_row(member("f", mtime_ns=5 * 10**9))["mtime_nsec"] is None


def test_the_store_table_has_exactly_the_row_columns() -> None:
    """The store declares its schema; the conversion is ours: they must not drift apart."""
    assert set(FileEntry.model_fields) - {"id", "snapshot_id"} == ROW_COLUMNS


def test_the_store_keeps_names_as_bytes_and_every_field(tmp_path: Path) -> None:
    """SQLite text is UTF-8: a name that is not (lone surrogates) must still come back exact."""
    members = [
        member(".", "dir"),
        member("latin1-\udcf1and\udcfa", "dir", mtime_ns=-1),
        member(
            "latin1-\udcf1and\udcfa/caf\udce9\nnewline",
            size=5,
            sha256="ab" * 32,
            mtime_ns=1_600_000_000_999_999_999,
            xattrs=(("user.\udcff", b"\0\xff"), ("system.posix_acl_access", b"\x02\0\0\0")),
        ),
        member("link", "symlink", linkname="caf\udce9"),
        member("null", "chardev", devmajor=1, devminor=3),
        member("plain", size=1, sha256="cd" * 32, uid=3_000_000, gid=2**31 + 5),
        member("year-2400", mtime_ns=13_569_465_600_123_456_789),  # beyond int64 nanoseconds
    ]
    store = Store.open(tmp_path / "manifests.db")
    store.add(Snapshot(id="a1b2c3d4", name="n", kind="volume", container="c"))
    store.complete("a1b2c3d4", members)
    store.close()
    again = Store.open(tmp_path / "manifests.db")
    assert again.members("a1b2c3d4") == members
    again.close()


# --- what a restore refuses ----------------------------------------------------------------------


def test_restore_refuses_what_escapes_and_keeps_what_is_data() -> None:
    assert unsafe_reason(member("pg_tblspc/16384", "symlink", linkname="/var/lib/pg/ts")) is None
    assert unsafe_reason(member("dangling", "symlink", linkname="no/such/file")) is None
    assert unsafe_reason(member("null", "chardev", devmajor=1, devminor=3)) is None
    assert unsafe_reason(member("a/up", "symlink", linkname="../../etc")) is not None
    assert unsafe_reason(member("../x")) is not None
    assert unsafe_reason(member("/abs")) is not None
    assert unsafe_reason(member("h", "hardlink", linkname="../outside")) is not None


def test_a_member_below_a_symbolic_link_member_is_refused() -> None:
    link = member("esc", "symlink", linkname="/etc")
    check = MemberCheck()
    assert check(member(".", "dir")) is None and check(link) is None
    reason = check(member("esc/passwd"))
    assert reason is not None and "symbolic link" in reason
    assert check(member("esc-not-below")) is None


def test_read_back_compares_times_and_xattrs() -> None:
    a = member("f", mtime_ns=1_700_000_000_000_000_001, xattrs=(("user.a", b"1"),))
    assert same_file(a, a)
    assert not same_file(a, Member(**{**a.__dict__, "mtime_ns": 1_700_000_000_000_000_000}))
    assert not same_file(a, Member(**{**a.__dict__, "xattrs": ()}))
    assert same_file(a, Member(**{**a.__dict__, "xattrs": ()}), xattrs=False)


def test_a_hard_link_is_checked_as_a_member_path() -> None:
    assert unsafe_reason(member("h", HARDLINK, linkname="./a/b")) is None
    assert unsafe_reason(member("h", HARDLINK, linkname="/etc/shadow")) is not None
    assert unsafe_reason(member("h", HARDLINK, linkname="a/../../x")) is not None
    assert unsafe_reason(member("s", SYMLINK)) == "symbolic link without a target"


def test_same_file_ignores_only_what_it_is_told_to() -> None:
    a = member("f", size=3, sha256="ab" * 32)
    assert not same_file(a, Member(**{**a.__dict__, "sha256": "cd" * 32}))
    assert same_file(a, Member(**{**a.__dict__, "sha256": "cd" * 32}), content=False)
    assert not same_file(a, Member(**{**a.__dict__, "mode": 0o600}), content=False)
    assert same_file(a, Member(**{**a.__dict__, "mtime_ns": 9}), times=False)
    link = member("h", HARDLINK, linkname="./x/")
    assert same_file(link, Member(**{**link.__dict__, "linkname": "x"}))


def test_a_hard_link_group_read_back_is_named_as_the_record_names_it() -> None:
    """GNU tar and the host lane may call different names of one inode its file."""
    data = {"size": 5, "sha256": "ab" * 32, "xattrs": (("user.a", b"1"),)}
    recorded = {
        m.path: m
        for m in [
            member("b", **data),
            member("a", HARDLINK, linkname="./b"),
            member("c/d", HARDLINK, linkname="./b"),
            member("lone", size=1, sha256="cd" * 32),
        ]
    }
    found = {
        m.path: m
        for m in [
            member("a", **data),
            member("b", HARDLINK, linkname="./a"),
            member("c/d", HARDLINK, linkname="./a"),
            member("lone", size=1, sha256="cd" * 32),
        ]
    }
    named = relinked(found, recorded)
    assert set(named) == set(recorded)
    for path, want in recorded.items():
        assert same_file(named[path], want), path
    assert relinked(recorded, recorded) == recorded  # named alike: unchanged

    # Two files of the record that the tree holds as one inode stay a difference.
    apart = {**recorded, "a": member("a", **data), "c/d": member("c/d", **data)}
    assert relinked(found, apart) == found
    assert not same_file(relinked(found, apart)["b"], apart["b"])
