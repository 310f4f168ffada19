"""Keeping a container's downtime short and bounded: stop it, and always start it again."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from snapvol import postgres
from snapvol.engine import ContainerInfo, Engine
from snapvol.output import Reporter


@dataclass
class Downtime:
    was_running: bool
    seconds: float = 0.0
    # Set when the volume holds data the service must not start on (a failed, unrolled restore).
    keep_stopped: bool = False


def wait_healthy(
    engine: Engine, info: ContainerInfo, is_postgres: bool, timeout: float = 120
) -> None:
    """Wait until the container runs and, for PostgreSQL, accepts connections."""
    engine.wait_status(info.id, ["running"], timeout=timeout)
    if is_postgres:
        postgres.wait_ready(engine, info.id, timeout=timeout)


@contextlib.contextmanager
def stopped(
    engine: Engine, info: ContainerInfo, *, is_postgres: bool, reporter: Reporter
) -> Iterator[Downtime]:
    """Stop the container (if it runs) for the body, then start it and wait until it is healthy.

    A container that was already stopped is left stopped. The restart happens however the body
    ends, exceptions and Ctrl-C included.
    """
    downtime = Downtime(was_running=info.running)
    if not info.running:
        reporter.step(f"container {info.name} is not running; it stays stopped")
        yield downtime
        return
    timeout = postgres.STOP_TIMEOUT if is_postgres else 30
    reporter.step(f"stopping {info.name} (clean shutdown, up to {timeout} s)")
    started = time.monotonic()
    engine.stop(info.id, timeout=timeout)
    try:
        yield downtime
    finally:
        # keep_stopped: the error being raised explains why the container stays stopped.
        if not downtime.keep_stopped:
            reporter.step(f"starting {info.name}")
            engine.start(info.id)
            wait_healthy(engine, info, is_postgres)
            downtime.seconds = time.monotonic() - started
