"""Shell completion of snapshot references (click's own completion does commands and options).

A REF argument completes to the ids and names in the store the command line names (--db, before
or after the command, or SNAPVOL_DB, or the default store), read without changing anything: no
store is created, migrated or recovered, and any failure completes to nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

REF_ARGUMENTS = ("ref", "refs")
"""The names of the arguments that take a snapshot reference (an id, id prefix or name)."""


class SnapshotRef(click.ParamType):
    """A snapshot reference: any string on the command line (the store resolves it), and the
    store's ids and names when completed."""

    name = "ref"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        try:
            from snapvol.adapters.store import peek_refs

            refs = peek_refs(_store_path(ctx))
        except Exception:  # completion must never print a traceback into the shell
            return []
        items = []
        for sid, name, about in refs:
            items += [
                CompletionItem(v, help=about) for v in (sid, name) if v.startswith(incomplete)
            ]
        return items


def _store_path(ctx: click.Context) -> Path:
    """The store the command line names: --db after the command wins over --db before it (and
    SNAPVOL_DB, which click reads for the group's option), as when the command runs."""
    from snapvol.cli.context import data_dir

    here: click.Context | None = ctx
    while here is not None:
        db = here.params.get("db")
        if db is not None:
            return Path(db).absolute()
        here = here.parent
    return (data_dir() / "manifests.db").absolute()


def complete_refs(command: click.Command) -> None:
    """Let ``command``'s snapshot arguments (and those of a group's subcommands) complete."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            complete_refs(sub)
    for param in command.params:
        if isinstance(param, click.Argument) and param.name in REF_ARGUMENTS:
            param.type = SnapshotRef()
