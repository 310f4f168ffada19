"""The click command line: parsing and formatting only; the work lives in the core modules.

Each command's module is imported when that command runs (click's lazy loading of subcommands):
most of a command's start-up is its imports (the store's SQLModel and SQLAlchemy, the Docker SDK,
rich), and ``snapvol --help`` or ``snapvol ls`` need none of what the other commands import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import signal
import sys
from collections.abc import Callable, Collection
from copy import copy as shallow_copy  # (``import copy`` would lose to the ``copy`` command)
from typing import Any, NamedTuple

import click
from click.shell_completion import CompletionItem

from snapvol import __version__
from snapvol.cli import helptext
from snapvol.cli.complete import complete_refs
from snapvol.cli.options import global_options
from snapvol.errors import SnapvolError, snapvol_command


class Entry(NamedTuple):
    """Where a command is defined, and its short help as ``snapvol --help`` lists it (the first
    sentence of its docstring), so that listing the commands imports none of them."""

    module: str
    attribute: str
    short_help: str


# Kept in step with the commands themselves by tests/unit/test_cli_lazy.py.
COMMANDS = {
    "copy": Entry(
        "snapvol.cli.copy",
        "command",
        "Copy snapshots to the repository (default: every complete one not copied there yet).",
    ),
    "diff": Entry(
        "snapvol.cli.diff",
        "command",
        "List the files added (+), removed (-) and changed (M, and what changed) from volume "
        "snapshot A to volume snapshot B, from the files the store recorded: no archive is read.",
    ),
    "extract": Entry(
        "snapvol.cli.extract",
        "command",
        "Write files out of snapshot REF into a directory, checked, without touching any "
        "container.",
    ),
    "drill": Entry(
        "snapvol.cli.drill",
        "command",
        "Restore a snapshot into a throwaway server and check it (default: the newest one).",
    ),
    "ls": Entry(
        "snapvol.cli.ls",
        "command",
        "List snapshots (id, name, kind, source, created, size, status, copies).",
    ),
    "prune": Entry(
        "snapvol.cli.delete",
        "prune",
        "Delete what a retention policy does not keep, as `restic forget` does, per source.",
    ),
    "repo": Entry(
        "snapvol.cli.repo",
        "group",
        "The restic repository for copies (--repo / SNAPVOL_REPOSITORY).",
    ),
    "restore": Entry(
        "snapvol.cli.restore",
        "command",
        "Restore snapshot REF (an id, a unique prefix of 4+ hex digits, or a name), "
        "or a dump file.",
    ),
    "run": Entry(
        "snapvol.cli.schedule",
        "run",
        "Run the configuration's jobs, each when its schedule says (until SIGTERM), or one now.",
    ),
    "recover": Entry(
        "snapvol.cli.recover",
        "command",
        "Scale back the Kubernetes workloads an interrupted snapshot or restore left scaled "
        "down, and delete its helper pods.",
    ),
    "rm": Entry("snapvol.cli.delete", "rm", "Delete snapshots: archives and records."),
    "schedule": Entry(
        "snapvol.cli.schedule",
        "schedule",
        "Print (or write) what runs the configuration's jobs on their schedules.",
    ),
    "show": Entry(
        "snapvol.cli.show",
        "command",
        "Show one snapshot (id, unique id prefix or name): its record and its copies.",
    ),
    "snapshot": Entry(
        "snapvol.cli.snapshot",
        "command",
        "Take a snapshot of a container's data and record it in the manifest store.",
    ),
    "verify": Entry(
        "snapvol.cli.verify",
        "command",
        "Check archives against their recorded SHA-256 (default: every complete snapshot), and "
        "volume snapshots' recorded files as a restore would check them.",
    ),
}

# What the core names in an error's ``retry_with`` (a setting, and the value that gets past the
# error; "" for one that is the user's to pick), as the command line sets it: the parameter, the
# flag, and what stands for the user's value. Switches are settings a flag turns on or off.
_RETRY_FLAGS = {
    "reader": ("reader", "--reader", "VALUE"),
    "helper_image": ("helper_image", "--helper-image", "IMAGE"),
    "volume_name": ("volume_name", "--volume-name", "NAME"),
    "claim": ("claim", "--claim", "NAME"),
    "container": ("container", "--container", "NAME"),
    "user": ("user", "--user", "ROLE"),
    "kube_lane": ("kube_lane", "--kube-lane", "VALUE"),
    "node_name": ("node_name", "--node-name", "NAME"),
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


RAN = "snapvol.ran"  # in click's context meta: a command's own code ran (not only --help)


def _late_global_params() -> list[click.Parameter]:
    """The global options as a command takes them after its name: hidden from its own help,
    with no default and no environment variable (the group has read those)."""
    holder: Any = global_options(lambda: None)
    params = []
    for param in reversed(holder.__click_params__):
        late = shallow_copy(param)
        late.envvar = None
        late.default = False if getattr(param, "is_flag", False) else None
        late.hidden = True
        params.append(late)
    return params


def accept_global_options(command: click.Command) -> None:
    """Let ``command`` (and a group's subcommands) take the global options after its name as
    well (``snapvol ls --db x.db``), where they win over those before it; an option of the
    command's own of the same name (``ls --repo``) keeps its meaning."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_global_options(sub)
    callback = command.callback
    if callback is None:
        return
    taken = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    late = [p for p in _late_global_params() if not taken.intersection(p.opts)]
    command.params.extend(late)
    names = [p.name for p in late]

    @functools.wraps(callback)
    def accepting(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        ctx.meta[RAN] = True  # (not for --help, which ends before any callback)
        given = {n: v for n in names if (v := kwargs.pop(n)) not in (None, False)}
        if given:
            from snapvol.cli.context import AppContext

            app = ctx.find_object(AppContext)
            if app is not None:
                app.override(**given)
        return callback(*args, **kwargs)

    command.callback = accepting


def explain(command: click.Command, path: str) -> None:
    """Give ``command`` (and a group's subcommands) its examples, environment and exit codes
    (``helptext``), after its options in ``--help``."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            explain(sub, f"{path} {name}")
    if path in helptext.HELP:
        command.epilog = helptext.epilog(path)


class SnapvolGroup(click.Group):
    """The one place an anticipated failure becomes ``Error: ...`` on stderr and an exit code.

    Its commands are those of ``COMMANDS``, each imported the first time it is asked for.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is not None and cmd_name not in self.commands:
            command = getattr(importlib.import_module(entry.module), entry.attribute)
            accept_global_options(command)
            explain(command, cmd_name)
            complete_refs(command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The commands (named by ``COMMANDS``: completing them imports none), then the
        options, as click completes a group."""
        items = [
            CompletionItem(name, help=self._listed(name).get_short_help_str())
            for name in self.list_commands(ctx)
            if name.startswith(incomplete) and not self._listed(name).hidden
        ]
        return items + super(click.Group, self).shell_complete(ctx, incomplete)

    def _listed(self, name: str) -> click.Command:
        """The command as listed: itself once imported, else a stand-in with its short help."""
        return self.commands.get(name) or click.Command(name, help=COMMANDS[name].short_help)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their short help, as click lists them, without importing any: a
        command already imported speaks for itself, the others through ``COMMANDS``."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows = []
        for name in names:
            command = self._listed(name)
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def _params(self, ctx: click.Context) -> set[str] | None:
        """The parameters of the command that ran (None: not known)."""
        name = ctx.invoked_subcommand
        command = self.get_command(ctx, name) if name else None
        return {p.name for p in command.params if p.name} if command else None

    def invoke(self, ctx: click.Context) -> Any:
        ok, why = False, "ended unexpectedly"
        try:
            result = super().invoke(ctx)
            ok = True
            return result
        except SnapvolError as err:
            if ctx.obj is not None and ctx.obj.debug:
                why = err.message
                raise
            command = getattr(ctx.obj, "command", None)
            why = error_line(err, self._params(ctx), command)
            click.echo(f"Error: {why}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            why = "interrupted"
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)
        except click.exceptions.Exit as done:
            ok, why = done.exit_code == 0, f"exited {done.exit_code}"
            raise
        finally:
            _after_run(ctx, ok, why)


def _after_run(ctx: click.Context, ok: bool, why: str) -> None:
    """Metrics and notifications for the run, when they are configured (never for --help)."""
    app, name = ctx.obj, ctx.invoked_subcommand
    if app is None or name is None or not ctx.meta.get(RAN) or not app.monitoring.wanted(name):
        return
    from snapvol.monitor.report import after_run

    after_run(app.monitoring, app.db, name, ok, why, app.console, app.alerts)


@click.group(
    cls=SnapvolGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=helptext.epilog(""),
)
@click.version_option(__version__, prog_name="snapvol")
@global_options
@click.pass_context
def cli(ctx: click.Context, **options: Any) -> None:
    """Fast, verified snapshots and safe restores of stateful Docker services.

    The options below may also follow the command's name (`snapvol ls --db FILE`).
    """
    from snapvol.cli.context import AppContext  # the store and the adapters: not for --help

    ctx.obj = AppContext.from_options(**options)


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
