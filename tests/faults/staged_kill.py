"""The snapvol CLI with its staged restore killed (SIGKILL, by itself) at a chosen point:
``python staged_kill.py <point> <snapvol arguments...>``.

``staging``: once the first MiB of the repository's stream has gone by, while the copy is being
extracted beside the volume (the container still running); ``swapped``: right after the staged
copy was exchanged with the volume's directory, before the container is started. The real code
runs; only the point of death is chosen here, so nothing in snapvol needs a hook.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from snapvol.cli import main
from snapvol.volume import staged, staging


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_while_staging() -> None:
    counted = staged._counted

    def killing(chunks: Iterable[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
        passed = 0
        for chunk in counted(chunks, advance):
            yield chunk
            passed += len(chunk)
            if passed >= 1 << 20:
                _die()

    staged._counted = killing  # type: ignore[assignment]


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
