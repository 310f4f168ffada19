"""The volume a snapshot or restore works on: its container, where the data lies, and its lane.

``resolve_volume_target`` finds the container and the named volume, refuses what cannot be
worked on, resolves the helper image once and picks the lane once (``choose_lane``); everything
after it reads and writes the volume through ``VolumeTarget.lane``.
"""

from __future__ import annotations

import posixpath
from contextlib import AbstractContextManager
from dataclasses import dataclass

from snapvol.adapters.engine import ContainerInfo, Engine, PodInfo, VolumeInfo, VolumeUser
from snapvol.errors import SnapvolError, UsageError, VolumeInUseError
from snapvol.output import Reporter
from snapvol.pg import cluster
from snapvol.volume import hostpath
from snapvol.volume.endpoint_lane import EndpointLane
from snapvol.volume.guard import Downtime, stopped
from snapvol.volume.host_lane import HostLane
from snapvol.volume.lane import Lane
from snapvol.volume.watchdog import WatchdogConfig


@dataclass(frozen=True)
class VolumeTarget:
    container: ContainerInfo
    volume: str
    mount: str  # where the container mounts the volume
    is_postgres: bool  # the volume holds the server's data directory (not just any volume of it)
    pg_subdir: str  # the data directory relative to the volume's root ("." when it is the root)
    lane: Lane  # how the volume's files are read and written
    # The image helper containers run: the target's own unless one was given, so nothing is pulled.
    image: str
    server: cluster.Server | None = None  # the PostgreSQL server found in the container
    # The Podman pod the container is part of, when the target was named by it (--pod,
    # ``snapvol.volume.kubeplay``): the whole pod is stopped and started, not the container alone.
    pod: PodInfo | None = None

    @property
    def runs_postgres(self) -> bool:
        """Whether the container is a PostgreSQL server (stopped and started as one), whichever
        of its volumes is worked on."""
        return self.server is not None

    @property
    def reader(self) -> str:
        """The lane's name, as the snapshot's record keeps it."""
        return self.lane.name


def choose_lane(engine: Engine, volume: VolumeInfo, reader: str, image: str) -> Lane:
    """The lane for ``volume``: its directory on this host when ``reader`` allows it and the host
    can (``hostpath.volume_dir``), else Docker's archive endpoint on a helper running ``image``."""
    endpoint = EndpointLane(engine, volume.name, image)
    directory = hostpath.volume_dir(volume, reader)
    return endpoint if directory is None else HostLane(directory, fallback=endpoint)


def _no_named_volume(info: ContainerInfo, server: cluster.Server | None) -> str:
    """Why there is nothing to snapshot by default, and what to do about an anonymous volume
    (an image's VOLUME that no one named: ``docker compose down -v`` or ``docker rm -v``
    removes it, and a new container gets a new, empty one)."""
    anonymous = [m for m in info.volumes if m.type == "volume" and m.name]
    if not anonymous:
        return f"container {info.name} mounts no named volume"
    pgdata = server.data_dir if server is not None else None
    mount = next(
        (m for m in anonymous if pgdata and (pgdata + "/").startswith(m.destination + "/")),
        anonymous[0],
    )
    return (
        f"container {info.name} keeps {mount.destination} in an anonymous volume, which a new "
        "container would not get back: give it a name in your compose file or `docker run -v`, "
        f"or name this one with --volume-name {mount.name}"
    )


def resolve_volume_target(
    engine: Engine,
    container_ref: str,
    volume_name: str | None,
    reader: str = "auto",
    helper_image: str | None = None,
) -> VolumeTarget:
    """The container and the named volume to work on, with a clear error when it is ambiguous.

    ``reader``: one of ``hostpath.READERS``; ``helper_image``: the image helper containers run
    instead of the container's own."""
    info = engine.container(container_ref)
    server = cluster.detect(engine, info)
    volumes = info.named_volumes
    if volume_name is not None:
        matches = [m for m in info.volumes if m.name == volume_name]
        if not matches:
            engine.volume(volume_name)  # NotFoundError if it does not exist at all
            raise UsageError(f"container {info.name} does not mount volume {volume_name!r}")
        mount = matches[0]
    else:
        if not volumes:
            raise UsageError(_no_named_volume(info, server))
        pgdata = server.data_dir if server is not None else None
        at_data = [
            m
            for m in volumes
            if pgdata is not None
            and (pgdata == m.destination or pgdata.startswith(m.destination.rstrip("/") + "/"))
        ]
        if at_data:
            mount = max(at_data, key=lambda m: len(m.destination))
        elif len(volumes) == 1:
            mount = volumes[0]
        else:
            names = ", ".join(f"{m.name} (at {m.destination})" for m in volumes)
            raise UsageError(
                f"container {info.name} mounts several volumes; name the one to use: {names}",
                retry_with={"volume_name": ""},
            )
    # The volume holds PostgreSQL data only when the server's data directory lies inside it: a
    # PostgreSQL container's other volumes (backups, configuration) are plain volumes.
    subdir, holds_data = ".", False
    if server is not None:
        rel = posixpath.relpath(server.data_dir, mount.destination)
        if rel != ".." and not rel.startswith("../"):
            subdir, holds_data = rel, True
    assert mount.name is not None
    vol = engine.volume(mount.name)
    if hostpath.is_tmpfs(vol):
        raise UsageError(
            f"volume {vol.name} is a tmpfs (driver option type=tmpfs): its files exist only while "
            "a container uses it, and stopping the container, as a cold snapshot or a restore "
            "must, erases them; snapvol cannot snapshot or restore it"
        )
    image = helper_image or info.image_id
    lane = choose_lane(engine, vol, reader, image)
    return VolumeTarget(
        info, mount.name, mount.destination, holds_data, subdir, lane, image, server
    )


def stopped_container(
    engine: Engine,
    target: VolumeTarget,
    reporter: Reporter,
    watchdog: WatchdogConfig | None,
    timeout: int | None = None,
) -> AbstractContextManager[Downtime]:
    """The target's container (its whole pod, for a pod's target) stopped for the body, and
    restarted (and guarded) after it; ``timeout`` as for ``guard.stopped``."""
    pid_file = None  # readiness read from the volume only when the cluster is on it
    if target.is_postgres:
        pid_file = target.lane.host_path(posixpath.join(target.pg_subdir, "postmaster.pid"))
    return stopped(
        engine,
        target.container,
        is_postgres=target.runs_postgres,
        reporter=reporter,
        watchdog=watchdog,
        pid_file=pid_file,
        pod=target.pod,
        timeout=timeout,
    )


def retry_args(target: VolumeTarget) -> tuple[str, ...]:
    """The arguments that name ``target`` again, for a command to run (a restore to retry)."""
    if target.pod is not None:
        name = target.container.name.removeprefix(target.pod.name + "-")
        return ("--pod", target.pod.name, "--claim", target.volume, "--container", name)
    return ("--container", target.container.name)


def check_sole_user(engine: Engine, target: VolumeTarget, *, restore: bool) -> None:
    """Refuse when another running container uses the volume: a snapshot is cold only when no
    one else can write to it, and a restore must not change files under anyone's feet. The
    target's pod's other containers are stopped with it, so they are no one else."""
    ours = {target.container.id}
    if target.pod is not None:
        ours |= {c.id for c in target.pod.containers}
    others = [
        user
        for user in engine.volume_users(target.volume)
        if user.id not in ours and (restore or user.read_write)
    ]
    if others:
        names = ", ".join(sorted(user.name for user in others))
        why = (
            "a restore must not change files under a running service"
            if restore
            else "a cold snapshot needs every writer stopped"
        )
        raise VolumeInUseError(
            f"volume {target.volume} is also mounted by running container(s) {names}; "
            f"stop them first ({why}){_pod_hint(engine, target, others)}"
        )


def _pod_hint(engine: Engine, target: VolumeTarget, others: list[VolumeUser]) -> str:
    """When those containers share a Podman pod with the target: how to take the pod whole."""
    if target.pod is not None:
        return ""
    try:
        if not engine.is_podman():
            return ""
        pods = engine.pods()
    except SnapvolError:  # only a hint: the refusal stands without it
        return ""
    for pod in pods:
        members = {c.id for c in pod.containers}
        if target.container.id in members and all(user.id in members for user in others):
            # --pod alone is refused when several of its containers write the claim: name ours.
            short = target.container.name.removeprefix(pod.name + "-")
            return f", or take pod {pod.name} whole: --pod {pod.name} --container {short}"
    return ""
