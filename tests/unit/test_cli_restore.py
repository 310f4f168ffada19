"""`snapvol restore`: the command line's own rules (the restores themselves: integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def test_restore_without_id_and_without_terminal_asks_for_one(cmd: Any, tmp_path: Path) -> None:
    from snapvol.adapters.store import Store

    Store.open(tmp_path / "manifests.db").close()  # an empty store: restore never creates one
    result = cmd("restore", exit_code=2)
    assert result.stderr == (
        "Error: which snapshot? give an id or name (see `snapvol ls`); "
        "the interactive list needs a terminal\n"
    )


def test_restore_argument_combinations(cmd: Any, tmp_path: Path) -> None:
    result = cmd("restore", "abc", "--file", str(tmp_path / "x.sql"), exit_code=2)
    assert "not both" in result.stderr
