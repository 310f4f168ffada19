"""The click command line: parsing and formatting only; the work lives in the core modules."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import click

from snapvol import __version__
from snapvol.cli import ls, restore, snapshot
from snapvol.cli.context import AppContext, global_options
from snapvol.errors import SnapvolError


class SnapvolGroup(click.Group):
    """The one place an anticipated failure becomes ``Error: ...`` on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SnapvolError as err:
            if ctx.obj is not None and ctx.obj.debug:
                raise
            click.echo(f"Error: {err.message}", err=True)
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


for _module in (snapshot, ls, restore):
    cli.add_command(_module.command)


def _terminate(signum: int, _frame: object) -> None:
    # Unwind like Ctrl-C so every `finally` runs: containers restarted, partial files removed.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> None:
    """Console-script entry point."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    try:
        cli(prog_name="snapvol")
    except SystemExit as done:
        if threading.active_count() > 1:
            # A writer thread abandoned by an interruption may sit in zstd's C code; the
            # interpreter's shutdown would wait for it. Everything we own is closed by now.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 1)
        raise
