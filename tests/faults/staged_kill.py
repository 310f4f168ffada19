"""The snapvol CLI with its staged restore killed (SIGKILL, by itself) at a chosen point:
``python staged_kill.py <point> <snapvol arguments...>``.

``staging``: once a hundred members were extracted beside the volume (the container still
running); ``swapped``: right after the staged
copy was exchanged with the volume's directory, before the container is started. The real code
runs; only the point of death is chosen here, so nothing in snapvol needs a hook.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from snapvol.cli import main
from snapvol.pipeline.members import Member
from snapvol.volume import restore, staging


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_while_staging() -> None:
    check = restore.HeaderCheck.__call__
    seen = 0

    def killing(self: restore.HeaderCheck, member: Member) -> None:
        nonlocal seen
        seen += 1
        if seen > 100:  # a hundred members extracted: really mid-way
            _die()
        check(self, member)

    restore.HeaderCheck.__call__ = killing  # type: ignore[method-assign]


def _kill_once_swapped() -> None:
    exchange = staging.exchange

    def killing(first: Path, second: Path) -> None:
        exchange(first, second)
        if second.name == "_data":  # not the probe of two empty directories
            _die()

    staging.exchange = killing  # type: ignore[assignment]


if __name__ == "__main__":
    point = sys.argv.pop(1)
    {"staging": _kill_while_staging, "swapped": _kill_once_swapped}[point]()
    main()
