"""Keeping a container's downtime short and bounded: stop it, and always start it again.

In-process, a ``finally`` restarts the container on errors, Ctrl-C and SIGTERM; a detached
rescue process, started and told each phase through ``snapvol.volume.watchdog``, covers what a
``finally`` cannot: SIGKILL and crashes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from snapvol.adapters.engine import ContainerInfo, ContainerState, Engine, PodInfo
from snapvol.errors import OperationFailed
from snapvol.output import Reporter
from snapvol.pg import cluster
from snapvol.volume.phases import Dirty, Stopped
from snapvol.volume.watchdog import Watchdog, WatchdogConfig, spawn


@dataclass
class Downtime:
    was_running: bool
    seconds: float = 0.0
    # Set when the volume holds data the service must not start on (a failed, unrolled restore).
    keep_stopped: bool = False
    # Set when someone else started the container while snapvol held it stopped: it is theirs.
    taken_over: bool = False
    watchdog: Watchdog = field(default_factory=lambda: Watchdog(None, None))
    # How the container was found just before the stop, and a way to inspect it again.
    _before: ContainerState | None = field(default=None, init=False)
    _inspect: Callable[[], ContainerState] | None = field(default=None, init=False)
    _name: str = field(default="", init=False)  # "container NAME", or "pod NAME"
    # Starts the container; set by ``stopped`` while the container is down and was running.
    _start: Callable[[], None] | None = field(default=None, init=False)
    _started: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def intact(self) -> None:
        """Tell the watchdog the volume is intact: were snapvol to die now, it starts the
        container again (if it was running)."""
        self.watchdog.send(Stopped(was_running=self.was_running))

    def rewriting(self, *, volume: str, image: str, safety: str | None) -> None:
        """Tell the watchdog a restore is rewriting ``volume``: were snapvol to die now, it puts
        safety snapshot ``safety`` back first (through helper ``image``), or with none leaves
        the container stopped."""
        self.watchdog.send(
            Dirty(was_running=self.was_running, volume=volume, image=image, safety=safety)
        )

    def release(self) -> None:
        """The volume is no longer needed: start the container now (from any thread) instead of
        when the block ends, so that finishing the archive overlaps the service's start-up. A
        failure here is not raised: the block's end tries again and reports it."""
        if not self.keep_stopped:
            with contextlib.suppress(Exception):
                self._start_if_needed()

    def started_by_someone_else(self) -> str | None:
        """When someone else started the container since snapvol stopped it (or found it
        stopped), a description of it; else None. The container is then theirs: it is neither
        started nor waited for when the block ends."""
        if self._inspect is None or self._before is None:
            return None
        now = self._inspect()
        if now.started_at == self._before.started_at and not now.running:
            return None
        self.taken_over = True
        return (
            f"{self._name} was started by someone else (at {now.started_at}, now "
            f"{now.status}) while snapvol held it stopped"
        )

    def check_still_stopped(self) -> None:
        """Raise if someone else started the container: what was read of the volume meanwhile
        is not a cold copy."""
        started = self.started_by_someone_else()
        if started is not None:
            raise OperationFailed(
                f"{started}: what was read of its volume is not a cold copy, so it was "
                "discarded; the container was left as it is"
            )

    def _start_if_needed(self) -> None:
        with self._lock:
            if self._start is not None and not self._started:
                self._start()
                self._started = True


def wait_healthy(
    engine: Engine,
    info: ContainerInfo,
    is_postgres: bool,
    timeout: float = 120,
    pid_file: Path | None = None,
    since: float = 0.0,
) -> None:
    """Wait until the container runs and, for PostgreSQL, accepts connections (``pid_file``:
    its ``postmaster.pid`` on this host, when readable here; ``since``: when it was stopped)."""
    engine.wait_status(info.id, ["running"], timeout=timeout)
    if is_postgres:
        cluster.wait_ready(engine, info.id, timeout=timeout, pid_file=pid_file, since=since)


def _pod_state(engine: Engine, pod: PodInfo) -> ContainerState:
    """A pod's containers (its infra container included) as one: running when any of them
    runs, started again when any of them was (their start times, together)."""
    states = [engine.state(c.id) for c in pod.containers]
    status = next((s.status for s in states if s.running), states[0].status if states else "")
    return ContainerState(status, " ".join(s.started_at for s in states))


@contextlib.contextmanager
def stopped(
    engine: Engine,
    info: ContainerInfo,
    *,
    is_postgres: bool,
    reporter: Reporter,
    watchdog: WatchdogConfig | None = None,
    pid_file: Path | None = None,
    pod: PodInfo | None = None,
    timeout: int | None = None,
) -> Iterator[Downtime]:
    """Stop the container (if it runs) for the body, then start it and wait until it is healthy.

    ``timeout``: the seconds a clean shutdown gets before the engine kills the process (None:
    ``cluster.STOP_TIMEOUT`` for PostgreSQL, whose shutdown checkpoint may take a while, else 30).

    A container that was already stopped is left stopped. The restart happens however the body
    ends: exceptions, Ctrl-C and SIGTERM here; SIGKILL or a crash through the watchdog. With
    ``pod`` (the container's Podman pod) the whole pod is stopped, when any of it runs, and
    started again, as ``podman pod stop`` and ``podman pod start`` do.
    """

    def inspect() -> ContainerState:
        return engine.state(info.id) if pod is None else _pod_state(engine, pod)

    # Inspected again here, not taken from ``info``: the baseline against which a start by
    # someone else is detected (``Downtime.check_still_stopped``) must be the state we stop from.
    before = inspect()
    running = before.status in ("running", "restarting")
    downtime = Downtime(was_running=running)
    downtime._before = before
    downtime._name = f"container {info.name}" if pod is None else f"pod {pod.name}"
    downtime._inspect = inspect
    if running:
        downtime._start = (
            (lambda: engine.start(info.id)) if pod is None else (lambda: engine.start_pod(pod.id))
        )
    if watchdog is not None:
        # Started before the stop, so there is no moment with the container down and no guard.
        downtime.watchdog = spawn(
            watchdog, info.id, is_postgres=is_postgres, pod=None if pod is None else pod.id
        )
    downtime.intact()
    started = time.monotonic()
    stop_requested = time.time()  # a postmaster.pid older than this is not the restarted server's
    restarted = False
    try:
        if timeout is None:
            timeout = cluster.STOP_TIMEOUT if is_postgres else 30
        if running and pod is not None:
            reporter.step(
                f"stopping pod {pod.name}, its {len(pod.containers)} containers "
                f"(clean shutdown, up to {timeout} s)"
            )
            engine.stop_pod(pod.id, timeout=timeout)
        elif running:
            reporter.step(f"stopping {info.name} (clean shutdown, up to {timeout} s)")
            engine.stop(info.id, timeout=timeout)
        else:
            reporter.step(f"{downtime._name} is not running; it stays stopped")
        yield downtime
    finally:
        # keep_stopped: the error being raised explains why the container stays stopped.
        try:
            if downtime.taken_over:
                reporter.step(f"{info.name} was started by someone else; leaving it as it is")
            elif running and not downtime.keep_stopped:
                reporter.step(f"starting {info.name if pod is None else 'pod ' + pod.name}")
                downtime._start_if_needed()
                wait_healthy(engine, info, is_postgres, pid_file=pid_file, since=stop_requested)
                downtime.seconds = time.monotonic() - started
            restarted = True
        finally:
            if restarted:
                downtime.watchdog.done()
            else:
                downtime.watchdog.abandon()  # our restart failed: let the watchdog retry
