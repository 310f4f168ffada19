"""Kubernetes manifests run by Podman (``podman kube play``): the pod and claim a target names.

``kube play`` makes a Podman pod of each Pod (named as the Pod) or Deployment (``<name>-pod-0``
on Podman 4.3, ``<name>-pod`` later), names the pod's containers ``<pod>-<container>``, and keeps
each PersistentVolumeClaim in a Podman volume named after the claim. ``find`` turns ``--pod``
and ``--claim`` into the pod, the claim's volume and the container of the pod whose mount of it
is worked on; the pod is then stopped and started whole (``snapvol.volume.guard``), as
``podman pod stop`` and ``kube play`` do, so that no other container of it writes meanwhile.
Podman's API only: a Kubernetes cluster's claims are ``snapvol.kube``'s.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass

from snapvol.adapters.engine import ContainerInfo, Engine, PodInfo
from snapvol.errors import NotFoundError, UsageError
from snapvol.pg import cluster
from snapvol.volume.target import VolumeTarget, resolve_volume_target

# A snapshot's record keeps these (``Snapshot.meta``): a restore without --pod goes back there.
POD_META = "pod"
CLAIM_META = "claim"
CONTAINER_META = "pod_container"  # as the manifest names it: a new `kube play` keeps the name


@dataclass(frozen=True)
class PodClaim:
    pod: PodInfo
    claim: str  # the claim's name: also its Podman volume's
    container: ContainerInfo  # the pod's container whose mount of the claim is worked on


def find_pod(engine: Engine, name: str) -> PodInfo:
    """The pod ``name`` names: a pod, or the one pod of a Deployment of that name."""
    try:
        return engine.pod(name)
    except NotFoundError:
        if not engine.is_podman():
            raise UsageError(
                f"--pod names a Podman pod (podman kube play), but the engine is not Podman: "
                f"point DOCKER_HOST at Podman's socket (no pod {name!r} here)"
            ) from None
    pods = engine.pods()
    of_deployment = re.compile(re.escape(name) + r"-pod(-[0-9]+)?")
    found = sorted((p for p in pods if of_deployment.fullmatch(p.name)), key=lambda p: p.name)
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(p.name for p in found)
        raise UsageError(f"deployment {name} runs several pods ({names}); name one with --pod")
    known = ", ".join(sorted(p.name for p in pods)) or "none"
    if re.search(r"-pod(-[0-9]+)?$", name):  # a Deployment's pod's own name (a record's)
        raise NotFoundError(
            f"no pod named {name!r} (pods here: {known}): play its manifest again "
            "(podman kube play), or name another pod with --pod"
        )
    raise NotFoundError(
        f"no pod named {name!r}, nor a pod of a Deployment {name!r} ({name}-pod-0 or {name}-pod); "
        f"pods here: {known}"
    )


def _mounts(info: ContainerInfo, claim: str) -> list[bool]:
    """How ``info`` mounts volume ``claim``: one entry (read-write or not) per mount."""
    return [m.rw for m in info.volumes if m.name == claim]


def _named(pod: PodInfo, infos: list[ContainerInfo], name: str) -> ContainerInfo:
    """The pod's container ``name``: its Podman name, its manifest's name, or an id prefix."""
    for info in infos:
        if info.name in (name, f"{pod.name}-{name}") or (
            len(name) >= 4 and info.id.startswith(name)
        ):
            return info
    short = ", ".join(_short(pod, i) for i in infos)
    raise NotFoundError(f"pod {pod.name} has no container {name!r} (its containers: {short})")


def _short(pod: PodInfo, info: ContainerInfo) -> str:
    """A container as its manifest names it (``db`` for ``<pod>-db``)."""
    return info.name.removeprefix(pod.name + "-")


def _holds_data(engine: Engine, info: ContainerInfo, claim: str) -> bool:
    """Whether ``info`` runs PostgreSQL with its data directory in volume ``claim``."""
    server = cluster.detect(engine, info)
    if server is None:
        return False
    for mount in info.volumes:
        rel = posixpath.relpath(server.data_dir, mount.destination)
        if mount.name == claim and rel != ".." and not rel.startswith("../"):
            return True
    return False


def find(engine: Engine, pod_ref: str, claim: str | None, container: str | None = None) -> PodClaim:
    """The pod, the claim (``None``: the pod's only one) and the container of the pod whose
    mount of it is worked on: ``container`` (named as in the manifest or as Podman names it),
    else the one that mounts it read-write, else the PostgreSQL server whose data it holds."""
    pod = find_pod(engine, pod_ref)
    infos = sorted((engine.container(m.id) for m in pod.members), key=lambda i: i.name)
    if claim is None:
        claims = sorted({str(m.name) for i in infos for m in i.named_volumes})
        if not claims:
            raise UsageError(f"pod {pod.name} mounts no claim (PersistentVolumeClaim)")
        if len(claims) > 1:
            raise UsageError(
                f"pod {pod.name} mounts several claims; name one: {', '.join(claims)}",
                retry_with={"claim": ""},
            )
        claim = claims[0]
    users = [i for i in infos if _mounts(i, claim)]
    if not users:
        try:
            engine.volume(claim)
        except NotFoundError:
            raise NotFoundError(
                f"no claim {claim!r}: Podman has no volume of that name (pod {pod.name})"
            ) from None
        claims = sorted({str(m.name) for i in infos for m in i.named_volumes})
        raise UsageError(
            f"no container of pod {pod.name} mounts claim {claim!r} "
            f"(its claims: {', '.join(claims) or 'none'})"
        )
    if container is not None:
        chosen = _named(pod, infos, container)
        if chosen not in users:
            raise UsageError(f"container {chosen.name} of pod {pod.name} does not mount {claim!r}")
        return PodClaim(pod, claim, chosen)
    writers = [i for i in users if any(_mounts(i, claim))]
    candidates = writers or users
    if len(candidates) > 1:
        servers = [i for i in candidates if _holds_data(engine, i, claim)]
        if len(servers) != 1:
            names = ", ".join(_short(pod, i) for i in candidates)
            how = "read-write " if writers else ""
            raise UsageError(
                f"claim {claim} is mounted {how}by several containers of pod {pod.name} "
                f"({names}); name the one whose data it holds",
                retry_with={"container": ""},
            )
        candidates = servers
    return PodClaim(pod, claim, candidates[0])


def others(found: PodClaim) -> list[tuple[str, str]]:
    """The pod's other containers, (id, name): stopped with it, so locked with it too."""
    return [(c.id, c.name) for c in found.pod.members if c.id != found.container.id]


def target(
    engine: Engine, found: PodClaim, reader: str = "auto", helper_image: str | None = None
) -> VolumeTarget:
    """The claim's volume as a target: its container's, with the whole pod stopped for it."""
    resolved = resolve_volume_target(engine, found.container.id, found.claim, reader, helper_image)
    return dataclasses.replace(resolved, pod=found.pod)


def recorded_meta(target: VolumeTarget) -> dict[str, str]:
    """What a snapshot of ``target`` records of its pod and claim (nothing for a container)."""
    if target.pod is None:
        return {}
    return {
        POD_META: target.pod.name,
        CLAIM_META: target.volume,
        CONTAINER_META: _short(target.pod, target.container),
    }


def restore_where(
    meta: dict[str, object], container: str | None, pod: str | None, claim: str | None
) -> tuple[str, str | None, str | None] | None:
    """The pod, claim and container of the pod a volume restore goes to (None: a container, as
    before): --pod, --claim and --container as given; else, with no --container, the pod,
    claim and container the snapshot was taken of (``meta``, its record's). A --claim alone
    names a claim of the snapshot's pod."""
    recorded_pod = meta.get(POD_META)
    recorded_claim = meta.get(CLAIM_META)
    recorded_container = meta.get(CONTAINER_META)
    if pod is None and claim is not None:
        if not isinstance(recorded_pod, str):
            raise UsageError("--claim goes with --pod (the pod, or Deployment, that mounts it)")
        pod = recorded_pod
    elif pod is None:
        if container is not None or not isinstance(recorded_pod, str):
            return None
        pod = recorded_pod
    if pod == recorded_pod and claim in (None, recorded_claim) and isinstance(recorded_claim, str):
        claim = recorded_claim
        if container is None and isinstance(recorded_container, str):
            container = recorded_container
    return pod, claim, container
