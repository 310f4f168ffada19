"""`snapvol recover`: what an interrupted Kubernetes snapshot or restore left, put right."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from snapvol.cli import kube_target
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.options import json_option

if TYPE_CHECKING:
    from snapvol.adapters.store import Store
    from snapvol.kube.claims import Workload
    from snapvol.kube.scale import Mark


@click.command("recover")
@click.option(
    "--namespace",
    default=None,
    envvar="SNAPVOL_NAMESPACE",
    help="The namespace to look in (default: the context's, else default).",
)
@click.option(
    "--context",
    "kube_context",
    default=None,
    envvar="SNAPVOL_KUBE_CONTEXT",
    help="The kubeconfig context (default: the current one).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="SNAPVOL_KUBECONFIG",
    help="The kubeconfig (default: $KUBECONFIG, else ~/.kube/config, else the service "
    "account of the pod snapvol runs in).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Also what a run on another host left (this host cannot tell whether it still "
    "runs: make sure it does not).",
)
@click.option(
    "--scale-back",
    is_flag=True,
    help="Also scale back a workload an interrupted restore left down, its claim as it is "
    "(maybe half-written): by default it stays down until a restore rewrites it.",
)
@json_option
@with_app
def command(
    app: AppContext,
    namespace: str | None,
    kube_context: str | None,
    kubeconfig: Path | None,
    force: bool,
    scale_back: bool,
    as_json: bool,
) -> None:
    """Scale back the Kubernetes workloads an interrupted snapshot or restore left scaled down,
    and delete its helper pods.

    Only a run that is gone is recovered: one still running on this host is left alone, and
    one from another host only with --force.
    """
    from snapvol.kube import recovery

    with contextlib.ExitStack() as stack:
        # The store only names an interrupted restore's safety snapshot: none, no name.
        store = stack.enter_context(app.store()) if app.db.exists() else None
        kube = stack.enter_context(kube_target.cluster(kubeconfig, kube_context, namespace))
        where = namespace or kube.namespace
        keep_down = None if scale_back else _keep_down(app, store)
        done = recovery.recover(kube, where, force=force, keep_down=keep_down)
    for name in done.helpers_deleted:
        app.console.info(f"deleted helper pod {where}/{name}")
    for line in done.helpers_left:
        app.console.warn(f"left helper pod {where}/{line}")
    for found in done.workloads:
        say = app.console.info if found.action == "scaled back" else app.console.warn
        say(f"{found.workload}: {found.action} (left by snapvol {found.mark.owner()})")
    if not done.helpers_deleted and not done.helpers_left and not done.workloads:
        app.console.info(f"nothing to recover in namespace {where}")
    if as_json:
        app.console.json(
            {
                "namespace": where,
                "helpers_deleted": done.helpers_deleted,
                "helpers_left": done.helpers_left,
                "workloads": [
                    {"workload": w.workload, "action": w.action, "replicas": w.mark.replicas}
                    for w in done.workloads
                ],
            }
        )


def _keep_down(app: AppContext, store: Store | None) -> Callable[[Workload, Mark], str | None]:
    """Why a workload stays down: an interrupted restore may have left its claim half-written."""
    from snapvol.kube.cold import is_restore

    def why(workload: Workload, mark: Mark) -> str | None:
        if not is_restore(mark):
            return None
        back = kube_target.put_back_hint(store, workload, mark)
        how = (
            f"`{app.command(*back, '--yes')}` puts back what it held before"
            if back
            else "restore a snapshot into it"
        )
        return (
            f"the run was a restore, so its claim may be half-written: {how} (or --scale-back "
            "starts it as it is)"
        )

    return why
