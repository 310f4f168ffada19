"""The ``kubernetes`` source on the command line: ``--workload`` and its cluster options, for
``snapshot --volume`` and ``restore``; the commands call in here and stay as they were.

A workload's claim is locked like a container (``locking``, one operation per claim on this
machine), and the workload's own mark (``snapvol.io/scaled-from``) keeps two machines apart: a
mark an interrupted run left is refused with the command that recovers it (``snapvol recover``).
``--kube-lane`` and ``--node-name`` choose who reads and writes the claim: a helper pod, or
snapvol itself on the claim's node (``snapvol.kube.node``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from snapvol import locking
from snapvol.cli.options import stacked, typed
from snapvol.errors import LockedError, UsageError
from snapvol.kube.node import LANES

if TYPE_CHECKING:
    from snapvol.adapters.store import Snapshot, Store
    from snapvol.cli.context import AppContext
    from snapvol.cli.format import Fields
    from snapvol.kube.claims import ClaimTarget, Workload
    from snapvol.kube.client import Kube
    from snapvol.kube.scale import Mark
    from snapvol.options import SnapshotOptions
    from snapvol.pg.logical_restore import RestoreOptions

KINDS = {
    "deployment": "deployment",
    "deployments": "deployment",
    "deploy": "deployment",
    "statefulset": "statefulset",
    "statefulsets": "statefulset",
    "sts": "statefulset",
}

kube_options = stacked(
    click.option(
        "--workload",
        metavar="KIND/NAME",
        default=None,
        help="A Kubernetes Deployment or StatefulSet (deployment/NAME, statefulset/NAME; "
        "deploy/ and sts/ too). Volume: its claim is worked on cold (the workload is scaled "
        "down, a helper pod reads or writes the claim, the workload is scaled back); --claim "
        "names the claim when it mounts several (a StatefulSet replica's: data-NAME-1). "
        "--logical, and a restore of a logical snapshot or of --file DUMP: pg_dump, or the "
        "restore, runs in one of its running pods.",
    ),
    click.option(
        "--namespace",
        default=None,
        envvar="SNAPVOL_NAMESPACE",
        help="With --workload: its namespace (default: the context's, else default).",
    ),
    click.option(
        "--context",
        "kube_context",
        default=None,
        envvar="SNAPVOL_KUBE_CONTEXT",
        help="With --workload: the kubeconfig context (default: the current one; a restore: "
        "the snapshot's).",
    ),
    click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        envvar="SNAPVOL_KUBECONFIG",
        help="With --workload: the kubeconfig (default: $KUBECONFIG, else ~/.kube/config, "
        "else the service account of the pod snapvol runs in).",
    ),
    click.option(
        "--kube-lane",
        type=click.Choice(LANES),
        default="auto",
        envvar="SNAPVOL_KUBE_LANE",
        show_default=True,
        help="With --workload, a volume: who reads and writes the claim. host: snapvol itself, "
        "in the claim's directory, when it is a hostPath or local (local-path) volume on this "
        "node and snapvol runs as root; pod: a helper pod on the data's node; auto: host when "
        "it can.",
    ),
    click.option(
        "--node-name",
        default=None,
        envvar="SNAPVOL_NODE_NAME",
        metavar="NAME",
        help="With --workload: the name of the Kubernetes node snapvol runs on (default: this "
        "machine's host name, in lower case, as the kubelet names its node).",
    ),
)
"""A workload's claim in a Kubernetes cluster, and how to reach the cluster."""

_CLUSTER_FLAGS = {
    "namespace": "--namespace",
    "kube_context": "--context",
    "kubeconfig": "--kubeconfig",
    "kube_lane": "--kube-lane",
    "node_name": "--node-name",
}


def connect_cluster(kubeconfig: Path | None, context: str | None, namespace: str | None) -> Kube:
    """The cluster's client (tests replace this: it is the one place a cluster is reached)."""
    from snapvol.kube.client import connect

    return connect(kubeconfig, context, namespace)


@contextlib.contextmanager
def cluster(kubeconfig: Path | None, context: str | None, namespace: str | None) -> Iterator[Kube]:
    kube = connect_cluster(kubeconfig, context, namespace)
    try:
        yield kube
    finally:
        kube.close()


def parse_workload(text: str) -> tuple[str, str]:
    """``KIND/NAME`` as (kind, name): deployment or statefulset."""
    kind, sep, name = text.partition("/")
    if not sep or not name or "/" in name or kind.lower() not in KINDS:
        raise UsageError(
            f"--workload takes KIND/NAME, KIND deployment or statefulset (deploy, sts), "
            f"not {text!r}"
        )
    return KINDS[kind.lower()], name


def refuse_without_workload(workload: str | None) -> None:
    """--namespace, --context and --kubeconfig typed without --workload (their variables
    set in the environment are fine: they apply when a workload is named)."""
    if workload is not None:
        return
    for param, flag in _CLUSTER_FLAGS.items():
        if typed(param):
            raise UsageError(f"{flag} goes with --workload")


def refuse_engine_flags(**given: object) -> None:
    """Options of an engine's target typed with --workload (or for a Kubernetes snapshot)."""
    for flag, value in given.items():
        typed_only = ("container", "reader", "stop_timeout")  # their variables apply elsewhere
        if value in (None, False) or (flag in typed_only and not typed(flag)):
            continue
        if flag == "no_safety_snapshot":
            raise UsageError(
                "a restore into a Kubernetes claim always takes its safety snapshot first: "
                "its rollback needs it"
            )
        raise UsageError(
            f"--{flag.replace('_', '-')} goes with a container's volume, not a workload's"
        )


def refuse_lane_flags(what: str) -> None:
    """--kube-lane and --node-name typed where no claim is read or written (their variables
    are fine: they serve the volume commands)."""
    for flag in ("kube_lane", "node_name"):
        if typed(flag):
            raise UsageError(f"--{flag.replace('_', '-')} goes with {what}")


def _lock_name(target: ClaimTarget) -> str:
    return f"claim {target.workload.namespace}/{target.claim}"


@contextlib.contextmanager
def locked(kube: Kube, target: ClaimTarget, operation: str) -> Iterator[None]:
    """The claim's operation lock on this machine (``rm`` of its snapshots takes it too)."""
    from snapvol.kube.records import claim_key

    key = claim_key(kube.server, target.workload.namespace, target.claim)
    with locking.holding([(key, _lock_name(target))], operation):
        yield


def _where(kube: Kube, namespace: str, kubeconfig: Path | None) -> list[str]:
    """The options that reach this namespace on this cluster again."""
    where = ["--namespace", namespace]
    if kube.context:
        where += ["--context", kube.context]
    if kubeconfig is not None:
        where += ["--kubeconfig", str(kubeconfig)]
    return where


def put_back_hint(store: Store | None, workload: Workload, mark: Mark) -> tuple[str, ...]:
    """The command that puts back what an interrupted restore's claim held: its safety
    snapshot restored (empty when none was recorded)."""
    from snapvol.kube.records import left_safety

    safety = left_safety(store, workload, mark) if store is not None else None
    return ("restore", safety.id) if safety is not None else ()


def left_mark(
    kube: Kube,
    workload: Workload,
    kubeconfig: Path | None,
    store: Store | None,
    *,
    restoring: bool,
) -> Mark | None:
    """A mark on the workload (another run's, or an interrupted one's) refuses the operation,
    naming what recovers it: nothing is changed. Only a restore (``restoring``) takes over the
    mark of an interrupted restore on this host (returned): the claim may be half-written, and
    rewriting it whole is what puts it right."""
    from snapvol.kube.cold import is_restore
    from snapvol.kube.scale import Mark, alive_here

    mark = Mark.of(workload)
    if mark is None:
        return None
    alive = alive_here(mark)
    if alive is True:
        raise LockedError(
            f"{workload.describe()} is being worked on by snapvol {mark.owner()}; "
            "nothing was changed"
        )
    where = _where(kube, workload.namespace, kubeconfig)
    left = f"scaled down to {mark.scaled_to} (it had {mark.replicas}) by snapvol {mark.owner()}"
    if alive is None:
        raise LockedError(
            f"{workload.describe()} is {left}, a run on another host that this one cannot "
            "check; nothing was changed. Once that run is known to be gone, to scale it back "
            "and delete its helper pods",
            run=("recover", *where, "--force"),
        )
    if not is_restore(mark):
        raise LockedError(
            f"{workload.describe()} was left {left}, which was interrupted; nothing was "
            "changed. To scale it back and delete its helper pods",
            run=("recover", *where),
        )
    if restoring:
        return mark
    back = put_back_hint(store, workload, mark)
    raise LockedError(
        f"{workload.describe()} was left {left}, an interrupted restore: its claim may be "
        "half-written; nothing was changed. Restore a snapshot into it first"
        + (" (its safety snapshot holds what it held before)" if back else ""),
        run=back,
    )


def _resolve(
    kube: Kube,
    kind: str,
    name: str,
    namespace: str | None,
    claim: str | None,
    kubeconfig: Path | None,
    store: Store,
    *,
    restoring: bool = False,
) -> tuple[ClaimTarget, Mark | None]:
    from snapvol.kube.claims import load_workload, resolve

    workload = load_workload(kube, kind, name, namespace or kube.namespace)
    adopt = left_mark(kube, workload, kubeconfig, store, restoring=restoring)
    return resolve(kube, kind, name, namespace, claim=claim), adopt


def snapshot(
    app: AppContext,
    options: SnapshotOptions,
    workload: str,
    claim: str | None,
    namespace: str | None,
    kube_context: str | None,
    kubeconfig: Path | None,
    kube_lane: str,
    node_name: str | None,
) -> Snapshot:
    """``snapshot --volume --workload KIND/NAME``: a cold copy of its claim, recorded."""
    from snapvol.kube import records
    from snapvol.kube.node import host_directory

    kind, name = parse_workload(workload)
    with (
        app.store(create=True) as store,
        cluster(kubeconfig, kube_context, namespace) as kube,
    ):
        target, _ = _resolve(kube, kind, name, namespace, claim, kubeconfig, store)
        directory = host_directory(target, kube_lane, node_name)
        with locked(kube, target, "snapshot --volume"):
            return records.snapshot(
                store, app.backup_dir, kube, target, options, app.console, directory=directory
            )


def dump(
    app: AppContext,
    options: SnapshotOptions,
    database: str | None,
    user: str | None,
    fmt: str,
    workload: str,
    namespace: str | None,
    kube_context: str | None,
    kubeconfig: Path | None,
    kube_lane: str,
    node_name: str | None,
) -> Snapshot:
    """``snapshot --logical --workload KIND/NAME``: pg_dump in one of its running pods."""
    from snapvol.kube import logical
    from snapvol.kube.claims import load_workload

    refuse_lane_flags("--volume")
    kind, name = parse_workload(workload)
    with (
        app.store(create=True) as store,
        cluster(kubeconfig, kube_context, namespace) as kube,
    ):
        found = load_workload(kube, kind, name, namespace or kube.namespace)
        key = logical.workload_key(kube, found)
        with locking.holding([(key, found.describe())], "snapshot --logical"):
            dump = logical.find(kube, found)
            target = logical.in_pod(
                kube,
                dump,
                store,
                app.backup_dir,
                app.console,
                database=database,
                user=user,
                ends_input=False,  # its psql session ends with its stream: v4 will do
            )
            return logical.snapshot(kube, target, options, fmt)


def restore(
    app: AppContext,
    store: Store,
    snap: Snapshot,
    *,
    claim: str | None,
    workload: str | None,
    namespace: str | None,
    kube_context: str | None,
    kubeconfig: Path | None,
    kube_lane: str,
    node_name: str | None,
    assume_yes: bool,
) -> tuple[str, Snapshot, dict[str, Any]]:
    """``restore REF``: a Kubernetes snapshot back into its claim (or a volume snapshot into
    ``--workload``'s claim); returns the line that says so, the safety snapshot and the JSON
    summary."""
    from snapvol.cli.confirm import confirm_by_typing
    from snapvol.kube import records
    from snapvol.kube.node import host_directory

    recorded = records.recorded_where(snap)
    if workload is None:
        if recorded is None:
            raise UsageError(
                f"snapshot {snap.id} was not taken of a Kubernetes workload: name one with "
                "--workload KIND/NAME"
            )
        claim = claim or str(recorded["claim"])
    kind, name, namespace, kube_context = _restoring_into(
        recorded, workload, namespace, kube_context
    )
    members = records.check(snap, store, app.console)  # before the cluster is touched
    with cluster(kubeconfig, kube_context, namespace) as kube:
        target, adopt = _resolve(
            kube, kind, name, namespace, claim, kubeconfig, store, restoring=True
        )
        directory = host_directory(target, kube_lane, node_name, writing=True)
        with locked(kube, target, f"restore {snap.id}"):
            app.console.err.print(_plan(snap, target, kube, recorded, directory))
            confirm_by_typing(
                f"{target.workload.kind}/{target.workload.name}",
                assume_yes=assume_yes,
                what=f"overwrite claim {target.claim}",
                noun="the workload",
            )
            if adopt is not None:
                _take_over(app, kube, target, adopt)
            done = records.restore(
                store,
                app.backup_dir,
                kube,
                target,
                snap,
                members,
                app.console,
                adopt=adopt,
                directory=directory,
            )
    line = (
        f"Restored {snap.id} ({snap.name}) into claim {target.claim} of "
        f"{target.workload.describe()}: {done.duration_s:.1f} s"
    )
    summary = {
        "restored": snap.to_dict(),
        "safety_snapshot": done.safety.to_dict(),
        "undo": app.command("restore", done.safety.id),
        "kubernetes": records.where(kube, target),
        "reader": done.safety.meta.get("reader"),
        "duration_s": round(done.duration_s, 3),
    }
    return line, done.safety, summary


def restore_dump(
    app: AppContext,
    store: Store,
    snap: Snapshot | None,
    options: RestoreOptions,
    *,
    file: Path | None = None,
    database: str | None,
    user: str | None,
    workload: str | None,
    namespace: str | None,
    kube_context: str | None,
    kubeconfig: Path | None,
    kube_lane: str,
    node_name: str | None,
    assume_yes: bool,
) -> tuple[str, Snapshot | None, dict[str, Any]]:
    """``restore REF`` of a logical snapshot into a workload's PostgreSQL (its own, or
    ``--workload``'s), or ``restore --file DUMP --workload``, in its running pod; returns the
    line that says so, the safety snapshot and the JSON summary."""
    refuse_lane_flags("a volume snapshot's restore")
    from snapvol.cli.confirm import confirm_by_typing
    from snapvol.cli.format import logical_plan_table, logical_restored_line
    from snapvol.kube import logical, logical_restore
    from snapvol.kube.claims import load_workload
    from snapvol.kube.records import recorded_where

    recorded = recorded_where(snap) if snap is not None else None
    kind, name, namespace, kube_context = _restoring_into(
        recorded, workload, namespace, kube_context
    )
    with cluster(kubeconfig, kube_context, namespace) as kube:
        found = load_workload(kube, kind, name, namespace or kube.namespace)
        left_mark(kube, found, kubeconfig, store, restoring=False)  # a cold copy's window
        key = logical.workload_key(kube, found)
        operation = f"restore {snap.id}" if snap is not None else f"restore --file {file}"
        with locking.holding([(key, found.describe())], operation):
            dump = logical.find(kube, found)
            target = logical.in_pod(
                kube,
                dump,
                store,
                app.backup_dir,
                app.console,
                database=database or (snap.database if snap is not None else None),
                user=user,
            )
            plan = logical_restore.plan(kube, target, snap, options, file=file)
            table = logical_plan_table(plan)
            table.add_row(
                "Pod",
                f"{dump.pod}, container {dump.container}, of {found.describe()} (it keeps "
                f"running), cluster {kube.server}",
            )
            _note_another_cluster(table, recorded, kube)
            app.console.err.print(table)
            confirm_by_typing(
                f"{found.kind}/{found.name}",
                assume_yes=assume_yes,
                what=f"replace database {target.pg.database}",
                noun="the workload",
            )
            result = logical_restore.restore(target, plan)
            where = logical.recorded_meta(kube, dump)
    what = f"{snap.id} ({snap.name})" if snap is not None else str(file)
    line = logical_restored_line(what, plan, result) + f" (pod {dump.pod})"
    safety = result.safety
    summary = {
        "restored": snap.to_dict() if snap is not None else None,
        "file": str(file) if file is not None else None,
        "safety_snapshot": safety.to_dict() if safety is not None else None,
        "undo": app.command("restore", safety.id) if safety is not None else None,
        "format": plan.source.format,
        "database": target.pg.database,
        "kubernetes": where["kubernetes"],
        "tables": result.tables,
        "duration_s": round(result.duration_s, 3),
        "replaced_existing": plan.current.exists,
        "no_owner": plan.no_owner,
        "extensions": [e.name for e in plan.extensions],
        "previous_kept_as": result.retired_kept,
    }
    return line, safety, summary


def _take_over(app: AppContext, kube: Kube, target: ClaimTarget, mark: Mark) -> None:
    """An interrupted restore's helpers deleted: this restore rewrites the claim whole."""
    from snapvol.kube.recovery import delete_helpers

    deleted = delete_helpers(kube, target.workload.namespace, mark.operation)
    app.console.warn(
        f"{target.workload.describe()} was left scaled down by an interrupted restore "
        f"({mark.owner()}); this restore takes over"
        + (f" (deleted its helper pod(s) {', '.join(deleted)})" if deleted else "")
    )


def _plan(
    snap: Snapshot,
    target: ClaimTarget,
    kube: Kube,
    recorded: dict[str, Any] | None,
    directory: Path | None,
) -> Any:
    from snapvol.cli.format import restored_snapshot_rows

    table = restored_snapshot_rows(snap)
    if snap.pg_version:
        table.add_row("PostgreSQL", f"{snap.pg_version} (the claim's is checked once it is read)")
    table.add_row("SHA-256", f"{snap.sha256}  [green]verified[/]")
    workload = target.workload
    table.add_row(
        "[red]Overwrites[/]",
        f"claim {target.claim} of {workload.describe()} (scaled from {workload.replicas} to "
        f"{min(target.scale_to, workload.replicas)}, then back), cluster {kube.server}",
    )
    table.add_row(
        "Written by",
        f"snapvol, here in {directory} (the claim's directory on this node)"
        if directory is not None
        else "a helper pod" + (f" on node {target.node}" if target.node else ""),
    )
    table.add_row("Safety snapshot", "yes, taken first (rolled back to on failure)")
    _note_another_cluster(table, recorded, kube)
    return table


def _restoring_into(
    recorded: dict[str, Any] | None,
    workload: str | None,
    namespace: str | None,
    kube_context: str | None,
) -> tuple[str, str, str | None, str | None]:
    """The workload a restore goes into (kind, name) and its namespace and context: --workload's,
    else the one the snapshot was taken of (``recorded``), in its namespace and context unless
    those are given."""
    if workload is not None:
        return (*parse_workload(workload), namespace, kube_context)
    assert recorded is not None  # restores() sent it here
    return (
        str(recorded["workload_kind"]),
        str(recorded["workload"]),
        namespace or str(recorded["namespace"]),
        kube_context or recorded.get("context"),
    )


def _note_another_cluster(table: Fields, recorded: dict[str, Any] | None, kube: Kube) -> None:
    """A plan's note when the snapshot was taken on another API server than this one."""
    if recorded is not None and recorded.get("server") not in (None, kube.server):
        table.add_row("[yellow]Note[/]", f"the snapshot was taken on {recorded['server']}")


def restores(snap: Snapshot | None, workload: str | None) -> bool:
    """Whether a restore of ``snap`` goes to a Kubernetes cluster: ``--workload`` names a
    workload, or the snapshot was taken of one (and names it). A logical snapshot goes to the
    workload's PostgreSQL (``restore_dump``), a volume snapshot to its claim (``restore``)."""
    from snapvol.kube.records import recorded_where
    from snapvol.restoring import is_logical

    if is_logical(snap):
        if snap is None:  # a dump file: into a workload's PostgreSQL, or a container's
            refuse_without_workload(workload)
            return workload is not None
        if workload is not None or recorded_where(snap) is not None:
            return True  # into a workload's PostgreSQL, in its pod
        refuse_without_workload(workload)
        return False
    assert snap is not None
    if recorded_where(snap) is None:  # its --namespace and --context are the recorded ones'
        refuse_without_workload(workload)
        return workload is not None
    return True
