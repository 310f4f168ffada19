"""`snapvol rm`: delete snapshots, their archives and their records."""

from __future__ import annotations

import click

from snapvol import lifecycle
from snapvol.cli.context import AppContext, json_option, with_app
from snapvol.cli.format import snapshots_table
from snapvol.errors import Cancelled
from snapvol.output import human_bytes
from snapvol.store import COMPLETE, Snapshot


def _archived(snaps: list[Snapshot]) -> int:
    """Bytes of archive on disk: only complete snapshots still have one."""
    return sum(s.size_bytes or 0 for s in snaps if s.status == COMPLETE)


@click.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("--yes", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@with_app
def command(app: AppContext, refs: tuple[str, ...], assume_yes: bool, as_json: bool) -> None:
    """Delete snapshots: archives and records. REF is an id, a unique id prefix or a name.

    Every REF is found before anything is deleted. Snapshots of a container that a snapshot or
    restore is working on are refused until it ends.
    """
    with app.store() as store:
        snaps = list({s.id: s for s in map(store.resolve, refs)}.values())
        app.console.err.print(snapshots_table(snaps))
        if not assume_yes:
            question = (
                f"Delete {len(snaps)} snapshot(s) and {human_bytes(_archived(snaps))} of archives?"
            )
            try:
                agreed = click.confirm(question, default=False, err=True)
            except (click.Abort, EOFError, KeyboardInterrupt):
                agreed = False
            if not agreed:
                raise Cancelled("cancelled; nothing was deleted")
        removed = lifecycle.remove(store, snaps)
    if as_json:
        app.console.json([s.to_dict() for s in removed])
    else:
        app.console.info(
            f"deleted {len(removed)} snapshot(s), freed {human_bytes(_archived(removed))}"
        )
