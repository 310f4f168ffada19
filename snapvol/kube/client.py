"""The Kubernetes adapter: the only module that imports the official ``kubernetes`` client.

Every call the ``kubernetes`` source makes is a method here, and every client or HTTP error is
turned into a snapvol error at this boundary: a 404 is ``NotFoundError`` naming what is missing,
a 403 is ``ForbiddenError`` naming the RBAC verb and resource the account lacks, an unreachable
server is ``ClusterUnavailableError``. Objects come back as plain JSON (``_preload_content=False``):
the core reads the few fields it needs, and a cluster newer than the client's models still works.
The client is imported when a cluster is connected, not with this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from snapvol.errors import (
    ClusterError,
    ClusterUnavailableError,
    ForbiddenError,
    LockedError,
    NotFoundError,
    PodSecurityError,
    UsageError,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

Obj = dict[str, Any]
"""A Kubernetes object as the API sent it (JSON)."""

MERGE_PATCH = "application/merge-patch+json"  # RFC 7386: a null removes a key
RBAC_DOC = "docs/kubernetes.md lists the Role to apply"

# kind -> (API group, plural): the workloads snapvol scales.
WORKLOADS = {"deployment": ("apps", "deployments"), "statefulset": ("apps", "statefulsets")}


@dataclass(frozen=True)
class Call:
    """What a request does, in RBAC's words: enough for a one-line message when it fails."""

    verb: str  # get, list, patch, create, delete
    resource: str  # plural, with a subresource: "pods/exec"
    group: str = ""  # "" is the core group
    name: str | None = None
    namespace: str | None = None

    @property
    def kind(self) -> str:
        singular = self.resource.split("/")[0].removesuffix("s")
        return {"persistentvolumeclaim": "claim", "persistentvolume": "volume"}.get(
            singular, singular
        )

    def describe(self) -> str:
        what = self.resource + (f" {self.name!r}" if self.name else "")
        return what + (f" in namespace {self.namespace!r}" if self.namespace else "")


def _status_message(body: object, limit: int = 300) -> str:
    """The ``message`` of a Kubernetes Status body (else the body itself, shortened)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip().splitlines()[0][:200]
    message = data.get("message") if isinstance(data, dict) else None
    return str(message or "").strip().splitlines()[0][:limit] if message else ""


def api_error(call: Call, status: int, body: object) -> Exception:
    """The snapvol error for an API answer ``status`` to ``call`` (one line each)."""
    said = _status_message(body)
    if status == 0:  # the exec websocket's handshake failed: its HTTP status is in the text
        found = re.search(r"Handshake status (\d{3})", str(body))
        if found:
            status = int(found.group(1))
    if status == 404:
        where = f" in namespace {call.namespace!r} (or no such namespace)" if call.namespace else ""
        if call.name:
            return NotFoundError(f"no {call.kind} {call.name!r}{where}")
        return NotFoundError(f"the cluster has no {call.resource}{where}")
    if status == 403 and "violates PodSecurity" in said:
        # every reason, whole: each names a field the pod must set, cut in half it misleads
        whole = _status_message(body, limit=2000)
        return PodSecurityError(f"the namespace's Pod Security admission refused {whole}")
    if status in (401, 403):
        group = f' in API group "{call.group}"' if call.group else ""
        scope = f' in namespace "{call.namespace}"' if call.namespace else " (cluster-wide)"
        return ForbiddenError(
            f"Kubernetes refused to {call.verb} {call.describe()}: the account needs verb "
            f'"{call.verb}" on "{call.resource}"{group}{scope}; {RBAC_DOC}'
        )
    if status == 409:
        return LockedError(
            f"{call.describe()} changed while snapvol was working on it ({said or 'conflict'}); "
            "nothing was changed, try again"
        )
    if status == 422:
        return UsageError(f"Kubernetes rejected {call.describe()}: {said or 'invalid'}")
    if status == 0:  # the client's own failure (the exec websocket could not be opened)
        return ClusterUnavailableError(f"{call.verb} {call.describe()}: {said or body}")
    return ClusterError(f"{call.verb} {call.describe()}: HTTP {status} {said}".rstrip())


@contextlib.contextmanager
def translate(call: Call) -> Iterator[None]:
    """Turn the client's errors into ours."""
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as err:
        raise api_error(call, int(err.status or 0), err.body or err.reason) from err
    except (urllib3.exceptions.HTTPError, ConnectionError, OSError) as err:
        raise ClusterUnavailableError(
            f"{call.verb} {call.describe()}: the Kubernetes API cannot be reached ({err})"
        ) from err


class ExecChannel(Protocol):
    """An exec's channels as the client's websocket client (``WSClient``) offers them, in
    binary mode: what ``snapvol.kube.execstream`` reads and writes."""

    def is_open(self) -> bool: ...

    def update(self, timeout: float = 0) -> None: ...

    def read_channel(self, channel: int, timeout: float = 0) -> bytes: ...

    def write_stdin(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class Kube:
    """One cluster, one API client: the calls the ``kubernetes`` source makes."""

    def __init__(
        self, api: ApiClient, namespace: str = "default", context: str | None = None
    ) -> None:
        from kubernetes import client

        self.api = api
        self.namespace = namespace  # the context's, used when none is given
        self.context = context  # the kubeconfig context's name (None: in-cluster)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

    @property
    def server(self) -> str:
        """The API server's URL (never credentials: those live in the client's configuration)."""
        return str(self.api.configuration.host or "")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()

    # --- the generic shapes every call takes -----------------------------------------------

    def _json(self, call: Call, method: Any, *args: Any, **kwargs: Any) -> Obj:
        with translate(call):
            response = method(*args, _preload_content=False, **kwargs)
            data = response.data
        try:
            parsed = json.loads(data)
        except ValueError as err:
            raise ClusterError(f"{call.verb} {call.describe()}: the answer is not JSON") from err
        if not isinstance(parsed, dict):
            raise ClusterError(f"{call.verb} {call.describe()}: the answer is not an object")
        return parsed

    def _items(self, call: Call, method: Any, *args: Any, **kwargs: Any) -> list[Obj]:
        items = self._json(call, method, *args, **kwargs).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    # --- workloads -------------------------------------------------------------------------

    def _workload_api(self, kind: str, action: str) -> tuple[Any, str]:
        if kind not in WORKLOADS:
            raise UsageError(f"snapvol scales deployments and statefulsets, not {kind!r}")
        suffix = {"deployment": "deployment", "statefulset": "stateful_set"}[kind]
        return getattr(self.apps, f"{action}_namespaced_{suffix}"), WORKLOADS[kind][1]

    def workload(self, kind: str, name: str, namespace: str) -> Obj:
        method, plural = self._workload_api(kind, "read")
        return self._json(Call("get", plural, "apps", name, namespace), method, name, namespace)

    def workloads(self, kind: str, namespace: str) -> list[Obj]:
        method, plural = self._workload_api(kind, "list")
        return self._items(Call("list", plural, "apps", None, namespace), method, namespace)

    def patch_workload(self, kind: str, name: str, namespace: str, patch: Obj) -> Obj:
        """A JSON merge patch (a null removes a key; ``metadata.resourceVersion`` in it makes
        it conditional: a 409 if the object changed since it was read)."""
        method, plural = self._workload_api(kind, "patch")
        return self._json(
            Call("patch", plural, "apps", name, namespace),
            method,
            name,
            namespace,
            patch,
            _content_type=MERGE_PATCH,
        )

    # --- storage -----------------------------------------------------------------------------

    def claim(self, name: str, namespace: str) -> Obj:
        return self._json(
            Call("get", "persistentvolumeclaims", "", name, namespace),
            self.core.read_namespaced_persistent_volume_claim,
            name,
            namespace,
        )

    def volume(self, name: str) -> Obj:
        return self._json(
            Call("get", "persistentvolumes", "", name), self.core.read_persistent_volume, name
        )

    # --- pods --------------------------------------------------------------------------------

    def pods(self, namespace: str, label_selector: str | None = None) -> list[Obj]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        return self._items(
            Call("list", "pods", "", None, namespace),
            self.core.list_namespaced_pod,
            namespace,
            **kwargs,
        )

    def pod(self, name: str, namespace: str) -> Obj:
        return self._json(
            Call("get", "pods", "", name, namespace), self.core.read_namespaced_pod, name, namespace
        )

    def create_pod(self, namespace: str, spec: Obj) -> Obj:
        name = spec.get("metadata", {}).get("name")
        return self._json(
            Call("create", "pods", "", name, namespace),
            self.core.create_namespaced_pod,
            namespace,
            spec,
        )

    def delete_pod(self, name: str, namespace: str) -> bool:
        """Delete a pod at once (no grace period); whether it was there."""
        try:
            self._json(
                Call("delete", "pods", "", name, namespace),
                self.core.delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=0,
            )
        except NotFoundError:
            return False
        return True

    def exec(
        self,
        name: str,
        namespace: str,
        command: list[str],
        *,
        stdin: bool = False,
        container: str | None = None,
    ) -> ExecChannel:
        """Run ``command`` in the pod's ``container`` (default: its only one); its channels, in
        binary mode."""
        from kubernetes.stream import stream, ws_client

        call = Call("create", "pods/exec", "", name, namespace)
        which = {"container": container} if container else {}
        with translate(call):
            channel = stream(
                self.core.connect_get_namespaced_pod_exec,
                name,
                namespace,
                **which,
                command=command,
                stdin=stdin,
                stdout=True,
                stderr=True,
                tty=False,
                binary=True,
                _preload_content=False,
            )
        # The client keeps a copy of all a command writes (for its read_all) unless told not
        # to, and its stream() cannot tell it: a volume's tar would pile up in memory.
        channel._all = ws_client._IgnoredIO()
        return channel


def connect(
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    namespace: str | None = None,
) -> Kube:
    """A client for the cluster of ``kubeconfig`` (default: ``$KUBECONFIG`` or ~/.kube/config;
    inside a pod with none of those, the pod's service account) and ``context`` (default: the
    current one). ``namespace`` defaults to the context's, else ``default``."""
    try:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise UsageError(
            "the kubernetes source needs the official Kubernetes client: "
            "pip install 'snapvol[kubernetes]'"
        ) from None

    path = os.fspath(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or None
    default = Path("~/.kube/config").expanduser()
    in_cluster = not path and not default.exists() and "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if in_cluster:
            config.load_incluster_config()
            from kubernetes import client

            api = client.ApiClient()
            ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            found = ns_file.read_text().strip() if ns_file.exists() else ""
            return Kube(api, namespace or found or "default")
        api = config.new_client_from_config(config_file=path, context=context)
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError, ValueError, TypeError) as err:
        where = path or str(default)
        raise ClusterUnavailableError(
            f"no usable kubeconfig at {where}"
            + (f" (context {context!r})" if context else "")
            + f": {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
        ) from err
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    found = ((chosen or {}).get("context") or {}).get("namespace") or ""
    return Kube(api, namespace or found or "default", (chosen or {}).get("name") or context)
