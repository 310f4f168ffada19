"""Fixtures of the Kubernetes source's tests: an API fake, the cluster's controllers as far as
the tests need them, and pod exec run on this host.

Every test here runs against kmock's ``KubernetesEmulator`` (PyPI ``kmock``), a stateful fake of
the API server on 127.0.0.1: the official client sends it real HTTP requests and it keeps the
objects they create, patch and delete. It is not Kubernetes: no controller acts on what the
tests change, so ``Controllers`` plays the few a cold copy waits for (a scaled-down workload's
pods go away, a helper pod starts running). Exec needs a websocket that the fake does not serve:
``LocalExec`` runs the command on this host instead, with the helper's mount mapped to a
directory, and hands its stdout, stderr and exit status to snapvol through the same channel
interface (``ExecChannel``) that the client's websocket offers.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock as km
import pytest
import pytest_asyncio
from kubernetes import client

from snapvol.kube.client import Kube
from snapvol.kube.helper_pod import HELPER_MOUNT

NS = "shop"
DEPLOYMENTS = "apps/v1/deployments"
STATEFULSETS = "apps/v1/statefulsets"
PODS = "v1/pods"
PVCS = "v1/persistentvolumeclaims"
PVS = "v1/persistentvolumes"
IMAGE = "registry.example/shop/postgres:15.6"


def deployment(name: str = "db", replicas: int = 1, claim: str = "pgdata", **spec: Any) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": "41"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "securityContext": {"runAsUser": 999, "fsGroup": 999},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}],
                    "containers": [
                        {"name": "sidecar", "image": "busybox:1.36"},
                        {
                            "name": "postgres",
                            "image": IMAGE,
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/var/lib/postgresql/data"}
                            ],
                        },
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
            **spec,
        },
    }


def pod(name: str, claim: str, labels: dict[str, str], owner: tuple[str, str] | None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1]}]
    return {
        "metadata": meta,
        "spec": {
            "nodeName": "node-b",
            "containers": [{"name": "c", "image": IMAGE}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
        "status": {"phase": "Running"},
    }


def claim(name: str, pv: str | None, modes: tuple[str, ...] = ("ReadWriteOnce",)) -> dict:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"accessModes": list(modes), **({"volumeName": pv} if pv else {})},
        "status": {"phase": "Bound" if pv else "Pending", "accessModes": list(modes)},
    }


def local_path_volume(name: str, node: str = "node-a") -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "hostPath": {"path": f"/var/lib/rancher/k3s/storage/{name}_shop_pgdata"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def seed(kmock: km.KubernetesEmulator) -> None:
    """The default cluster: deployment shop/db (1 replica, running on node-b) with claim
    pgdata, bound to a local-path volume on node-a."""
    kmock.objects[DEPLOYMENTS, NS, "db"] = deployment()
    kmock.objects[PODS, NS, "db-5d8f-x2x"] = pod(
        "db-5d8f-x2x", "pgdata", {"app": "db"}, ("ReplicaSet", "db-5d8f")
    )
    kmock.objects[PVCS, NS, "pgdata"] = claim("pgdata", "pvc-1234")
    kmock.objects[PVS, None, "pvc-1234"] = local_path_volume("pvc-1234")
    for known in (DEPLOYMENTS, STATEFULSETS, PODS):  # listed even when it holds none
        kmock.resources[known].namespaced = True


def make_kube(kmock: km.KubernetesEmulator) -> Kube:
    cfg = client.Configuration(host=str(kmock.url).rstrip("/"))
    return Kube(client.ApiClient(cfg), namespace=NS)


def live(kmock: km.KubernetesEmulator, resource: str) -> dict[tuple[str | None, str], Any]:
    """The objects of ``resource`` now in the fake: (namespace, name) -> object."""
    return {
        (ns, name): obj
        for (res, ns, name), obj in list(kmock.objects.items())
        if res == km.resource(resource) and not obj.deleted
    }


class Controllers:
    """What the cluster would do that the tests wait for: pods of a workload scaled to zero go
    away (after ``linger`` seconds), a new pod starts running (or waits with ``waiting``)."""

    def __init__(self, kmock: km.KubernetesEmulator) -> None:
        self.kmock = kmock
        self.linger = 0.05
        self.waiting: str | None = None  # a container waiting reason given to new pods
        self.keep_pods = False  # pods of a scaled-down workload never go (a stuck finalizer)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.linger)
            scaled_to_zero = {
                name
                for (_, name), obj in live(self.kmock, DEPLOYMENTS).items()
                if obj.get("spec", {}).get("replicas") == 0
            }
            for obj in live(self.kmock, PODS).values():
                labels = obj.get("metadata", {}).get("labels") or {}
                if labels.get("app") in scaled_to_zero and not self.keep_pods:
                    obj.delete()
                elif "status" not in obj:
                    if self.waiting:
                        waiting = {"waiting": {"reason": self.waiting}}
                        obj["status"] = {
                            "phase": "Pending",
                            "containerStatuses": [{"name": "snapvol", "state": waiting}],
                        }
                    else:
                        obj["status"] = {"phase": "Running"}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with _suppress_cancel():
                await self._task


class _suppress_cancel:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *_: object) -> bool:
        return kind is asyncio.CancelledError


@pytest.fixture
def cluster(kmock: km.KubernetesEmulator) -> km.KubernetesEmulator:
    """kmock seeded with the default cluster."""
    seed(kmock)
    return kmock


@pytest_asyncio.fixture
async def controllers(cluster: km.KubernetesEmulator) -> AsyncIterator[Controllers]:
    """The cluster's controllers, running beside the test."""
    running = Controllers(cluster)
    running.start()
    yield running
    await running.stop()


# --- exec on this host ---------------------------------------------------------------------


class LocalChannel:
    """A command run here, offered as the client's exec websocket offers one (binary mode):
    stdout on channel 1, stderr on 2, the API's Status on 3 once it exits."""

    def __init__(self, argv: list[str], *, stdin: bool) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.channels: dict[int, bytes] = {}
        self.open = True
        self.pending = {self.proc.stdout: 1, self.proc.stderr: 2}
        self.frames = 0  # stdout frames handed out (a big tree needs many)

    def update(self, timeout: float = 0) -> None:
        if not self.open:
            return
        if self.pending:
            ready, _, _ = select.select(list(self.pending), [], [], timeout)
            for stream in ready:
                data = os.read(stream.fileno(), 64 << 10)  # type: ignore[union-attr]
                if not data:
                    del self.pending[stream]
                    continue
                channel = self.pending[stream]
                self.frames += channel == 1
                self.channels[channel] = self.channels.get(channel, b"") + data
        if not self.pending:
            code = self.proc.wait()
            status: dict[str, Any] = {"metadata": {}, "status": "Success"}
            if code:
                status = {
                    "metadata": {},
                    "status": "Failure",
                    "message": f"command terminated with non-zero exit code: exit status {code}",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                }
            self.channels[3] = json.dumps(status).encode()
            self.open = False

    def read_channel(self, channel: int, timeout: float = 0) -> bytes:
        if channel not in self.channels:
            self.update(timeout)
        return self.channels.pop(channel, b"")

    def is_open(self) -> bool:
        return self.open

    def write_stdin(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()  # as a websocket frame goes at once (a psql session waits)

    def close_channel(self, channel: int) -> None:
        if channel == 0 and self.proc.stdin is not None:
            self.proc.stdin.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        self.open = False


class LocalExec:
    """``Kube.exec`` for pods whose mount is a directory here: ``mounts`` maps a pod's name to
    the directory that stands for its ``HELPER_MOUNT``."""

    def __init__(self) -> None:
        self.mounts: dict[str, Path] = {}
        self.calls: list[tuple[str, str, list[str], bool]] = []
        self.channels: list[LocalChannel] = []
        self.rewrite: Callable[[list[str]], list[str]] | None = None

    def __call__(
        self, name: str, namespace: str, command: list[str], *, stdin: bool = False
    ) -> LocalChannel:
        self.calls.append((name, namespace, command, stdin))
        root = str(self.mounts[name])
        argv = [part.replace(HELPER_MOUNT, root) for part in command]
        if self.rewrite is not None:
            argv = self.rewrite(argv)
        channel = LocalChannel(argv, stdin=stdin)
        self.channels.append(channel)
        return channel
