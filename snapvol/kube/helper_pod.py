"""The helper pod that reads (or writes) a claim while its workload is scaled down.

It runs the workload's own image with ``imagePullPolicy: Never`` (nothing is ever pulled: the
image is on the node, where the workload just ran), is pinned to the node that holds the data
(``nodeName``: no scheduling, no second attachment elsewhere), mounts the claim read-only for a
snapshot and read-write for a restore, and only sleeps: snapvol execs ``tar`` (and ``find``)
in it and streams their output through the API. It runs as root with only the capabilities the
job needs (reading every file; or setting owners, modes and device nodes), never a service
account token, and ends by itself after ``DEADLINE`` seconds should snapvol vanish. Its labels
let ``strays`` find what an interrupted run left.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator

from snapvol.errors import NotFoundError, OperationFailed, PodSecurityError
from snapvol.kube.claims import HELPER_LABEL, ClaimTarget
from snapvol.kube.client import Kube, Obj

HELPER_MOUNT = "/snapvol/data"
MANAGED_BY = ("app.kubernetes.io/managed-by", "snapvol")
OPERATION_LABEL = "snapvol.io/operation"
OWNER_ANNOTATION = "snapvol.io/owner"  # "<host> <pid>": whose run it is
DEADLINE = 6 * 3600
"""Seconds after which the cluster ends a helper pod by itself (``activeDeadlineSeconds``)."""

# Only capabilities Pod Security's "baseline" level allows (DAC_READ_SEARCH is not one): on a
# read-only mount DAC_OVERRIDE reads every file and searches every directory.
READ_CAPS = ("DAC_OVERRIDE",)
WRITE_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD", "SETFCAP")

# Why a container may never start: waiting reasons that do not go away by waiting.
_STUCK = {
    "ErrImageNeverPull": "its image {image} is not on node {node} (helper pods never pull)",
    "ImagePullBackOff": "its image {image} could not be found on node {node}",
    "ErrImagePull": "its image {image} could not be found on node {node}",
    "CreateContainerConfigError": "the container could not be configured",
    "CreateContainerError": "the container could not be created",
    "RunContainerError": "the container could not be started",
    "CrashLoopBackOff": "its container keeps exiting (does the image have sleep?)",
}


def helper_name(operation: str, purpose: str) -> str:
    return f"snapvol-{purpose}-{operation}".lower()[:63].rstrip("-")


def helper_spec(
    target: ClaimTarget, operation: str, *, read_only: bool, as_owner: bool = False
) -> Obj:
    """The helper pod for ``target`` (a pod manifest, ready to create).

    ``as_owner``: run as the workload's own ``runAsUser`` and ``fsGroup`` with no capability,
    for namespaces whose Pod Security level forbids root; then only what that user can read is
    read, and a restore cannot set owners.
    """
    workload = target.workload
    template = workload.template
    purpose = "read" if read_only else "write"
    if as_owner:
        user, group = target.run_as
        pod_security: Obj = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        if user is not None:
            pod_security["runAsUser"] = user
        if group is not None:
            pod_security["fsGroup"] = group
        capabilities: Obj = {"drop": ["ALL"]}
    else:
        pod_security = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}
        capabilities = {"drop": ["ALL"], "add": list(READ_CAPS if read_only else WRITE_CAPS)}
    spec: Obj = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 0,
        "activeDeadlineSeconds": DEADLINE,
        "securityContext": pod_security,
        "containers": [
            {
                "name": "snapvol",
                "image": target.image,
                "imagePullPolicy": "Never",
                "command": ["sleep", str(DEADLINE)],
                "volumeMounts": [
                    {"name": "data", "mountPath": HELPER_MOUNT, "readOnly": read_only}
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": capabilities,
                },
            }
        ],
        "volumes": [
            {
                "name": "data",
                "persistentVolumeClaim": {"claimName": target.claim, "readOnly": read_only},
            }
        ],
    }
    if target.node:
        spec["nodeName"] = target.node
    if template.get("tolerations"):
        spec["tolerations"] = template["tolerations"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": helper_name(operation, purpose),
            "namespace": workload.namespace,
            "labels": {
                MANAGED_BY[0]: MANAGED_BY[1],
                HELPER_LABEL: purpose,
                OPERATION_LABEL: operation,
            },
            "annotations": {
                OWNER_ANNOTATION: f"{socket.gethostname()} {os.getpid()}",
                "snapvol.io/workload": f"{workload.kind}/{workload.name}",
                "snapvol.io/claim": target.claim,
            },
        },
        "spec": spec,
    }


def _stuck(pod: Obj) -> str | None:
    """Why the pod will not start by waiting longer (None: it may still)."""
    status = pod.get("status", {})
    spec = pod.get("spec", {})
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"it ended ({status.get('reason') or status.get('phase')})"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _STUCK:
            image = (spec.get("containers") or [{}])[0].get("image", "?")
            return _STUCK[reason].format(image=image, node=spec.get("nodeName", "?"))
    return None


def _pending_reason(pod: Obj) -> str:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("status") == "False" and cond.get("message"):
            return str(cond["message"])[:200]
    return str(pod.get("status", {}).get("phase") or "no status yet")


def wait_running(
    kube: Kube,
    name: str,
    namespace: str,
    timeout: float,
    *,
    poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Obj:
    """Wait until the helper pod runs; OperationFailed at once when it cannot, or after
    ``timeout`` seconds, with the reason the cluster gives."""
    deadline = clock() + timeout
    while True:
        pod = kube.pod(name, namespace)
        if pod.get("status", {}).get("phase") == "Running":
            return pod
        why = _stuck(pod)
        if why is not None:
            raise OperationFailed(f"helper pod {name} cannot run: {why}")
        if clock() >= deadline:
            raise OperationFailed(
                f"helper pod {name} did not start within {timeout:.0f} s ({_pending_reason(pod)})"
            )
        sleep(poll)


def as_owner(spec: Obj) -> bool:
    """Whether helper ``spec`` runs as the workload's user (``helper_spec(as_owner=True)``)."""
    return spec["spec"]["securityContext"].get("runAsNonRoot") is True


def admitted(
    kube: Kube,
    target: ClaimTarget,
    operation: str,
    *,
    read_only: bool,
    warn: Callable[[str], None] | None = None,
) -> Obj:
    """The helper pod for ``target``, created: as root with the few capabilities it needs or,
    when the namespace's Pod Security admission refuses that (level ``restricted``), as the
    workload's own user with none (a warning says what that costs). Its manifest."""
    spec = helper_spec(target, operation, read_only=read_only)
    try:
        kube.create_pod(target.workload.namespace, spec)
        return spec
    except PodSecurityError as refused:
        owner = helper_spec(target, operation, read_only=read_only, as_owner=True)
        user = owner["spec"]["securityContext"].get("runAsUser", "the image's own")
        if warn is not None:
            warn(
                f"{refused.message}; the helper runs as the workload's user ({user}) with no "
                "capability instead: it reads only what that user may read"
                + ("" if read_only else ", and writes every file as that user's")
            )
        kube.create_pod(target.workload.namespace, owner)
        return owner


@contextlib.contextmanager
def running(
    kube: Kube,
    spec: Obj,
    *,
    timeout: float = 300,
    sleep: Callable[[float], None] = time.sleep,
    created: bool = False,
) -> Iterator[str]:
    """The helper pod ``spec`` created (unless ``created``: by ``admitted``) and running for
    the ``with`` body (its name); deleted however the body ends."""
    name = spec["metadata"]["name"]
    namespace = spec["metadata"]["namespace"]
    if not created:
        kube.create_pod(namespace, spec)
    try:
        wait_running(kube, name, namespace, timeout, sleep=sleep)
        yield name
    finally:
        with contextlib.suppress(NotFoundError):
            kube.delete_pod(name, namespace)


def strays(kube: Kube, namespace: str) -> list[Obj]:
    """Helper pods in ``namespace`` (any run's): labelled by snapvol, whatever their phase."""
    found = kube.pods(namespace, label_selector=HELPER_LABEL)
    return [p for p in found if HELPER_LABEL in (p.get("metadata", {}).get("labels") or {})]


def owner_of(pod: Obj) -> tuple[str, int] | None:
    text = (pod.get("metadata", {}).get("annotations") or {}).get(OWNER_ANNOTATION, "")
    host, _, pid = text.partition(" ")
    return (host, int(pid)) if host and pid.isdigit() else None
