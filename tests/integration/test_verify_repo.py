"""`snapvol verify --repo`: restic check of the repository, one line, the result recorded."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.servers import RepoServer, use_repository, write_password_file


def use(server: RepoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    use_repository(server, monkeypatch)


def fill(server: RepoServer) -> None:
    """A repository restic made itself, with data worth reading: 3 MiB of random bytes."""
    server.restic("init")
    server.restic("backup", "--stdin", "--stdin-filename", "a.bin", input=os.urandom(3 << 20))


def checks(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT repository, scope, ok, problems FROM repo_checks ORDER BY id"
        ).fetchall()


def test_verify_repo_passes_on_a_good_repository_without_a_store(
    restic_local: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fill(restic_local)
    use(restic_local, monkeypatch)

    result = cmd("verify", "--repo")  # no store yet: checked, not recorded
    assert "structure checked: no errors" in result.stderr
    assert "not recorded" in result.stderr and not (tmp_path / "manifests.db").exists()


def test_verify_repo_records_each_result(
    restic_local: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from snapvol.adapters.store import Store

    fill(restic_local)
    use(restic_local, monkeypatch)
    Store.open(tmp_path / "manifests.db").close()

    result = cmd("verify", "--repo", "--read-data")
    assert result.stderr.strip().splitlines()[-1] == (
        f"repository {restic_local.repo}: structure and all data checked: no errors"
    )
    data = cmd.json("verify", "--repo", "--read-data-subset", "50%")
    assert data["ok"] is True and data["scope"] == "read-data-subset 50%"
    assert data["recorded"] is True and data["problems"] == []
    assert checks(tmp_path / "manifests.db") == [
        (restic_local.repo, "read-data", 1, ""),
        (restic_local.repo, "read-data-subset 50%", 1, ""),
    ]


def test_verify_repo_reports_a_damaged_pack(
    restic_local: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from snapvol.adapters.store import Store

    fill(restic_local)
    use(restic_local, monkeypatch)
    Store.open(tmp_path / "manifests.db").close()
    pack = restic_local.damage_pack()

    cmd("verify", "--repo")  # the structure is intact: only reading the data finds it
    result = cmd("verify", "--repo", "--read-data", exit_code=7)
    assert "structure and all data checked: DAMAGED" in result.stderr
    assert Path(pack).name in result.stderr  # restic's own line names the pack
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"Error: repository {restic_local.repo} is damaged")
    )
    data = cmd.json("verify", "--repo", "--read-data-subset", "100%", exit_code=7)
    assert data["ok"] is False and any(Path(pack).name in line for line in data["problems"])
    recorded = checks(tmp_path / "manifests.db")
    assert [(scope, ok) for _repo, scope, ok, _problems in recorded] == [
        ("structure", 1),
        ("read-data", 0),
        ("read-data-subset 100%", 0),
    ]
    assert Path(pack).name in recorded[1][3]


def test_verify_repo_over_sftp_finds_damage(
    sftp_server: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(sftp_server)
    use(sftp_server, monkeypatch)
    cmd("verify", "--repo", "--read-data")
    sftp_server.damage_pack()
    cmd("verify", "--repo", "--read-data", exit_code=7)


def test_verify_repo_wrong_password_is_one_line(
    restic_local: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from snapvol.adapters.store import Store

    fill(restic_local)
    use(restic_local, monkeypatch)
    Store.open(tmp_path / "manifests.db").close()
    wrong = write_password_file(tmp_path / "wrong-password")
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(wrong))

    result = cmd("verify", "--repo", "--read-data", exit_code=14)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert wrong.read_text().strip() not in result.output
    assert checks(tmp_path / "manifests.db") == []  # nothing checked, nothing recorded


def test_verify_repo_refuses_what_makes_no_sense(
    restic_local: RepoServer, cmd, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(restic_local)
    use(restic_local, monkeypatch)
    cmd("verify", "--read-data", exit_code=2)
    cmd("verify", "--repo", "--read-data", "--read-data-subset", "5%", exit_code=2)
    cmd("verify", "--repo", "--read-data-subset", "-5%", exit_code=2)
    cmd("verify", "--repo", "some-ref", exit_code=2)
    monkeypatch.delenv("SNAPVOL_REPOSITORY")
    cmd("verify", "--repo", exit_code=2)  # no repository configured
