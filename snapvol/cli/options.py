"""Options several commands share, each stack one decorator (sqlite-utils' ``output_options``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from snapvol.volume.hostpath import READERS

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONTAINER = "pc_db"  # the reference stack's database container


def stacked(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """One decorator that applies ``decorators`` as if written one above the other: the first
    is outermost, so its option comes first in ``--help``."""

    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


global_options = stacked(
    click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        envvar="SNAPVOL_DB",
        show_default="/var/lib/snapvol/manifests.db as root, else "
        "$XDG_DATA_HOME/snapvol/manifests.db",
        help="The manifest store (SQLite). Only `snapshot` creates it.",
    ),
    click.option(
        "--backup-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar="SNAPVOL_BACKUP_DIR",
        show_default="backups beside the store",
        help="Where archives are written; the only place snapvol deletes them.",
    ),
    click.option(
        "--repo",
        default=None,
        envvar="SNAPVOL_REPOSITORY",
        help="A restic repository for copies (restic's syntax: a path, sftp:, s3:, rest:...).",
    ),
    click.option(
        "--password-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        envvar="SNAPVOL_PASSWORD_FILE",
        help="The repository's password, in an owner-only file (else restic's "
        "RESTIC_PASSWORD_FILE, RESTIC_PASSWORD_COMMAND or RESTIC_PASSWORD).",
    ),
    click.option(
        "--metrics-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        envvar="SNAPVOL_METRICS_FILE",
        help="Write Prometheus metrics here after each snapshot, copy, restore, verify, prune "
        "or rm (node_exporter's textfile collector: a *.prom file in its directory).",
    ),
    click.option(
        "--notify-config",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        envvar="SNAPVOL_NOTIFY_CONFIG",
        help="An Apprise configuration file (owner-only) of where to send a message when such a "
        "run fails; also SNAPVOL_NOTIFY: Apprise URLs, space-separated.",
    ),
    click.option(
        "--notify-success",
        is_flag=True,
        envvar="SNAPVOL_NOTIFY_SUCCESS",
        help="Also send a message when such a run succeeds.",
    ),
    click.option("--debug", is_flag=True, help="Show tracebacks for anticipated errors."),
)
"""Options accepted before the command name (and read from SNAPVOL_* variables)."""

target_options = stacked(
    click.option(
        "--container",
        default=DEFAULT_CONTAINER,
        envvar="SNAPVOL_CONTAINER",
        show_default=True,
        help="Target container name or id.",
    ),
    click.option(
        "--volume-name",
        default=None,
        help="Named volume to snapshot (default: the one at the data directory).",
    ),
)
"""The container (and volume) a snapshot works on."""

pod_options = stacked(
    click.option(
        "--pod",
        default=None,
        help="Volume: a pod `podman kube play` runs (or its Deployment's name): the claim's "
        "volume is worked on with the whole pod stopped. --container then names one of its "
        "containers, when several mount the claim.",
    ),
    click.option(
        "--claim",
        default=None,
        help="With --pod: the PersistentVolumeClaim (its Podman volume) to work on (default: "
        "the pod's only one).",
    ),
)
"""A volume named the Kubernetes way: a pod run by ``podman kube play`` and its claim."""


def typed(name: str) -> bool:
    """Whether option ``name`` of the running command was typed on its command line (not
    taken from its variable or its default)."""
    source = click.get_current_context().get_parameter_source(name)
    return source is click.core.ParameterSource.COMMANDLINE


reader_option = click.option(
    "--reader",
    type=click.Choice(READERS),
    default="auto",
    envvar="SNAPVOL_READER",
    show_default=True,
    help="Volume: read it from its directory on this host (fast; local engine and root) "
    "or through Docker's archive endpoint (anywhere); auto picks the host when it can.",
)
"""How a volume is read: the host lane when possible, or always Docker's archive endpoint."""

stop_timeout_option = click.option(
    "--stop-timeout",
    type=click.IntRange(0, 24 * 3600),
    envvar="SNAPVOL_STOP_TIMEOUT",
    metavar="SECONDS",
    help="Volume: the seconds the container (or pod) gets to shut down cleanly when it is "
    "stopped, before the engine kills it [default: 120 for PostgreSQL, whose shutdown "
    "checkpoint may take a while; 30 otherwise].",
)
"""How long a clean shutdown may take: a process that ignores the stop signal waits it out."""

helper_image_option = click.option(
    "--helper-image", help="Image for helper containers (default: the target's image)."
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")

yes_option = click.option(
    "--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation."
)

dry_run_option = click.option(
    "--dry-run",
    "-n",
    is_flag=True,
    help="Only show what would be kept and removed, and why; delete nothing.",
)
