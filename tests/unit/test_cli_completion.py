"""Shell completion (click's, driven by _SNAPVOL_COMPLETE as a shell would): command names
without importing any command, one command's options importing only that command, and
snapshot references from the store, read only (issue 13)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from snapvol.adapters.store import Snapshot, Store
from snapvol.cli import COMMANDS, cli
from snapvol.cli.complete import SnapshotRef

# Runs the CLI as `snapvol` would, then writes the modules it imported to argv[1].
PROBE = """
import json, sys
from snapvol.cli import cli
try:
    cli.main([], prog_name="snapvol")
except SystemExit as done:
    code = done.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""

COMMAND_MODULES = {entry.module for entry in COMMANDS.values()}


def complete(
    tmp_path: Path, line: str, shell: str = "bash", **env: str
) -> tuple[list[str], set[str]]:
    """What completing the last word of ``line`` offers (bash: the values; zsh: value and help
    alternate), and the modules that imported."""
    words = line.split(" ")
    out = tmp_path / "probe" / "probe.json"
    out.parent.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "_SNAPVOL_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
            **env,
        },
    )
    assert done.stderr == ""
    probe = json.loads(out.read_text())
    assert probe["code"] == 0
    lines = [line for line in done.stdout.splitlines() if line]  # nothing: one empty line
    values = [item.split(",", 1)[1] for item in lines] if shell == "bash" else lines
    return values, set(probe["modules"])


@pytest.fixture
def store_file() -> Path:
    """The store at SNAPVOL_DB with a volume snapshot `uno` and a logical one `dos`."""
    path = Path(os.environ["SNAPVOL_DB"])
    store = Store.open(path)
    try:
        store.add(Snapshot(id="1234abcd", name="uno", kind="volume", container="db"))
        store.add(Snapshot(id="12ffabcd", name="dos", kind="logical", container="db"))
    finally:
        store.close()
    return path


def test_every_snapshot_argument_completes() -> None:
    """Every REF argument (as its usage shows it) completes from the store."""
    ctx = click.Context(cli)
    found = []
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        subs = command.commands.values() if isinstance(command, click.Group) else [command]
        for sub in subs:
            for param in sub.params:
                if isinstance(param, click.Argument) and "REF" in param.human_readable_name:
                    assert isinstance(param.type, SnapshotRef), f"{sub.name} {param.name}"
                    found.append(sub.name)
    assert sorted(found) == ["copy", "drill", "extract", "restore", "rm", "show", "verify"]


def test_command_names_complete_without_importing_any_command(tmp_path: Path) -> None:
    values, modules = complete(tmp_path, "snapvol s")
    assert values == ["schedule", "show", "snapshot"]
    assert not COMMAND_MODULES & modules
    assert not {"docker", "sqlmodel", "sqlalchemy", "rich"} & modules

    values, modules = complete(tmp_path, "snapvol ")
    assert values == sorted(COMMANDS)
    assert not COMMAND_MODULES & modules


def test_command_names_carry_their_short_help_for_zsh(tmp_path: Path) -> None:
    values, modules = complete(tmp_path, "snapvol ve", shell="zsh")
    assert "snapvol.cli.verify" not in modules
    from snapvol.cli.verify import command  # what click would say, from the command itself

    assert values == ["plain", "verify", command.get_short_help_str()]


def test_global_options_complete_after_snapvol(tmp_path: Path) -> None:
    values, modules = complete(tmp_path, "snapvol --d")
    assert values == ["--db", "--debug"]
    assert not COMMAND_MODULES & modules


def test_a_command_s_options_import_that_command_only(tmp_path: Path) -> None:
    values, modules = complete(tmp_path, "snapvol restore --no")
    assert values == ["--no-safety-snapshot", "--no-owner", "--node-name"]
    assert COMMAND_MODULES & modules == {"snapvol.cli.restore"}
    assert "docker" not in modules

    values, _ = complete(tmp_path, "snapvol repo i")
    assert values == ["import", "init"]


def test_refs_complete_to_the_ids_and_names_in_the_store(tmp_path: Path, store_file: Path) -> None:
    before = {p.name: p.read_bytes() for p in store_file.parent.iterdir() if p.is_file()}
    assert set(before) == {"manifests.db"}
    values, _ = complete(tmp_path, "snapvol show 12")
    assert sorted(values) == ["1234abcd", "12ffabcd"]
    values, _ = complete(tmp_path, "snapvol rm uno d")
    assert values == ["dos"]
    values, _ = complete(tmp_path, "snapvol restore ")
    assert sorted(values) == ["1234abcd", "12ffabcd", "dos", "uno"]
    values, _ = complete(tmp_path, "snapvol verify x")
    assert values == []
    # zsh shows what each is
    values, _ = complete(tmp_path, "snapvol copy un", shell="zsh")
    assert values[:2] == ["plain", "uno"]
    assert re.fullmatch(r"volume of db, \d{4}-\d\d-\d\d \d\d:\d\d UTC, in_progress", values[2])
    after = {p.name: p.read_bytes() for p in store_file.parent.iterdir() if p.is_file()}
    assert after == before  # read, never written


def test_refs_come_from_the_store_the_command_line_names(tmp_path: Path, store_file: Path) -> None:
    other = tmp_path / "other" / "m.db"
    other.parent.mkdir()
    store = Store.open(other)
    try:
        store.add(Snapshot(id="abcd0000", name="tres", kind="volume", container="db"))
    finally:
        store.close()
    values, _ = complete(tmp_path, f"snapvol --db {other} show ")
    assert sorted(values) == ["abcd0000", "tres"]
    # after the command it wins, as when the command runs
    values, _ = complete(tmp_path, f"snapvol --db {store_file} show --db {other} ")
    assert sorted(values) == ["abcd0000", "tres"]
    values, _ = complete(tmp_path, "snapvol show ", SNAPVOL_DB=str(other))
    assert sorted(values) == ["abcd0000", "tres"]


def test_completing_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "m.db"
    values, _ = complete(tmp_path, f"snapvol --db {missing} show ")
    assert values == []
    assert not missing.parent.exists()
    # the default store too (SNAPVOL_DB unset: $XDG_DATA_HOME/snapvol/manifests.db)
    env = {k: v for k, v in os.environ.items() if k != "SNAPVOL_DB"}
    out = tmp_path / "probe.json"
    subprocess.run(
        [sys.executable, "-c", PROBE, str(out)],
        env={
            **env,
            "XDG_DATA_HOME": str(tmp_path / "xdg"),
            "_SNAPVOL_COMPLETE": "bash_complete",
            "COMP_WORDS": "snapvol rm ",
            "COMP_CWORD": "2",
        },
        check=True,
        timeout=120,
    )
    assert not (tmp_path / "xdg").exists()


def test_a_store_that_is_not_one_completes_to_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    values, _ = complete(tmp_path, f"snapvol --db {junk} show ")
    assert values == []
    assert junk.read_bytes() == b"not sqlite at all" * 100


SNAPVOL = Path(sys.executable).parent / "snapvol"


@pytest.mark.skipif(
    shutil.which("bash") is None or not SNAPVOL.exists(), reason="needs bash and the snapvol script"
)
def test_bash_completes_through_the_script_snapvol_prints(tmp_path: Path, store_file: Path) -> None:
    """What a user puts in ~/.bashrc, then a TAB after `snapvol show u`."""
    script = (
        'eval "$(_SNAPVOL_COMPLETE=bash_source snapvol)"\n'
        "COMP_WORDS=(snapvol show u); COMP_CWORD=2\n"
        "_snapvol_completion snapvol\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{SNAPVOL.parent}{os.pathsep}{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["uno"]


@pytest.mark.parametrize(("shell", "marker"), [("zsh", "compdef"), ("fish", "complete")])
def test_zsh_and_fish_scripts(tmp_path: Path, shell: str, marker: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "snapvol"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "_SNAPVOL_COMPLETE": f"{shell}_source"},
    )
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout and "_SNAPVOL_COMPLETE" in done.stdout
