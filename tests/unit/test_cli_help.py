"""`--help` explains each command (issue 13): examples that parse, the variables the command
reads and the exit codes it ends with, from one source (snapvol/cli/helptext.py) that also
writes the manual, docs/man/snapvol.1."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from snapvol import errors
from snapvol.cli import cli, helptext
from snapvol.cli.manpage import render

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "man" / "snapvol.1"


def commands() -> Iterator[tuple[str, click.Command]]:
    """Every command below snapvol, by its path ("repo init"), as the group loads it."""

    def walk(
        group: click.Group, ctx: click.Context, prefix: str
    ) -> Iterator[tuple[str, click.Command]]:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            path = f"{prefix}{name}"
            yield path, command
            if isinstance(command, click.Group):
                yield from walk(command, click.Context(command, parent=ctx), f"{path} ")

    yield from walk(cli, click.Context(cli), "")


PATHS = [path for path, _ in commands()]


def help_of(path: str, width: int = 80) -> str:
    result = CliRunner().invoke(cli, [*path.split(), "--help"], terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_has_its_help_and_no_other() -> None:
    assert set(helptext.HELP) == {"", *PATHS}


@pytest.mark.parametrize("path", ["", *PATHS])
def test_help_shows_examples_environment_and_exit_codes(path: str) -> None:
    text = help_of(path)
    explained = helptext.HELP[path]
    epilog = text[text.index("\n  Examples:\n") :]
    for example in explained.examples:
        # on a line of its own, as written: click did not fill the paragraph
        assert f"\n    {example.command}\n" in epilog
        assert example.does.split()[0] in epilog
    env = epilog[epilog.index("\n  Environment:\n") : epilog.index("\n  Exit codes:\n")]
    assert [line.split()[0] for line in env.splitlines()[2:] if line[4:5] != " "] == list(
        explained.environment
    )
    codes = epilog[epilog.index("\n  Exit codes:\n") :].split("\n\n")[0]
    assert [int(line.split()[0]) for line in codes.splitlines()[2:] if line[4:5] != " "] == list(
        explained.exit_codes
    )
    assert max(map(len, epilog.splitlines())) <= 80


def test_group_help_says_how_to_complete_and_where_the_manual_is() -> None:
    text = help_of("")
    assert '\n        eval "$(_SNAPVOL_COMPLETE=bash_source snapvol)"\n' in text
    assert "_SNAPVOL_COMPLETE=zsh_source" in text and "_SNAPVOL_COMPLETE=fish_source" in text
    assert "docs/man/snapvol.1" in text


def _parse(
    command: click.Command, name: str, args: list[str], parent: click.Context | None
) -> None:
    """Parse ``args`` as click does before running ``command`` (a usage error raises)."""
    ctx = command.context_class(command, info_name=name, parent=parent)
    rest = click.Command.parse_args(command, ctx, args)
    if isinstance(command, click.Group):
        assert rest, f"{name}: no command"
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r}"
        _parse(sub, rest[0], rest[1:], ctx)


@pytest.mark.parametrize("path", ["", *PATHS])
def test_every_example_is_a_command_line_snapvol_takes(path: str) -> None:
    for example in helptext.HELP[path].examples:
        words = shlex.split(example.command)
        while "=" in words[0]:  # VAR=value before the command
            var = words.pop(0).split("=")[0]
            assert var in helptext.ENVIRONMENT
        assert words[0] == "snapvol"
        _parse(cli, "snapvol", words[1:], None)
        if path:
            assert f" {path} " in f" {' '.join(words)} ", example.command


def test_every_exit_code_of_the_errors_is_explained() -> None:
    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    codes = {cls.exit_code for cls in subclasses(errors.SnapvolError)}
    assert set(helptext.EXIT_CODES) == {0, 1} | codes
    for explained in helptext.HELP.values():
        assert set(explained.exit_codes) <= set(helptext.EXIT_CODES)
        assert {0, 130} <= set(explained.exit_codes)


def test_every_variable_a_command_reads_is_in_its_help() -> None:
    for path, command in [("", cli), *commands()]:
        read = {p.envvar for p in command.params if isinstance(p.envvar, str)}
        assert read <= set(helptext.HELP[path].environment), path
    assert set(helptext.HELP[""].environment) == set(helptext.ENVIRONMENT)


def test_the_committed_man_page_is_current() -> None:
    """`make man` writes it; a help text changed without it fails here."""
    assert PAGE.read_text() == render(), "docs/man/snapvol.1 is stale: run `make man`"


def test_gen_man_check_says_when_the_page_is_stale(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "gen-man.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "scripts"
    (tmp_path / "docs" / "man").mkdir(parents=True)
    (tmp_path / "docs" / "man" / "snapvol.1").write_text(PAGE.read_text() + '.\\" edited\n')
    copy.mkdir()
    shutil.copy(script, copy)
    done = subprocess.run(
        [sys.executable, str(copy / "gen-man.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 1 and "stale" in done.stderr


def test_the_man_page_has_every_command_and_its_examples() -> None:
    page = render()
    for path in PATHS:
        assert f'\n.SS "{path}"\n' in page
    for explained in helptext.HELP.values():
        for example in explained.examples:
            assert f"\\fB{example.command.replace('-', chr(92) + '-')}\\fR" in page
    for code in helptext.EXIT_CODES:
        assert f"\n.TP\n\\fB{code}\\fR\n" in page


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_the_man_page_formats_without_warnings() -> None:
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(PAGE)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    shown = subprocess.run(
        ["groff", "-man", "-Tascii", "-P-cbou", str(PAGE)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # options and examples as one types them: ASCII minus signs, not hyphens
    assert "snapvol --repo /mnt/usb/restic ls --repo\n" in shown
    assert "--keep-daily N\n" in shown
