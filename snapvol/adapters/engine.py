"""The Docker adapter: the only module that imports the docker SDK.

Everything the core needs from the engine is a method here, and every SDK or HTTP error is turned
into a snapvol error at this boundary. The SDK (with requests, ~0.1 s) is imported when an engine
is connected, not with this module: commands that never reach the engine (``ls``, ``show``,
``copy``, ``verify``) do not pay for it.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from snapvol.adapters.exec_frames import ExecStream
from snapvol.errors import DockerError, DockerUnavailableError, NotFoundError, OperationFailed
from snapvol.pipeline.archive import CHUNK

if TYPE_CHECKING:
    import docker
    import requests
    from docker.models.containers import Container

HELPER_LABEL = "org.snapvol.helper"
OWNER_LABEL = "org.snapvol.owner-pid"
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
    user: str = ""  # the user its processes run as ("": the image's default)

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")

    def env(self, key: str, default: str | None = None) -> str | None:
        """One variable of the container's configuration (used for PGDATA, POSTGRES_DB...)."""
        return self._env.get(key, default)

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
class ContainerState:
    status: str
    started_at: str  # State.StartedAt: changes whenever the container is started

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting", "paused")


@dataclass(frozen=True)
class VolumeUser:
    id: str
    name: str
    read_write: bool


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    mountpoint: str
    driver: str
    labels: dict[str, str]
    # The driver's options (``--opt``): the local driver then mounts the volume only while a
    # container uses it. Values may hold credentials (cifs): never print or store them.
    options: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class PodMember:
    id: str
    name: str
    status: str


@dataclass(frozen=True)
class PodInfo:
    """A Podman pod (``podman kube play`` makes one per Pod, or per Deployment replica)."""

    id: str
    name: str
    status: str  # Podman's: Running, Degraded (some containers stopped), Exited, Created...
    infra_id: str  # its infra (pause) container, which holds the pod's namespaces
    containers: tuple[PodMember, ...]
    labels: dict[str, str]

    @property
    def members(self) -> list[PodMember]:
        """The pod's own containers: its infra container aside."""
        return [c for c in self.containers if c.id != self.infra_id]

    @property
    def running(self) -> bool:
        return any(c.status in ("running", "restarting", "paused") for c in self.containers)


def _pod_info(attrs: dict[str, Any]) -> PodInfo:
    """A pod as libpod's inspection (``/libpod/pods/{name}/json``) describes it."""
    return PodInfo(
        id=str(attrs["Id"]),
        name=str(attrs["Name"]),
        status=str(attrs.get("State") or attrs.get("Status") or ""),
        infra_id=str(attrs.get("InfraContainerID") or attrs.get("InfraId") or ""),
        containers=tuple(
            PodMember(
                str(c["Id"]),
                str(c.get("Name") or c.get("Names") or ""),
                str(c.get("State") or c.get("Status") or ""),
            )
            for c in attrs.get("Containers") or []
        ),
        labels=dict(attrs.get("Labels") or {}),
    )


def _volume_info(attrs: dict[str, Any]) -> VolumeInfo:
    """A volume as the engine describes it (an inspection, or an entry of a listing)."""
    return VolumeInfo(
        name=attrs["Name"],
        mountpoint=attrs.get("Mountpoint", ""),
        driver=attrs.get("Driver", ""),
        labels=attrs.get("Labels") or {},
        options=attrs.get("Options") or {},
    )


@contextlib.contextmanager
def _translate(what: str, not_found: str | None = None) -> Iterator[None]:
    """Turn the SDK's errors into ours; ``not_found`` replaces the message for a 404."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.NotFound as err:  # ImageNotFound included
        raise NotFoundError(not_found or f"{what}: {_explain(err)}") from err
    except docker.errors.APIError as err:
        raise DockerError(f"{what}: {_explain(err)}") from err
    except (requests.exceptions.ConnectionError, ConnectionError) as err:
        raise DockerUnavailableError(f"{what}: lost the connection to the Docker engine") from err
    except docker.errors.DockerException as err:
        raise DockerError(f"{what}: {err}") from err


def _raise_pod_errors(what: str, report: Any) -> None:
    """A pod stop or start answers 200 with the containers it failed on ("Errs")."""
    errs = (report or {}).get("Errs") if isinstance(report, dict) else None
    if errs:
        raise DockerError(f"{what}: {'; '.join(str(e) for e in errs)}")


def _explain(err: docker.errors.APIError) -> str:
    return str(err.explanation or err).strip()


class _Raw:
    """The engine's HTTP API where the SDK has no public call that does what we need: an
    archive read without gzip (the engine would compress on one thread and we would decompress),
    an archive upload that keeps owners (``copyUIDGID``), an exec whose upgraded socket comes
    with its response (whose buffer may already hold the first frames). These go through the
    SDK's private request helpers, which add its configured headers and timeout; every use of a
    private SDK method is in this class."""

    def __init__(self, api: docker.APIClient) -> None:
        self._api = api

    def get_stream(
        self, pathfmt: str, ref: str, params: dict[str, str], headers: dict[str, str]
    ) -> requests.Response:
        url = self._api._url(pathfmt, ref)
        response = self._api._get(url, params=params, headers=headers, stream=True)
        self._api._raise_for_status(response)
        return response

    def put(self, pathfmt: str, ref: str, params: dict[str, str], data: Iterable[bytes]) -> None:
        response = self._api._put(self._api._url(pathfmt, ref), params=params, data=data)
        self._api._raise_for_status(response)

    def upgrade(
        self, pathfmt: str, ref: str, data: dict[str, object]
    ) -> tuple[requests.Response, Any]:
        """POST ``data`` as JSON asking for a raw TCP stream: the response and its socket."""
        response = self._api._post_json(
            self._api._url(pathfmt, ref),
            headers={"Connection": "Upgrade", "Upgrade": "tcp"},
            data=data,
            stream=True,
        )
        return response, self.socket(response)

    def libpod(
        self,
        method: str,
        pathfmt: str,
        ref: str = "",
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Podman's own API (``/libpod/...``, on the same socket as its Docker-compatible one):
        the decoded JSON answer, or None for 304 (nothing to do)."""
        url = self._api._url(pathfmt, ref) if ref else self._api._url(pathfmt)
        extra = {} if timeout is None else {"timeout": timeout}
        if method == "GET":
            response = self._api._get(url, params=params, **extra)
        else:
            response = self._api._post(url, params=params, **extra)
        if response.status_code == 304:
            return None
        return self._api._result(response, json=True)

    def socket(self, response: requests.Response) -> Any:
        """The socket under a streamed response (raises the engine's error, if it sent one)."""
        return self._api._get_raw_response_socket(response)


class Engine:
    """A connection to the Docker engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.api = client.api
        self._raw = _Raw(client.api)

    @classmethod
    def connect(cls) -> Engine:
        import docker

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
            with _translate(f"inspecting container {ref!r}", f"no container named {ref!r}"):
                container = self.client.containers.get(ref)
        except NotFoundError as err:
            close = self._close_names(ref)
            if close:
                err.message += f" (did you mean {' or '.join(close)}?)"
            raise
        return _container_info(container)

    def _close_names(self, ref: str) -> list[str]:
        """The names of containers here that look like ``ref`` (a typo, ``-`` for ``_``)."""
        try:
            with _translate("listing containers"):
                names = [c["Names"][0].lstrip("/") for c in self.api.containers(all=True)]
        except (DockerError, NotFoundError):
            return []
        folded = {n.lower().replace("-", "_"): n for n in names}
        exact = folded.get(ref.lower().replace("-", "_"))
        if exact is not None:
            return [exact]
        return difflib.get_close_matches(ref, names, n=2, cutoff=0.75)

    def state(self, container_id: str) -> ContainerState:
        """The container's status and when it was last started, inspected now."""
        with _translate("inspecting the container"):
            state = self.api.inspect_container(container_id)["State"]
        return ContainerState(str(state.get("Status", "")), str(state.get("StartedAt", "")))

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
        """Run a command in a running container: (exit code, stdout, stderr). Small output only."""
        with _translate(f"running {cmd[0]} in the container"):
            exec_id = self.api.exec_create(
                container_id, cmd, stdout=True, stderr=True, user=user, environment=env, tty=False
            )["Id"]
            out, err = self.api.exec_start(exec_id, demux=True)
            code = self.api.exec_inspect(exec_id)["ExitCode"]
        return int(code if code is not None else -1), out or b"", err or b""

    def top(self, container_id: str) -> list[str]:
        """The command lines of a running container's processes, as the host's ``ps`` sees them."""
        import docker.errors

        with _translate("listing the container's processes"):
            try:
                try:
                    found = self.api.top(container_id, ps_args="-eo pid,args")
                except docker.errors.APIError:  # a ps without -o (or an engine that ignores it)
                    found = self.api.top(container_id)
            except ValueError as err:  # rootless Podman 4.3 answers 200 with no body
                raise OperationFailed(
                    f"the engine did not list the container's processes ({err})"
                ) from err
        titles = [str(t) for t in found.get("Titles") or []]
        column = next((titles.index(t) for t in ("COMMAND", "CMD") if t in titles), -1)
        return [str(row[column]) for row in found.get("Processes") or [] if row]

    # --- pods (Podman's libpod API) -------------------------------------------------------------

    def is_podman(self) -> bool:
        """Whether the engine is Podman (its Docker-compatible API names itself in /version)."""
        with _translate("asking the engine's version"):
            version = self.api.version()
        return any(
            "podman" in str(c.get("Name", "")).lower() for c in version.get("Components") or []
        )

    def pod(self, ref: str) -> PodInfo:
        """The Podman pod named (or with the id) ``ref``."""
        with _translate(f"inspecting pod {ref!r}", f"no pod named {ref!r}"):
            return _pod_info(self._raw.libpod("GET", "/libpod/pods/{0}/json", ref))

    def pods(self) -> list[PodInfo]:
        """Every Podman pod here (the listing's shape: containers with names and states)."""
        with _translate("listing pods"):
            return [_pod_info(p) for p in self._raw.libpod("GET", "/libpod/pods/json") or []]

    def stop_pod(self, pod_id: str, timeout: int) -> None:
        """Stop every container of the pod, its infra container last, as ``podman pod stop``
        does (each container's own stop signal, then SIGKILL after ``timeout`` seconds)."""
        with _translate("stopping the pod"):
            report = self._raw.libpod(
                "POST", "/libpod/pods/{0}/stop", pod_id, {"t": str(timeout)}, timeout + 60
            )
        _raise_pod_errors("stopping the pod", report)

    def start_pod(self, pod_id: str) -> None:
        """Start the pod: its infra container first, then the others in their dependency order,
        as ``podman pod start`` (and ``kube play``) does."""
        with _translate("starting the pod"):
            report = self._raw.libpod("POST", "/libpod/pods/{0}/start", pod_id)
        _raise_pod_errors("starting the pod", report)

    # --- volumes ------------------------------------------------------------------------------

    def volume(self, name: str) -> VolumeInfo:
        with _translate(f"inspecting volume {name!r}", f"no volume named {name!r}"):
            return _volume_info(self.api.inspect_volume(name))

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
        # v: the anonymous volume the image's VOLUME gave the helper (postgres has one) goes
        # with it; named volumes are never removed by this.
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound), _translate("removing a helper container"):
            self.api.remove_container(container_id, force=True, v=True)

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
        import requests.exceptions

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

    def archive_out(self, container_id: str, path: str) -> ArchiveStream:
        """Stream a tar of ``path``'s contents (members relative to it) out of a container."""
        with _translate("reading the volume through the archive endpoint"):
            # identity: else the engine gzips the tar on one thread and we gunzip it (~4x slower)
            response = self._raw.get_stream(
                "/containers/{0}/archive",
                container_id,
                params={"path": path.rstrip("/") + "/."},
                headers={"Accept-Encoding": "identity"},
            )
        return ArchiveStream(self._raw, response)

    def archive_in(self, container_id: str, path: str, chunks: Iterable[bytes]) -> None:
        """Extract a tar stream into ``path`` in a container, keeping owners, modes and times."""
        params = {"path": path, "copyUIDGID": "1", "noOverwriteDirNonDir": "0"}
        try:
            with _translate("writing the volume through the archive endpoint"):
                self._raw.put("/containers/{0}/archive", container_id, params, chunks)
        except BaseException:
            # An upload cut short must not leave the engine waiting for the rest of the tar
            # (it would hold the helper container, and its removal, until a timeout).
            self.api.close()
            raise

    def volume_users(self, volume: str) -> list[VolumeUser]:
        """Containers that run (or are paused) with ``volume`` mounted; snapvol's helpers aside."""
        with _translate(f"listing the containers that use volume {volume!r}"):
            found = self.api.containers(filters={"volume": volume})
        return [
            VolumeUser(
                id=c["Id"],
                name=(c.get("Names") or ["/" + c["Id"][:12]])[0].lstrip("/"),
                read_write=any(
                    m.get("Name") == volume and m.get("RW", True) for m in c.get("Mounts") or []
                ),
            )
            for c in found
            if HELPER_LABEL not in (c.get("Labels") or {})
        ]

    def helpers(self) -> list[dict[str, Any]]:
        """Helper containers left by any snapvol process (for recovery)."""
        with _translate("listing helper containers"):
            return list(self.api.containers(all=True, filters={"label": HELPER_LABEL}))

    # --- throwaway servers (restore drills) ------------------------------------------------------

    def image_env(self, ref: str) -> dict[str, str] | None:
        """The environment image ``ref`` (a name or an id) sets; None when it is not here
        (nothing is pulled)."""
        try:
            with _translate(f"inspecting image {ref!r}"):
                attrs = self.api.inspect_image(ref)
        except NotFoundError:
            return None
        env = (attrs.get("Config") or {}).get("Env") or []
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)

    def logs_tail(self, container_id: str, lines: int = 5) -> str:
        """The last ``lines`` lines a container wrote (for an error message)."""
        with _translate("reading the container's logs"):
            out = self.api.logs(container_id, stdout=True, stderr=True, tail=lines)
        return bytes(out).decode("utf-8", "replace").strip()

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        with _translate(f"creating volume {name!r}"):
            self.api.create_volume(name, labels=labels)

    def remove_volume(self, name: str) -> None:
        """Remove volume ``name`` (one already gone is fine)."""
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound), _translate(f"removing volume {name!r}"):
            self.api.remove_volume(name, force=True)

    def create_server(
        self,
        image: str,
        *,
        name: str,
        volume: str,
        mount: str,
        env: dict[str, str],
        user: str,
        labels: dict[str, str],
    ) -> str:
        """A container of ``image`` (its own command) with ``volume`` at ``mount`` and no
        network, created but not started. ``env`` goes in the request body, never in argv."""
        host_config = self.api.create_host_config(
            binds={volume: {"bind": mount, "mode": "rw"}}, network_mode="none"
        )
        with _translate(f"creating a container from {image}"):
            created = self.api.create_container(
                image,
                name=name,
                environment=env,
                user=user,
                labels=labels,
                host_config=host_config,
                network_disabled=True,
                detach=True,
            )
        return str(created["Id"])

    def labelled_containers(self, label: str) -> list[dict[str, Any]]:
        """Every container (running or not) that carries ``label``."""
        with _translate(f"listing containers labelled {label}"):
            return list(self.api.containers(all=True, filters={"label": label}))

    def labelled_volumes(self, label: str) -> list[VolumeInfo]:
        """Every volume that carries ``label``."""
        with _translate(f"listing volumes labelled {label}"):
            found = self.api.volumes(filters={"label": label}).get("Volumes") or []
        return [_volume_info(v) for v in found]

    # --- streaming exec (logical snapshots and restores) ----------------------------------------

    def exec_stream(
        self,
        container_id: str,
        cmd: list[str],
        *,
        stdin: bool = False,
        user: str = "",
        env: dict[str, str] | None = None,
    ) -> ExecStream:
        """Start ``cmd`` in a running container with its output (and stdin) on a raw socket.

        Never a TTY (it would mangle binary output): stdout and stderr arrive multiplexed and
        ExecStream separates them itself, reading the socket in large chunks (docker-py's
        generator reads frame by frame).
        """
        with _translate(f"running {cmd[0]} in the container"):
            exec_id = self.api.exec_create(
                container_id,
                cmd,
                stdout=True,
                stderr=True,
                stdin=stdin,
                tty=False,
                user=user,
                environment=env,
            )["Id"]
            response, sock = self._raw.upgrade(
                "/exec/{0}/start", exec_id, {"Tty": False, "Detach": False}
            )
        return ExecStream(self, str(exec_id), response, sock, what=cmd[0])

    def exec_exit_code(self, exec_id: str, timeout: float = 30.0) -> int:
        """The exit code of a finished exec (its output may end a moment before it is reaped)."""
        deadline = time.monotonic() + timeout
        while True:
            with _translate("inspecting a command run in the container"):
                state = self.api.exec_inspect(exec_id)
            if not state.get("Running") and state.get("ExitCode") is not None:
                return int(state["ExitCode"])
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"a command in the container still runs after {timeout:.0f} s"
                )
            time.sleep(0.02)


class ArchiveStream:
    """The bytes of a tar coming out of the archive endpoint; ``abort`` may be called from any
    thread and makes the engine stop sending at once (a reader blocked elsewhere would otherwise
    keep the engine, and the helper container, busy)."""

    def __init__(self, raw: _Raw, response: requests.Response) -> None:
        self._raw = raw
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        with _translate("reading the volume through the archive endpoint"):
            yield from self._response.iter_content(CHUNK, decode_unicode=False)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            sock = self._raw.socket(self._response)
            getattr(sock, "_sock", sock).shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._response.close()


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
        user=str(config.get("User") or ""),
    )
