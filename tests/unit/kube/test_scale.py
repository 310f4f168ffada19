"""Scaling a workload down and back, its recorded mark, and recovery, against an API fake.

Run against kmock (a stateful fake of the API server over real HTTP, see conftest), never a
real cluster; ``Controllers`` removes a scaled-down workload's pods as the ReplicaSet
controller would.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket

import kmock as km
import pytest

from snapvol.errors import ForbiddenError, LockedError, OperationFailed
from snapvol.kube import scale
from snapvol.kube.claims import resolve
from snapvol.kube.scale import ANNOTATION, Mark
from tests.unit.kube.conftest import DEPLOYMENTS, NS, PODS, STATEFULSETS, deployment, make_kube

pytestmark = pytest.mark.asyncio


def _deployment(kmock: km.KubernetesEmulator, name: str = "db") -> dict:
    return kmock.objects[DEPLOYMENTS, NS, name].raw


def _patches(kmock: km.KubernetesEmulator) -> list[km.Request]:
    return [r for r in kmock if r.method == "PATCH"]


async def test_scaled_down_records_then_scales_waits_and_scales_back(cluster, controllers):
    kube = make_kube(cluster)
    seen: dict[str, object] = {}

    def run() -> None:
        target = resolve(kube, "deployment", "db")
        with scale.scaled_down(kube, target, "op1", timeout=10, poll=0.05) as mark:
            seen["inside"] = json.loads(json.dumps(_deployment(cluster)))
            seen["mark"] = mark
            seen["pods"] = [
                name
                for (res, _, name), o in cluster.objects.items()
                if res == km.resource(PODS) and not o.deleted
            ]

    await asyncio.to_thread(run)
    inside = seen["inside"]
    assert inside["spec"]["replicas"] == 0
    recorded = json.loads(inside["metadata"]["annotations"][ANNOTATION])
    assert recorded == {
        "replicas": 1,
        "scaled_to": 0,
        "operation": "op1",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "at": recorded["at"],
    }
    assert seen["mark"] == Mark.loads(inside["metadata"]["annotations"][ANNOTATION], "")
    assert seen["pods"] == []  # the body ran only once no pod held the claim
    after = _deployment(cluster)
    assert after["spec"]["replicas"] == 1
    assert ANNOTATION not in (after["metadata"].get("annotations") or {})

    down, back = _patches(cluster)
    # One patch records and scales, conditional on the version that was read.
    assert down.headers["Content-Type"] == "application/merge-patch+json"
    assert down.data["spec"] == {"replicas": 0}
    assert down.data["metadata"]["resourceVersion"] == "41"
    assert ANNOTATION in down.data["metadata"]["annotations"]
    assert back.data == {"metadata": {"annotations": {ANNOTATION: None}}, "spec": {"replicas": 1}}


async def test_a_failure_inside_still_scales_back(cluster, controllers):
    kube = make_kube(cluster)

    def run() -> None:
        target = resolve(kube, "deployment", "db")
        with scale.scaled_down(kube, target, "op2", timeout=10, poll=0.05):
            raise RuntimeError("the archive failed")

    with pytest.raises(RuntimeError, match="the archive failed"):
        await asyncio.to_thread(run)
    after = _deployment(cluster)
    assert after["spec"]["replicas"] == 1
    assert ANNOTATION not in (after["metadata"].get("annotations") or {})


async def test_pods_that_never_go_time_out_and_the_workload_comes_back(cluster, controllers):
    controllers.keep_pods = True
    kube = make_kube(cluster)
    entered = []

    def run() -> None:
        target = resolve(kube, "deployment", "db")
        with scale.scaled_down(kube, target, "op3", timeout=0.3, poll=0.05):
            entered.append(True)

    with pytest.raises(OperationFailed) as err:
        await asyncio.to_thread(run)
    assert str(err.value) == (
        "claim 'pgdata' is still mounted by pod(s) db-5d8f-x2x 0.3 s after deployment shop/db "
        "was scaled down"
    )
    assert entered == []
    assert _deployment(cluster)["spec"]["replicas"] == 1


async def test_a_marked_workload_is_refused_without_a_write(cluster, dead_pid):
    mark = Mark(1, 0, "old", "elsewhere", dead_pid, "2026-01-01T00:00:00Z")
    cluster.objects[DEPLOYMENTS, NS, "db"].patch(
        {"metadata": {"annotations": {ANNOTATION: mark.dumps()}}}
    )
    kube = make_kube(cluster)
    target = await asyncio.to_thread(resolve, kube, "deployment", "db")
    with pytest.raises(LockedError) as err:
        await asyncio.to_thread(scale.scale_down, kube, target, "new")
    assert str(err.value) == (
        f"deployment shop/db was scaled down by snapvol operation old (pid {dead_pid} on "
        "elsewhere, 2026-01-01T00:00:00Z) and not yet scaled back; if that run is gone, "
        "recover it first"
    )
    assert _patches(cluster) == []


async def test_scaling_back_that_fails_says_to_recover(cluster, controllers):
    kube = make_kube(cluster)

    def run() -> None:
        target = resolve(kube, "deployment", "db")
        with scale.scaled_down(kube, target, "op4", timeout=10, poll=0.05):
            cluster["get", km.resource(DEPLOYMENTS)] << km.KubernetesError(
                status=403, reason="Forbidden", message="forbidden"
            )

    with pytest.raises(OperationFailed) as err:
        await asyncio.to_thread(run)
    assert isinstance(err.value.__cause__, ForbiddenError)
    assert str(err.value).startswith("scaling deployment shop/db back to 1 failed (Kubernetes ")
    assert str(err.value).endswith(f"it is left at 0 with annotation {ANNOTATION}: recover it")


async def test_someone_elses_scale_is_kept(cluster, controllers):
    kube = make_kube(cluster)
    warnings: list[str] = []

    def run() -> None:
        target = resolve(kube, "deployment", "db")
        with scale.scaled_down(kube, target, "op5", timeout=10, poll=0.05, warn=warnings.append):
            cluster.objects[DEPLOYMENTS, NS, "db"].patch({"spec": {"replicas": 3}})

    await asyncio.to_thread(run)
    after = _deployment(cluster)
    assert after["spec"]["replicas"] == 3
    assert ANNOTATION not in (after["metadata"].get("annotations") or {})
    assert warnings == [
        "deployment shop/db was scaled to 3 by someone else while snapvol worked; left at 3 "
        "(it had 1)"
    ]


async def test_recover_scales_back_what_a_dead_run_left(cluster, dead_pid, live_pid):
    here = socket.gethostname()
    sts = deployment("pg", replicas=1)
    sts["kind"] = "StatefulSet"
    marks = {
        (DEPLOYMENTS, "db"): Mark(1, 0, "dead", here, dead_pid, "t"),
        (STATEFULSETS, "pg"): Mark(3, 1, "live", here, live_pid, "t"),
        (DEPLOYMENTS, "far"): Mark(2, 0, "far", "another-host", 1, "t"),
    }
    cluster.objects[STATEFULSETS, NS, "pg"] = sts
    cluster.objects[DEPLOYMENTS, NS, "far"] = deployment("far")
    for (res, name), mark in marks.items():
        cluster.objects[res, NS, name].patch(
            {
                "spec": {"replicas": mark.scaled_to},
                "metadata": {"annotations": {ANNOTATION: mark.dumps()}},
            }
        )
    kube = make_kube(cluster)

    done = await asyncio.to_thread(scale.recover, kube, NS)
    assert {(r.workload, r.action) for r in done} == {
        ("deployment shop/db", "scaled back"),
        ("statefulset shop/pg", "left: its run is still going"),
        (
            "deployment shop/far",
            "left: its run was on another-host, which this host cannot check (recover with "
            "force once that run is known to be gone)",
        ),
    }
    assert _deployment(cluster, "db")["spec"]["replicas"] == 1
    assert not _deployment(cluster, "db")["metadata"].get("annotations")
    assert cluster.objects[STATEFULSETS, NS, "pg"]["spec"]["replicas"] == 1  # untouched
    assert _deployment(cluster, "far")["spec"]["replicas"] == 0

    done = await asyncio.to_thread(scale.recover, kube, NS, force=True)
    assert ("deployment shop/far", "scaled back") in {(r.workload, r.action) for r in done}
    assert _deployment(cluster, "far")["spec"]["replicas"] == 2


async def test_recovery_deletes_a_dead_runs_helper_then_scales_back(cluster, dead_pid, live_pid):
    from snapvol.kube import helper_pod, recovery

    here = socket.gethostname()
    kube = make_kube(cluster)
    target = await asyncio.to_thread(resolve, kube, "deployment", "db")
    for op, pid in (("gone", dead_pid), ("going", live_pid)):
        spec = helper_pod.helper_spec(target, op, read_only=True)
        spec["metadata"]["annotations"]["snapvol.io/owner"] = f"{here} {pid}"
        await asyncio.to_thread(kube.create_pod, NS, spec)
    mark = Mark(1, 0, "gone", here, dead_pid, "t")
    cluster.objects[DEPLOYMENTS, NS, "db"].patch(
        {"spec": {"replicas": 0}, "metadata": {"annotations": {ANNOTATION: mark.dumps()}}}
    )

    done = await asyncio.to_thread(recovery.recover, kube)
    assert done.helpers_deleted == ["snapvol-read-gone"]
    assert done.helpers_left == ["snapvol-read-going: its run is still going"]
    assert [(r.workload, r.action) for r in done.workloads] == [
        ("deployment shop/db", "scaled back")
    ]
    assert cluster.objects[PODS, NS, "snapvol-read-gone"].deleted
    assert not cluster.objects[PODS, NS, "snapvol-read-going"].deleted
    assert _deployment(cluster)["spec"]["replicas"] == 1
    # The helper went before the workload was scaled back.
    writes = [(r.method, r.resource.plural) for r in cluster if r.method in ("DELETE", "PATCH")]
    assert writes == [("DELETE", "pods"), ("PATCH", "deployments")]
