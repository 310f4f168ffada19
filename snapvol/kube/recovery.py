"""Recovering what an interrupted Kubernetes operation left: its helper pods, then the
workloads it scaled down (in that order: a helper still holding a ReadWriteOnce claim would
keep the workload's pod from starting on another node).

Whose run left something is read from the cluster itself (the helper's owner annotation, the
workload's mark): a run still going on this host is left alone, and one from another host only
with ``force``, since its process cannot be checked from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from snapvol.kube import helper_pod, scale
from snapvol.kube.claims import Workload
from snapvol.kube.client import Kube


def _alive(host: str, pid: int) -> bool | None:
    return scale.alive_here(scale.Mark(0, 0, "", host, pid, ""))


@dataclass
class Recovery:
    helpers_deleted: list[str] = field(default_factory=list)
    helpers_left: list[str] = field(default_factory=list)  # "<name>: why"
    workloads: list[scale.Recovered] = field(default_factory=list)


def recover(
    kube: Kube,
    namespace: str | None = None,
    *,
    force: bool = False,
    alive: Callable[[str, int], bool | None] = _alive,
    keep_down: Callable[[Workload, scale.Mark], str | None] | None = None,
) -> Recovery:
    """Delete the helper pods of runs that are gone, then scale back their workloads (but
    those ``keep_down`` gives a reason for: see ``scale.recover``)."""
    namespace = namespace or kube.namespace
    done = Recovery()
    for pod in helper_pod.strays(kube, namespace):
        name = pod.get("metadata", {}).get("name", "")
        owner = helper_pod.owner_of(pod)
        state = alive(*owner) if owner else None
        if state is True:
            done.helpers_left.append(f"{name}: its run is still going")
        elif state is None and not force:
            where = owner[0] if owner else "an unknown host"
            done.helpers_left.append(
                f"{name}: its run was on {where}, which this host cannot check"
            )
        elif kube.delete_pod(name, namespace):
            done.helpers_deleted.append(name)
    done.workloads = scale.recover(
        kube,
        namespace,
        force=force,
        alive=lambda mark: alive(mark.host, mark.pid),
        keep_down=keep_down,
    )
    return done


def delete_helpers(kube: Kube, namespace: str, operation: str) -> list[str]:
    """Delete the helper pods of ``operation`` (an interrupted run's, taken over)."""
    deleted = []
    for pod in helper_pod.strays(kube, namespace):
        meta = pod.get("metadata", {})
        name = str(meta.get("name", ""))
        ours = (meta.get("labels") or {}).get(helper_pod.OPERATION_LABEL) == operation
        if ours and kube.delete_pod(name, namespace):
            deleted.append(name)
    return deleted
