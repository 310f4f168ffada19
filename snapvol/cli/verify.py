"""`snapvol verify`: check that archives still hash to what the store recorded."""

from __future__ import annotations

import click

from snapvol import lifecycle
from snapvol.adapters.store import COMPLETE, RepoCheck
from snapvol.cli.context import AppContext, with_app
from snapvol.cli.format import verdict_line
from snapvol.cli.options import json_option
from snapvol.errors import IntegrityError, RepositoryDamagedError, StoreError, UsageError


@click.command("verify")
@click.argument("refs", nargs=-1, metavar="[REF]...")
@click.option(
    "--repo",
    "repository",
    is_flag=True,
    help="Check the repository (restic check) instead of the local archives.",
)
@click.option(
    "--read-data",
    is_flag=True,
    help="With --repo: also read and check every pack's data (downloads the whole repository).",
)
@click.option(
    "--read-data-subset",
    "subset",
    metavar="N%",
    help="With --repo: read and check this part of the data (N%, n/t or a size), as restic does.",
)
@json_option
@with_app
def command(
    app: AppContext,
    refs: tuple[str, ...],
    repository: bool,
    read_data: bool,
    subset: str | None,
    as_json: bool,
) -> None:
    """Check archives against their recorded SHA-256 (default: every complete snapshot), and
    volume snapshots' recorded files as a restore would check them.

    Archives are not changed; each result is recorded in the store, and `snapvol prune` never
    deletes the newest snapshot of a source whose last verification succeeded. Exits 7 if any
    archive is missing, modified or truncated, so a scheduled `snapvol verify` tells you a
    backup went bad before you need it.

    With --repo, checks the repository instead (`restic check`: its structure; with --read-data
    or --read-data-subset also the data itself) and records the result; exits 7 when restic
    finds damage, 14 when the repository cannot be opened.
    """
    if repository:
        _verify_repository(app, refs, read_data, subset, as_json)
        return
    if read_data or subset is not None:
        raise UsageError("--read-data and --read-data-subset need --repo")
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


def _verify_repository(
    app: AppContext, refs: tuple[str, ...], read_data: bool, subset: str | None, as_json: bool
) -> None:
    """`restic check` of the configured repository: one line, the result recorded."""
    if refs:
        raise UsageError("--repo checks the whole repository: give no REF")
    if read_data and subset is not None:
        raise UsageError("give --read-data or --read-data-subset, not both")
    scope = (
        f"read-data-subset {subset}"
        if subset is not None
        else ("read-data" if read_data else "structure")
    )
    restic = app.restic()
    config = restic.config()  # opens it: a wrong password or a missing repository stops here
    report = restic.check(read_data=read_data, subset=subset)
    check = RepoCheck(
        repository_id=config.id,
        repository=restic.repo.display,
        scope=scope,
        ok=report.ok,
        problems="\n".join(report.problems),
    )
    recorded = _record(app, check)
    if as_json:
        app.console.json({**check.to_dict(), "recorded": recorded})
    else:
        for line in report.problems:
            app.console.info(line)
        what = "structure and all data" if read_data else "structure"
        if subset is not None:
            what = f"structure and {subset} of the data"
        verdict = "no errors" if report.ok else f"DAMAGED ({len(report.problems)} problem line(s))"
        note = "" if recorded else " (not recorded: no manifest store)"
        app.console.info(f"repository {check.repository}: {what} checked: {verdict}{note}")
    if not report.ok:
        raise RepositoryDamagedError(
            f"repository {check.repository} is damaged: `restic check` found problems "
            "(copies whose data is damaged cannot be restored)"
        )


def _record(app: AppContext, check: RepoCheck) -> bool:
    """Record the check in the store, if there is one (a repository can be checked from a
    machine that never took a snapshot)."""
    try:
        with app.store() as store:
            store.record_repo_check(check)
    except StoreError:
        if app.db.exists():
            raise
        return False
    return True
