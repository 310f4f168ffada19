"""The Kubernetes adapter's error mapping and kubeconfig loading, against an API fake.

Run against kmock (a stateful fake of the API server over real HTTP, see conftest), never a
real cluster: the 403 and 409 answers are the Status bodies the fake is told to send, shaped
like the API server's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import kmock as km
import pytest

from snapvol.errors import (
    ClusterUnavailableError,
    ForbiddenError,
    LockedError,
    NotFoundError,
    PodSecurityError,
    UsageError,
)
from snapvol.kube import client as kclient
from tests.unit.kube.conftest import DEPLOYMENTS, NS, PVS, make_kube

pytestmark = pytest.mark.asyncio


def _status(code: int, reason: str, message: str) -> km.KubernetesError:
    return km.KubernetesError(status=code, reason=reason, message=message)


async def test_missing_objects_are_not_found_errors_naming_them(cluster: km.KubernetesEmulator):
    kube = make_kube(cluster)
    with pytest.raises(NotFoundError) as err:
        await asyncio.to_thread(kube.workload, "deployment", "nope", NS)
    assert str(err.value) == "no deployment 'nope' in namespace 'shop' (or no such namespace)"
    with pytest.raises(NotFoundError, match=r"^no claim 'gone' in namespace 'shop'"):
        await asyncio.to_thread(kube.claim, "gone", NS)
    with pytest.raises(NotFoundError, match=r"^no volume 'pv-x'$"):
        await asyncio.to_thread(kube.volume, "pv-x")


async def test_a_pod_security_refusal_is_not_called_an_rbac_one(cluster: km.KubernetesEmulator):
    said = (
        'pods "snapvol-read-1" is forbidden: violates PodSecurity "restricted:latest": '
        "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)"
    )
    cluster["post", km.resource("v1/pods")] << _status(403, "Forbidden", said)
    kube = make_kube(cluster)
    pod = {"metadata": {"name": "snapvol-read-1"}, "spec": {"containers": []}}
    with pytest.raises(PodSecurityError) as err:
        await asyncio.to_thread(kube.create_pod, NS, pod)
    assert str(err.value) == f"the namespace's Pod Security admission refused {said}"
    assert isinstance(err.value, ForbiddenError)  # exit 5, as any refusal of the API


async def test_a_long_pod_security_refusal_is_said_whole(cluster: km.KubernetesEmulator):
    """Admission lists every check the pod fails: cut at 300 characters, the line read
    "..., runAsUser; the helper runs as ..." (a reason cut in half)."""
    said = (
        'pods "snapvol-write-1" is forbidden: violates PodSecurity "restricted:latest": '
        'unrestricted capabilities (container "snapvol" must not include "CHOWN", '
        '"DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD", "SETFCAP" in '
        "securityContext.capabilities.add), runAsNonRoot != true (pod must not set "
        "securityContext.runAsNonRoot=false), runAsUser=0 (pod must not set runAsUser=0), "
        'seccompProfile (pod or container "snapvol" must set securityContext.seccompProfile.'
        'type to "RuntimeDefault" or "Localhost")'
    )
    assert len(said) > 300
    cluster["post", km.resource("v1/pods")] << _status(403, "Forbidden", said)
    kube = make_kube(cluster)
    pod = {"metadata": {"name": "snapvol-write-1"}, "spec": {"containers": []}}
    with pytest.raises(PodSecurityError) as err:
        await asyncio.to_thread(kube.create_pod, NS, pod)
    assert str(err.value) == f"the namespace's Pod Security admission refused {said}"


async def test_forbidden_names_the_rbac_verb_resource_and_group(cluster: km.KubernetesEmulator):
    cluster["patch", km.resource(DEPLOYMENTS), km.name("db")] << _status(
        403,
        "Forbidden",
        'deployments.apps "db" is forbidden: User "system:serviceaccount:shop:snapvol" cannot '
        'patch resource "deployments" in API group "apps" in the namespace "shop"',
    )
    kube = make_kube(cluster)
    with pytest.raises(ForbiddenError) as err:
        await asyncio.to_thread(kube.patch_workload, "deployment", "db", NS, {"spec": {}})
    assert str(err.value) == (
        "Kubernetes refused to patch deployments 'db' in namespace 'shop': the account needs "
        'verb "patch" on "deployments" in API group "apps" in namespace "shop"; '
        "docs/kubernetes.md lists the Role to apply"
    )
    assert err.value.exit_code == 5
    # The cluster-scoped volume: a ClusterRole's verb.
    cluster["get", km.resource(PVS)] << _status(403, "Forbidden", "forbidden")
    with pytest.raises(ForbiddenError, match=r'verb "get" on "persistentvolumes" \(cluster-wide\)'):
        await asyncio.to_thread(kube.volume, "pvc-1234")


async def test_conflict_and_invalid(cluster: km.KubernetesEmulator):
    cluster["patch", km.resource(DEPLOYMENTS)] << _status(409, "Conflict", "the object changed")
    kube = make_kube(cluster)
    with pytest.raises(LockedError, match=r"changed while snapvol was working on it"):
        await asyncio.to_thread(kube.patch_workload, "deployment", "db", NS, {"spec": {}})
    with pytest.raises(UsageError, match="deployments and statefulsets, not 'daemonset'"):
        await asyncio.to_thread(kube.workload, "daemonset", "x", NS)


async def test_unreachable_server_is_cluster_unavailable():
    from kubernetes import client

    cfg = client.Configuration(host="http://127.0.0.1:9")
    cfg.retries = 0
    kube = kclient.Kube(client.ApiClient(cfg), NS)
    with pytest.raises(ClusterUnavailableError, match="the Kubernetes API cannot be reached"):
        await asyncio.to_thread(kube.pods, NS)


async def test_connect_reads_the_kubeconfig_and_its_namespace(
    cluster: km.KubernetesEmulator, tmp_path: Path
):
    path = tmp_path / "kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{str(cluster.url).rstrip("/")}"}}}}]
users: [{{name: u, user: {{token: t0ken}}}}]
contexts:
- {{name: main, context: {{cluster: fake, user: u, namespace: shop}}}}
- {{name: other, context: {{cluster: fake, user: u}}}}
current-context: main
"""
    )
    kube = kclient.connect(path)
    assert kube.namespace == "shop"
    got = await asyncio.to_thread(kube.workload, "deployment", "db", kube.namespace)
    assert got["metadata"]["name"] == "db"
    # The token went along as the kubeconfig says.
    assert cluster[km.resource(DEPLOYMENTS)][-1].headers["Authorization"] == "Bearer t0ken"
    assert kclient.connect(path, context="other").namespace == "default"
    assert kclient.connect(path, context="other", namespace="x").namespace == "x"


async def test_connect_without_a_kubeconfig_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterUnavailableError, match=r"^no usable kubeconfig at .*missing"):
        kclient.connect(tmp_path / "missing")
    (tmp_path / "bad").write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")
    with pytest.raises(ClusterUnavailableError, match=r"^no usable kubeconfig at .*bad"):
        kclient.connect(tmp_path / "bad")


async def test_an_exec_handshake_refused_is_mapped_by_its_http_status():
    call = kclient.Call("create", "pods/exec", "", "snapvol-read-1", NS)
    refused = kclient.api_error(call, 0, "Handshake status 403 Forbidden -+-+- {...}")
    assert isinstance(refused, ForbiddenError)
    assert 'verb "create" on "pods/exec" in namespace "shop"' in str(refused)
    gone = kclient.api_error(call, 0, "Handshake status 404 Not Found")
    assert isinstance(gone, NotFoundError) and str(gone).startswith("no pod 'snapvol-read-1'")
    lost = kclient.api_error(call, 0, "Connection refused")
    assert isinstance(lost, ClusterUnavailableError)
