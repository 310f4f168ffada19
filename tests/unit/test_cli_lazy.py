"""Commands are imported when they run: `snapvol --help` lists them all without importing any,
exactly as click would list the commands themselves, and no command imports what it does not use
(the Docker SDK, the store) just to start."""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import snapvol
from snapvol.cli import COMMANDS, SnapvolGroup, cli

# Runs the CLI as `snapvol` would, then writes the top-level packages it imported to argv[1].
PROBE = """
import json, sys
from snapvol.cli import cli
try:
    cli.main(sys.argv[2:], prog_name="snapvol")
except SystemExit as done:
    code = done.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], int, set[str]]:
    """``snapvol ARGS`` in a fresh interpreter: what it printed, its exit code, and the packages
    (and modules) it imported."""
    out = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.exists(), done.stderr
    probe = json.loads(out.read_text())
    modules = set(probe["modules"])
    return done, probe["code"], modules | {m.split(".")[0] for m in modules}


def real(name: str) -> click.Command:
    entry = COMMANDS[name]
    command = getattr(importlib.import_module(entry.module), entry.attribute)
    assert isinstance(command, click.Command)
    return command


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_says_what_each_command_says(name: str) -> None:
    command = real(name)
    assert command.name == name
    assert not command.hidden
    assert COMMANDS[name].short_help == command.get_short_help_str(limit=10_000)


def test_the_table_has_every_command_of_the_cli_modules() -> None:
    """A command added to a module under snapvol/cli but not to the table would never run."""
    found: dict[click.Command, str] = {}
    for info in pkgutil.iter_modules(snapvol.cli.__path__, "snapvol.cli."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            callback = getattr(value, "callback", None)
            if isinstance(value, click.Command) and callback.__module__ == module.__name__:
                found[value] = info.name
    # a group's subcommands (`repo init`) are the group's, not the top level's
    for group in [c for c in found if isinstance(c, click.Group)]:
        for sub in group.commands.values():
            found.pop(sub, None)
    assert {(module, c.name) for c, module in found.items()} == {
        (entry.module, name) for name, entry in COMMANDS.items()
    }


def help_text(group: click.Group, width: int) -> str:
    result = CliRunner().invoke(group, ["--help"], terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("width", [40, 80, 100, 200])
def test_help_lists_the_commands_as_click_lists_the_real_ones(width: int) -> None:
    lazy = copy.copy(cli)
    lazy.commands = {}  # none imported yet, whatever other tests ran before
    # Click caches the help option made for the first context that asked; a test that made a
    # bare click.Context(cli) leaves one without -h.
    lazy._help_option = None
    assert isinstance(lazy, SnapvolGroup)
    plain = click.Group(
        name=cli.name,
        params=cli.params,
        callback=cli.callback,
        help=cli.help,
        epilog=cli.epilog,
        context_settings=cli.context_settings,
        commands=[real(name) for name in COMMANDS],
    )
    text = help_text(lazy, width)
    assert text == help_text(plain, width)
    assert lazy.commands == {}  # listed without importing any
    for name in COMMANDS:
        assert f"\n  {name} " in text


def test_every_command_resolves_to_the_real_one() -> None:
    ctx = click.Context(cli)
    for name in COMMANDS:
        assert cli.get_command(ctx, name) is real(name)
    assert cli.get_command(ctx, "nosuch") is None
    assert cli.list_commands(ctx) == sorted(COMMANDS)


def test_an_unknown_command_is_still_a_usage_error(tmp_path: Path) -> None:
    done, code, _ = run(tmp_path, "nosuch")
    assert code == 2
    assert "No such command 'nosuch'" in done.stderr


def test_help_imports_no_command_and_no_heavy_library(tmp_path: Path) -> None:
    done, code, modules = run(tmp_path, "--help")
    assert code == 0
    for name in COMMANDS:
        assert f"\n  {name} " in done.stdout
    heavy = {"docker", "requests", "sqlmodel", "sqlalchemy", "rich", "zstandard"}
    assert not modules & heavy
    assert not {entry.module for entry in COMMANDS.values()} & modules


@pytest.mark.parametrize(
    "args",
    [
        ["copy", "--help"],
        ["verify", "--help"],
        ["restore", "--help"],
        ["snapshot", "--help"],
        ["repo", "init", "--help"],
    ],
)
def test_a_command_s_help_does_not_import_the_docker_sdk(tmp_path: Path, args: list[str]) -> None:
    done, code, modules = run(tmp_path, *args)
    assert code == 0, done.stderr
    assert "Usage: snapvol" in done.stdout
    assert "docker" not in modules


def test_store_commands_import_neither_the_docker_sdk_nor_zstd(tmp_path: Path) -> None:
    """They read the store; no archive is compressed or decompressed, no engine reached."""
    from snapvol.adapters.store import Store

    db = tmp_path / "m.db"
    Store.open(db, create=True).close()

    done, code, modules = run(tmp_path, "--db", str(db), "ls")
    assert code == 0, done.stderr
    assert "No snapshots yet" in done.stderr
    assert not {"docker", "zstandard"} & modules and "snapvol.adapters.store" in modules

    done, code, modules = run(tmp_path, "--db", str(db), "show", "nosuch")
    assert code != 0 and done.stderr.startswith("Error: ")
    assert not {"docker", "zstandard"} & modules

    done, code, modules = run(tmp_path, "--db", str(db), "verify")
    assert code == 0, done.stderr
    assert "No complete snapshots to verify" in done.stderr
    assert not {"docker", "zstandard"} & modules


def test_no_snapvol_module_imports_the_docker_sdk_when_imported() -> None:
    """The SDK is imported when an engine connects (``Engine.connect``), nowhere else."""
    code = (
        "import importlib, pkgutil, sys, snapvol\n"
        "for info in pkgutil.walk_packages(snapvol.__path__, 'snapvol.'):\n"
        "    if info.name != 'snapvol.__main__':\n"
        "        importlib.import_module(info.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'requests')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
