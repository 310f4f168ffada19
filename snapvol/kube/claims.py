"""From a workload to the claim snapvol reads, and where its data lives.

A Deployment or StatefulSet names its persistent volume claims in its pod template (``volumes``
with ``persistentVolumeClaim``) or, for a StatefulSet, in ``volumeClaimTemplates``: each replica
then has a claim of its own, ``<template>-<statefulset>-<ordinal>``. The claim leads to its
volume (PV), which may tie it to a node (``nodeAffinity``, as local and local-path volumes do)
and may be a directory on that node (``hostPath`` or ``local``). Whatever would make a cold copy
wrong is refused here, before anything is changed: a claim mounted by a pod of another workload
(stopping ours would not make the data cold), a claim not bound yet, a StatefulSet with several
replicas whose ordinal was not named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from snapvol.errors import OperationFailed, UsageError, VolumeInUseError
from snapvol.kube.client import Kube, Obj

HOSTNAME_LABEL = "kubernetes.io/hostname"
HELPER_LABEL = "snapvol.io/helper"
"""Every helper pod carries it: it is never counted as a user of the claim."""
_DONE = ("Succeeded", "Failed")  # a pod in these phases holds no mount


@dataclass(frozen=True)
class Workload:
    kind: str  # "deployment" | "statefulset"
    name: str
    namespace: str
    replicas: int
    raw: Obj

    @property
    def template(self) -> Obj:
        spec: Obj = self.raw.get("spec", {}).get("template", {}).get("spec", {})
        return spec

    @property
    def selector(self) -> Obj:
        selector: Obj = self.raw.get("spec", {}).get("selector") or {}
        return selector

    @property
    def annotations(self) -> dict[str, str]:
        found: dict[str, str] = self.raw.get("metadata", {}).get("annotations") or {}
        return found

    @property
    def resource_version(self) -> str | None:
        version: str | None = self.raw.get("metadata", {}).get("resourceVersion")
        return version

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class ClaimTarget:
    """One claim of one workload, resolved down to its volume and node."""

    workload: Workload
    claim: str  # the PVC's name
    volume: str  # the name the pod template gives it (its ``volumes`` entry, or the template)
    mount_path: str  # where the workload's container mounts it ("" if no container does)
    image: str  # that container's image: the helper pod runs it, so nothing is pulled
    container: str
    ordinal: int | None  # a StatefulSet replica's, for a claim of its volumeClaimTemplates
    access_modes: tuple[str, ...]
    pv: str
    node: str | None  # where the data is (the PV's node affinity, else where the pod ran)
    host_path: str | None  # the data's directory on that node (hostPath, local volumes)
    run_as: tuple[int | None, int | None]  # the workload's runAsUser and fsGroup, if set

    @property
    def scale_to(self) -> int:
        """Replicas while the claim is read: a StatefulSet removes its highest ordinals first,
        so scaling it to this replica's ordinal stops the replica and those above it only."""
        return self.ordinal or 0


def load_workload(kube: Kube, kind: str, name: str, namespace: str) -> Workload:
    kind = kind.lower().removesuffix("s")
    raw = kube.workload(kind, name, namespace)
    replicas = raw.get("spec", {}).get("replicas")
    return Workload(kind, name, namespace, 1 if replicas is None else int(replicas), raw)


def labels_match(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether ``labels`` satisfy a LabelSelector (matchLabels and matchExpressions)."""
    if not selector:
        return False  # an empty selector would match everything: never ours
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def claims_of(pod_spec: Obj) -> dict[str, str]:
    """Volume name -> claim name, for the claims a pod (or pod template) mounts."""
    found: dict[str, str] = {}
    for volume in pod_spec.get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            found[volume.get("name", "")] = claim
    return found


def is_helper(pod: Obj) -> bool:
    return HELPER_LABEL in (pod.get("metadata", {}).get("labels") or {})


def pods_mounting(kube: Kube, claim: str, namespace: str) -> list[Obj]:
    """The pods (snapvol's helpers aside) that hold ``claim`` now: not finished, or finished
    but still being deleted."""
    return [
        pod
        for pod in kube.pods(namespace)
        if claim in claims_of(pod.get("spec", {})).values()
        and not is_helper(pod)
        and (
            pod.get("status", {}).get("phase") not in _DONE
            or pod.get("metadata", {}).get("deletionTimestamp")
        )
    ]


def owned_by(pod: Obj, workload: Workload) -> bool:
    """Whether ``pod`` is one of the workload's replicas (its selector matches, and its owner is
    the StatefulSet itself or a ReplicaSet of the Deployment)."""
    labels = pod.get("metadata", {}).get("labels") or {}
    if not labels_match(workload.selector, labels):
        return False
    for owner in pod.get("metadata", {}).get("ownerReferences") or []:
        kind, name = owner.get("kind"), owner.get("name", "")
        if workload.kind == "statefulset" and kind == "StatefulSet" and name == workload.name:
            return True
        replica_set = kind == "ReplicaSet" and name.startswith(workload.name + "-")
        if workload.kind == "deployment" and replica_set:
            return True
    return False


@dataclass(frozen=True)
class _Candidate:
    volume: str
    claim: str
    ordinal: int | None


def _candidates(workload: Workload, ordinal: int | None) -> tuple[list[_Candidate], list[str]]:
    """The claims the workload mounts, and its StatefulSet claim templates' names."""
    found = [_Candidate(v, c, None) for v, c in claims_of(workload.template).items()]
    templates = [
        t.get("metadata", {}).get("name", "")
        for t in workload.raw.get("spec", {}).get("volumeClaimTemplates") or []
    ]
    if workload.kind != "statefulset" or not templates:
        return found, []
    if ordinal is None and workload.replicas > 1:
        return found, templates  # the caller asks which replica
    n = 0 if ordinal is None else ordinal
    found += [_Candidate(t, f"{t}-{workload.name}-{n}", n) for t in templates]
    return found, templates


def _pick(workload: Workload, claim: str | None, ordinal: int | None) -> _Candidate:
    found, templates = _candidates(workload, ordinal)
    if claim is not None:
        for cand in found:
            if cand.claim == claim:
                return cand
        for tmpl in templates:  # a replica's claim named in full: data-db-2
            match = re.fullmatch(rf"{re.escape(tmpl)}-{re.escape(workload.name)}-(\d+)", claim)
            if match:
                return _Candidate(tmpl, claim, int(match.group(1)))
        names = ", ".join(c.claim for c in found) or "none"
        raise UsageError(
            f"{workload.describe()} does not mount claim {claim!r} (it mounts: {names})"
        )
    if templates and ordinal is None and workload.replicas > 1:
        examples = ", ".join(f"{templates[0]}-{workload.name}-{i}" for i in range(2))
        raise UsageError(
            f"{workload.describe()} has {workload.replicas} replicas, each with claims of its "
            f"own ({examples}, ...): name the claim or the replica's ordinal",
            retry_with={"claim": ""},
        )
    if not found:
        raise UsageError(f"{workload.describe()} mounts no persistent volume claim")
    if len(found) > 1:
        names = ", ".join(c.claim for c in found)
        raise UsageError(
            f"{workload.describe()} mounts {len(found)} claims ({names}): name one",
            retry_with={"claim": ""},
        )
    return found[0]


def _container_mounting(template: Obj, volume: str) -> tuple[Obj, str]:
    containers = template.get("containers") or []
    for container in containers:
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") == volume:
                return container, str(mount.get("mountPath", ""))
    if not containers:
        raise UsageError("the workload's pod template has no container")
    return containers[0], ""


def node_of(pv: Obj) -> str | None:
    """The node a volume is tied to by its node affinity (``kubernetes.io/hostname In [n]``)."""
    required = (pv.get("spec", {}).get("nodeAffinity") or {}).get("required") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            values = expr.get("values") or []
            if expr.get("key") == HOSTNAME_LABEL and expr.get("operator") == "In" and values:
                return str(values[0])
    return None


def host_path_of(pv: Obj) -> str | None:
    """The directory on its node that holds a hostPath or local volume's data."""
    spec = pv.get("spec", {})
    for kind in ("hostPath", "local"):
        path = (spec.get(kind) or {}).get("path")
        if path:
            return str(path)
    return None


def _run_as(template: Obj, container: Obj) -> tuple[int | None, int | None]:
    pod_ctx: dict[str, Any] = template.get("securityContext") or {}
    ctx: dict[str, Any] = container.get("securityContext") or {}
    user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    return user, pod_ctx.get("fsGroup")


def resolve(
    kube: Kube,
    kind: str,
    name: str,
    namespace: str | None = None,
    *,
    claim: str | None = None,
    ordinal: int | None = None,
) -> ClaimTarget:
    """The claim of workload ``kind/name`` to read or write (``claim`` or ``ordinal`` chooses
    when it has several), checked: bound, and held by no pod of another workload."""
    workload = load_workload(kube, kind, name, namespace or kube.namespace)
    cand = _pick(workload, claim, ordinal)
    if cand.ordinal is not None and cand.ordinal >= max(workload.replicas, 1):
        raise UsageError(
            f"{workload.describe()} has {workload.replicas} replica(s): no ordinal {cand.ordinal}"
        )
    container, mount_path = _container_mounting(workload.template, cand.volume)
    pvc = kube.claim(cand.claim, workload.namespace)
    phase = pvc.get("status", {}).get("phase")
    pv_name = pvc.get("spec", {}).get("volumeName")
    if phase != "Bound" or not pv_name:
        raise OperationFailed(
            f"claim {cand.claim!r} is {phase or 'not bound'}: it has no volume yet, so there is "
            "nothing to read; nothing was changed"
        )
    modes = tuple(
        pvc.get("status", {}).get("accessModes") or pvc.get("spec", {}).get("accessModes") or ()
    )
    pv = kube.volume(pv_name)
    node = node_of(pv)
    for pod in pods_mounting(kube, cand.claim, workload.namespace):
        pod_name = pod.get("metadata", {}).get("name", "?")
        if not owned_by(pod, workload):
            raise VolumeInUseError(
                f"claim {cand.claim!r} ({', '.join(modes) or 'no access mode'}) is mounted by "
                f"pod {pod_name!r}, which is not {workload.describe()}'s: scaling it down would "
                "not make the data cold; nothing was changed"
            )
        node = node or pod.get("spec", {}).get("nodeName")
    return ClaimTarget(
        workload=workload,
        claim=cand.claim,
        volume=cand.volume,
        mount_path=mount_path,
        image=str(container.get("image", "")),
        container=str(container.get("name", "")),
        ordinal=cand.ordinal,
        access_modes=modes,
        pv=pv_name,
        node=node,
        host_path=host_path_of(pv),
        run_as=_run_as(workload.template, container),
    )
