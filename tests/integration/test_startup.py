"""The repository commands, run for real against a restic repository, never import the Docker
SDK: they never talk to the engine, and its import was a tenth of their start-up."""

from __future__ import annotations

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
