"""The helper pod: its manifest field by field, its life (created, running, deleted) and why it
may not start, against an API fake.

Run against kmock (a stateful fake of the API server over real HTTP, see conftest), never a
real cluster: ``Controllers`` sets a new pod running (or waiting, with a reason) as a kubelet
would; no container ever runs.
"""

from __future__ import annotations

import asyncio
import os
import socket

import kmock as km
import pytest

from snapvol.errors import OperationFailed
from snapvol.kube import helper_pod
from snapvol.kube.claims import resolve
from tests.unit.kube.conftest import IMAGE, NS, PODS, make_kube

pytestmark = pytest.mark.asyncio


async def _target(cluster: km.KubernetesEmulator):
    return await asyncio.to_thread(resolve, make_kube(cluster), "deployment", "db")


async def test_the_read_helper_manifest(cluster):
    target = await _target(cluster)
    spec = helper_pod.helper_spec(target, "0p1d", read_only=True)
    assert spec["apiVersion"] == "v1" and spec["kind"] == "Pod"
    assert spec["metadata"] == {
        "name": "snapvol-read-0p1d",
        "namespace": NS,
        "labels": {
            "app.kubernetes.io/managed-by": "snapvol",
            "snapvol.io/helper": "read",
            "snapvol.io/operation": "0p1d",
        },
        "annotations": {
            "snapvol.io/owner": f"{socket.gethostname()} {os.getpid()}",
            "snapvol.io/workload": "deployment/db",
            "snapvol.io/claim": "pgdata",
        },
    }
    pod = spec["spec"]
    assert pod["nodeName"] == "node-a"  # where the local-path volume is
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "db"}]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["terminationGracePeriodSeconds"] == 0
    assert pod["activeDeadlineSeconds"] == helper_pod.DEADLINE
    assert pod["securityContext"] == {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}
    assert pod["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "pgdata", "readOnly": True}}
    ]
    (container,) = pod["containers"]
    assert container == {
        "name": "snapvol",
        "image": IMAGE,  # the workload's own (the postgres container's, not the sidecar's)
        "imagePullPolicy": "Never",
        "command": ["sleep", str(helper_pod.DEADLINE)],
        "volumeMounts": [{"name": "data", "mountPath": "/snapvol/data", "readOnly": True}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]},
        },
    }
    assert set(spec) == {"apiVersion", "kind", "metadata", "spec"}
    assert "imagePullSecrets" not in pod and "serviceAccountName" not in pod


async def test_the_write_helper_and_the_owner_variant(cluster):
    target = await _target(cluster)
    write = helper_pod.helper_spec(target, "w1", read_only=False)
    assert write["metadata"]["name"] == "snapvol-write-w1"
    assert write["metadata"]["labels"]["snapvol.io/helper"] == "write"
    assert write["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] is False
    (container,) = write["spec"]["containers"]
    assert container["volumeMounts"][0]["readOnly"] is False
    assert container["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD", "SETFCAP"],
    }
    owner = helper_pod.helper_spec(target, "o1", read_only=True, as_owner=True)
    assert owner["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},  # Pod Security "restricted" asks for one
        "runAsUser": 999,
        "fsGroup": 999,
    }
    assert owner["spec"]["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


async def test_the_helper_is_created_waited_for_and_deleted(cluster, controllers):
    target = await _target(cluster)
    kube = make_kube(cluster)
    spec = helper_pod.helper_spec(target, "life", read_only=True)
    seen = []

    def run() -> None:
        with helper_pod.running(kube, spec, timeout=10) as name:
            seen.append((name, kube.pod(name, NS)["status"]["phase"]))
            raise RuntimeError("the body failed")

    with pytest.raises(RuntimeError):
        await asyncio.to_thread(run)
    assert seen == [("snapvol-read-life", "Running")]
    created = [r for r in cluster if r.method == "POST"]
    assert [r.data for r in created] == [spec]
    deleted = [r for r in cluster if r.method == "DELETE"]
    assert [(r.resource.plural, r.name, r.params.get("gracePeriodSeconds")) for r in deleted] == [
        ("pods", "snapvol-read-life", "0")
    ]
    assert cluster.objects[PODS, NS, "snapvol-read-life"].deleted


async def test_a_helper_that_cannot_start_fails_at_once(cluster, controllers):
    controllers.waiting = "ErrImageNeverPull"
    target = await _target(cluster)
    kube = make_kube(cluster)
    spec = helper_pod.helper_spec(target, "np", read_only=True)

    def run() -> None:
        with helper_pod.running(kube, spec, timeout=30):
            raise AssertionError("never runs")

    with pytest.raises(OperationFailed) as err:
        await asyncio.to_thread(run)
    assert str(err.value) == (
        f"helper pod snapvol-read-np cannot run: its image {IMAGE} is not on node node-a "
        "(helper pods never pull)"
    )
    assert cluster.objects[PODS, NS, "snapvol-read-np"].deleted


async def test_strays_are_found_by_label(cluster):
    target = await _target(cluster)
    kube = make_kube(cluster)
    await asyncio.to_thread(
        kube.create_pod, NS, helper_pod.helper_spec(target, "left", read_only=False)
    )
    strays = await asyncio.to_thread(helper_pod.strays, kube, NS)
    assert [p["metadata"]["name"] for p in strays] == ["snapvol-write-left"]
    assert helper_pod.owner_of(strays[0]) == (socket.gethostname(), os.getpid())
    assert cluster[km.resource(PODS)][-1].params.get("labelSelector") == "snapvol.io/helper"
