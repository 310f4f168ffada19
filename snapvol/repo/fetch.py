"""Bringing a snapshot back from a restic repository: its data streamed out of the repository,
checked against the store's record of the copy (or, when the store has none there, the copy's
manifest), either into the backup directory (``fetch``: renamed into place once checked, so that
the normal local restore, with all its checks, can run on it) or to a caller that trusts what
it made only once the stream ended (``opened``: the staged volume restore); and the store
rebuilt from the repository's manifests (``import_manifests``).

Nothing here runs restic itself (``adapters.restic`` does) and nothing touches a container: a
fetch that fails leaves no file and no change in the store, and the restore never starts.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from snapvol.adapters.restic import DumpStream, Restic
from snapvol.adapters.store import COMPLETE, Copy, Snapshot, Store
from snapvol.errors import IntegrityError, NotFoundError, RepositorySnapshotMissingError
from snapvol.names import archive_filename, new_id
from snapvol.output import Reporter
from snapvol.pipeline import archive, tarscan
from snapvol.pipeline.destination import LocalDirectory, archive_name
from snapvol.pipeline.members import Member, first_unlike
from snapvol.repo import manifest as manifests
from snapvol.repo.manifest import Manifest

_SUFFIXES = {".tar": ".tar.zst", ".dump": ".dump.zst", ".sql": ".sql.zst"}
"""The local archive's suffix for each data file's ending in the repository."""


def manifest_for(restic: Restic, snapshot_id: str) -> Manifest:
    """The newest manifest of snapvol snapshot ``snapshot_id`` in the repository, decoded (and
    refused if malformed, or if it describes another snapshot)."""
    found = restic.snapshots(
        tags=[manifests.TAG, manifests.MANIFEST_TAG, manifests.id_tag(snapshot_id)]
    )
    if not found:
        raise NotFoundError(
            f"the repository {restic.repo.display} holds no copy of snapshot {snapshot_id}"
        )
    made = read_manifest(restic, found[-1].id, f"{snapshot_id}")
    if made.snapshot.id != snapshot_id:
        raise IntegrityError(
            f"the manifest of snapshot {snapshot_id} in the repository describes snapshot "
            f"{made.snapshot.id}; nothing was changed"
        )
    return made


@dataclass(frozen=True)
class Listed:
    """A manifest found in the repository, and the restic snapshot that holds it."""

    manifest: Manifest
    manifest_snapshot: str  # full restic id
    time: datetime  # when the manifest was written: the copy's completion


def listed_dict(found: Listed) -> dict[str, Any]:
    """The JSON shape of a copy found in a repository (``ls --repo --json``): the snapshot's
    record as the manifest holds it, and where its data is."""
    data = found.manifest.data
    return {
        **found.manifest.snapshot.to_dict(),
        "copy": {
            "restic_snapshot": data.restic_snapshot,
            "manifest_snapshot": found.manifest_snapshot,
            "filename": data.filename,
            "raw_sha256": data.raw_sha256,
            "content_sha256": data.content_sha256,
            "raw_bytes": data.raw_bytes,
            "members": len(found.manifest.members),
            "completed_at": found.time.isoformat(timespec="seconds"),
        },
    }


def manifests_in(restic: Restic) -> list[Listed]:
    """Every snapvol manifest in the repository, by the snapshots' creation, oldest first (one
    per snapshot: the newest manifest)."""
    newest: dict[str, Listed] = {}
    for found in restic.snapshots(tags=[manifests.TAG, manifests.MANIFEST_TAG]):
        made = read_manifest(restic, found.id, found.short_id)
        newest[made.snapshot.id] = Listed(made, found.id, found.time)
    return sorted(newest.values(), key=lambda m: m.manifest.snapshot.created_at)


def read_manifest(restic: Restic, restic_id: str, what: str) -> Manifest:
    """Dump and decode the one file of a manifest snapshot (restic tells its name)."""
    nodes = [n for n in restic.ls(restic_id) if n.type == "file"]
    if len(nodes) != 1 or not nodes[0].path.endswith(manifests.MANIFEST_SUFFIX):
        raise IntegrityError(f"restic snapshot {what} is not a snapvol manifest")
    filename = nodes[0].path.lstrip("/")
    with restic.dump(restic_id, filename) as stream:
        data = b"".join(stream)
    return manifests.decode(data)


@dataclass(frozen=True)
class Fetched:
    snapshot: Snapshot  # the record, updated: its archive is in the backup directory
    raw_bytes: int
    size_bytes: int


def fetch(
    restic: Restic,
    store: Store,
    snap: Snapshot,
    backup_dir: Path,
    reporter: Reporter,
) -> Fetched:
    """Fetch snapshot ``snap``'s archive from the repository into ``backup_dir``.

    The data is streamed from ``restic dump`` through SHA-256 (of the raw stream), a tar scan
    (volume snapshots) and zstd into the record's own ``.partial`` archive; it is renamed into
    place only once restic ended without error and the raw SHA-256, the raw size and (volume)
    every member match the store's records. Then the record's path, SHA-256 and size name the
    new archive, so ``verify`` and the restore's own checks accept it.
    """

    with opened(restic, store, snap, reporter) as (data, checked):
        destination = LocalDirectory(backup_dir)
        destination.prepare()
        dest = Path(destination.location(_archive_filename(snap, data.filename)))
        with reporter.transfer("fetching", data.raw_bytes) as advance:
            result = archive.write_compressed(checked, dest, progress=advance)
    updated = store.update(
        snap.id, path=str(dest), sha256=result.sha256, size_bytes=result.size_bytes
    )
    return Fetched(updated, result.raw_bytes, result.size_bytes)


@contextlib.contextmanager
def opened(
    restic: Restic,
    store: Store,
    snap: Snapshot,
    reporter: Reporter,
    *,
    members_read_back: bool = False,
) -> Iterator[tuple[manifests.DataRef, Iterable[bytes]]]:
    """Snapshot ``snap``'s data as ``restic dump`` streams it, with where it comes from and what
    it must be, checked as it passes: the stream ends with an ``IntegrityError`` unless restic
    ended without error and the raw SHA-256, the raw size and (volume) every member match.
    Trust nothing made from the stream until it has ended. Every failure restic reports before
    the first byte (a wrong password, no such copy, a manifest that does not match the store)
    raises here, on entry; leaving the block stops restic.

    When this store recorded a complete copy at this location, that copy's data is dumped
    straight away: one restic process, the store's record the authority. Only if restic finds
    no such snapshot there (forgotten, the repository made anew, an ambiguous short id) is the
    repository's manifest looked up instead; a copy this store recorded in this repository must
    then be the one the manifest describes.

    ``members_read_back``: the caller checks each member against the store before it writes
    it and reads every file back from what it wrote and compares it (the staged restore), so
    the stream's own scan of the members, a second SHA-256 of every file, is left out.
    """
    filename = manifests.data_filename(snap)
    reporter.step(f"fetching {filename} from {restic.repo.display}")
    recorded = _recorded_data(store, snap, restic.repo.display, filename)
    found = None
    if recorded is not None:
        _check_size(snap, recorded.raw_bytes, "the recorded copy")
        found = _dumped(restic, store, snap, recorded, by_store=True, scan=not members_read_back)
    if found is None:
        found = _dumped_by_manifest(restic, store, snap, scan=not members_read_back)
    data, stream, checked = found
    with stream:
        yield data, checked


def _recorded_data(
    store: Store, snap: Snapshot, display: str, filename: str
) -> manifests.DataRef | None:
    """Where the newest complete copy of ``snap`` this store recorded at this location has its
    data, and what the data is, as the store says (None: no such copy)."""
    for c in store.copies(snapshot_id=snap.id, status=COMPLETE):
        checked_by = c.raw_sha256 or c.content_sha256
        if c.repository == display and c.data_snapshot and checked_by and c.raw_bytes is not None:
            return manifests.DataRef(
                c.data_snapshot, filename, c.raw_sha256, c.raw_bytes, c.content_sha256
            )
    return None


_Dumped = tuple[manifests.DataRef, DumpStream, "_Checked"]


def _dumped_by_manifest(restic: Restic, store: Store, snap: Snapshot, *, scan: bool) -> _Dumped:
    """The dump when the store knows of no copy there, or restic did not find it: the newest
    manifest says where the copy is."""
    made = manifest_for(restic, snap.id)
    data = made.data
    recorded_copies = store.copies(
        snapshot_id=snap.id, repository_id=restic.config().id, status=COMPLETE
    )
    if any(_disagree(c, data) for c in recorded_copies):
        raise IntegrityError(
            f"the manifest of snapshot {snap.id} in the repository does not match the copy "
            "this store recorded; nothing was changed"
        )
    _check_size(snap, data.raw_bytes, "the manifest")
    if snap.kind == "volume":
        _check_same_members(snap.id, made.members, store.members(snap.id))
    found = _dumped(restic, store, snap, data, by_store=False, scan=scan)
    assert found is not None
    return found


def _disagree(recorded: Copy, data: manifests.DataRef) -> bool:
    """Whether a copy this store recorded says other data than ``data`` (a check of the same
    kind on both sides: another snapvol's copy of the same data may carry the other kind)."""
    pairs = ((recorded.raw_sha256, data.raw_sha256), (recorded.content_sha256, data.content_sha256))
    return any(ours is not None and theirs is not None and ours != theirs for ours, theirs in pairs)


def _check_size(snap: Snapshot, raw_bytes: int, source: str) -> None:
    if snap.raw_bytes is not None and raw_bytes != snap.raw_bytes:
        raise IntegrityError(
            f"{source} of snapshot {snap.id} records {raw_bytes} bytes, the store "
            f"{snap.raw_bytes}; nothing was changed"
        )


def _dumped(
    restic: Restic,
    store: Store,
    snap: Snapshot,
    data: manifests.DataRef,
    *,
    by_store: bool,
    scan: bool = True,
) -> _Dumped | None:
    """``restic dump`` of ``data`` started, its stream checked against ``data`` (``by_store``:
    the store's record of the copy, else the manifest's word) and, for a volume with ``scan``,
    the store's members. ``by_store``: None when restic finds no such snapshot or file (it says
    so before any byte); every other failure raises."""
    recorded = store.members(snap.id) if snap.kind == "volume" else None
    try:
        stream = restic.dump(data.restic_snapshot, data.filename)
    except RepositorySnapshotMissingError:
        if by_store:
            return None
        raise
    checked = _Checked(
        stream,
        snap,
        data,
        recorded,
        "the store's record" if by_store else "its manifest",
        hash_files=scan,
    )
    return data, stream, checked


def _archive_filename(snap: Snapshot, data_filename: str) -> str:
    """The record's own archive name (its recorded path's, when that is snapvol's naming), else
    the name snapvol gives it from the data file's ending."""
    own = archive_name(snap)
    if own is not None:
        return own
    for ending, suffix in _SUFFIXES.items():
        if data_filename.endswith(ending):
            return archive_filename(snap.name, snap.id, suffix)
    raise IntegrityError(f"the repository's data file {data_filename!r} is not snapvol's")


def _check_same_members(
    snapshot_id: str, listed: Sequence[Member], recorded: Sequence[Member]
) -> None:
    """The manifest's member list must be the store's, file by file."""
    if len(listed) != len(recorded) or first_unlike(listed, recorded) is not None:
        raise IntegrityError(
            f"the manifest of snapshot {snapshot_id} in the repository lists other files than "
            "the store records; nothing was changed"
        )


class _Checked:
    """The dumped stream, checked as it passes: at its end (restic ended without error), the
    size and the raw SHA-256 (a dump's copy) or the content digest (a volume's, see
    ``tarscan.ContentDigest``) must match ``data``, and a volume's members (given ``members``)
    the record, unless ``hash_files`` is off (the caller checks each member before it writes it
    and reads every file back; the digest then takes the files' SHA-256s from the record);
    otherwise it raises, which leaves the archive partial and removed."""

    def __init__(
        self,
        stream: Iterable[bytes],
        snap: Snapshot,
        data: manifests.DataRef,
        members: Sequence[Member] | None,
        source: str,
        *,
        hash_files: bool = True,
    ) -> None:
        self._stream = stream
        self._source = source
        self._snap = snap
        self._data = data
        self._members = list(members) if members is not None else None
        self._hash_files = hash_files
        self._seen: list[Member] = []
        self._aborted = False

    def abort(self) -> None:
        self._aborted = True

    def _scanner(self) -> tuple[tarscan.TarScanner | None, tarscan.ContentDigest | None]:
        if self._snap.kind != "volume" or self._members is None:
            return None, None  # a dump: its raw SHA-256 alone
        digest = None
        if self._data.content_sha256 is not None:
            digest = (
                tarscan.ContentDigest()
                if self._hash_files
                else tarscan.ContentDigest.of_record(self._members)
            )
        elif not self._hash_files:
            return None, None  # the raw SHA-256, and the caller's read-back
        scanner = tarscan.TarScanner(self._seen.append, hash_files=self._hash_files, digest=digest)
        return scanner, digest

    def __iter__(self) -> Iterator[bytes]:
        want = self._data
        sha = hashlib.sha256() if want.raw_sha256 is not None else None
        size = 0
        scanner, digest = self._scanner()
        for chunk in self._stream:
            if self._aborted:
                return
            if sha is not None:
                sha.update(chunk)
            size += len(chunk)
            if size > want.raw_bytes:
                raise self._mismatch(f"is longer than {self._source} says")
            if scanner is not None:
                try:
                    scanner.feed(chunk)
                except tarscan.TarFormatError as err:
                    raise self._mismatch(f"is not a readable tar stream ({err})") from None
            yield chunk
        if size != want.raw_bytes:
            raise self._mismatch(f"has {size} bytes, {self._source} {want.raw_bytes}")
        if sha is not None and sha.hexdigest() != want.raw_sha256:
            raise self._mismatch(f"does not match the SHA-256 of {self._source}")
        if scanner is not None:
            try:
                scanner.close()
            except tarscan.TarFormatError as err:
                raise self._mismatch(f"is not a readable tar stream ({err})") from None
            if self._hash_files:  # else the caller checks each member, and reads it back
                self._check_members()
        if digest is not None and digest.hexdigest() != want.content_sha256:
            raise self._mismatch(f"does not match the content digest of {self._source}")

    def _check_members(self) -> None:
        assert self._members is not None
        if len(self._seen) != len(self._members):
            raise self._mismatch(
                f"holds {len(self._seen)} files, the store records {len(self._members)}"
            )
        unlike = first_unlike(self._seen, self._members)
        if unlike is not None:
            raise self._mismatch(f"differs from the store's record at {unlike.path!r}")

    def _mismatch(self, what: str) -> IntegrityError:
        return IntegrityError(
            f"the repository's copy of snapshot {self._snap.id} {what}; it was not used and "
            "nothing was changed"
        )


def import_manifests(
    store: Store,
    listed: Sequence[Listed],
    backup_dir: Path,
    reporter: Reporter,
    *,
    repository_id: str,
    repository: str,
) -> list[Snapshot]:
    """Record in ``store`` each snapshot a manifest describes that the store does not know:
    complete, with its files, its archive where a fetch will put it (absent until then); and
    each copy in this repository the store has not recorded. Returns the snapshots added: one
    already known is kept as it is, one whose name is taken is skipped (and said)."""
    destination = LocalDirectory(backup_dir)
    added: list[Snapshot] = []
    for found in listed:
        m = found.manifest
        snap = m.snapshot
        _record_copy(store, found, repository_id, repository)
        if store.id_exists(snap.id):
            continue
        if store.name_exists(snap.name):
            reporter.warn(
                f"snapshot {snap.id}: the name {snap.name!r} is taken in this store; skipped"
            )
            continue
        record = Snapshot.model_validate(
            {
                **snap.model_dump(),
                "status": COMPLETE,
                "pid": None,
                "path": destination.location(_archive_filename(snap, m.data.filename)),
                "sha256": None,
                "size_bytes": None,
                "verified_at": None,
                "verify_ok": None,
            }
        )
        added.append(store.import_snapshot(record, m.members))
    return added


def _record_copy(store: Store, found: Listed, repository_id: str, repository: str) -> None:
    """The store knows of this copy (by its data snapshot in this repository) once."""
    data = found.manifest.data
    known = store.copies(snapshot_id=found.manifest.snapshot.id, repository_id=repository_id)
    if any(c.data_snapshot == data.restic_snapshot for c in known):
        return
    store.add_copy(
        Copy(
            id=new_id(),
            snapshot_id=found.manifest.snapshot.id,
            repository_id=repository_id,
            repository=repository,
            status=COMPLETE,
            data_snapshot=data.restic_snapshot,
            manifest_snapshot=found.manifest_snapshot,
            raw_sha256=data.raw_sha256,
            content_sha256=data.content_sha256,
            raw_bytes=data.raw_bytes,
            created_at=found.time,
            completed_at=found.time,
            host=found.manifest.snapshot.host,
        )
    )
