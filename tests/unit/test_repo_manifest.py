"""The manifest of a copy in a restic repository: names, tags, and an exact round trip."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from snapvol.adapters.store import Snapshot
from snapvol.errors import IntegrityError
from snapvol.pipeline.members import DIRECTORY, REGULAR, SYMLINK, Member
from snapvol.repo import manifest
from snapvol.repo.manifest import DataRef

SID = "ab" * 32


def record(**fields: object) -> Snapshot:
    base: dict[str, object] = {
        "id": "0a1b2c3d",
        "name": "pc_db-volume-20261203-114000",
        "kind": "volume",
        "status": "complete",
        "container": "pc_db",
        "container_id": "c" * 64,
        "volume": "pgdata",
        "image": "postgres:15",
        "path": "/backups/pc_db-volume-20261203-114000.0a1b2c3d.tar.zst",
        "sha256": "e" * 64,
        "size_bytes": 123,
        "raw_bytes": 10240,
        "file_count": 3,
        "created_at": datetime(2026, 12, 3, 11, 40, 1, 250000, tzinfo=UTC),
        "completed_at": datetime(2026, 12, 3, 11, 40, 9, tzinfo=UTC),
        "duration_s": 8.5,
        "downtime_s": 2.0,
        "pid": 4242,
        "host": "box",
        "meta_json": json.dumps({"level": 3, "tables": {"public.t": 2}}),
        "verified_at": None,
        "verify_ok": None,
    }
    base.update(fields)
    return Snapshot(**base)


MEMBERS = [
    Member(".", DIRECTORY, 0, 0o755, 999, 999, 1_700_000_000_123_456_789),
    Member(
        os.fsdecode(b"caf\xe9-not-utf8"),
        REGULAR,
        5,
        0o640,
        0,
        0,
        1_700_000_000_000_000_000,
        sha256="f" * 64,
        xattrs=(("user.k", b"\x00\xff"),),
    ),
    Member("link", SYMLINK, 0, 0o777, 0, 0, 1, linkname=os.fsdecode(b"\xff/target")),
]
DATA = DataRef(
    SID, "pc_db-volume-20261203-114000.0a1b2c3d.tar", None, 10240, content_sha256="d" * 64
)
OLD_DATA = DataRef(SID, DATA.filename, "e" * 64, 10240)  # formats 1 and 2: the raw SHA-256


def test_file_names_follow_the_kind_and_format() -> None:
    assert manifest.data_filename(record()) == "pc_db-volume-20261203-114000.0a1b2c3d.tar"
    custom = record(kind="logical", format="custom", name="n")
    plain = record(kind="logical", format="plain", name="n")
    assert manifest.data_filename(custom) == "n.0a1b2c3d.dump"
    assert manifest.data_filename(plain) == "n.0a1b2c3d.sql"
    assert manifest.manifest_filename(plain) == "n.0a1b2c3d.manifest.json"
    with pytest.raises(IntegrityError):
        manifest.data_filename(record(kind="logical", format="directory"))


def test_tags() -> None:
    snap = record()
    assert manifest.tags_for(snap, manifest.DATA) == [
        "snapvol",
        "snapvol-id-0a1b2c3d",
        "snapvol-data",
    ]
    assert manifest.tags_for(snap, manifest.MANIFEST) == [
        "snapvol",
        "snapvol-id-0a1b2c3d",
        "snapvol-manifest",
    ]
    assert manifest.snapshot_id_of(["snapvol", "snapvol-id-0a1b2c3d"]) == "0a1b2c3d"
    assert manifest.snapshot_id_of(["other"]) is None
    with pytest.raises(ValueError):
        manifest.tags_for(snap, "other")


def test_round_trip_keeps_every_column_but_pid_and_every_member_exactly() -> None:
    snap = record()
    raw = manifest.encode(snap, MEMBERS, DATA)
    doc = json.loads(raw)
    assert doc["format"] == 3
    assert "pid" not in doc["snapshot"] and "meta_json" not in doc["snapshot"]
    assert doc["snapshot"]["meta"] == {"level": 3, "tables": {"public.t": 2}}
    assert doc["snapshot"]["created_at"] == "2026-12-03T11:40:01.250000Z"
    assert doc["snapshot"]["host"] == "box"
    assert doc["members"][1]["path_raw"] == base64.b64encode(b"caf\xe9-not-utf8").decode()
    assert doc["data"] == {
        "restic_snapshot": SID,
        "filename": DATA.filename,
        "raw_sha256": None,
        "content_sha256": "d" * 64,
        "raw_bytes": 10240,
    }

    got = manifest.decode(raw)
    assert got.members == MEMBERS
    assert got.data == DATA
    expected = snap.model_dump(exclude={"pid"})
    actual = got.snapshot.model_dump(exclude={"pid"})
    assert actual == expected
    assert got.snapshot.pid is None
    assert got.snapshot.meta == snap.meta


def test_logical_round_trip_without_members() -> None:
    snap = record(kind="logical", format="plain", volume=None, file_count=None, database="app")
    data = DataRef(SID, manifest.data_filename(snap), "0" * 64, 0)
    got = manifest.decode(manifest.encode(snap, [], data))
    assert got.members == [] and got.snapshot.database == "app" and got.data == data


def test_format_1_with_a_full_id_and_format_2_with_restic_014s_short_id_are_read() -> None:
    for form, sid in ((1, SID), (2, SID[:8])):
        old = json.loads(manifest.encode(record(), MEMBERS, OLD_DATA))
        old["format"] = form
        del old["data"]["content_sha256"]  # unknown before format 3
        old["data"]["restic_snapshot"] = sid
        assert manifest.decode(json.dumps(old).encode()).data == replace(
            OLD_DATA, restic_snapshot=sid
        )
    # Format 3 still carries a volume's raw SHA-256 when a copy made one (none does now).
    assert manifest.decode(manifest.encode(record(), MEMBERS, OLD_DATA)).data == OLD_DATA


def test_only_a_volume_is_checked_by_its_content_digest() -> None:
    dump = record(kind="logical", format="plain", volume=None, file_count=None, database="a")
    digest_only = DataRef(SID, manifest.data_filename(dump), None, 0, content_sha256="d" * 64)
    with pytest.raises(IntegrityError, match="no raw_sha256"):
        manifest.decode(manifest.encode(dump, [], digest_only))
    old = json.loads(manifest.encode(record(), MEMBERS, DATA))
    old["format"] = 2  # a format 2 reader knew no content digest: it had the raw SHA-256
    with pytest.raises(IntegrityError, match="no raw_sha256"):
        manifest.decode(json.dumps(old).encode())


def _mutated(change: object) -> bytes:
    doc = json.loads(manifest.encode(record(), MEMBERS, DATA))
    change(doc)  # type: ignore[operator]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(format=4),
        lambda d: d.update(format=True),
        lambda d: d.pop("format"),
        lambda d: d.pop("snapshot"),
        lambda d: d["snapshot"].pop("id"),
        lambda d: d["snapshot"].update(id="../../etc"),
        lambda d: d["snapshot"].update(created_at="yesterday"),
        lambda d: d["snapshot"].update(size_bytes="12"),
        lambda d: d["snapshot"].update(name=None),
        lambda d: d["snapshot"].update(meta=[1]),
        lambda d: d.update(members={}),
        lambda d: d["members"][0].pop("mode"),
        lambda d: d["members"][1].update(path_raw="%%%"),
        lambda d: d["members"][0].update(size="0"),
        lambda d: d["members"][0].update(sha256="not-hex"),
        lambda d: d["members"][0].update(sha256=12),
        lambda d: d["data"].update(restic_snapshot="abc"),
        lambda d: d["data"].update(filename="../other.tar"),
        lambda d: d["data"].update(raw_sha256="xyz"),
        lambda d: d["data"].update(content_sha256="D" * 64),
        lambda d: d["data"].update(content_sha256=None),
        lambda d: d["data"].update(raw_bytes=-1),
        lambda d: d.pop("data"),
    ],
)
def test_anything_malformed_is_an_integrity_error(change: object) -> None:
    with pytest.raises(IntegrityError, match="malformed snapvol manifest"):
        manifest.decode(_mutated(change))


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b"\xff\xfe", b'{"format": 1}'])
def test_garbage_is_an_integrity_error(raw: bytes) -> None:
    with pytest.raises(IntegrityError):
        manifest.decode(raw)
