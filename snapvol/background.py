"""Work on a thread of its own, whose result (or exception) the caller collects later."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """``func`` runs on a daemon thread at once; ``result`` waits for it and re-raises what it
    raised.

    The wait is in small steps: a long C call (zstd, a socket read) cannot be interrupted, so it
    must not run on the thread that receives Ctrl-C or SIGTERM; this way the caller gets
    KeyboardInterrupt at once and can clean up.
    """

    def __init__(self, func: Callable[[], T], name: str = "snapvol-background") -> None:
        self._value: list[T] = []
        self._error: list[BaseException] = []

        def run() -> None:
            try:
                self._value.append(func())
            except BaseException as err:
                self._error.append(err)

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def result(self) -> T:
        while self._thread.is_alive():
            self._thread.join(timeout=0.1)
        if self._error:
            raise self._error[0]
        return self._value[0]
