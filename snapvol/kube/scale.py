"""Scaling a workload down for a cold copy, and back: recorded on the workload itself.

Before anything stops, the workload's replica count is written into an annotation
(``snapvol.io/scaled-from``) in the same merge patch that scales it down, conditional on the
object not having changed since it was read: the cluster never shows a scaled-down workload
without the record of how to bring it back. The annotation names the operation, the host and
the process, so a second snapvol refuses to start on the same workload, and ``recover`` brings
back what an interrupted run left down (its process gone) without guessing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from snapvol.errors import LockedError, OperationFailed, SnapvolError, describe
from snapvol.kube.claims import ClaimTarget, Workload, load_workload, pods_mounting
from snapvol.kube.client import WORKLOADS, Kube

ANNOTATION = "snapvol.io/scaled-from"


@dataclass(frozen=True)
class Mark:
    """What the annotation holds: enough to scale back, and to tell whose run it was."""

    replicas: int  # the count to bring back
    scaled_to: int  # what snapvol set (0, or a StatefulSet replica's ordinal)
    operation: str
    host: str
    pid: int
    at: str  # when, ISO 8601 UTC

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def of(cls, workload: Workload) -> Mark | None:
        """The mark on ``workload`` (None: none); one that cannot be read is refused."""
        text = workload.annotations.get(ANNOTATION)
        return None if text is None else cls.loads(text, workload.describe())

    @classmethod
    def loads(cls, text: str, where: str) -> Mark:
        try:
            data = json.loads(text)
            return cls(
                replicas=int(data["replicas"]),
                scaled_to=int(data["scaled_to"]),
                operation=str(data["operation"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                at=str(data["at"]),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise OperationFailed(
                f"{where} has an annotation {ANNOTATION} that snapvol cannot read "
                f"({text[:80]!r}); scale it by hand and remove the annotation"
            ) from err

    def owner(self) -> str:
        return f"operation {self.operation} (pid {self.pid} on {self.host}, {self.at})"


def new_mark(workload: Workload, scaled_to: int, operation: str) -> Mark:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Mark(workload.replicas, scaled_to, operation, socket.gethostname(), os.getpid(), now)


def scale_down(kube: Kube, target: ClaimTarget, operation: str) -> Mark:
    """Record the replica count and scale the workload to ``target.scale_to``, in one
    conditional patch. Refused if another snapvol run's mark is there."""
    workload = target.workload
    found = Mark.of(workload)
    if found is not None:
        raise LockedError(
            f"{workload.describe()} was scaled down by snapvol {found.owner()} and not yet "
            "scaled back; if that run is gone, recover it first"
        )
    scaled_to = min(target.scale_to, workload.replicas)
    mark = new_mark(workload, scaled_to, operation)
    meta: dict[str, object] = {"annotations": {ANNOTATION: mark.dumps()}}
    if workload.resource_version:
        meta["resourceVersion"] = workload.resource_version  # a 409 if it changed since read
    kube.patch_workload(
        workload.kind,
        workload.name,
        workload.namespace,
        {"metadata": meta, "spec": {"replicas": scaled_to}},
    )
    return mark


def wait_released(
    kube: Kube,
    target: ClaimTarget,
    timeout: float,
    *,
    poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until no pod (snapvol's helpers aside) holds the claim; OperationFailed after
    ``timeout`` seconds, naming the pods that still do."""
    deadline = clock() + timeout
    while True:
        holders = pods_mounting(kube, target.claim, target.workload.namespace)
        if not holders:
            return
        if clock() >= deadline:
            names = ", ".join(p.get("metadata", {}).get("name", "?") for p in holders[:3])
            raise OperationFailed(
                f"claim {target.claim!r} is still mounted by pod(s) {names} "
                f"{timeout:g} s after {target.workload.describe()} was scaled down"
            )
        sleep(poll)


def scale_back(kube: Kube, kind: str, name: str, namespace: str, mark: Mark) -> str | None:
    """Bring the replica count back to what ``mark`` recorded and remove the annotation.

    Only the run that wrote the mark scales back: a mark of another operation is left alone.
    A workload someone scaled meanwhile keeps their count (the mark goes). Returns a warning
    for what was left as it was (None: scaled back).
    """
    workload = load_workload(kube, kind, name, namespace)
    current = Mark.of(workload)
    if current is None or current.operation != mark.operation:
        return (
            f"{workload.describe()} no longer carries this run's mark; its replicas "
            f"({workload.replicas}) were left as they are"
        )
    patch: dict[str, object] = {"metadata": {"annotations": {ANNOTATION: None}}}
    warning = None
    if workload.replicas == mark.scaled_to:
        patch["spec"] = {"replicas": mark.replicas}
    else:
        warning = (
            f"{workload.describe()} was scaled to {workload.replicas} by someone else while "
            f"snapvol worked; left at {workload.replicas} (it had {mark.replicas})"
        )
    kube.patch_workload(kind, name, namespace, patch)
    return warning


class KeepDown(OperationFailed):
    """Raised in ``scaled_down``'s body when the workload must not run again: its claim may be
    half-written (a restore whose rollback failed). It is left scaled down with its mark, which
    ``recover`` keeps down and the next restore of the claim takes over."""


@contextlib.contextmanager
def scaled_down(
    kube: Kube,
    target: ClaimTarget,
    operation: str,
    *,
    timeout: float = 300,
    poll: float = 1.0,
    warn: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    adopt: Mark | None = None,
) -> Iterator[Mark]:
    """The claim cold for the ``with`` body: the workload scaled down (recorded), no pod
    holding the claim; scaled back however the body ends, unless it raised ``KeepDown`` (even
    if cleaning up after it failed too).

    ``adopt``: the mark an interrupted run left on the workload (already scaled down): this run
    takes it over, and scales back to what it recorded once the body succeeds; a body that
    fails leaves it down (``KeepDown``): the claim is as the interrupted run left it, maybe
    half-written."""
    mark = adopt if adopt is not None else scale_down(kube, target, operation)
    workload = target.workload
    failed: BaseException | None = None
    try:
        wait_released(kube, target, timeout, poll=poll, sleep=sleep)
        yield mark
    except BaseException as err:
        failed = err
        raise
    finally:
        kept = _kept_down(failed)
        if kept is not None and failed is not None and kept is not failed:  # cleanup failed after
            down = KeepDown(f"{kept.message}; then {describe(failed)}")
            down.exit_code = 130 if isinstance(failed, KeyboardInterrupt) else kept.exit_code
            raise down from failed
        if kept is None and failed is not None and adopt is not None:
            raise _still_down(
                f"{describe(failed)}; {workload.describe()} is left scaled down (its annotation "
                f"{ANNOTATION} kept): its claim is as the interrupted restore this run took over "
                "left it, maybe half-written",
                failed,
            ) from failed
        if kept is None:
            _scale_back_or_say(kube, workload, mark, failed, warn)


def _kept_down(err: BaseException | None) -> KeepDown | None:
    """The ``KeepDown`` that ``err`` is, or was raised while handling (a cleanup's failure)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeepDown):
            return err
        seen.add(id(err))
        err = err.__context__
    return None


def _still_down(message: str, cause: BaseException) -> KeepDown:
    """A ``KeepDown`` saying ``message``, whose exit status is ``cause``'s (130: interrupted)."""
    down = KeepDown(message)
    if isinstance(cause, KeyboardInterrupt):
        down.exit_code = 130
    elif isinstance(cause, SnapvolError):
        down.exit_code = cause.exit_code
    return down


def _scale_back_or_say(
    kube: Kube,
    workload: Workload,
    mark: Mark,
    failed: BaseException | None,
    warn: Callable[[str], None] | None,
) -> None:
    try:
        warning = scale_back(kube, workload.kind, workload.name, workload.namespace, mark)
    except SnapvolError as err:
        left = (
            f"scaling {workload.describe()} back to {mark.replicas} failed "
            f"({describe(err)}); it is left at {mark.scaled_to} with annotation "
            f"{ANNOTATION}: recover it"
        )
        if failed is not None:
            raise OperationFailed(f"{describe(failed)}; then {left}") from err
        raise OperationFailed(left) from err
    if warning and warn is not None:
        warn(warning)


def alive_here(mark: Mark) -> bool | None:
    """Whether the run that wrote ``mark`` is still running: True or False when it ran on this
    host, None (cannot tell) when it ran on another."""
    if mark.host != socket.gethostname():
        return None
    try:
        os.kill(mark.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process by that pid
    return True


@dataclass(frozen=True)
class Recovered:
    workload: str  # "deployment ns/name"
    mark: Mark
    action: str  # "scaled back", "left: ..." (what was done, for the user)


def recover(
    kube: Kube,
    namespace: str,
    *,
    alive: Callable[[Mark], bool | None] = alive_here,
    force: bool = False,
    keep_down: Callable[[Workload, Mark], str | None] | None = None,
) -> list[Recovered]:
    """Scale back every workload in ``namespace`` that an interrupted snapvol run left scaled
    down. A mark whose run still runs is left alone; one written on another host (whose
    process cannot be checked from here) only with ``force``; one ``keep_down`` gives a reason
    for (an interrupted restore's: its claim may be half-written) is left scaled down."""
    done: list[Recovered] = []
    for kind in WORKLOADS:
        for raw in kube.workloads(kind, namespace):
            name = raw.get("metadata", {}).get("name", "")
            workload = Workload(kind, name, namespace, _replicas(raw), raw)
            mark = Mark.of(workload)
            if mark is None:
                continue
            state = alive(mark)
            if state is True:
                done.append(Recovered(workload.describe(), mark, "left: its run is still going"))
                continue
            if state is None and not force:
                done.append(
                    Recovered(
                        workload.describe(),
                        mark,
                        f"left: its run was on {mark.host}, which this host cannot check "
                        "(recover with force once that run is known to be gone)",
                    )
                )
                continue
            why = keep_down(workload, mark) if keep_down is not None else None
            if why is not None:
                done.append(Recovered(workload.describe(), mark, f"left: {why}"))
                continue
            warning = scale_back(kube, kind, name, namespace, mark)
            done.append(Recovered(workload.describe(), mark, warning or "scaled back"))
    return done


def _replicas(raw: dict[str, object]) -> int:
    spec = raw.get("spec")
    value = spec.get("replicas") if isinstance(spec, dict) else None
    return 1 if value is None else int(value)
