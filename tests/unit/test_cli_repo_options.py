"""--repo / --password-file (and SNAPVOL_REPOSITORY / SNAPVOL_PASSWORD_FILE) reach restic."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapvol.cli import cli
from snapvol.cli.context import AppContext
from snapvol.errors import UsageError


def app_for(args: list[str]) -> AppContext:
    ctx = cli.make_context("snapvol", [*args, "ls"])
    return AppContext.from_options(**ctx.params)


def password(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text("secret\n")
    path.chmod(0o600)
    return path


def test_options_give_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND"):
        monkeypatch.delenv(var, raising=False)
    pw = password(tmp_path)
    restic = app_for(["--repo", "rel/repo", "--password-file", str(pw)]).restic()
    assert restic.repo.location == str(Path("rel/repo").absolute())
    assert restic.repo.password_file == pw
    assert "rel/repo" not in repr(app_for(["--repo", "rel/repo"]))


def test_environment_gives_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = password(tmp_path)
    monkeypatch.setenv("SNAPVOL_REPOSITORY", "sftp:host:/srv/repo")
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(pw))
    restic = app_for([]).restic()
    assert restic.repo.location == "sftp:host:/srv/repo" and restic.repo.password_file == pw


def test_restic_password_file_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = password(tmp_path)
    monkeypatch.setenv("RESTIC_PASSWORD_FILE", str(pw))
    assert app_for(["--repo", str(tmp_path / "r")]).restic().repo.password_file == pw


def test_no_repository_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no repository: give --repo or set SNAPVOL_REPOSITORY"):
        app_for([]).restic()


def test_a_loose_password_file_is_refused(tmp_path: Path) -> None:
    pw = password(tmp_path)
    pw.chmod(0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        app_for(["--repo", str(tmp_path / "r"), "--password-file", str(pw)]).restic()
