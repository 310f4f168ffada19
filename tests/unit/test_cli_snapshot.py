"""`snapvol snapshot`: the command line's own rules (the snapshots themselves: integration)."""

from __future__ import annotations

from typing import Any


def test_snapshot_argument_combinations(cmd: Any) -> None:
    result = cmd("snapshot", "--logical", "--volume-name", "v", exit_code=2)
    assert "--volume-name goes with --volume" in result.stderr
    result = cmd("snapshot", "--volume", "--format", "plain", exit_code=2)
    assert "--format goes with --logical" in result.stderr
