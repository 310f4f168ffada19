"""The Kubernetes source against a real cluster (k3s, kind, or any): a cold snapshot of a
Deployment's claim and a restore of it, checked file by file in the workload's own pod.

Runs only when ``SNAPVOL_TEST_KUBECONFIG`` names a kubeconfig whose context may create and
delete a namespace and, in it, claims, deployments and pods (with exec); skipped otherwise, and
the skip says so. The cluster needs a default StorageClass (k3s' local-path, kind's standard)
and must be able to run ``SNAPVOL_TEST_KUBE_IMAGE`` (default ``debian:bookworm-slim``: it has
sh, tar, find and sleep). Everything is made in a namespace of its own, deleted at the end.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Read at import: the suite's autouse fixture clears SNAPVOL_* before each test runs.
KUBECONFIG = os.environ.get("SNAPVOL_TEST_KUBECONFIG", "")
IMAGE = os.environ.get("SNAPVOL_TEST_KUBE_IMAGE", "debian:bookworm-slim")

pytestmark = [
    pytest.mark.kube_cluster,
    pytest.mark.skipif(
        not KUBECONFIG,
        reason="not run: needs a real Kubernetes cluster (set SNAPVOL_TEST_KUBECONFIG to a "
        "kubeconfig, e.g. k3s' /etc/rancher/k3s/k3s.yaml); the API fake tests in "
        "tests/unit/kube ran instead",
    ),
]

SEED = (
    "[ -e /data/seeded ] || { mkdir -p /data/sub/deeper && head -c 3000000 /dev/urandom "
    "> /data/sub/big && echo hello > /data/greeting && ln -s greeting /data/link "
    "&& chmod 600 /data/greeting && touch /data/seeded; }; exec sleep 86400"
)


@pytest.fixture
def namespace() -> Iterator[str]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=KUBECONFIG)
    core = client.CoreV1Api(api)
    name = f"snapvol-test-{secrets.token_hex(4)}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)
        api.close()


def _apply(namespace: str) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=KUBECONFIG)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "64Mi"}},
            },
        },
    )
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "app"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "app"}},
                "template": {
                    "metadata": {"labels": {"app": "app"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "app",
                                "image": IMAGE,
                                "command": ["sh", "-c", SEED],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ],
                        "volumes": [
                            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
                        ],
                    },
                },
            },
        },
    )
    api.close()


def _app_pod(kube, namespace: str, timeout: float = 300) -> str:  # type: ignore[no-untyped-def]
    """The app's running pod, once the data is seeded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in kube.pods(namespace):
            labels = pod["metadata"].get("labels") or {}
            running = pod.get("status", {}).get("phase") == "Running"
            if (
                labels.get("app") == "app"
                and running
                and not pod["metadata"].get("deletionTimestamp")
            ):
                name = pod["metadata"]["name"]
                try:
                    if "seeded" in _sh(kube, name, namespace, "ls /data"):
                        return str(name)
                except Exception:
                    pass
        time.sleep(2)
    raise AssertionError(f"the app's pod did not run within {timeout} s")


def _sh(kube, pod: str, namespace: str, script: str) -> str:  # type: ignore[no-untyped-def]
    from snapvol.kube.execstream import ExecOutput

    out = ExecOutput(kube.exec(pod, namespace, ["sh", "-c", script]), script)
    return b"".join(out).decode()


def test_cold_snapshot_and_restore_on_a_real_cluster(namespace: str, tmp_path: Path) -> None:
    from snapvol.kube import claims, cold, scale
    from snapvol.kube.client import connect

    kube = connect(KUBECONFIG, namespace=namespace)
    _apply(namespace)
    pod = _app_pod(kube, namespace)
    big_sha = _sh(kube, pod, namespace, "sha256sum /data/sub/big").split()[0]

    target = claims.resolve(kube, "deployment", "app")
    assert target.claim == "data" and target.image == IMAGE
    snap = tmp_path / "snap.tar.zst"
    copy = cold.snapshot_claim(kube, target, snap, timeout=300)
    by_path = {m.path: m for m in copy.members}
    assert by_path["sub/big"].sha256 == big_sha
    assert by_path["greeting"].mode & 0o777 == 0o600
    assert by_path["link"].linkname == "greeting"
    workload = kube.workload("deployment", "app", namespace)
    assert workload["spec"]["replicas"] == 1
    assert scale.ANNOTATION not in (workload["metadata"].get("annotations") or {})

    # Change the data, then restore the snapshot over it.
    pod = _app_pod(kube, namespace)
    _sh(
        kube, pod, namespace, "echo changed > /data/greeting && rm /data/sub/big && touch /data/new"
    )
    target = claims.resolve(kube, "deployment", "app")
    done = cold.restore_claim(
        kube, target, snap, copy.members, tmp_path / "safety.tar.zst", timeout=300
    )
    assert not done.rolled_back
    assert "new" in {m.path for m in done.safety.members}

    pod = _app_pod(kube, namespace)
    assert _sh(kube, pod, namespace, "cat /data/greeting") == "hello\n"
    assert _sh(kube, pod, namespace, "sha256sum /data/sub/big").split()[0] == big_sha
    assert "new" not in _sh(kube, pod, namespace, "ls /data").split()
    assert hashlib.sha256(snap.read_bytes()).hexdigest() == copy.result.sha256
    assert kube.workload("deployment", "app", namespace)["spec"]["replicas"] == 1


def test_the_command_line_on_a_real_cluster(namespace: str, cmd) -> None:  # type: ignore[no-untyped-def]
    """`snapshot --volume --workload`, `verify`, `restore` and the undo, through the CLI (never
    run yet: see the module's docstring)."""
    from snapvol.kube.client import connect

    kube = connect(KUBECONFIG, namespace=namespace)
    _apply(namespace)
    pod = _app_pod(kube, namespace)
    where = ["--namespace", namespace, "--kubeconfig", KUBECONFIG]
    snap = cmd.json("snapshot", "--volume", "--workload", "deployment/app", *where)
    assert (snap["status"], snap["volume"]) == ("complete", "data")
    assert snap["container"] == f"k8s:{namespace}/deployment/app"
    assert [c["ok"] for c in cmd.json("verify", snap["id"])] == [True]

    pod = _app_pod(kube, namespace)
    _sh(kube, pod, namespace, "echo changed > /data/greeting && touch /data/new")
    done = cmd.json("restore", snap["id"], "--yes", "--kubeconfig", KUBECONFIG)
    pod = _app_pod(kube, namespace)
    assert _sh(kube, pod, namespace, "cat /data/greeting") == "hello\n"
    assert "new" not in _sh(kube, pod, namespace, "ls /data").split()
    cmd("restore", done["safety_snapshot"]["id"], "--yes", "--kubeconfig", KUBECONFIG)
    pod = _app_pod(kube, namespace)
    assert _sh(kube, pod, namespace, "cat /data/greeting") == "changed\n"
