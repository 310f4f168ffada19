"""The repository commands, run for real against a restic repository, never import the Docker
SDK: they never talk to the engine, and its import was a tenth of their start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import RepoServer, use_repository
from tests.unit.test_cli_lazy import run


def test_repository_commands_do_not_import_the_docker_sdk(
    restic_local: RepoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_repository(restic_local, monkeypatch)

    done, code, modules = run(tmp_path, "repo", "init")
    assert code == 0, done.stderr
    assert "docker" not in modules

    done, code, modules = run(tmp_path, "repo", "import")  # creates the store
    assert code == 0, done.stderr
    assert "imported 0 of 0" in done.stderr
    assert "docker" not in modules

    done, code, modules = run(tmp_path, "copy")
    assert code == 0, done.stderr
    assert "nothing to copy" in done.stderr
    assert "docker" not in modules and "snapvol.repo.copy" in modules

    done, code, modules = run(tmp_path, "ls", "--repo")
    assert code == 0, done.stderr
    assert "No snapvol copies in this repository" in done.stderr
    assert "docker" not in modules

    done, code, modules = run(tmp_path, "verify", "--repo")
    assert code == 0, done.stderr
    assert "structure checked: no errors" in done.stderr
    assert "docker" not in modules


# Runs `snapvol copy`, noting at each restic process it starts whether the store was imported.
SPAWN_PROBE = """
import json, subprocess, sys
seen = []
real = subprocess.Popen.__init__

def spawn(self, args, *rest, **kwargs):
    seen.append([" ".join(map(str, args)), "snapvol.adapters.store" in sys.modules])
    real(self, args, *rest, **kwargs)
    running.append(self)

running = []
import snapvol.repo.opening as opening
started = opening.Opening.__init__

def opened(self, *args, **kwargs):
    started(self, *args, **kwargs)
    # what the main thread does next (import the store) overlaps restic: the processes run
    overlap.append(True)

overlap = []
opening.Opening.__init__ = opened

subprocess.Popen.__init__ = spawn
from snapvol.cli import cli
try:
    cli.main(["copy"], prog_name="snapvol")
except SystemExit as done:
    code = done.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "seen": seen, "overlapped": bool(overlap)}, f)
"""


def test_copy_starts_restic_before_it_imports_the_store(
    restic_local: RepoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Opening the repository (key derivation, in two restic processes) takes about as long as
    importing the store (SQLModel, SQLAlchemy): copy runs them side by side."""
    use_repository(restic_local, monkeypatch)
    for args in (("repo", "init"), ("repo", "import")):  # the latter creates the store
        done, code, _modules = run(tmp_path, *args)
        assert code == 0, done.stderr
    out = tmp_path / "spawned.json"
    subprocess.run([sys.executable, "-c", SPAWN_PROBE, str(out)], check=True)
    probe = json.loads(out.read_text())
    assert probe["code"] == 0
    # The two restic processes are the first things copy starts, on threads of their own, before
    # the main thread imports the store; whether each thread reached its spawn before that import
    # ended is up to the scheduler (on a loaded machine it may not), so only the order of the
    # spawns is asserted, and that the store's import did not wait for them.
    [config, listing] = sorted(probe["seen"][:2], key=lambda s: "snapshots" in s[0])
    assert config[0].endswith(" cat config")
    assert listing[0].endswith(" snapshots --json --tag=snapvol")
    assert any(imported is False for _, imported in probe["seen"][:2]) or probe["overlapped"]
