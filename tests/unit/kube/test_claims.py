"""Resolving a workload to its claim, volume and node, and what is refused, against an API fake.

Run against kmock (a stateful fake of the API server over real HTTP, see conftest), never a
real cluster: the objects are the shapes the API returns, written by hand.
"""

from __future__ import annotations

import asyncio

import kmock as km
import pytest

from snapvol.errors import OperationFailed, UsageError, VolumeInUseError
from snapvol.kube.claims import ClaimTarget, resolve
from tests.unit.kube.conftest import (
    DEPLOYMENTS,
    IMAGE,
    NS,
    PODS,
    PVCS,
    PVS,
    STATEFULSETS,
    claim,
    deployment,
    local_path_volume,
    make_kube,
    pod,
)

pytestmark = pytest.mark.asyncio


async def _resolve(kmock: km.KubernetesEmulator, *args: str, **kwargs: object) -> ClaimTarget:
    return await asyncio.to_thread(resolve, make_kube(kmock), *args, **kwargs)  # type: ignore[arg-type]


async def test_a_deployment_resolves_to_its_claim_volume_node_and_image(cluster):
    target = await _resolve(cluster, "deployment", "db")
    assert target.claim == "pgdata"
    assert target.volume == "data"
    assert target.mount_path == "/var/lib/postgresql/data"
    assert (target.image, target.container) == (IMAGE, "postgres")  # not the sidecar's
    assert target.pv == "pvc-1234"
    assert target.node == "node-a"  # the volume's node affinity wins over the pod's node
    assert target.host_path == "/var/lib/rancher/k3s/storage/pvc-1234_shop_pgdata"
    assert target.access_modes == ("ReadWriteOnce",)
    assert target.run_as == (999, 999)
    assert target.ordinal is None and target.scale_to == 0
    assert target.workload.replicas == 1 and target.workload.namespace == NS
    # Only reads: a workload, a claim, a volume, the namespace's pods.
    assert [(r.method, r.resource.plural if r.resource else None) for r in cluster] == [
        ("GET", "deployments"),
        ("GET", "persistentvolumeclaims"),
        ("GET", "persistentvolumes"),
        ("GET", "pods"),
    ]


async def test_a_network_volume_takes_the_node_the_pod_ran_on(cluster):
    cluster.objects[PVS, None, "pvc-1234"] = {
        "metadata": {"name": "pvc-1234"},
        "spec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}},
    }
    target = await _resolve(cluster, "deployments", "db")
    assert (target.node, target.host_path) == ("node-b", None)


async def test_a_statefulset_replica_claim_is_named_from_its_template(cluster):
    sts = deployment("pg", replicas=3)
    sts["kind"] = "StatefulSet"
    sts["spec"]["template"]["spec"]["volumes"] = []
    sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}]
    cluster.objects[STATEFULSETS, NS, "pg"] = sts
    cluster.objects[PVCS, NS, "data-pg-2"] = claim("data-pg-2", "pv-2")
    cluster.objects[PVS, None, "pv-2"] = local_path_volume("pv-2", node="node-c")
    cluster.objects[PODS, NS, "pg-2"] = pod(
        "pg-2", "data-pg-2", {"app": "pg"}, ("StatefulSet", "pg")
    )

    with pytest.raises(UsageError) as err:
        await _resolve(cluster, "statefulset", "pg")
    assert str(err.value) == (
        "statefulset shop/pg has 3 replicas, each with claims of its own "
        "(data-pg-0, data-pg-1, ...): name the claim or the replica's ordinal"
    )
    by_ordinal = await _resolve(cluster, "statefulset", "pg", ordinal=2)
    by_name = await _resolve(cluster, "statefulset", "pg", claim="data-pg-2")
    for target in (by_ordinal, by_name):
        assert (target.claim, target.ordinal, target.node) == ("data-pg-2", 2, "node-c")
        assert target.scale_to == 2  # ordinals 2 and above stop; pg-0 and pg-1 keep running
    with pytest.raises(UsageError, match=r"has 3 replica\(s\): no ordinal 3"):
        await _resolve(cluster, "statefulset", "pg", claim="data-pg-3")


async def test_a_claim_another_workload_mounts_is_refused(cluster):
    cluster.objects[PVCS, NS, "pgdata"] = claim("pgdata", "pvc-1234", ("ReadWriteMany",))
    cluster.objects[PODS, NS, "report-1"] = pod(
        "report-1", "pgdata", {"app": "report"}, ("ReplicaSet", "report-77")
    )
    with pytest.raises(VolumeInUseError) as err:
        await _resolve(cluster, "deployment", "db")
    assert str(err.value) == (
        "claim 'pgdata' (ReadWriteMany) is mounted by pod 'report-1', which is not "
        "deployment shop/db's: scaling it down would not make the data cold; nothing was changed"
    )
    # A bare pod with the workload's labels but no owner is not one of its replicas either.
    del cluster.objects[PODS, NS, "report-1"]
    cluster.objects[PODS, NS, "debug"] = pod("debug", "pgdata", {"app": "db"}, None)
    with pytest.raises(VolumeInUseError, match="pod 'debug'"):
        await _resolve(cluster, "deployment", "db")
    # A finished pod holds nothing.
    cluster.objects[PODS, NS, "debug"].patch({"status": {"phase": "Succeeded"}})
    assert (await _resolve(cluster, "deployment", "db")).claim == "pgdata"


async def test_refusals_before_anything_changes(cluster):
    cluster.objects[PVCS, NS, "pgdata"] = claim("pgdata", None)
    with pytest.raises(OperationFailed, match=r"^claim 'pgdata' is Pending: it has no volume"):
        await _resolve(cluster, "deployment", "db")

    two = deployment("two")
    two["spec"]["template"]["spec"]["volumes"].append(
        {"name": "wal", "persistentVolumeClaim": {"claimName": "pgwal"}}
    )
    cluster.objects[DEPLOYMENTS, NS, "two"] = two
    with pytest.raises(UsageError, match=r"mounts 2 claims \(pgdata, pgwal\): name one"):
        await _resolve(cluster, "deployment", "two")
    with pytest.raises(UsageError, match=r"does not mount claim 'x' \(it mounts: pgdata, pgwal\)"):
        await _resolve(cluster, "deployment", "two", claim="x")

    none = deployment("none")
    none["spec"]["template"]["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    cluster.objects[DEPLOYMENTS, NS, "none"] = none
    with pytest.raises(UsageError, match="mounts no persistent volume claim"):
        await _resolve(cluster, "deployment", "none")
    # Nothing was written to the cluster by any of these.
    assert not [r for r in cluster if r.method != "GET"]
