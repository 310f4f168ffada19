"""`snapvol verify`: check that archives still hash to what the store recorded."""

from __future__ import annotations

import click

from snapvol import lifecycle
from snapvol.adapters.store import COMPLETE
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.format import verdict_line
from snapvol.cli.options import json_option
from snapvol.errors import IntegrityError


@click.command("verify")
@click.argument("refs", nargs=-1, metavar="[REF]...")
@json_option
@with_app
def command(app: AppContext, refs: tuple[str, ...], as_json: bool) -> None:
    """Check archives against their recorded SHA-256 (default: every complete snapshot), and
    volume snapshots' recorded files as a restore would check them.

    Archives are not changed; each result is recorded in the store, and `snapvol prune` never
    deletes the newest snapshot of a source whose last verification succeeded. Exits 7 if any
    archive is missing, modified or truncated, so a scheduled `snapvol verify` tells you a
    backup went bad before you need it.
    """
    with app.store() as store:
        snaps = [store.resolve(r) for r in refs] if refs else store.snapshots(status=COMPLETE)
        results = []
        for snap, problem in lifecycle.verify(store, snaps, app.backup_dir, app.console):
            results.append(
                {"id": snap.id, "name": snap.name, "ok": problem is None, "error": problem}
            )
            if not as_json:
                app.console.info(verdict_line(snap, problem))
    if as_json:
        app.console.json(results)
    bad = [r for r in results if not r["ok"]]
    if bad:
        raise IntegrityError(f"{len(bad)} of {len(results)} snapshot(s) failed verification")
    if not as_json and not results:
        app.console.info("No complete snapshots to verify.")
