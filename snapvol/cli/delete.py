"""`snapvol rm` and `snapvol prune`: delete snapshots, their archives and their records."""

from __future__ import annotations

from typing import Any

import click

from snapvol import lifecycle, retention
from snapvol.adapters.store import COMPLETE, Snapshot, Store
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.format import decisions_table
from snapvol.cli.options import dry_run_option, json_option, stacked, yes_option
from snapvol.errors import Cancelled
from snapvol.output import human_bytes
from snapvol.retention import UNLIMITED, Decision

# What rm and prune both take: look first, skip the question, print JSON.
deletion_options = stacked(dry_run_option, yes_option, json_option)


class Count(click.ParamType):
    """A --keep-* count: a number >= 0, or 'unlimited' (restic's spelling)."""

    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if str(value).strip().lower() == "unlimited":
            return UNLIMITED
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a count (a number, or 'unlimited')", param, ctx)
        if count < 0:
            self.fail("a count cannot be negative (use 'unlimited' to keep all)", param, ctx)
        return count


def _archived(snaps: list[Snapshot]) -> int:
    """Bytes of archive on disk: only complete snapshots still have one."""
    return sum(s.size_bytes or 0 for s in snaps if s.status == COMPLETE)


def _show(app: AppContext, decisions: list[Decision]) -> None:
    """restic's listing: what is kept and what is removed, each with its reasons (stderr);
    by source, newest first."""
    by_source = sorted(decisions, key=lambda d: str(retention.source_of(d.snapshot)))
    for action in ("keep", "remove"):
        chosen = [d for d in by_source if d.action == action]
        if chosen:
            app.console.info(f"{action} {len(chosen)} snapshot(s):")
            app.console.err.print(decisions_table(chosen), soft_wrap=True)


def _as_json(decision: Decision) -> dict[str, Any]:
    return {**decision.snapshot.to_dict(), "action": decision.action, "reasons": decision.reasons}


def _delete(
    app: AppContext,
    store: Store,
    decisions: list[Decision],
    assume_yes: bool,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Show what stays and what goes; unless a dry run, ask (default no), delete, say so."""
    _show(app, decisions)
    snaps = [d.snapshot for d in decisions if not d.keep]
    if dry_run:
        if as_json:
            app.console.json([_as_json(d) for d in decisions])
        else:
            app.console.info(
                f"dry run: would delete {len(snaps)} snapshot(s) and "
                f"{human_bytes(_archived(snaps))} of archives; nothing was deleted"
            )
        return
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
        reasons = {d.snapshot.id: d.reasons for d in decisions}
        app.console.json([{**s.to_dict(), "reasons": reasons[s.id]} for s in removed])
    else:
        app.console.info(
            f"deleted {len(removed)} snapshot(s), freed {human_bytes(_archived(removed))}"
        )


@click.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@deletion_options
@with_app
def rm(
    app: AppContext, refs: tuple[str, ...], dry_run: bool, assume_yes: bool, as_json: bool
) -> None:
    """Delete snapshots: archives and records. REF is an id, a unique id prefix or a name.

    Every REF is found before anything is deleted. Snapshots of a container that a snapshot or
    restore is working on are refused until it ends.
    """
    with app.store() as store:
        decisions = retention.named([(ref, store.resolve(ref)) for ref in refs])
        _delete(app, store, decisions, assume_yes, as_json, dry_run)


def _count_option(name: str, what: str) -> Any:
    return click.option(
        f"--keep-{name}",
        name,
        type=Count(),
        default=0,
        help=f"Keep the newest snapshot of each of the last N {what} (or 'unlimited').",
    )


@click.command("prune")
@click.option(
    "--keep-last",
    "--keep",
    "last",
    type=Count(),
    default=0,
    help="Keep the newest N complete snapshots of each source (or 'unlimited').",
)
@_count_option("hourly", "hours that have one")
@_count_option("daily", "days that have one")
@_count_option("weekly", "ISO weeks that have one")
@_count_option("monthly", "months that have one")
@_count_option("yearly", "years that have one")
@click.option(
    "--keep-safety",
    "safety",
    type=Count(),
    default=1,
    show_default=True,
    help="Keep the newest N safety snapshots of each source (at least 1, or 'unlimited').",
)
@deletion_options
@with_app
def prune(
    app: AppContext,
    dry_run: bool,
    assume_yes: bool,
    as_json: bool,
    **counts: int,
) -> None:
    """Delete what a retention policy does not keep, as `restic forget` does, per source.

    A source is a container's volume or database, per kind. Per source, the --keep-* rules keep
    the newest snapshot of each of the last N hours, days, ISO weeks, months or years (in local
    time) that have one, or the newest N; the newest snapshot whose last `snapvol verify`
    succeeded is always kept. Safety snapshots, a restore's copy of what it replaced, are kept
    apart by --keep-safety and never count against yours. Failed records go; snapshots in
    progress stay. Shows what stays and goes with the reasons, and asks first, like `snapvol rm`.
    """
    policy = retention.Policy(**counts)
    with app.store() as store:
        decisions = retention.apply(store.snapshots(), policy)
        if not as_json:
            app.console.info(f"Policy: {policy.describe()}")
        if not dry_run and all(d.keep for d in decisions):
            if as_json:
                app.console.json([])
            else:
                app.console.info("nothing to prune: the policy keeps every snapshot")
            return
        _delete(app, store, decisions, assume_yes, as_json, dry_run)
