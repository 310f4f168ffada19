"""`snapvol snapshot`: take a volume (cold) or logical (pg_dump) snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from snapvol.adapters.restic import Restic
from snapvol.adapters.store import COMPLETE, Copy, Snapshot
from snapvol.cli import kube_target
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.copy import copied_line
from snapvol.cli.format import logical_summary, snapshot_summary
from snapvol.cli.options import (
    helper_image_option,
    json_option,
    pod_options,
    reader_option,
    stop_timeout_option,
    target_options,
    typed,
)
from snapvol.errors import LockedError, SnapvolError, UsageError
from snapvol.options import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL, SnapshotOptions
from snapvol.pg.dumpfile import FORMATS

if TYPE_CHECKING:
    from snapvol.pg.logical import DumpOptions


@click.command("snapshot")
@click.option("--volume", "volume", is_flag=True, help="Cold snapshot of the named volume.")
@click.option("--logical", "logical", is_flag=True, help="pg_dump of a running database.")
@click.option("--name", help="A unique name (letters, digits, '.', '_', '-').")
@click.option(
    "--level",
    type=click.IntRange(MIN_LEVEL, MAX_LEVEL),
    default=DEFAULT_LEVEL,
    show_default=True,
    help="zstd compression level.",
)
@helper_image_option
@reader_option
@stop_timeout_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="--logical: pg_dump's custom format (pg_restore-able, the default) or plain SQL.",
)
@click.option("--database", help="--logical: the database (default: the container's POSTGRES_DB).")
@click.option("--user", help="--logical: the role (default: the container's POSTGRES_USER).")
@click.option(
    "--max-shrink",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    envvar="SNAPVOL_MAX_SHRINK",
    help="Flag (warn, alert, and never count as a good snapshot) one whose data is smaller "
    "than the one before it of the same source by more than this fraction, or empty.",
)
@click.option(
    "--copy/--no-copy",
    "copy_to_repo",
    default=None,
    envvar="SNAPVOL_COPY",
    help="Then copy it to the restic repository (--repo), once the container runs again. "
    "Default: --copy when a repository is given, unless SNAPVOL_COPY=no.",
)
@target_options
@pod_options
@kube_target.kube_options
@json_option
@with_app
def command(
    app: AppContext,
    volume: bool,
    logical: bool,
    name: str | None,
    level: int,
    helper_image: str | None,
    reader: str,
    stop_timeout: int | None,
    fmt: str | None,
    database: str | None,
    user: str | None,
    container: str,
    volume_name: str | None,
    pod: str | None,
    claim: str | None,
    max_shrink: float,
    copy_to_repo: bool | None,
    as_json: bool,
    **kube: Any,
) -> None:
    """Take a snapshot of a container's data and record it in the manifest store."""
    if volume == logical:
        raise UsageError(
            "choose one of --volume (cold, whole volume) and --logical (pg_dump)"
            + ("; one snapshot takes one kind" if volume else "")
        )
    restic = _copy_target(app, copy_to_repo)
    options = SnapshotOptions(name=name, level=level)  # before anything is looked up or stopped
    kube_target.refuse_without_workload(kube["workload"])
    if logical:
        _refuse_volume_flags(
            volume_name=volume_name, helper_image=helper_image, pod=pod, claim=claim
        )
        from snapvol.pg.logical import DumpOptions

        dump = DumpOptions() if fmt is None else DumpOptions(format=fmt)
        if kube["workload"] is not None:
            kube_target.refuse_engine_flags(container=container)
            snap = kube_target.dump(app, options, database, user, dump.format, **kube)
        else:
            snap = _logical(app, options, container, database, user, dump)
    else:
        _refuse_logical_flags(fmt=fmt, database=database, user=user)
        lane = _Lane(reader, helper_image, stop_timeout)
        if kube["workload"] is not None:
            kube_target.refuse_engine_flags(
                pod=pod,
                container=container,
                volume_name=volume_name,
                helper_image=helper_image,
                reader=reader,
                stop_timeout=stop_timeout,
            )
            snap = kube_target.snapshot(app, options, claim=claim, **kube)
        elif pod is not None or claim is not None:
            snap = _pod_volume(app, options, pod, claim, volume_name, lane)
        else:
            snap = _volume(app, options, container, volume_name, lane)
    snap = _judged(app, snap, max_shrink)
    failure: SnapvolError | None = None
    copies: list[Copy] = []
    if restic is not None:
        copies, failure = _copy(app, restic, snap, asked=copy_to_repo is True)
    if as_json:
        app.console.json(snap.to_dict(copies))
    app.console.info(snapshot_summary(snap))
    if snap.kind == "logical":
        app.console.info(logical_summary(snap))
    for copy in copies:
        if copy.status == COMPLETE:
            app.console.info(copied_line(snap, copy))
    if failure is not None:
        raise failure


def _judged(app: AppContext, snap: Snapshot, max_shrink: float) -> Snapshot:
    """The new snapshot, flagged (warned and alerted) if it is empty or much smaller."""
    from snapvol import plausibility
    from snapvol.retention import SUSPECT

    with app.store() as store:
        snap = plausibility.flag(store, snap, max_shrink)
    reason = snap.meta.get(SUSPECT)
    if reason:
        message = (
            f"snapshot {snap.id} ({snap.name}) is suspect: {reason}; it is kept, and not "
            "counted as a good snapshot by prune"
        )
        app.console.warn(message)
        app.alerts.append(message)
    return snap


def _copy_target(app: AppContext, copy_to_repo: bool | None) -> Restic | None:
    """The repository the new snapshot goes to: --copy's, or a configured one unless
    --no-copy. Opened before anything is looked up or stopped: a missing repository or
    password stops nothing midway."""
    if copy_to_repo is False or (copy_to_repo is None and app.repo is None):
        return None
    return app.restic()


def _copy(
    app: AppContext, restic: Restic, snap: Snapshot, *, asked: bool
) -> tuple[list[Copy], SnapvolError | None]:
    """Copy the new snapshot (the container runs again by now). A failure is returned, said to
    leave the snapshot itself complete and kept; unless ``asked`` (--copy), another copy or
    prune holding the repository is only a warning: the automatic copy waits for the next
    `snapvol copy`, and two snapshots at the same minute both succeed."""
    from snapvol.repo.copy import copy_snapshot, locked, open_target

    with app.store() as store:
        try:
            target = open_target(restic)
            with locked(target, "snapshot --copy"):
                copy_snapshot(store, target, snap, app.console)
            failure = None
        except LockedError as err:
            failure = _copy_failed(restic, snap, err)
            if not asked:
                app.console.warn(str(failure))
                failure = None
        except SnapvolError as err:
            failure = _copy_failed(restic, snap, err)
        return store.copies(snapshot_id=snap.id), failure


def _copy_failed(restic: Restic, snap: Snapshot, err: SnapvolError) -> SnapvolError:
    """``err``, said to leave the new snapshot complete and kept."""
    err.message = (
        f"snapshot {snap.id} ({snap.name}) is complete and kept, but copying it to "
        f"{restic.repo.display} failed: {err.message} (`snapvol copy {snap.id}` tries again)"
    )
    return err


def _refuse_logical_flags(**given: str | None) -> None:
    for flag, value in given.items():
        if value is not None:
            raise UsageError(f"--{'format' if flag == 'fmt' else flag} goes with --logical")


@dataclass(frozen=True)
class _Lane:
    """How a volume snapshot reads the volume, and stops its container."""

    reader: str
    helper_image: str | None
    stop_timeout: int | None


def _refuse_volume_flags(**given: str | None) -> None:
    # Only a --reader (--stop-timeout) typed on this command line is refused: SNAPVOL_READER
    # (SNAPVOL_STOP_TIMEOUT) applies to volumes.
    for flag in ("reader", "stop_timeout"):
        if typed(flag):
            raise UsageError(f"--{flag.replace('_', '-')} goes with --volume")
    for flag, value in given.items():
        if value is not None:
            raise UsageError(f"--{flag.replace('_', '-')} goes with --volume")


def _volume(
    app: AppContext,
    options: SnapshotOptions,
    container: str,
    volume_name: str | None,
    lane: _Lane,
) -> Snapshot:
    from snapvol.volume import snapshot as volume
    from snapvol.volume.target import resolve_volume_target

    with app.workspace(
        lock=container, operation="snapshot --volume", create=True, stop_timeout=lane.stop_timeout
    ) as ws:
        target = resolve_volume_target(
            ws.engine, container, volume_name, lane.reader, lane.helper_image
        )
        return volume.snapshot_volume(ws, target, options)


def _pod_volume(
    app: AppContext,
    options: SnapshotOptions,
    pod: str | None,
    claim: str | None,
    volume_name: str | None,
    lane: _Lane,
) -> Snapshot:
    """A claim of a pod `podman kube play` runs, with the whole pod stopped for it."""
    from snapvol.volume import kubeplay
    from snapvol.volume import snapshot as volume

    if pod is None:
        raise UsageError("--claim goes with --pod (the pod, or Deployment, that mounts it)")
    if volume_name is not None:
        raise UsageError("--volume-name goes with --container; with --pod, name the claim: --claim")
    # --container typed with --pod names one of the pod's containers (the default names none).
    container = click.get_current_context().params["container"]
    in_pod = container if typed("container") else None
    with app.workspace(create=True, stop_timeout=lane.stop_timeout) as ws:
        found = kubeplay.find(ws.engine, pod, claim, in_pod)
        operation = "snapshot --volume"
        with app.locked(ws, found.container.id, operation, kubeplay.others(found)) as held:
            target = kubeplay.target(held.engine, found, lane.reader, lane.helper_image)
            return volume.snapshot_volume(held, target, options)


def _logical(
    app: AppContext,
    options: SnapshotOptions,
    container: str,
    database: str | None,
    user: str | None,
    dump: DumpOptions,
) -> Snapshot:
    from snapvol.pg import logical, pgexec

    with app.workspace(lock=container, operation="snapshot --logical", create=True) as ws:
        target = pgexec.resolve_pg_target(ws.engine, container, database, user)
        return logical.snapshot_logical(ws, target, options, dump)
