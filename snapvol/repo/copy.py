"""Copying snapshots to a restic repository (see ``manifest`` for what a copy is there).

A copy streams the local ``.zst`` archive through zstd into ``restic backup --stdin``, the
archive hashed (SHA-256) as it is read and the uncompressed stream checked on its way: a dump
hashed whole, a volume's tar stream read for its headers only (its content digest takes each
file's SHA-256 from the record, which the archive's own hash vouches for). Nothing is staged on
disk and memory stays flat. The copy is recorded in the store as
in progress (with this run's pid and host) before restic starts, and complete or failed after;
its manifest is written only once the data is in the repository and the local archive proved to
be the one the record describes, so a copy that did not finish is never taken for one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from snapvol.adapters import restic as restic_api
from snapvol.adapters.store import COMPLETE, IN_PROGRESS, LOST, Copy, Snapshot, Store
from snapvol.errors import (
    IntegrityError,
    NotFoundError,
    OperationFailed,
    RepositoryError,
    SnapvolError,
    describe,
)
from snapvol.names import new_id
from snapvol.output import Reporter
from snapvol.pipeline.archive import file_chunks, unzstd
from snapvol.pipeline.members import Member, first_unlike
from snapvol.pipeline.tarscan import ContentDigest, TarFormatError, TarScanner
from snapvol.repo import manifest
from snapvol.repo.manifest import DataRef
from snapvol.repo.opening import Opening as Opening
from snapvol.repo.opening import Target as Target
from snapvol.repo.opening import locked as locked
from snapvol.repo.opening import open_target as open_target
from snapvol.runtime import pid_alive, started_after


@dataclass(frozen=True)
class Listing:
    """The repository's snapvol snapshots, listed once (``restic snapshots --tag snapvol``).

    A copy's record names its restic snapshots as ``restic backup`` printed them: the full id
    or (restic 0.14) an 8-digit prefix. ``find`` resolves one among the restic snapshots of the
    copy's own snapvol snapshot, as restic resolves a prefix: unique, or not at all.
    """

    snapshots: tuple[restic_api.Snapshot, ...]

    @functools.cached_property
    def _by_snapshot(self) -> dict[str, list[restic_api.Snapshot]]:
        """The restic snapshots of each snapvol snapshot (by its ``snapvol-id-`` tag)."""
        index: dict[str, list[restic_api.Snapshot]] = {}
        for s in self.snapshots:
            snapshot_id = manifest.snapshot_id_of(s.tags)
            if snapshot_id is not None and manifest.TAG in s.tags:
                index.setdefault(snapshot_id, []).append(s)
        return index

    def find(self, ref: str | None, snapshot_id: str) -> str | None:
        """The full id of the restic snapshot of snapvol snapshot ``snapshot_id`` that ``ref``
        (a full id or a prefix) names, or None if none does or several do."""
        if not ref:
            return None
        found = {s.id for s in self._by_snapshot.get(snapshot_id, ()) if s.id.startswith(ref)}
        return found.pop() if len(found) == 1 else None

    def parts(self, copy: Copy) -> tuple[str | None, str | None]:
        """The full ids of ``copy``'s data and manifest restic snapshots (None: gone)."""
        return (
            self.find(copy.data_snapshot, copy.snapshot_id),
            self.find(copy.manifest_snapshot, copy.snapshot_id),
        )

    def holds(self, copy: Copy) -> bool:
        """Whether both restic snapshots of ``copy`` are still in the repository."""
        return all(self.parts(copy))

    def of(self, snapshot_id: str, kind_tag: str) -> list[restic_api.Snapshot]:
        """The data (``DATA_TAG``) or manifest snapshots of snapvol snapshot ``snapshot_id``."""
        return [s for s in self._by_snapshot.get(snapshot_id, ()) if kind_tag in s.tags]

    def snapshot_ids(self) -> set[str]:
        """The snapvol ids that restic snapshots here are tagged with."""
        return set(self._by_snapshot)


def listing(target: Target) -> Listing:
    return Listing(tuple(target.restic.snapshots(tags=[manifest.TAG])))


def listed(opening: Opening, target: Target, last_held: float) -> Listing:
    """The listing ``opening`` made (see ``Opening.snapshots``), for a holder of ``locked``."""
    return Listing(tuple(opening.snapshots(target, last_held)))


def mark_lost(store: Store, target: Target, present: Listing, reporter: Reporter) -> list[Copy]:
    """Mark lost the complete copies in ``target`` whose restic snapshots are gone (forgotten
    by hand), and those recorded at the same location under another repository id (another
    repository is there now: made anew, or another disk of a rotation); and mark complete
    again the lost copies in ``target`` whose restic snapshots are both here (the disk came
    back). The store alone never decides that a copy exists."""
    for c in store.copies(repository_id=target.repository_id, status=LOST):
        if present.holds(c) and store.find_copy(c.id):
            reporter.warn(f"the copy of snapshot {c.snapshot_id} is in {target.display} again")
    lost = []
    halves: list[str] = []  # what is left of this store's own half-gone copies
    for c in store.copies(status=COMPLETE):
        if c.repository_id == target.repository_id:
            parts = present.parts(c)
            if all(parts):
                continue
            why = f"no longer in {target.display}: its restic snapshots are gone"
            halves += [i for i in parts if i is not None]
        elif c.repository == target.display:
            why = (
                f"no longer in {target.display}: another repository is there now "
                "(made anew, or another disk)"
            )
        else:
            continue  # another repository's copy
        if store.lose_copy(c.id, why):
            reporter.warn(f"the copy of snapshot {c.snapshot_id} is {why}; it is copied again")
            lost.append(c)
    if halves:  # a manifest left without its data would be found by a restore and fail it
        with contextlib.suppress(RepositoryError):  # the next copy tries again
            target.restic.forget(halves, prune=False)
    return lost


def orphans(store: Store, target: Target, present: Listing, snapshot_id: str) -> list[str]:
    """Data snapshots of ``snapshot_id`` that no manifest names: what a copy that failed
    between its data and its manifest left. Only snapshots with snapvol's tags and this id;
    none at all when a manifest here is one this store cannot attribute (never delete what
    we cannot account for)."""
    known: dict[str, str | None] = {}  # full manifest id: full data id, of this store's copies
    for c in store.copies(snapshot_id=snapshot_id, repository_id=target.repository_id):
        data_id, manifest_id = present.parts(c)
        if manifest_id is not None:
            known[manifest_id] = data_id
    manifests = present.of(snapshot_id, manifest.MANIFEST_TAG)
    if any(m.id not in known for m in manifests):
        return []
    named = {known[m.id] for m in manifests}
    return [d.id for d in present.of(snapshot_id, manifest.DATA_TAG) if d.id not in named]


def forget_orphans(
    store: Store, target: Target, present: Listing, snapshot_ids: Iterable[str], reporter: Reporter
) -> list[str]:
    """Forget (without --prune: the next ``snapvol prune`` frees the space) the orphan data
    snapshots of ``snapshot_ids``; returns their restic ids."""
    gone = [sid for i in dict.fromkeys(snapshot_ids) for sid in orphans(store, target, present, i)]
    if gone:
        try:
            target.restic.forget(gone, prune=False)
        except RepositoryError as err:  # the copies made stand; the next copy or prune retries
            reporter.warn(f"leftover data snapshots in {target.display} not forgotten: {err}")
            return []
        reporter.warn(
            f"forgot {len(gone)} data snapshot(s) in {target.display} left without a manifest "
            f"by an interrupted copy ({', '.join(g[:8] for g in gone)})"
        )
    return gone


def missing(store: Store, target: Target) -> list[Snapshot]:
    """Complete snapshots with no complete copy in ``target``, oldest first (run ``mark_lost``
    first so that a complete copy is one the repository still holds)."""
    copied = {
        c.snapshot_id for c in store.copies(repository_id=target.repository_id, status=COMPLETE)
    }
    return [s for s in reversed(store.snapshots(status=COMPLETE)) if s.id not in copied]


def copied(store: Store, target: Target, snap: Snapshot) -> Copy | None:
    """The newest complete copy of ``snap`` in ``target``, if any."""
    done = store.copies(snapshot_id=snap.id, repository_id=target.repository_id, status=COMPLETE)
    return done[0] if done else None


class _Hashing:
    """Chunks passed through, counted and hashed (SHA-256) on the way."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.sha = hashlib.sha256()
        self.size = 0
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.sha.update(chunk)
            self.size += len(chunk)
            yield chunk
        self.done = True

    def problem(self) -> str | None:
        return None

    def data_ref(self, restic_snapshot: str, filename: str) -> DataRef:
        return DataRef(restic_snapshot, filename, self.sha.hexdigest(), self.size)


class _TarContent:
    """A volume's tar stream passed through and counted, its headers read on the way for its
    content digest; each file's SHA-256 is the record's (``members``), not computed again
    unless ``hash_files`` (an archive with no recorded SHA-256 of its own to vouch for it).
    ``problem`` then says where the stream and the record part, if they do."""

    def __init__(
        self, chunks: Iterable[bytes], members: Sequence[Member], what: str, hash_files: bool
    ) -> None:
        self._chunks = chunks
        self._hash_files = hash_files
        self._what = what
        self._members = members
        self._digest = ContentDigest.of_record(members)
        self._seen: list[Member] = []
        self._scanner = TarScanner(self._seen.append, hash_files=hash_files, digest=self._digest)
        self.size = 0
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            self._feed(chunk)
            yield chunk
        self._feed(None)
        self.done = True

    def _feed(self, chunk: bytes | None) -> None:
        try:
            if chunk is None:
                self._scanner.close()
            else:
                self._scanner.feed(chunk)
        except TarFormatError as err:  # stops restic before it saves anything
            raise IntegrityError(f"{self._what} is not a readable tar stream ({err})") from None

    def problem(self) -> str | None:
        if len(self._seen) != len(self._members):
            return f"{self._what} holds {len(self._seen)} files, the record {len(self._members)}"
        unlike = first_unlike(self._seen, self._members, content=self._hash_files)
        if unlike is not None:
            return f"{self._what} differs from the record at {unlike.path!r}"
        return None

    def data_ref(self, restic_snapshot: str, filename: str) -> DataRef:
        return DataRef(
            restic_snapshot, filename, None, self.size, content_sha256=self._digest.hexdigest()
        )


def copy_snapshot(store: Store, target: Target, snap: Snapshot, reporter: Reporter) -> Copy:
    """Copy one complete snapshot's archive (and then its manifest) to ``target``.

    Raises the failure's own error (a RepositoryError for restic's) after recording the copy
    failed; the local snapshot is never changed.
    """
    if snap.status != COMPLETE:
        raise NotFoundError(
            f"snapshot {snap.id} ({snap.name}) is {snap.status}: only a complete one is copied"
        )
    archive = Path(snap.path)
    if not snap.path or not archive.is_file():
        raise NotFoundError(
            f"the archive of snapshot {snap.id} ({snap.name}) is not here "
            f"({snap.path or 'no path'})"
        )
    filename = manifest.data_filename(snap)
    record = store.add_copy(
        Copy(
            id=new_id(),
            snapshot_id=snap.id,
            repository_id=target.repository_id,
            repository=target.display,
            status=IN_PROGRESS,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
    )
    # The manifest's restic starts beside the data's: it opens the repository (key derivation,
    # index, lock) while the data flows, and is given its bytes (which name the data snapshot)
    # only once the data is in and the archive checked; otherwise it is cancelled, unsaved.
    pending: restic_api.PendingBackup | None = None
    try:
        members = store.members(snap.id)  # before restic runs: nothing changes while it does
        compressed = _Hashing(file_chunks(archive))
        chunks = unzstd(compressed, f"archive {archive.name}")
        raw: _Hashing | _TarContent = (
            _TarContent(chunks, members, f"archive {archive.name}", snap.sha256 is None)
            if snap.kind == "volume"
            else _Hashing(chunks)
        )
        pending = target.restic.start_backup_stream(
            manifest.manifest_filename(snap),
            tags=manifest.tags_for(snap, manifest.MANIFEST),
            host=snap.host or None,
            time=snap.created_at,
        )
        with reporter.transfer(f"copying {snap.name}", snap.raw_bytes) as progress:
            data = target.restic.backup_stream(
                raw,
                filename,
                tags=manifest.tags_for(snap, manifest.DATA),
                host=snap.host or None,
                time=snap.created_at,
                progress=progress,
                full_id=False,
            )
        _check_source(snap, compressed, raw, data.snapshot_id, target, pending)
        ref = raw.data_ref(data.snapshot_id, filename)
        written = pending.finish([manifest.encode(snap, members, ref)], full_id=False)
    except OSError as err:  # reading the archive: one line, not a traceback
        _cancel(pending)
        store.fail_copy(record.id, describe(err))
        raise OperationFailed(
            f"snapshot {snap.id} was not copied: reading {archive.name} failed "
            f"({err.strerror or err}); the local snapshot is unchanged"
        ) from err
    except BaseException as err:
        _cancel(pending)
        store.fail_copy(record.id, describe(err))
        raise
    return store.complete_copy(
        record.id,
        data_snapshot=data.snapshot_id,
        manifest_snapshot=written.snapshot_id,
        raw_sha256=ref.raw_sha256,
        content_sha256=ref.content_sha256,
        raw_bytes=ref.raw_bytes,
        bytes_added=data.data_added + written.data_added,
    )


def _cancel(pending: restic_api.PendingBackup | None) -> None:
    """Stop the manifest's restic unsaved (nothing if it was given its manifest already)."""
    if pending is not None:
        pending.cancel()


def _check_source(
    snap: Snapshot,
    compressed: _Hashing,
    raw: _Hashing | _TarContent,
    data_snapshot: str,
    target: Target,
    pending: restic_api.PendingBackup,
) -> None:
    """The archive read must be the one the record describes; otherwise the manifest's restic
    is stopped unsaved and the data snapshot just written is removed again (it has no
    manifest, so it never counted as a copy)."""
    problem = None
    if not (compressed.done and raw.done):
        problem = "restic ended before the archive was read to its end"
    elif snap.sha256 is not None and compressed.sha.hexdigest() != snap.sha256:
        problem = f"archive {Path(snap.path).name} does not match its recorded SHA-256"
    elif snap.raw_bytes is not None and snap.raw_bytes != raw.size:
        problem = (
            f"archive {Path(snap.path).name} holds {raw.size} bytes uncompressed, "
            f"the record says {snap.raw_bytes}"
        )
    else:
        problem = raw.problem()
    if problem is None:
        return
    pending.cancel()  # first: its lock would keep `restic forget` from removing the data
    with contextlib.suppress(RepositoryError):  # no manifest: not a copy either way
        target.restic.forget([data_snapshot], prune=False)
    raise IntegrityError(f"snapshot {snap.id} was not copied: {problem}")


@dataclass
class CopyRun:
    """What ``copy_all`` did: the copies made, the snapshots skipped (already copied), the
    failures (snapshot, error)."""

    copies: list[Copy] = field(default_factory=list)
    skipped: list[Snapshot] = field(default_factory=list)
    failures: list[tuple[Snapshot, SnapvolError]] = field(default_factory=list)


def copy_all(
    store: Store,
    target: Target,
    snaps: Sequence[Snapshot],
    reporter: Reporter,
    present: Listing | None = None,
) -> CopyRun:
    """Copy each snapshot not yet copied to ``target``, in order (hold ``locked``).

    A failure of one snapshot (its archive missing or damaged) is recorded and the next is
    tried; a failure of the repository (RepositoryError) ends the run, raised at once. With
    ``present`` (the repository's listing, ``mark_lost`` applied), the data snapshots that
    interrupted copies of these snapshots left without a manifest are forgotten at the end.
    """
    run = CopyRun()
    for snap in snaps:
        if copied(store, target, snap) is not None:
            run.skipped.append(snap)
            continue
        reporter.step(f"copying {snap.id} ({snap.name}) to {target.display}")
        try:
            run.copies.append(copy_snapshot(store, target, snap, reporter))
        except RepositoryError as err:
            err.message = (
                f"snapshot {snap.id} ({snap.name}) was not copied (kept here, unchanged): "
                f"{err.message}"
            )
            raise
        except SnapvolError as err:
            reporter.warn(f"snapshot {snap.id} ({snap.name}) was not copied: {err.message}")
            run.failures.append((snap, err))
    if present is not None:
        done = [c.snapshot_id for c in run.copies] + [s.id for s in run.skipped]
        forget_orphans(store, target, present, done, reporter)
    return run


def raise_failures(run: CopyRun) -> None:
    """One error for a run's failures: the error itself when only one snapshot failed."""
    if not run.failures:
        return
    if len(run.failures) == 1:
        raise run.failures[0][1]
    names = ", ".join(s.id for s, _ in run.failures)
    raise OperationFailed(
        f"{len(run.failures)} snapshots were not copied ({names}); "
        f"{len(run.copies)} copied: the first failure: {run.failures[0][1].message}"
    )


def recover_copies(store: Store, reporter: Reporter) -> list[Copy]:
    """Mark failed the in-progress copies whose snapvol process on this host is gone."""
    recovered = []
    here = socket.gethostname()
    for copy in store.copies(status=IN_PROGRESS):
        if copy.host != here or copy.pid == os.getpid():
            continue  # another machine's run cannot be judged from here
        if (
            copy.pid is not None
            and pid_alive(copy.pid)
            and not started_after(copy.pid, copy.created_at)
        ):
            continue
        why = f"interrupted: snapvol (pid {copy.pid}) ended before it finished"
        if not store.fail_copy(copy.id, why):
            continue  # it finished meanwhile
        reporter.warn(
            f"the copy of snapshot {copy.snapshot_id} to {copy.repository} was interrupted; "
            "marked failed (the next `snapvol copy` makes it again)"
        )
        recovered.append(copy)
    return recovered
