"""The click command line: parsing and formatting only; the work lives in the core modules."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Collection
from typing import Any

import click

from snapvol import __version__
from snapvol.cli import copy, delete, ls, repo, restore, show, snapshot, verify
from snapvol.cli.context import AppContext
from snapvol.cli.options import global_options
from snapvol.errors import SnapvolError, snapvol_command

# What the core names in an error's ``retry_with`` (a setting, and the value that gets past the
# error; "" for one that is the user's to pick), as the command line sets it: the parameter, the
# flag, and what stands for the user's value. Switches are settings a flag turns on or off.
_RETRY_FLAGS = {
    "reader": ("reader", "--reader", "VALUE"),
    "helper_image": ("helper_image", "--helper-image", "IMAGE"),
    "volume_name": ("volume_name", "--volume-name", "NAME"),
    "user": ("user", "--user", "ROLE"),
}
_RETRY_SWITCHES = {
    ("allow_roles", "true"): ("allow_roles", "--allow-roles"),
    ("safety_snapshot", "false"): ("no_safety_snapshot", "--no-safety-snapshot"),
}


def _retry_flag(key: str, value: str, params: Collection[str] | None) -> str | None:
    if (key, value) in _RETRY_SWITCHES:
        param, flag = _RETRY_SWITCHES[key, value]
    elif key in _RETRY_FLAGS:
        param, name, placeholder = _RETRY_FLAGS[key]
        flag = f"{name} {value or placeholder}"
    else:
        return None
    return flag if params is None or param in params else None


def error_line(
    err: SnapvolError,
    params: Collection[str] | None = None,
    command: Callable[..., str] | None = None,
) -> str:
    """The error as the command line says it: what would get past it, as the flags that set it
    (only those of ``params``, the running command's parameters, when given), and the command
    that finishes the job as ``command`` spells it (with this run's store and backup directory)."""
    flags = [f for key, value in err.retry_with.items() if (f := _retry_flag(key, value, params))]
    line = f"{err.message} (retry with {' or '.join(flags)})" if flags else err.message
    if err.run:
        line += f": run `{(command or snapvol_command)(*err.run)}`"
    return line


class SnapvolGroup(click.Group):
    """The one place an anticipated failure becomes ``Error: ...`` on stderr and an exit code."""

    def _params(self, ctx: click.Context) -> set[str] | None:
        """The parameters of the command that ran (None: not known)."""
        name = ctx.invoked_subcommand
        command = self.get_command(ctx, name) if name else None
        return {p.name for p in command.params if p.name} if command else None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SnapvolError as err:
            if ctx.obj is not None and ctx.obj.debug:
                raise
            command = getattr(ctx.obj, "command", None)
            click.echo(f"Error: {error_line(err, self._params(ctx), command)}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=SnapvolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="snapvol")
@global_options
@click.pass_context
def cli(ctx: click.Context, **options: Any) -> None:
    """Fast, verified snapshots and safe restores of stateful Docker services."""
    ctx.obj = AppContext.from_options(**options)


for _command in (
    snapshot.command,
    ls.command,
    show.command,
    restore.command,
    verify.command,
    delete.rm,
    delete.prune,
    repo.group,
    copy.command,
):
    cli.add_command(_command)


def _terminate(signum: int, _frame: object) -> None:
    # Unwind like Ctrl-C so every `finally` runs: containers restarted, partial files removed.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> None:
    """Console-script entry point."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    code: object = 0
    try:
        cli(prog_name="snapvol")
    except SystemExit as done:
        code = done.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)  # what sys.exit("message") would have printed
        code = 1
    # Everything we own is closed by now. Skip the interpreter's teardown: it would wait for a
    # writer thread an interruption abandoned in zstd's C code, and otherwise only spends
    # ~50 ms freeing modules, a fixed cost on every command.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
