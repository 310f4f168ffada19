"""`snapvol rm` and `snapvol prune`: delete snapshots, their archives and their records."""

from __future__ import annotations

import click

from snapvol import lifecycle
from snapvol.cli.context import AppContext, json_option, with_app
from snapvol.cli.format import snapshots_table
from snapvol.errors import Cancelled
from snapvol.output import human_bytes
from snapvol.store import COMPLETE, Snapshot, Store

yes_option = click.option("--yes", "assume_yes", is_flag=True, help="Do not ask for confirmation.")


def _archived(snaps: list[Snapshot]) -> int:
    """Bytes of archive on disk: only complete snapshots still have one."""
    return sum(s.size_bytes or 0 for s in snaps if s.status == COMPLETE)


def _delete(
    app: AppContext, store: Store, snaps: list[Snapshot], assume_yes: bool, as_json: bool
) -> None:
    """Show what goes, ask (default no), delete, and say what was freed."""
    if snaps:
        app.console.err.print(snapshots_table(snaps), soft_wrap=True)
    if snaps and not assume_yes:
        question = (
            f"Delete {len(snaps)} snapshot(s) and {human_bytes(_archived(snaps))} of archives?"
        )
        try:
            agreed = click.confirm(question, default=False, err=True)
        except (click.Abort, EOFError, KeyboardInterrupt):
            agreed = False
        if not agreed:
            raise Cancelled("cancelled; nothing was deleted")
    removed = lifecycle.remove(store, snaps, app.backup_dir, app.console)
    if as_json:
        app.console.json([s.to_dict() for s in removed])
    else:
        app.console.info(
            f"deleted {len(removed)} snapshot(s), freed {human_bytes(_archived(removed))}"
        )


@click.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@yes_option
@json_option
@with_app
def rm(app: AppContext, refs: tuple[str, ...], assume_yes: bool, as_json: bool) -> None:
    """Delete snapshots: archives and records. REF is an id, a unique id prefix or a name.

    Every REF is found before anything is deleted. Snapshots of a container that a snapshot or
    restore is working on are refused until it ends.
    """
    with app.store() as store:
        snaps = list({s.id: s for s in map(store.resolve, refs)}.values())
        _delete(app, store, snaps, assume_yes, as_json)


@click.command("prune")
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    required=True,
    help="Complete snapshots to keep of each source (container volume or database, per kind).",
)
@yes_option
@json_option
@with_app
def prune(app: AppContext, keep: int, assume_yes: bool, as_json: bool) -> None:
    """Delete all but the newest KEEP complete snapshots of each source, and failed records.

    Safety snapshots count as volume snapshots of their container. Shows what goes and asks
    first, like `snapvol rm`.
    """
    with app.store() as store:
        snaps = lifecycle.prunable(store.snapshots(), keep)
        if not snaps and not as_json:
            app.console.info(f"nothing to prune: no source has more than {keep} snapshot(s)")
            return
        _delete(app, store, snaps, assume_yes, as_json)
