"""The Docker adapter: the only module that imports the docker SDK.

Everything the core needs from the engine is a method here, and every SDK or HTTP error is turned
into a snapvol error at this boundary.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests.exceptions
from docker.models.containers import Container

import docker
from snapvol.errors import DockerError, DockerUnavailableError, NotFoundError, OperationFailed

HELPER_LABEL = "org.snapvol.helper"
OWNER_LABEL = "org.snapvol.owner-pid"
CHUNK = 1 << 20
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


@dataclass(frozen=True)
class Mount:
    type: str  # "volume" | "bind" | "tmpfs"
    name: str | None  # the volume's name, for named volumes
    source: str
    destination: str
    rw: bool


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    image_id: str
    status: str
    mounts: tuple[Mount, ...]
    labels: dict[str, str]
    cmd: tuple[str, ...]
    entrypoint: tuple[str, ...]
    health: str | None
    _env: dict[str, str] = field(repr=False)  # never stored or printed: it may hold passwords

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")

    def env(self, key: str, default: str | None = None) -> str | None:
        """One variable of the container's configuration (used for PGDATA, POSTGRES_DB...)."""
        return self._env.get(key, default)

    def has_env(self, key: str) -> bool:
        return key in self._env

    @property
    def named_volumes(self) -> list[Mount]:
        """Volumes someone named; anonymous ones (an image's VOLUME, 64 hex digits) are left out."""
        return [m for m in self.mounts if m.type == "volume" and m.name and not _anonymous(m.name)]

    @property
    def volumes(self) -> list[Mount]:
        return [m for m in self.mounts if m.type == "volume" and m.name]


def _anonymous(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    mountpoint: str
    driver: str
    labels: dict[str, str]


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except docker.errors.NotFound as err:
        raise NotFoundError(f"{what}: {_explain(err)}") from err
    except docker.errors.ImageNotFound as err:
        raise NotFoundError(f"{what}: {_explain(err)}") from err
    except docker.errors.APIError as err:
        raise DockerError(f"{what}: {_explain(err)}") from err
    except (requests.exceptions.ConnectionError, ConnectionError) as err:
        raise DockerUnavailableError(f"{what}: lost the connection to the Docker engine") from err
    except docker.errors.DockerException as err:
        raise DockerError(f"{what}: {err}") from err


def _explain(err: docker.errors.APIError) -> str:
    return str(err.explanation or err).strip()


class Engine:
    """A connection to the Docker engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.api = client.api

    @classmethod
    def connect(cls) -> Engine:
        try:
            client = docker.from_env(timeout=300)
            client.ping()
        except docker.errors.DockerException as err:
            text = str(err)
            if "Permission denied" in text or "PermissionError" in text:
                raise DockerUnavailableError(
                    "permission denied on the Docker socket: run as a user in the 'docker' group "
                    "or as root"
                ) from None
            host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            raise DockerUnavailableError(
                f"cannot reach the Docker engine at {host}: is it running?"
            ) from None
        return cls(client)

    def close(self) -> None:
        self.client.close()

    # --- containers ---------------------------------------------------------------------------

    def container(self, ref: str) -> ContainerInfo:
        try:
            container = self.client.containers.get(ref)
        except docker.errors.NotFound:
            raise NotFoundError(f"no container named {ref!r}") from None
        except docker.errors.APIError as err:
            raise DockerError(f"inspecting container {ref!r}: {_explain(err)}") from err
        except requests.exceptions.ConnectionError as err:
            raise DockerUnavailableError("lost the connection to the Docker engine") from err
        return _container_info(container)

    def image_ref(self, image_id: str) -> str:
        with _translate("inspecting image"):
            tags = self.client.images.get(image_id).tags
        return tags[0] if tags else image_id

    def stop(self, container_id: str, timeout: int) -> None:
        with _translate("stopping the container"):
            self.api.stop(container_id, timeout=timeout)

    def start(self, container_id: str) -> None:
        with _translate("starting the container"):
            self.api.start(container_id)

    def wait_status(self, container_id: str, statuses: Iterable[str], timeout: float) -> str:
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            with _translate("inspecting the container"):
                state = self.api.inspect_container(container_id)["State"]
            status = str(state["Status"])
            if status in wanted:
                return status
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"container is {status!r} after {timeout:.0f} s (wanted {'/'.join(wanted)})"
                )
            time.sleep(0.1)

    def exec_run(
        self,
        container_id: str,
        cmd: list[str],
        *,
        user: str = "",
        env: dict[str, str] | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run a command in a running container; returns (exit code, stdout, stderr). Small output only."""
        with _translate(f"running {cmd[0]} in the container"):
            exec_id = self.api.exec_create(
                container_id, cmd, stdout=True, stderr=True, user=user, environment=env, tty=False
            )["Id"]
            out, err = self.api.exec_start(exec_id, demux=True)
            code = self.api.exec_inspect(exec_id)["ExitCode"]
        return int(code if code is not None else -1), out or b"", err or b""

    # --- volumes ------------------------------------------------------------------------------

    def volume(self, name: str) -> VolumeInfo:
        try:
            attrs = self.api.inspect_volume(name)
        except docker.errors.NotFound:
            raise NotFoundError(f"no volume named {name!r}") from None
        except docker.errors.APIError as err:
            raise DockerError(f"inspecting volume {name!r}: {_explain(err)}") from err
        return VolumeInfo(
            name=attrs["Name"],
            mountpoint=attrs.get("Mountpoint", ""),
            driver=attrs.get("Driver", ""),
            labels=attrs.get("Labels") or {},
        )

    # --- helper containers --------------------------------------------------------------------

    def create_helper(
        self,
        image: str,
        volume: str,
        mount: str,
        *,
        read_only: bool,
        cmd: list[str] | None = None,
        user: str | None = None,
    ) -> str:
        """A container that mounts ``volume`` at ``mount``, has no network and is labelled ours.

        Archive transfers use it without ever starting it; commands (``cmd``) start it.
        """
        labels = {HELPER_LABEL: "1", OWNER_LABEL: str(os.getpid())}
        host_config = self.api.create_host_config(
            binds={volume: {"bind": mount, "mode": "ro" if read_only else "rw"}},
            network_mode="none",
        )
        with _translate(f"creating a helper container from {image}"):
            created = self.api.create_container(
                image,
                command=cmd,
                entrypoint=[] if cmd else None,
                user=user or "",
                labels=labels,
                host_config=host_config,
                network_disabled=True,
                detach=True,
            )
        return str(created["Id"])

    def remove(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound), _translate("removing a helper container"):
            self.api.remove_container(container_id, force=True)

    @contextlib.contextmanager
    def helper(
        self, image: str, volume: str, mount: str = "/snapvol/data", *, read_only: bool
    ) -> Iterator[str]:
        helper_id = self.create_helper(image, volume, mount, read_only=read_only)
        try:
            yield helper_id
        finally:
            with contextlib.suppress(Exception):
                self.remove(helper_id)

    def run_helper(
        self,
        image: str,
        volume: str,
        mount: str,
        cmd: list[str],
        *,
        read_only: bool,
        timeout: float = 600,
        user: str | None = None,
    ) -> tuple[int, str]:
        """Run ``cmd`` in a throwaway helper container; returns its exit code and output."""
        helper_id = self.create_helper(
            image, volume, mount, read_only=read_only, cmd=cmd, user=user
        )
        try:
            with _translate(f"running {cmd[0]} in a helper container"):
                self.api.start(helper_id)
                result = self.api.wait(helper_id, timeout=timeout)
                logs = self.api.logs(helper_id, stdout=True, stderr=True)
            return int(result.get("StatusCode", -1)), logs.decode("utf-8", "replace")
        except requests.exceptions.ReadTimeout as err:
            raise OperationFailed(
                f"{cmd[0]} in a helper container took over {timeout:.0f} s"
            ) from err
        finally:
            with contextlib.suppress(Exception):
                self.remove(helper_id)

    def archive_out(self, container_id: str, path: str) -> Iterator[bytes]:
        """Stream a tar of ``path``'s contents (members relative to it) out of a container."""
        with _translate("reading the volume through the archive endpoint"):
            stream, _stat = self.api.get_archive(
                container_id, path.rstrip("/") + "/.", chunk_size=CHUNK
            )
        with _translate("reading the volume through the archive endpoint"):
            yield from stream

    def archive_in(self, container_id: str, path: str, chunks: Iterable[bytes]) -> None:
        """Extract a tar stream into ``path`` in a container, keeping owners, modes and times."""
        url = self.api._url("/containers/{0}/archive", container_id)
        params = {"path": path, "copyUIDGID": "1", "noOverwriteDirNonDir": "0"}
        with _translate("writing the volume through the archive endpoint"):
            response = self.api._put(url, params=params, data=chunks)
            self.api._raise_for_status(response)

    def helpers(self) -> list[dict[str, Any]]:
        """Helper containers left by any snapvol process (for recovery)."""
        with _translate("listing helper containers"):
            return list(self.api.containers(all=True, filters={"label": HELPER_LABEL}))


def _container_info(container: Container) -> ContainerInfo:
    attrs = container.attrs
    config = attrs.get("Config") or {}
    env = dict(
        item.split("=", 1) if "=" in item else (item, "") for item in config.get("Env") or []
    )
    mounts = tuple(
        Mount(
            type=m.get("Type", ""),
            name=m.get("Name"),
            source=m.get("Source", ""),
            destination=m.get("Destination", ""),
            rw=bool(m.get("RW", True)),
        )
        for m in attrs.get("Mounts") or []
    )
    state = attrs.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    return ContainerInfo(
        id=str(container.id),
        name=str(container.name),
        image=str(config.get("Image", "")),
        image_id=str(attrs.get("Image", "")),
        status=str(state.get("Status", "")),
        mounts=mounts,
        labels=dict(config.get("Labels") or {}),
        cmd=tuple(config.get("Cmd") or ()),
        entrypoint=tuple(config.get("Entrypoint") or ()),
        health=health,
        _env=env,
    )
