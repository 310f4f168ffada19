"""The click command line: parsing and formatting only; the work lives in the core modules."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

import click

from snapvol import __version__
from snapvol.cli import copy, delete, ls, repo, restore, snapshot, verify
from snapvol.cli.context import AppContext
from snapvol.cli.options import global_options
from snapvol.errors import SnapvolError

# The flags that set what the core names in an error's ``retry_with``, and what stands for a
# value that is the user's to pick; switches are flags without a value (a setting turned on).
_RETRY_FLAGS = {
    "reader": "--reader",
    "helper_image": "--helper-image",
    "volume_name": "--volume-name",
    "user": "--user",
}
_PLACEHOLDERS = {"helper_image": "IMAGE", "volume_name": "NAME", "user": "ROLE"}
_RETRY_SWITCHES = {("allow_roles", "true"): "--allow-roles"}


def _retry_flag(key: str, value: str) -> str | None:
    if (key, value) in _RETRY_SWITCHES:
        return _RETRY_SWITCHES[key, value]
    if key in _RETRY_FLAGS:
        return f"{_RETRY_FLAGS[key]} {value or _PLACEHOLDERS.get(key, 'VALUE')}"
    return None


def error_line(err: SnapvolError) -> str:
    """The error as the command line says it: what would get past it, as the flags that set it."""
    flags = [flag for key, value in err.retry_with.items() if (flag := _retry_flag(key, value))]
    return f"{err.message} (retry with {' or '.join(flags)})" if flags else err.message


class SnapvolGroup(click.Group):
    """The one place an anticipated failure becomes ``Error: ...`` on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SnapvolError as err:
            if ctx.obj is not None and ctx.obj.debug:
                raise
            click.echo(f"Error: {error_line(err)}", err=True)
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
