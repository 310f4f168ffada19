"""`snapvol recover`: what an interrupted Kubernetes snapshot or restore left, put right."""

from __future__ import annotations

from pathlib import Path

import click

from snapvol.cli import kube_target
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.options import json_option


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
@json_option
@with_app
def command(
    app: AppContext,
    namespace: str | None,
    kube_context: str | None,
    kubeconfig: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Scale back the Kubernetes workloads an interrupted snapshot or restore left scaled down,
    and delete its helper pods.

    Only a run that is gone is recovered: one still running on this host is left alone, and
    one from another host only with --force.
    """
    from snapvol.kube import recovery

    with kube_target.cluster(kubeconfig, kube_context, namespace) as kube:
        where = namespace or kube.namespace
        done = recovery.recover(kube, where, force=force)
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
