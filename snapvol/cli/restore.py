"""`snapvol restore`: put a snapshot (or a dump file) back, after checking it and asking."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from snapvol import restoring
from snapvol.adapters.store import COMPLETE, Snapshot, Store
from snapvol.cli import kube_target, picker
from snapvol.cli.confirm import confirm_by_typing
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.format import (
    logical_plan_table,
    logical_restored_line,
    volume_plan_table,
    volume_restored_line,
)
from snapvol.cli.options import (
    DEFAULT_CONTAINER,
    helper_image_option,
    json_option,
    pod_options,
    reader_option,
    stop_timeout_option,
    typed,
)
from snapvol.errors import IntegrityError, NotFoundError, UsageError
from snapvol.output import human_bytes
from snapvol.workspace import Workspace

if TYPE_CHECKING:
    from snapvol.pg.logical_restore import RestoreOptions


@click.command("restore")
@click.argument("ref", required=False)
@click.option(
    "--file",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Restore this dump file (custom or SQL, optionally .zst) instead of a snapshot.",
)
@click.option(
    "--container",
    default=None,
    envvar="SNAPVOL_CONTAINER",
    help="Restore into this container (default: the snapshot's own; pc_db for --file).",
)
@pod_options
@click.option("--database", help="Logical: the database to replace (default: the snapshot's).")
@click.option("--user", help="Logical: the role to restore as (default: POSTGRES_USER).")
@click.option(
    "--from-repo",
    is_flag=True,
    help="Read the snapshot from the repository (--repo), checked before anything changes; "
    "done anyway when the archive is missing here and a repository is given. A volume on the "
    "host lane is restored in one pass beside it (no local archive kept); otherwise the "
    "archive is fetched first.",
)
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--no-safety-snapshot",
    is_flag=True,
    help="Do not snapshot the current volume or database first: no automatic rollback of a "
    "volume restore, and no way back from either.",
)
@click.option(
    "--no-owner",
    is_flag=True,
    help="Logical, custom format: skip the dump's owners and privileges; the database's "
    "owner gets every object (for a dump from a server whose roles do not exist here).",
)
@click.option(
    "--allow-roles",
    is_flag=True,
    help="Logical, SQL file: let the dump create the roles it needs (CREATE ROLE and ALTER "
    "ROLE of those roles; never a superuser, never an existing role).",
)
@click.option(
    "--table",
    "tables",
    multiple=True,
    metavar="NAME",
    help="Logical, custom format: restore only this table (repeatable; any schema), into a new "
    "database (--database): a partial restore never replaces a database.",
)
@click.option(
    "--schema",
    "schemas",
    multiple=True,
    metavar="NAME",
    help="Logical, custom format: restore only this schema's objects (repeatable), into a new "
    "database, as --table.",
)
@helper_image_option
@reader_option
@stop_timeout_option
@kube_target.kube_options
@json_option
@with_app
def command(
    app: AppContext,
    ref: str | None,
    file: Path | None,
    container: str | None,
    pod: str | None,
    claim: str | None,
    database: str | None,
    user: str | None,
    from_repo: bool,
    assume_yes: bool,
    no_safety_snapshot: bool,
    no_owner: bool,
    allow_roles: bool,
    tables: tuple[str, ...],
    schemas: tuple[str, ...],
    helper_image: str | None,
    reader: str,
    stop_timeout: int | None,
    as_json: bool,
    **kube: Any,
) -> None:
    """Restore snapshot REF (an id, a unique prefix of 4+ hex digits, or a name), or a dump file.

    Without REF on a terminal, lists the snapshots and asks which one.
    """
    if file is not None and ref is not None:
        raise UsageError("give a snapshot or --file, not both")
    if file is not None and from_repo:
        raise UsageError("--from-repo restores a snapshot, not --file")
    # One store session. A dump file needs no store of its own: --file may create one, to
    # record what it does.
    with app.store(create=file is not None) as store:
        snap, read_repo = (None, False) if file is not None else _chosen(app, store, ref, from_repo)
        logical = restoring.is_logical(snap)
        if not logical and (
            database is not None or user is not None or no_owner or allow_roles or tables or schemas
        ):
            raise UsageError(
                "--database, --user, --no-owner, --allow-roles, --table and --schema go with "
                "logical restores"
            )
        if logical and (pod is not None or claim is not None):
            raise UsageError("--pod and --claim go with volume snapshots")
        if logical and typed("stop_timeout"):
            raise UsageError(
                "--stop-timeout goes with volume snapshots: a logical restore stops nothing"
            )
        # A workload's claim, or a snapshot of one: the cluster's, never the engine's.
        to_cluster = kube_target.restores(snap, kube["workload"])
        with (
            contextlib.nullcontext(None) if to_cluster else app.connected(store, stop_timeout) as ws
        ):
            if ws is None and logical:
                kube_target.refuse_engine_flags(
                    container=container, helper_image=helper_image, reader=reader
                )
                done = _Restored(
                    *kube_target.restore_dump(
                        app,
                        store,
                        snap,
                        _logical_options(
                            no_owner, not no_safety_snapshot, allow_roles, tables, schemas
                        ),
                        file=file,
                        database=database,
                        user=user,
                        assume_yes=assume_yes,
                        **kube,
                    )
                )
            elif ws is None:
                kube_target.refuse_engine_flags(
                    pod=pod,
                    container=container,
                    helper_image=helper_image,
                    reader=reader,
                    stop_timeout=stop_timeout,
                    no_safety_snapshot=no_safety_snapshot,
                )
                assert snap is not None
                done = _Restored(
                    *kube_target.restore(
                        app,
                        store,
                        fetch_archive(app, store, snap) if read_repo else snap,
                        claim=claim,
                        assume_yes=assume_yes,
                        **kube,
                    )
                )
            elif logical:
                done = _restore_logical(
                    app,
                    ws,
                    snap,
                    file,
                    container or (snap.container if snap is not None else DEFAULT_CONTAINER),
                    database,
                    user,
                    assume_yes,
                    no_owner,
                    safety=not no_safety_snapshot,
                    allow_roles=allow_roles,
                    tables=tables,
                    schemas=schemas,
                )
            else:
                assert snap is not None
                done = _restore_volume(
                    app,
                    ws,
                    snap,
                    container,
                    assume_yes,
                    no_safety_snapshot,
                    helper_image,
                    reader,
                    from_repo=read_repo,
                    pod=pod,
                    claim=claim,
                )
    # Said once the store is closed, after the line saying it was created (if it was).
    app.console.info(done.line)
    _print_undo(app, done.safety)
    if as_json:
        app.console.json(done.summary)


@dataclass
class _Restored:
    line: str  # what was restored where, for people
    safety: Snapshot | None  # the way back, if one was taken
    summary: dict[str, Any]  # --json


def _chosen(
    app: AppContext, store: Store, ref: str | None, from_repo: bool
) -> tuple[Snapshot, bool]:
    """The snapshot REF names (or the user picks), refused if it cannot be restored: before
    its container is looked up; and whether it is to be read from the repository (with
    ``from_repo``, or when its archive is missing here and a repository is given). A logical
    snapshot's archive is fetched now; a volume snapshot is read once its target is known
    (``_restore_volume``: in one pass when the target allows it)."""
    snap = store.resolve(ref) if ref is not None else picker.pick_snapshot(store, app.console)
    missing = restoring.archive_missing(snap, app.backup_dir)
    if from_repo or (app.repo is not None and missing):
        snap = restoring.restorable(snap, app.backup_dir)
        if not restoring.is_logical(snap):
            return snap, True
        snap = fetch_archive(app, store, snap)
    elif missing:
        refuse_copied_away(store, snap)
    return restoring.restorable(snap, app.backup_dir), False


def fetch_archive(app: AppContext, store: Store, snap: Snapshot) -> Snapshot:
    """The snapshot with its archive fetched from the repository and checked: nothing of the
    target has been looked at yet."""
    from snapvol.repo import fetch

    restic = app.restic()
    fetched = fetch.fetch(restic, store, snap, app.backup_dir, app.console)
    app.console.info(
        f"Fetched snapshot {snap.id} ({snap.name}) from {restic.repo.display}: "
        f"{human_bytes(fetched.raw_bytes)}, checked"
    )
    return fetched.snapshot


def refuse_copied_away(store: Store, snap: Snapshot) -> None:
    """A missing archive of a snapshot that was copied: say where it is and how to use it."""
    copies = store.copies(snapshot_id=snap.id, status=COMPLETE)
    if copies:
        raise NotFoundError(
            f"the archive of snapshot {snap.id} is missing here; it was copied to "
            f"{copies[0].repository}: give --repo (or SNAPVOL_REPOSITORY) to read it from "
            "there; nothing was changed"
        )


def _restore_volume(
    app: AppContext,
    ws: Workspace,
    snap: Snapshot,
    container: str | None,
    assume_yes: bool,
    no_safety_snapshot: bool,
    helper_image: str | None,
    reader: str = "auto",
    *,
    from_repo: bool = False,
    pod: str | None = None,
    claim: str | None = None,
) -> _Restored:
    """``from_repo``: the snapshot is read from the repository, in one pass beside the volume
    when its lane allows it (``volume.staged``), else fetched into the backup directory first
    and restored from there as a local archive is. ``pod`` and ``claim``: a claim of a pod
    `podman kube play` runs (default: the snapshot's own, when it was taken of one)."""
    from snapvol.repo import fetch
    from snapvol.volume import kubeplay, staged
    from snapvol.volume import restore as volume_restore
    from snapvol.volume.target import resolve_volume_target

    where = kubeplay.restore_where(snap.meta, container, pod, claim)
    in_pod: kubeplay.PodClaim | None = None
    if where is not None:
        in_pod = kubeplay.find(ws.engine, *where)
        target_ref = in_pod.container.id
    else:
        target_ref = container or snap.container
    one_pass = False
    with contextlib.ExitStack() as open_stream:
        if from_repo:
            volume = snap.volume if container is None else None
            found = (
                resolve_volume_target(ws.engine, target_ref, volume, reader, helper_image)
                if in_pod is None
                else kubeplay.target(ws.engine, in_pod, reader, helper_image)
            )
            one_pass = staged.staged_directory(found) is not None
            if one_pass:
                # Opened before the plan is shown: a wrong password or a copy that does not
                # match the store is one line, as the fetch says it.
                restic = app.restic()
                source = open_stream.enter_context(
                    fetch.opened(restic, ws.store, snap, app.console, members_read_back=True)
                )
            else:
                snap = fetch_archive(app, ws.store, snap)
        also = kubeplay.others(in_pod) if in_pod is not None else ()
        with app.locked(ws, target_ref, operation=f"restore {snap.id}", also=also) as ws:
            plan = volume_restore.plan_volume_restore(
                ws,
                snap,
                container,
                reader=reader,
                helper_image=helper_image,
                local_archive=not one_pass,
                pod_claim=in_pod,
            )
            shown_from = restic.repo.display if one_pass else None
            app.console.err.print(volume_plan_table(plan, not no_safety_snapshot, shown_from))
            whole_pod = plan.target.pod
            confirm_by_typing(
                whole_pod.name if whole_pod else plan.target.container.name,
                assume_yes=assume_yes,
                what="restore",
                noun="the pod's name" if whole_pod else "the container's name",
            )
            if one_pass:
                result = staged.restore_staged(
                    ws, plan, source, safety_snapshot=not no_safety_snapshot
                )
            else:
                result = volume_restore.restore_volume(
                    ws, plan, safety_snapshot=not no_safety_snapshot
                )
            matched = _compare_with_drill(
                ws, result.snapshot, plan.target.container.name, result.safety
            )
    line = volume_restored_line(plan, result)
    if one_pass:
        line += f"; read from {restic.repo.display} in one pass, checked, no local archive kept"
    if matched:
        line += f"; {matched}"
    return _Restored(
        line,
        result.safety,
        {
            "restored": result.snapshot.to_dict(),
            **_undo_fields(app, result.safety),
            "container": plan.target.container.name,
            "volume": plan.target.volume,
            **kubeplay.recorded_meta(plan.target),
            "downtime_s": round(result.downtime_s, 3),
            "duration_s": round(result.duration_s, 3),
            "one_pass": one_pass,
        },
    )


def _compare_with_drill(
    ws: Workspace, snap: Snapshot, container: str, safety: Snapshot | None
) -> str | None:
    """The restored server against the rows a drill of the snapshot counted (``drill.run``); a
    mismatch is an error that says how to undo the restore, which is done."""
    from snapvol.drill.run import check_restored

    try:
        return check_restored(ws, snap, container)
    except IntegrityError as err:
        back = (
            f"`snapvol restore {safety.id}` puts back what was there"
            if safety is not None
            else "no safety snapshot was taken"
        )
        raise IntegrityError(f"restored, but {err.message}; {back}") from err


def _logical_options(
    no_owner: bool,
    safety: bool,
    allow_roles: bool,
    tables: tuple[str, ...],
    schemas: tuple[str, ...],
) -> RestoreOptions:
    from snapvol.pg.logical_restore import RestoreOptions

    return RestoreOptions(
        no_owner=no_owner, safety=safety, allow_roles=allow_roles, tables=tables, schemas=schemas
    )


def _restore_logical(
    app: AppContext,
    ws: Workspace,
    snap: Snapshot | None,
    file: Path | None,
    container: str,
    database: str | None,
    user: str | None,
    assume_yes: bool,
    no_owner: bool,
    *,
    safety: bool = True,
    allow_roles: bool = False,
    tables: tuple[str, ...] = (),
    schemas: tuple[str, ...] = (),
) -> _Restored:
    from snapvol.pg import logical_restore, pgexec

    operation = f"restore {snap.id}" if snap is not None else f"restore --file {file}"
    options = _logical_options(no_owner, safety, allow_roles, tables, schemas)
    with app.locked(ws, container, operation=operation) as ws:
        if snap is not None:
            target = pgexec.resolve_pg_target(ws.engine, container, database or snap.database, user)
            source = logical_restore.snapshot_source(ws, snap)
        else:
            assert file is not None
            target = pgexec.resolve_pg_target(ws.engine, container, database, user)
            source = logical_restore.file_source(ws, target, file, options)
        plan = logical_restore.plan_restore(ws, target, source, options)
        app.console.err.print(logical_plan_table(plan))
        confirm_by_typing(
            target.container.name, assume_yes=assume_yes, what=f"replace {target.database}"
        )
        result = logical_restore.restore_logical(ws, plan)
    what = f"{snap.id} ({snap.name})" if snap is not None else str(file)
    return _Restored(
        logical_restored_line(what, plan, result),
        result.safety,
        {
            "restored": snap.to_dict() if snap is not None else None,
            **_undo_fields(app, result.safety),
            "file": str(file) if file is not None else None,
            "format": source.format,
            "container": target.container.name,
            "database": target.database,
            "tables": result.tables,
            "duration_s": round(result.duration_s, 3),
            "replaced_existing": plan.current.exists,
            "no_owner": plan.no_owner,
            "roles_created": plan.new_roles,
            "extensions": [e.name for e in plan.extensions],
            "previous_kept_as": result.retired_kept,
        },
    )


def _undo_command(app: AppContext, safety: Snapshot) -> str:
    return app.command("restore", safety.id)


def _print_undo(app: AppContext, safety: Snapshot | None) -> None:
    """After a restore: where its way back is, and the command that takes it."""
    if safety is None:
        return
    app.console.info(f"Safety snapshot {safety.id} ({safety.name}): {safety.path}")
    app.console.info(f"Undo with: {_undo_command(app, safety)}")


def _undo_fields(app: AppContext, safety: Snapshot | None) -> dict[str, Any]:
    return {
        "safety_snapshot": safety.to_dict() if safety is not None else None,
        "undo": _undo_command(app, safety) if safety is not None else None,
    }
