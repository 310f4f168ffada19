"""The manual, snapvol(1), written from what ``--help`` says: each command's usage, help and
options (the commands themselves) and its examples, environment and exit codes (``helptext``).

``scripts/gen-man.py`` (``make man``) writes it to docs/man/snapvol.1; a unit test checks that the
committed page is what this writes, so it cannot go stale. Plain roff (the man macros): a page
the size of ours needs no generator library.
"""

from __future__ import annotations

import inspect
import re

import click

from snapvol import __version__
from snapvol.cli import cli, helptext

_CODE = re.compile(r"`([^`]+)`")


def _esc(text: str) -> str:
    """``text`` as roff prints it literally: backslashes and minus signs escaped (an option's
    dashes must not become hyphens), `code` in bold, no line taken for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = _CODE.sub(r"\\fB\1\\fR", text)
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _paragraphs(help_: str | None) -> list[str]:
    """A docstring's paragraphs, each on one line (roff fills them)."""
    text = inspect.cleandoc(help_ or "").split("\f")[0]
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    lines = []
    for param in command.params:  # not --help: every command has it, said once
        if not isinstance(param, click.Option) or param.hidden:
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, about = record
        lines += [".TP", f"\\fB{_esc(names)}\\fR", _esc(" ".join(about.split()))]
    return lines


def _explained(path: str) -> list[str]:
    """A command's examples, and the variables and exit codes it is concerned with."""
    help_ = helptext.HELP.get(path)
    if help_ is None:  # a new command without its help yet: tests/unit/test_cli_help.py says so
        return []
    lines = [".PP", "Examples:"]
    for example in help_.examples:
        lines += [".TP", f"\\fB{_esc(example.command)}\\fR", _esc(example.does)]
    lines += [
        ".PP",
        _esc("Environment: " + ", ".join(help_.environment) + "."),
        ".PP",
        _esc("Exit status: " + ", ".join(map(str, help_.exit_codes)) + "."),
    ]
    return lines


def _command(command: click.Command, ctx: click.Context, path: str) -> list[str]:
    usage = " ".join(["snapvol", path, *command.collect_usage_pieces(ctx)])
    lines = [f'.SS "{_esc(path)}"', f"\\fB{_esc(usage)}\\fR"]
    for paragraph in _paragraphs(command.help):
        lines += [".PP", _esc(paragraph)]
    options = _options(command, ctx)
    if options:
        lines += [".PP", "Options:", *options]
    lines += _explained(path)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            sub_ctx = click.Context(sub, info_name=name, parent=ctx)
            lines += _command(sub, sub_ctx, f"{path} {name}")
    return lines


def render() -> str:
    """The whole page, roff."""
    ctx = click.Context(cli, info_name="snapvol")
    summary, *description = _paragraphs(cli.help)
    lines = [
        f'.TH SNAPVOL 1 "" "snapvol {__version__}" "User Commands"',
        ".nh",  # no hyphens in option and variable names
        ".ad l",
        ".SH NAME",
        f"snapvol \\- {_esc(summary[0].lower() + summary[1:].rstrip('.'))}",
        ".SH SYNOPSIS",
        "\\fBsnapvol\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        _esc(summary),
    ]
    for paragraph in description:
        lines += [".PP", _esc(paragraph)]
    lines += [
        ".PP",
        _esc("Every command takes -h/--help, which prints what this page says of it."),
        ".SH GLOBAL OPTIONS",
        *_options(cli, ctx),
        ".SH COMMANDS",
    ]
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        lines += _command(command, click.Context(command, info_name=name, parent=ctx), name)
    lines.append(".SH ENVIRONMENT")
    for var, about in helptext.ENVIRONMENT.items():
        lines += [".TP", f"\\fB{_esc(var)}\\fR", _esc(about)]
    lines += [
        ".PP",
        "restic's own variables for its backends (AWS_*, B2_*, ...) reach restic untouched.",
        ".SH EXIT STATUS",
    ]
    for code, about in helptext.EXIT_CODES.items():
        lines += [".TP", f"\\fB{code}\\fR", _esc(about)]
    lines += [
        ".PP",
        _esc("An anticipated failure prints one line, `Error: ...`, on stderr."),
        ".SH SHELL COMPLETION",
        _esc(
            "snapvol completes commands, options, and snapshot ids and names from the store "
            "(read only: completing never creates or changes a store)."
        ),
    ]
    for shell, line, where in helptext.COMPLETION:
        lines += [".TP", f"{shell} ({_esc(where)})", f"\\fB{_esc(line)}\\fR"]
    lines.append(".SH EXAMPLES")
    for example in helptext.HELP[""].examples:
        lines += [".TP", f"\\fB{_esc(example.command)}\\fR", _esc(example.does)]
    lines += [".SH SEE ALSO", "\\fBrestic\\fR(1), \\fBdocker\\fR(1), \\fBpg_dump\\fR(1)"]
    return "\n".join(lines) + "\n"
