"""`snapvol rm` and `snapvol prune`: delete snapshots, their archives and their records."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from snapvol import lifecycle, retention
from snapvol.adapters.store import COMPLETE, Snapshot, Store
from snapvol.cli.confirm import answering
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.format import decisions_table
from snapvol.cli.options import dry_run_option, json_option, stacked, yes_option
from snapvol.errors import (
    Cancelled,
    IntegrityError,
    LockedError,
    RepositoryUnreachableError,
    SnapvolError,
)
from snapvol.output import human_bytes
from snapvol.repo import copy
from snapvol.repo import prune as repo_prune
from snapvol.repo.prune import CopyDecision, Plan
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


class RepoPlan:
    """What prune does in the repository: the target and each copied snapshot's fate."""

    def __init__(self, target: copy.Target, plan: Plan) -> None:
        self.target = target
        self.plan = plan
        self.decisions = plan.decisions
        # Set when the repository failed (unreachable) after the plan: local prune goes on.
        self.error: SnapvolError | None = None

    @property
    def changes(self) -> bool:
        return bool(self.removed or self.plan.orphans)

    def outcome(self) -> SnapvolError | None:
        """The repository's failure, or the copies whose manifest could not be read: the
        error the run ends with, after everything else was done."""
        if self.error is not None:
            return self.error
        if not self.plan.unreadable:
            return None
        if len(self.plan.unreadable) == 1:
            snapshot_id, err = self.plan.unreadable[0]
            err.message = (
                f"the copy of snapshot {snapshot_id} in {self.target.display} was skipped: "
                f"{err.message}"
            )
            return err
        ids = ", ".join(i for i, _ in self.plan.unreadable)
        return IntegrityError(
            f"{len(self.plan.unreadable)} copies in {self.target.display} were skipped, their "
            f"manifests unreadable ({ids}); the rest was pruned"
        )

    @property
    def removed(self) -> list[CopyDecision]:
        return [d for d in self.decisions if not d.keep]

    def show(self, app: AppContext) -> None:
        """Like the local listing, for the copies; says which local snapshots are gone."""
        for action in ("keep", "remove"):
            chosen = [
                Decision(
                    d.decision.snapshot,
                    d.keep,
                    d.decision.reasons + (() if d.local else ("no local snapshot",)),
                )
                for d in self.decisions
                if d.decision.action == action
            ]
            if chosen:
                verb = "keep" if action == "keep" else "forget"
                app.console.info(
                    f"repository {self.target.display}: {verb} the copies of "
                    f"{len(chosen)} snapshot(s):"
                )
                app.console.err.print(decisions_table(chosen), soft_wrap=True)

    def as_json(self, decisions: list[CopyDecision]) -> list[dict[str, Any]]:
        return [
            {
                "id": d.decision.snapshot.id,
                "name": d.decision.snapshot.name,
                "action": d.decision.action,
                "reasons": d.decision.reasons,
                "local": d.local,
                "repository": self.target.display,
                "restic_snapshots": d.restic_snapshots,
            }
            for d in decisions
        ]

    def words(self) -> str:
        leftovers = (
            f" (and {len(self.plan.orphans)} restic snapshot(s) interrupted copies left)"
            if self.plan.orphans
            else ""
        )
        return (
            f" and forget the copies of {len(self.removed)} snapshot(s) in "
            f"{self.target.display}{leftovers}"
        )


def _json(
    local: list[dict[str, Any]], copies: list[dict[str, Any]] | None, repo: RepoPlan | None = None
) -> dict[str, Any]:
    """prune's one JSON shape: ``copies`` and ``leftovers`` (the restic snapshots interrupted
    copies or forgets left, forgotten too) are null when no repository is configured (or it
    could not be reached)."""
    leftovers = repo.plan.orphans if copies is not None and repo is not None else None
    return {"snapshots": local, "copies": copies, "leftovers": leftovers}


def _delete(
    app: AppContext,
    store: Store,
    decisions: list[Decision],
    assume_yes: bool,
    as_json: bool,
    dry_run: bool,
    repo: RepoPlan | None = None,
    prune: bool = False,
) -> None:
    """Show what stays and what goes; unless a dry run, ask (default no), delete, say so.

    With ``repo``, the copies the policy removes from the repository are forgotten first: if
    that fails, nothing local is deleted either."""
    _show(app, decisions)
    if repo is not None:
        repo.show(app)
    snaps = [d.snapshot for d in decisions if not d.keep]
    also = repo.words() if repo is not None else ""
    if dry_run:
        if as_json and prune:
            copies = repo.as_json(repo.decisions) if repo is not None else None
            app.console.json(_json([_as_json(d) for d in decisions], copies, repo))
        elif as_json:
            app.console.json([_as_json(d) for d in decisions])
        else:
            app.console.info(
                f"dry run: would delete {len(snaps)} snapshot(s) and "
                f"{human_bytes(_archived(snaps))} of archives{also}; nothing was deleted"
            )
        return
    if (snaps or (repo is not None and repo.changes)) and not assume_yes:
        question = (
            f"Delete {len(snaps)} snapshot(s) and {human_bytes(_archived(snaps))} of "
            f"archives{also}?"
        )
        with answering("nothing was deleted"):
            agreed = click.confirm(question, default=False, err=True)
        if not agreed:
            raise Cancelled("cancelled; nothing was deleted")
    forgotten: list[CopyDecision] = []
    if repo is not None:
        try:
            forgotten = repo_prune.forget(store, repo.target, repo.decisions, repo.plan.orphans)
        except RepositoryUnreachableError as err:  # the local part still runs
            repo.error = err
            app.console.warn(  # restic may have forgotten some before it lost the server
                f"copies in the repository were not forgotten (some may have been, if it went "
                f"away mid-run): {err.message}; run `snapvol prune` again once it answers"
            )
    removed = lifecycle.remove(store, snaps, app.backup_dir, app.console)
    reasons = {d.snapshot.id: d.reasons for d in decisions}
    local = [{**s.to_dict(), "reasons": reasons[s.id]} for s in removed]
    if as_json and prune:
        copies = repo.as_json(forgotten) if repo is not None and repo.error is None else None
        app.console.json(_json(local, copies, repo))
    elif as_json:
        app.console.json(local)
    else:
        app.console.info(
            f"deleted {len(removed)} snapshot(s), freed {human_bytes(_archived(removed))}"
        )
        if repo is not None and repo.error is None:
            app.console.info(
                f"forgot the copies of {len(forgotten)} snapshot(s) in {repo.target.display}"
            )
            if repo.plan.orphans:
                app.console.info(
                    f"forgot {len(repo.plan.orphans)} restic snapshot(s) that interrupted copies "
                    "or forgets left (data without a manifest, half of a copy)"
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

    With a repository (--repo / SNAPVOL_REPOSITORY), the same policy also judges the snapshots
    copied there, as a history of its own: the copies it removes are forgotten (`restic forget
    --prune` of their data and manifest), first. A copy whose local snapshot is gone stays
    as long as the policy keeps it among the repository's copies.
    """
    policy = retention.Policy(**counts)
    with app.store() as store, contextlib.ExitStack() as held:
        drilled = {sid for sid, drill in store.last_drills().items() if drill.ok}
        decisions = retention.apply(store.snapshots(), policy, drilled=drilled)
        repo, failure = _repo_plan(app, store, policy, held)
        if not as_json:
            app.console.info(f"Policy: {policy.describe()}")
        if not dry_run and all(d.keep for d in decisions) and not (repo and repo.changes):
            if as_json:
                app.console.json(_json([], [] if repo else None))
            else:
                app.console.info("nothing to prune: the policy keeps every snapshot")
        else:
            _delete(app, store, decisions, assume_yes, as_json, dry_run, repo, prune=True)
    failure = failure or (repo.outcome() if repo else None)
    if failure is not None:
        raise failure


def _repo_plan(
    app: AppContext, store: Store, policy: retention.Policy, held: contextlib.ExitStack
) -> tuple[RepoPlan | None, SnapvolError | None]:
    """The repository's part of prune, holding its lock (in ``held``); none without a
    repository. An unreachable or busy repository does not stop the local part: its error
    is returned, for the end of the run."""
    if not app.repo:
        return None, None
    try:
        target = copy.open_target(app.restic())
        held.enter_context(copy.locked(target, "prune"))
        return RepoPlan(target, repo_prune.plan(store, target, policy, reporter=app.console)), None
    except (RepositoryUnreachableError, LockedError) as err:
        app.console.warn(f"the repository is left as it is; the local snapshots are pruned: {err}")
        return None, err
