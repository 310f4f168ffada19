"""Where the store is, who creates it, and its permissions: never through a link, never moved by
the current directory, never created by a command that only reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from snapvol.adapters.store import Store
from snapvol.cli import context
from snapvol.cli.context import AppContext
from snapvol.pipeline import archive


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def no_default_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SNAPVOL_DB or SNAPVOL_BACKUP_DIR: the defaults apply, under tmp_path/data."""
    monkeypatch.delenv("SNAPVOL_DB")
    monkeypatch.delenv("SNAPVOL_BACKUP_DIR")
    data = tmp_path / "data" / "snapvol"
    monkeypatch.setattr(context, "data_dir", lambda: data, raising=False)
    return data


def test_ls_elsewhere_is_an_error_and_creates_nothing(
    cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_default_paths: Path
) -> None:
    empty = tmp_path / "somewhere-else"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for args in (["ls"], ["ls", "--json"], ["verify"], ["rm", "abcd0001", "--yes"]):
        result = cmd(*args, exit_code=6)
        assert result.stdout == ""
        assert result.stderr == (
            f"Error: no manifest store at {no_default_paths / 'manifests.db'}: "
            "`snapvol snapshot` creates it (or give --db / SNAPVOL_DB)\n"
        )
    result = cmd("prune", "--keep", "1", "--yes", exit_code=6)
    assert "no manifest store" in result.stderr
    assert list(empty.iterdir()) == []
    assert not (tmp_path / "data").exists()


def test_a_mistyped_db_fails_verify_and_is_not_created(cmd, tmp_path: Path) -> None:
    Store.open(tmp_path / "manifests.db").close()
    cmd("verify")  # the real one: nothing to verify, exit 0
    result = cmd("--db", str(tmp_path / "manifest.db"), "verify", exit_code=6)
    assert "no manifest store at" in result.stderr
    assert not (tmp_path / "manifest.db").exists()


def test_ls_says_where_the_store_is(cmd, tmp_path: Path) -> None:
    Store.open(tmp_path / "manifests.db").close()
    result = cmd("ls")
    assert result.stderr.splitlines()[0] == (
        f"Store {tmp_path / 'manifests.db'}, archives in {tmp_path / 'backups'}"
    )
    assert cmd.json("ls") == []  # --json stays a bare list


def test_defaults_do_not_depend_on_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert context.data_dir() == Path("/var/lib/snapvol")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert context.data_dir() == tmp_path / "xdg" / "snapvol"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert context.data_dir() == tmp_path / "home" / ".local" / "share" / "snapvol"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert context.data_dir() == tmp_path / "home" / ".local" / "share" / "snapvol"

    app = AppContext.from_options(None, None, False)
    assert app.db == tmp_path / "home" / ".local" / "share" / "snapvol" / "manifests.db"
    assert app.backup_dir == app.db.parent / "backups"
    # A store given elsewhere keeps its archives beside it: a copied pair works as one.
    app = AppContext.from_options(tmp_path / "copy" / "manifests.db", None, False)
    assert app.backup_dir == tmp_path / "copy" / "backups"
    monkeypatch.chdir(tmp_path)
    app = AppContext.from_options(Path("m.db"), Path("b"), False)
    assert (app.db, app.backup_dir) == (tmp_path / "m.db", tmp_path / "b")


def test_a_store_through_a_dangling_link_is_refused(cmd, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "target.db"
    target.parent.mkdir()
    (tmp_path / "manifests.db").symlink_to(target)
    for args in (["ls"], ["snapshot", "--volume", "--container", "snapvol-test-none"]):
        result = cmd(*args, exit_code=6)
        assert "is a symbolic link" in result.stderr
    assert list(target.parent.iterdir()) == []


def test_a_store_through_a_link_to_a_store_is_refused_untouched(cmd, tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    Store.open(real).close()
    os.chmod(real, 0o644)
    before = real.read_bytes()
    (tmp_path / "manifests.db").symlink_to(real)
    assert "is a symbolic link" in cmd("ls", exit_code=6).stderr
    assert mode(real) == 0o644 and real.read_bytes() == before


def test_an_existing_loose_store_is_tightened(cmd, tmp_path: Path) -> None:
    db = tmp_path / "manifests.db"
    Store.open(db).close()
    os.chmod(db, 0o644)
    wal = tmp_path / "manifests.db-wal"
    if wal.exists():
        os.chmod(wal, 0o644)
    cmd("ls")
    assert mode(db) == 0o600
    for extra in (wal, tmp_path / "manifests.db-shm"):
        assert not extra.exists() or mode(extra) == 0o600


def test_another_users_loose_store_is_refused(cmd, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the store to another user")
    db = tmp_path / "manifests.db"
    Store.open(db).close()
    os.chmod(db, 0o644)
    os.chown(db, 65534, 65534)
    result = cmd("ls", exit_code=6)
    assert "is mode 0644 and not yours" in result.stderr
    assert mode(db) == 0o644


def test_a_new_store_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = Store.open(tmp_path / "new" / "manifests.db")
    finally:
        os.umask(old)
    store.close()
    assert mode(tmp_path / "new" / "manifests.db") == 0o600
    assert store.created and not Store.open(tmp_path / "new" / "manifests.db").created


def test_a_linked_shared_backup_directory_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    link = tmp_path / "backups"
    link.symlink_to(shared)
    resolved = archive.ensure_private_dir(link)
    assert mode(shared) == 0o1777
    assert resolved == shared.resolve()
    # Given directly, a shared sticky directory is not ours to change either.
    archive.ensure_private_dir(shared)
    assert mode(shared) == 0o1777


def test_backup_directory_created_private_and_ours_tightened(tmp_path: Path) -> None:
    made = tmp_path / "a" / "backups"
    archive.ensure_private_dir(made)
    assert mode(made) == 0o700
    os.chmod(made, 0o755)
    archive.ensure_private_dir(made)
    assert mode(made) == 0o700
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(Exception, match="symbolic link to nothing"):
        archive.ensure_private_dir(dangling)
    assert not (tmp_path / "nowhere").exists()


def test_printed_commands_reach_the_same_store_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert AppContext.from_options(None, None, False).command("restore", "ab12") == (
        "snapvol restore ab12"
    )
    db = tmp_path / "a dir" / "manifests.db"
    app = AppContext.from_options(db, None, False)
    assert app.command("restore", "ab12") == f"snapvol --db '{db}' restore ab12"
    app = AppContext.from_options(db, tmp_path / "elsewhere", False)
    assert app.command("restore", "ab12") == (
        f"snapvol --db '{db}' --backup-dir {tmp_path / 'elsewhere'} restore ab12"
    )


def test_the_old_default_store_in_the_current_directory_is_named(
    cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store kept in ./manifests.db by an older snapvol is not silently left behind."""
    monkeypatch.chdir(tmp_path)
    Store.open(tmp_path / "manifests.db", create=True).close()
    monkeypatch.setenv("SNAPVOL_DB", str(tmp_path / "new" / "manifests.db"))
    result = cmd("ls", exit_code=6)
    assert f"{tmp_path / 'manifests.db'} is the store of snapvol's old default" in result.stderr
    assert not (tmp_path / "new" / "manifests.db").exists()
