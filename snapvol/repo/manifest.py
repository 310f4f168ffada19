"""The layout of a snapshot's copy in a restic repository, and its manifest.

A copy is two restic snapshots, both tagged ``snapvol`` and ``snapvol-id-<id>``:

- the *data* snapshot (also tagged ``snapvol-data``) holds ONE file, ``/<name>.<id>.tar``
  (a volume's uncompressed tar stream), ``.dump`` (pg_dump custom) or ``.sql`` (plain): the
  uncompressed bytes of the local ``.zst`` archive;
- the *manifest* snapshot (also tagged ``snapvol-manifest``) holds ONE file,
  ``/<name>.<id>.manifest.json``, written only after the data snapshot succeeded: a copy is
  present in a repository only when its manifest is.

The manifest is JSON::

    {"format": 2,
     "snapshot": {every column of the record but ``pid``; ``meta`` as a mapping;
                  datetimes ISO-8601 UTC},
     "members": [members.as_row(m), with each bytes value (path_raw, linkname_raw) as base64],
     "data": {"restic_snapshot": id, "filename": ..., "raw_sha256": hex or null,
              "content_sha256": hex or null, "raw_bytes": int}}

What the data file holds is checked by ``raw_sha256``, the SHA-256 of the whole file (a dump),
or by ``content_sha256`` (a volume's tar stream, format 3): its ``tarscan.ContentDigest``, a
SHA-256 of every header and padding byte with each file's content standing as its SHA-256. A
copy computes the latter without hashing the files' data again (the archive's own SHA-256 proves
it is the one whose files were hashed when the snapshot was taken); a restore computes it from
what it reads, file hashes included.

``restic_snapshot`` is the data snapshot's id as ``restic backup`` printed it: the full id, or
(restic 0.14) its first 8 hex digits, a prefix every restic command resolves (and refuses when
ambiguous); it is read as a prefix, within the snapshots tagged with the copy's own id.

Bytes in a member row are standard base64 (RFC 4648, with padding); absent ones are ``null``.
``decode`` checks all of it and raises IntegrityError on anything malformed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from snapvol.adapters.store import Snapshot, as_utc
from snapvol.errors import IntegrityError
from snapvol.pipeline.members import ROW_COLUMNS, Member, as_row, from_row
from snapvol.repo import TAG as TAG

FORMAT = 3
"""Format 3: a volume's data is checked by ``data.content_sha256`` (its ``raw_sha256`` is null).
Format 2: ``data.restic_snapshot`` may be a prefix; format 1 (always the full id). Both are still
read. A snapvol that reads older formats only refuses a newer manifest by its number."""
_READABLE = frozenset({1, 2, FORMAT})
DATA_TAG = "snapvol-data"
MANIFEST_TAG = "snapvol-manifest"
ID_TAG_PREFIX = "snapvol-id-"
DATA = "data"
MANIFEST = "manifest"
MANIFEST_SUFFIX = ".manifest.json"

_SUFFIXES = {("volume", None): ".tar", ("logical", "custom"): ".dump", ("logical", "plain"): ".sql"}
_EXCLUDED = frozenset({"pid", "meta_json"})
_BYTES_COLUMNS = frozenset({"path_raw", "linkname_raw"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RESTIC_ID = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class DataRef:
    """Where a copy's data is: the restic snapshot, its one file, and what the file holds."""

    restic_snapshot: str  # the restic snapshot id, full or a prefix of 8+ hex digits
    filename: str
    raw_sha256: str | None  # SHA-256 of the uncompressed stream (a dump's copy)
    raw_bytes: int
    content_sha256: str | None = None  # a volume's tar stream: its tarscan.ContentDigest


@dataclass(frozen=True)
class Manifest:
    """A decoded manifest: the snapshot's record (not added to any store), its members, its data."""

    snapshot: Snapshot
    members: list[Member]
    data: DataRef


def data_filename(snap: Snapshot) -> str:
    """``<name>.<id>.tar`` (volume), ``.dump`` (logical custom) or ``.sql`` (logical plain)."""
    key = (snap.kind, None if snap.kind == "volume" else snap.format)
    try:
        return f"{snap.name}.{snap.id}{_SUFFIXES[key]}"
    except KeyError:
        raise IntegrityError(
            f"snapshot {snap.id} has kind {snap.kind!r} format {snap.format!r}: "
            "no copy layout for it"
        ) from None


def manifest_filename(snap: Snapshot) -> str:
    """``<name>.<id>.manifest.json``."""
    return f"{snap.name}.{snap.id}{MANIFEST_SUFFIX}"


def id_tag(snapshot_id: str) -> str:
    return ID_TAG_PREFIX + snapshot_id


def tags_for(snap: Snapshot, kind: str) -> list[str]:
    """The tags of a copy's ``DATA`` or ``MANIFEST`` restic snapshot."""
    if kind not in (DATA, MANIFEST):
        raise ValueError(f"not a copy part: {kind!r}")
    return [TAG, id_tag(snap.id), DATA_TAG if kind == DATA else MANIFEST_TAG]


def snapshot_id_of(tags: Iterable[str]) -> str | None:
    """The snapvol snapshot id a restic snapshot's tags name, if any."""
    for tag in tags:
        if tag.startswith(ID_TAG_PREFIX):
            return tag[len(ID_TAG_PREFIX) :]
    return None


# --- encoding ---------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat().replace("+00:00", "Z")


def snapshot_fields(snap: Snapshot) -> dict[str, Any]:
    """The record as the manifest holds it: every column but ``pid``, ``meta`` as a mapping."""
    out: dict[str, Any] = {}
    for key in type(snap).model_fields:
        if key in _EXCLUDED:
            continue
        value = getattr(snap, key)
        out[key] = _iso(value) if isinstance(value, datetime) else value
    out["meta"] = snap.meta
    return out


def member_fields(m: Member) -> dict[str, Any]:
    row = as_row(m)
    for key in _BYTES_COLUMNS:
        if row[key] is not None:
            row[key] = base64.b64encode(row[key]).decode("ascii")
    return row


def encode(snap: Snapshot, members: Sequence[Member], data: DataRef) -> bytes:
    """The manifest of ``snap``'s copy, as UTF-8 JSON bytes."""
    doc = {
        "format": FORMAT,
        "snapshot": snapshot_fields(snap),
        "members": [member_fields(m) for m in members],
        "data": {
            "restic_snapshot": data.restic_snapshot,
            "filename": data.filename,
            "raw_sha256": data.raw_sha256,
            "content_sha256": data.content_sha256,
            "raw_bytes": data.raw_bytes,
        },
    }
    return json.dumps(doc, sort_keys=False, separators=(",", ":")).encode("utf-8")


# --- decoding ---------------------------------------------------------------------------------


class _Malformed(Exception):
    pass


def _field_types() -> dict[str, tuple[type, bool]]:
    """Each manifest column of Snapshot: its base type and whether it may be null."""
    hints = typing.get_type_hints(Snapshot)
    out = {}
    for key in Snapshot.model_fields:
        if key in _EXCLUDED:
            continue
        hint = hints[key]
        args = typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            base = next(a for a in args if a is not type(None))
            out[key] = (base, type(None) in args)
        else:
            out[key] = (hint, False)
    return out


def _value(key: str, value: Any, base: type, nullable: bool) -> Any:
    if value is None:
        if not nullable:
            raise _Malformed(f"snapshot.{key} is null")
        return None
    if base is datetime:
        if not isinstance(value, str):
            raise _Malformed(f"snapshot.{key} is not a time")
        try:
            return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            raise _Malformed(f"snapshot.{key} is not an ISO-8601 time: {value!r}") from None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, bool):
        raise _Malformed(f"snapshot.{key} is not an integer")
    if not isinstance(value, base):
        raise _Malformed(f"snapshot.{key} is not {base.__name__}: {value!r}")
    return value


_REQUIRED = ("id", "name", "kind", "status", "container", "created_at")


def _snapshot(doc: Any) -> Snapshot:
    if not isinstance(doc, dict):
        raise _Malformed("snapshot is not an object")
    fields: dict[str, Any] = {}
    for key in _REQUIRED:
        if key not in doc:
            raise _Malformed(f"snapshot.{key} is missing")
    for key, (base, nullable) in _field_types().items():
        if key in doc:  # one a newer snapvol added is ignored; one absent keeps its default
            fields[key] = _value(key, doc[key], base, nullable)
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise _Malformed("snapshot.meta is not an object")
    snap = Snapshot(**fields, meta_json=json.dumps(meta))
    if not re.fullmatch(r"[0-9a-f]{4,64}", snap.id):
        raise _Malformed(f"snapshot.id is not an id: {snap.id!r}")
    return snap


def _member(row: Any) -> Member:
    if not isinstance(row, dict):
        raise _Malformed("a member is not an object")
    missing = {"path", "type", "size", "mode", "uid", "gid", "mtime"} - set(row)
    if missing:
        raise _Malformed(f"a member lacks {', '.join(sorted(missing))}")
    row = {k: v for k, v in row.items() if k in ROW_COLUMNS}
    for key in _BYTES_COLUMNS:
        if row.get(key) is not None:
            if not isinstance(row[key], str):
                raise _Malformed(f"member {key} is not base64")
            row[key] = base64.b64decode(row[key], validate=True)
    for key in ("size", "mode", "uid", "gid", "mtime"):
        if not isinstance(row[key], int) or isinstance(row[key], bool):
            raise _Malformed(f"member {key} is not an integer")
    for key in ("path", "type"):
        if not isinstance(row[key], str):
            raise _Malformed(f"member {key} is not text")
    sha = row.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _HEX64.fullmatch(sha)):
        raise _Malformed("member sha256 is not a SHA-256")
    return from_row(row)


def _sha256_or_none(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and (not isinstance(value, str) or not _HEX64.fullmatch(value)):
        raise _Malformed(f"data.{key} is not a SHA-256")
    return value


def _data(doc: Any, snap: Snapshot, form: int) -> DataRef:
    if not isinstance(doc, dict):
        raise _Malformed("data is not an object")
    sid, name = doc.get("restic_snapshot"), doc.get("filename")
    digest, size = _sha256_or_none(doc, "raw_sha256"), doc.get("raw_bytes")
    content = _sha256_or_none(doc, "content_sha256") if form >= 3 else None
    if not isinstance(sid, str) or not _RESTIC_ID.fullmatch(sid):
        raise _Malformed("data.restic_snapshot is not a restic snapshot id")
    if name != data_filename(snap):
        raise _Malformed(f"data.filename {name!r} is not {data_filename(snap)!r}")
    if digest is None and (content is None or snap.kind != "volume"):
        raise _Malformed("data has no raw_sha256" + (" or content_sha256" if form >= 3 else ""))
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _Malformed("data.raw_bytes is not a byte count")
    return DataRef(
        restic_snapshot=sid,
        filename=name,
        raw_sha256=digest,
        raw_bytes=size,
        content_sha256=content,
    )


def decode(raw: bytes) -> Manifest:
    """The manifest ``encode`` wrote; IntegrityError on anything malformed."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, Mapping):
            raise _Malformed("not a JSON object")
        if doc.get("format") not in _READABLE or isinstance(doc.get("format"), bool):
            raise _Malformed(f"format {doc.get('format')!r} is not one of {sorted(_READABLE)}")
        snap = _snapshot(doc.get("snapshot"))
        members = doc.get("members")
        if not isinstance(members, list):
            raise _Malformed("members is not a list")
        return Manifest(
            snapshot=snap,
            members=[_member(m) for m in members],
            data=_data(doc.get("data"), snap, doc["format"]),
        )
    except (_Malformed, IntegrityError) as err:
        raise IntegrityError(f"malformed snapvol manifest: {err}") from None
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError) as err:
        raise IntegrityError(f"malformed snapvol manifest: {err}") from None
