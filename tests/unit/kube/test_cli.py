"""The Kubernetes source on the command line: `snapvol snapshot --volume --workload`, `ls`,
`show`, `verify`, `restore`, `copy`, `rm` and `recover`, run in-process through the ``cmd``
fixture.

AGAINST AN API FAKE, NOT A CLUSTER: every API call goes to kmock's ``KubernetesEmulator`` (a
stateful fake of the API server, see conftest), and each exec in a helper pod runs GNU tar (and
find, cat) on this host, on a directory that stands for the claim the pod mounts, through the
same channel interface the client's exec websocket offers. The CLI reaches that fake through
``snapvol.cli.kube_target.connect_cluster``, the one place it connects to a cluster, which the
tests replace. Nothing here has run against a real cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import kmock as km
import pytest

from snapvol import locking
from snapvol.adapters.store import Store
from snapvol.cli import kube_target
from snapvol.kube import client as kclient
from snapvol.kube.client import Kube
from snapvol.kube.records import claim_key
from snapvol.kube.scale import ANNOTATION
from tests.servers import RepoServer
from tests.unit.kube.conftest import (
    DEPLOYMENTS,
    IMAGE,
    NS,
    PODS,
    PVCS,
    PVS,
    STATEFULSETS,
    LocalChannel,
    LocalExec,
    claim,
    deployment,
    live,
    local_path_volume,
    make_kube,
)
from tests.unit.kube.test_datapath import build_tree, recorded, tree

pytestmark = pytest.mark.asyncio

SOURCE = "k8s:shop/deployment/db"


class ClaimExec(LocalExec):
    """Exec in a helper pod, run here on the directory that stands for the claim it mounts."""

    def __init__(self, kmock: km.KubernetesEmulator, claims: dict[str, Path]) -> None:
        super().__init__()
        self.kmock = kmock
        self.claims = claims

    def __call__(
        self, name: str, namespace: str, command: list[str], *, stdin: bool = False
    ) -> LocalChannel:
        if name not in self.mounts:
            pod = live(self.kmock, PODS)[namespace, name]
            claim_name = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
            self.mounts[name] = self.claims[claim_name]
        return super().__call__(name, namespace, command, stdin=stdin)


class Fake:
    """The fake cluster as the CLI reaches it, and what it was asked to connect to."""

    def __init__(self, kmock: km.KubernetesEmulator, claims: dict[str, Path]) -> None:
        self.execs = ClaimExec(kmock, claims)
        self.kmock = kmock
        self.connects: list[tuple[Path | None, str | None, str | None]] = []

    def connect(self, kubeconfig: Path | None, context: str | None, namespace: str | None) -> Kube:
        self.connects.append((kubeconfig, context, namespace))
        kube = make_kube(self.kmock)
        kube.namespace = namespace or NS
        kube.context = context or "kmock"
        kube.exec = self.execs  # type: ignore[method-assign]
        return kube


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The directory that stands for claim pgdata: a PostgreSQL-like tree."""
    root = tmp_path / "claims" / "pgdata"
    build_tree(root)
    return root


@pytest.fixture
def fake(cluster, data: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    faked = Fake(cluster, {"pgdata": data})
    monkeypatch.setattr(kube_target, "connect_cluster", lambda *args: faked.connect(*args))
    return faked


async def run(cmd, *args: str, exit_code: int = 0) -> Any:
    return await asyncio.to_thread(cmd, *args, exit_code=exit_code)


async def run_json(cmd, *args: str, exit_code: int = 0) -> Any:
    return json.loads((await run(cmd, *args, "--json", exit_code=exit_code)).stdout)


def deployment_now(kmock: km.KubernetesEmulator) -> dict[str, Any]:
    return live(kmock, DEPLOYMENTS)[NS, "db"]


def assert_scaled_back(kmock: km.KubernetesEmulator) -> None:
    now = deployment_now(kmock)
    assert now["spec"]["replicas"] == 1
    assert ANNOTATION not in (now["metadata"].get("annotations") or {})
    assert [name for (_, name) in live(kmock, PODS) if name.startswith("snapvol-")] == []


def store_members(tmp_path: Path, snap_id: str) -> dict[str, tuple[Any, ...]]:
    store = Store.open(tmp_path / "manifests.db", create=False)
    try:
        return recorded(store.members(snap_id))
    finally:
        store.close()


def error_line(result: Any) -> str:
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    return line


async def test_snapshot_ls_show_verify_restore_and_undo(
    cmd, fake: Fake, controllers, data: Path, tmp_path: Path
):
    original = tree(data)
    snap = await run_json(
        cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "first"
    )
    assert (snap["kind"], snap["status"], snap["name"]) == ("volume", "complete", "first")
    assert (snap["container"], snap["volume"], snap["image"]) == (SOURCE, "pgdata", IMAGE)
    assert snap["pg_version"] == "15"
    assert snap["meta"]["source"] == "kubernetes"
    assert snap["meta"]["is_postgres"] is True
    where = snap["meta"]["kubernetes"]
    assert where == {
        "context": "kmock",
        "server": str(fake.kmock.url).rstrip("/"),
        "namespace": NS,
        "workload_kind": "deployment",
        "workload": "db",
        "claim": "pgdata",
        "ordinal": None,
        "pv": "pvc-1234",
        "node": "node-a",
        "container": "postgres",
        "mount_path": "/var/lib/postgresql/data",
        "image": IMAGE,
    }
    # Every member recorded, with its SHA-256: what the directory holds.
    assert store_members(tmp_path, snap["id"]) == original
    assert snap["file_count"] == len(original) + 1  # and the root, "."
    assert_scaled_back(fake.kmock)

    listed = await run(cmd, "ls")
    assert f"{SOURCE}:pgdata" in listed.stdout
    shown = await run(cmd, "show", "first")
    assert f"\nSource      {SOURCE}, image {IMAGE}\n" in shown.stdout
    assert (
        "\nKubernetes  deployment shop/db, claim pgdata (volume pvc-1234 on node node-a), "
        f"context kmock at {where['server']}\n"
    ) in shown.stdout
    checked = await run_json(cmd, "verify", "first")
    assert [c["ok"] for c in checked] == [True]

    # The claim changes; the restore puts the snapshot back, whole.
    build_tree(tmp_path / "changed", seed=2)
    os.rename(data, tmp_path / "before")
    os.rename(tmp_path / "changed", data)
    (data / "only-in-the-new").write_text("gone after the restore")
    changed = tree(data)
    restored = await run(cmd, "restore", "first", "--yes")
    assert tree(data) == original
    assert_scaled_back(fake.kmock)
    assert fake.connects[-1][1] == "kmock"  # the snapshot's context, unasked
    [undo] = [ln for ln in restored.stderr.splitlines() if ln.startswith("Undo with: ")]
    safety_id = undo.split()[-1]
    assert "Restored " in restored.stderr and "into claim pgdata of deployment shop/db" in (
        restored.stderr
    )
    [safety] = [s for s in await run_json(cmd, "ls") if s["id"] == safety_id]
    assert safety["status"] == "complete"
    assert safety["meta"]["safety_for"] == snap["id"]
    assert store_members(tmp_path, safety_id) == changed  # the claim as it was

    # The undo: the safety snapshot put back.
    await run(cmd, "restore", safety_id, "--yes")
    assert tree(data) == changed
    assert_scaled_back(fake.kmock)


async def test_the_restore_asks_for_the_workload(cmd, fake: Fake, controllers, data: Path):
    await run(cmd, "snapshot", "--volume", "--workload", "deploy/db", "--name", "one")
    (data / "new-file").write_text("stays: the restore is cancelled")
    before = tree(data)
    refused = await asyncio.to_thread(cmd, "restore", "one", exit_code=10, input="db\n")
    assert "Type the workload (deployment/db) to overwrite claim pgdata" in refused.stderr
    assert tree(data) == before
    assert "the snapshot was taken on" not in refused.stderr  # the same API server
    # Taken through another API server (another cluster, or this one by another address).
    store = Store.open(Path("manifests.db"), create=False)
    try:
        snap = store.resolve("one")
        meta = snap.meta
        meta["kubernetes"]["server"] = "https://other-cluster:6443"
        store.update(snap.id, meta_json=json.dumps(meta))
    finally:
        store.close()
    noted = await asyncio.to_thread(cmd, "restore", "one", exit_code=10, input="no\n")
    said = " ".join(noted.stderr.split())
    assert "Note the snapshot was taken on https://other-cluster:6443" in said
    await asyncio.to_thread(cmd, "restore", "one", input="deployment/db\n")
    assert "new-file" not in tree(data)


async def test_a_failed_snapshot_is_recorded_failed(cmd, fake: Fake, controllers, tmp_path):
    # tar in the helper cannot read the claim.
    fake.execs.rewrite = lambda argv: (
        [argv[0], "-C", "/nonexistent", *argv[3:]] if argv[0] == "tar" else argv
    )
    result = await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", exit_code=11)
    assert "the command failed (exit 2" in error_line(result)
    [snap] = await run_json(cmd, "ls")
    assert snap["status"] == "failed"
    assert "Cannot open" in snap["error"] or "No such file" in snap["error"]
    assert list((tmp_path / "backups").iterdir()) == []  # no archive, no partial
    assert_scaled_back(fake.kmock)


async def test_a_snapshot_a_restore_would_refuse_is_not_complete(
    cmd, fake: Fake, controllers, data: Path, tmp_path: Path
):
    (data / "PG_VERSION").unlink()
    (data / "PG_VERSION").write_text("fifteen\n")  # PostgreSQL data with no readable version
    result = await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", exit_code=11)
    assert "PG_VERSION does not hold a version" in error_line(result)
    [snap] = await run_json(cmd, "ls")
    assert snap["status"] == "failed"
    assert list((tmp_path / "backups").iterdir()) == []


async def test_a_failed_restore_is_rolled_back(
    cmd, fake: Fake, controllers, data: Path, tmp_path: Path
):
    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "good")
    (data / "written-later").write_text("the claim's newer state")
    before = tree(data)
    # The first tar -x keeps no modification times: the read-back does not match the snapshot
    # (the rollback's tar -x, the second, is left as it is).
    extracts: list[list[str]] = []

    def touch_once(argv: list[str]) -> list[str]:
        if argv[0] != "tar" or "-xpf" not in argv:
            return argv
        extracts.append(argv)
        return [*argv, "--touch"] if len(extracts) == 1 else argv

    fake.execs.rewrite = touch_once
    result = await run(cmd, "restore", "good", "--yes", exit_code=11)
    assert error_line(result) == (
        "Error: restoring claim pgdata failed (after extraction 'PG_VERSION' does not match the "
        "snapshot); what it held before was put back and checked"
    )
    assert tree(data) == before
    assert len(extracts) == 2
    assert_scaled_back(fake.kmock)
    # The safety snapshot stays, complete: the state the claim was rolled back to.
    [safety] = [s for s in await run_json(cmd, "ls") if s["meta"].get("safety_for")]
    assert safety["status"] == "complete"
    assert store_members(tmp_path, safety["id"]) == before


async def test_a_restore_whose_rollback_fails_leaves_the_workload_down(
    cmd, fake: Fake, controllers, data: Path, tmp_path: Path
):
    """The snapshot and then the safety copy both fail to go back: the claim may be
    half-written, so the workload is not started on it; the error names the way back, which
    then works (and scales the workload back)."""
    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "good")
    (data / "written-later").write_text("the claim's newer state")
    before = tree(data)

    def broken(argv: list[str]) -> list[str]:  # every tar -x keeps no modification times
        return [*argv, "--touch"] if argv[0] == "tar" and "-xpf" in argv else argv

    fake.execs.rewrite = broken
    result = await run(cmd, "restore", "good", "--yes", exit_code=11)
    line = error_line(result)
    assert "and putting back its safety copy failed too" in line
    assert "the claim may be half-written, so deployment shop/db is left scaled down" in line
    [safety] = [s for s in await run_json(cmd, "ls") if s["meta"].get("safety_for")]
    db = Path("manifests.db").absolute()
    assert line.endswith(
        f"To put back what it held: run `snapvol --db {db} restore {safety['id']}`"
    )
    now = deployment_now(fake.kmock)
    assert now["spec"]["replicas"] == 0 and ANNOTATION in now["metadata"]["annotations"]
    # That snapvol process has ended (here it runs in the test's own: its pid made a dead one's).
    mark = json.loads(now["metadata"]["annotations"][ANNOTATION])
    _marked(fake, {**mark, "pid": _dead_pid()})
    # recover keeps it down: a restore's mark, its claim maybe half-written.
    kept = await run(cmd, "recover", "--namespace", "shop", "--context", "kmock")
    assert "claim may be half-written" in kept.stderr
    assert deployment_now(fake.kmock)["spec"]["replicas"] == 0

    fake.execs.rewrite = None
    await run(cmd, "restore", safety["id"], "--yes")  # the way back the error named
    assert tree(data) == before
    assert_scaled_back(fake.kmock)


async def test_restore_into_another_workload_and_claim(
    cmd, fake: Fake, controllers, data: Path, tmp_path: Path
):
    other = tmp_path / "claims" / "copy"
    other.mkdir(parents=True)
    (other / "old").write_text("replaced")
    fake.execs.claims["copy"] = other
    fake.kmock.objects[DEPLOYMENTS, NS, "staging"] = deployment("staging", claim="copy")
    fake.kmock.objects[PVCS, NS, "copy"] = claim("copy", "pvc-1234")
    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "prod")
    done = await run_json(
        cmd, "restore", "prod", "--workload", "deployment/staging", "--context", "other", "-y"
    )
    assert tree(other) == tree(data)
    assert done["kubernetes"]["workload"] == "staging"
    assert done["undo"].endswith(f"restore {done['safety_snapshot']['id']}")
    assert fake.connects[-1][1] == "other"
    assert deployment_now(fake.kmock)["spec"]["replicas"] == 1


async def test_copy_to_restic_rm_and_restore_from_the_repository(
    cmd, fake: Fake, controllers, data: Path, restic_local: RepoServer, monkeypatch, tmp_path
):
    monkeypatch.setenv("SNAPVOL_REPOSITORY", restic_local.repo)
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(restic_local.password_file))
    await run(cmd, "repo", "init")
    snap = await run_json(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--no-copy")
    original = tree(data)
    copied = await run_json(cmd, "copy", snap["id"])
    assert [c["status"] for c in copied] == ["complete"]
    archive = Path(snap["path"])
    archive.unlink()  # gone here: the restore reads the repository's copy
    (data / "PG_VERSION.hardlink").unlink()
    await run(cmd, "restore", snap["id"], "--yes")
    assert tree(data) == original
    # rm takes the claim's lock and deletes record and (missing) archive.
    await run(cmd, "rm", snap["id"], "--yes")
    assert snap["id"] not in [s["id"] for s in await run_json(cmd, "ls")]


async def test_a_statefulset_replica(cmd, fake: Fake, controllers, tmp_path: Path):
    sts = deployment("pg", replicas=3)
    sts["kind"] = "StatefulSet"
    sts["spec"]["template"]["spec"]["volumes"] = []
    sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}]
    fake.kmock.objects[STATEFULSETS, NS, "pg"] = sts
    fake.kmock.objects[PVCS, NS, "data-pg-2"] = claim("data-pg-2", "pv-2")
    fake.kmock.objects[PVS, None, "pv-2"] = local_path_volume("pv-2", node="node-c")
    replica = tmp_path / "claims" / "data-pg-2"
    build_tree(replica, seed=5)
    fake.execs.claims["data-pg-2"] = replica

    refused = await run(cmd, "snapshot", "--volume", "--workload", "sts/pg", exit_code=2)
    assert error_line(refused).endswith(
        "name the claim or the replica's ordinal (retry with --claim NAME)"
    )
    snap = await run_json(
        cmd, "snapshot", "--volume", "--workload", "statefulset/pg", "--claim", "data-pg-2"
    )
    assert snap["container"] == "k8s:shop/statefulset/pg"
    assert (snap["meta"]["kubernetes"]["ordinal"], snap["meta"]["kubernetes"]["node"]) == (
        2,
        "node-c",
    )
    assert store_members(tmp_path, snap["id"]) == tree(replica)
    # Scaled to 2 (pg-2 stops, pg-0 and pg-1 keep running), then back to 3.
    patches = [
        r.data["spec"]["replicas"]
        for r in fake.kmock
        if r.method == "PATCH" and r.resource.plural == "statefulsets" and "spec" in r.data
    ]
    assert patches == [2, 3]
    assert live(fake.kmock, STATEFULSETS)[NS, "pg"]["spec"]["replicas"] == 3


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["--workload", "deployment/nope"], 3, "no deployment 'nope' in namespace 'shop'"),
        (["--workload", "deployment/db", "--claim", "nope"], 2, "does not mount claim 'nope'"),
        (["--workload", "daemonset/db"], 2, "--workload takes KIND/NAME"),
        (["--workload", "deployment/db", "--pod", "x"], 2, "--pod goes with a container's"),
        (["--workload", "db"], 2, "--workload takes KIND/NAME"),
        (["--workload", "deployment/db", "--container", "c"], 2, "--container goes with"),
        (["--namespace", "shop"], 2, "--namespace goes with --workload"),
    ],
)
async def test_snapshot_refusals(cmd, fake: Fake, args: list[str], code: int, said: str):
    result = await run(cmd, "snapshot", "--volume", *args, exit_code=code)
    assert said in error_line(result)
    assert deployment_now(fake.kmock)["spec"]["replicas"] == 1


async def test_a_logical_dump_takes_no_claim(cmd, fake: Fake):
    result = await run(
        cmd, "snapshot", "--logical", "--workload", "deployment/db", "--claim", "x", exit_code=2
    )
    assert error_line(result) == "Error: --claim goes with --volume"


async def test_forbidden_is_recorded_failed_and_names_the_rbac_verb(cmd, fake: Fake, controllers):
    fake.kmock["patch", km.resource(DEPLOYMENTS), km.name("db")] << km.KubernetesError(
        status=403, reason="Forbidden", message="forbidden"
    )
    result = await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", exit_code=5)
    assert 'the account needs verb "patch" on "deployments" in API group "apps"' in (
        error_line(result)
    )
    [snap] = await run_json(cmd, "ls")
    assert snap["status"] == "failed"


async def test_the_claim_is_locked(cmd, fake: Fake, controllers):
    key = claim_key(str(fake.kmock.url).rstrip("/"), NS, "pgdata")
    with locking.holding([(key, "claim shop/pgdata")], "restore 1234abcd"):
        result = await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", exit_code=9)
    assert "restore 1234abcd" in error_line(result)
    assert deployment_now(fake.kmock)["spec"]["replicas"] == 1


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def test_an_interrupted_run_is_refused_until_recovered(cmd, fake: Fake, controllers):
    import socket

    mark = {
        "replicas": 1,
        "scaled_to": 0,
        "operation": "0123456789ab",
        "host": socket.gethostname(),
        "pid": _dead_pid(),
        "at": "2026-12-04T16:00:00Z",
    }
    _marked(fake, mark)
    result = await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", exit_code=9)
    line = error_line(result)
    assert line.startswith(
        "Error: deployment shop/db was left scaled down to 0 (it had 1) by snapvol operation "
        "0123456789ab (pid "
    )
    assert "which was interrupted; nothing was changed" in line
    assert line.endswith(
        f"To scale it back and delete its helper pods: run "
        f"`snapvol --db {Path('manifests.db').absolute()} recover --namespace shop "
        "--context kmock`"
    )
    assert deployment_now(fake.kmock)["spec"]["replicas"] == 0  # nothing changed

    recovered = await run(cmd, "recover", "--namespace", "shop", "--context", "kmock")
    assert "deployment shop/db: scaled back" in recovered.stderr
    assert_scaled_back(fake.kmock)
    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db")


async def test_restore_refusals(cmd, fake: Fake, controllers):
    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "k")
    result = await run(cmd, "restore", "k", "--no-safety-snapshot", "-y", exit_code=2)
    assert "always takes its safety snapshot" in error_line(result)
    result = await run(cmd, "restore", "k", "--pod", "p", "-y", exit_code=2)
    assert "--pod goes with a container's volume" in error_line(result)


async def test_another_hosts_run_is_recovered_only_with_force(cmd, fake: Fake, controllers):
    mark = {
        "replicas": 1,
        "scaled_to": 0,
        "operation": "ba9876543210",
        "host": "another-host",
        "pid": 4242,
        "at": "2026-12-04T16:00:00Z",
    }
    _marked(fake, mark)
    result = await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", exit_code=9)
    line = error_line(result)
    assert "a run on another host that this one cannot check; nothing was changed" in line
    assert line.endswith("recover --namespace shop --context kmock --force`")

    left_alone = await run(cmd, "recover", "--namespace", "shop")
    assert "deployment shop/db: left: its run was on another-host" in left_alone.stderr
    assert deployment_now(fake.kmock)["spec"]["replicas"] == 0
    await run(cmd, "recover", "--namespace", "shop", "--force")
    assert_scaled_back(fake.kmock)


async def test_an_interrupted_restore_stays_down_until_a_restore_takes_over(
    cmd, fake: Fake, controllers, data: Path, tmp_path: Path
):
    import shutil

    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "good")
    (data / "newer").write_text("what the claim held before the restore")
    before = tree(data)
    done = await run_json(cmd, "restore", "good", "--yes")
    safety_id = done["safety_snapshot"]["id"]
    # A later restore was killed half-way: the claim half-written, the workload left down with
    # the restore's mark, its helper pod still there.
    shutil.rmtree(data / "base")
    _left_by_an_interrupted_restore(fake)

    refused = await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", exit_code=9)
    line = error_line(refused)
    assert "an interrupted restore: its claim may be half-written; nothing was changed" in line
    assert line.endswith(
        f": run `snapvol --db {Path('manifests.db').absolute()} restore {safety_id}`"
    )
    kept = await run(cmd, "recover", "--namespace", "shop")
    assert deployment_now(fake.kmock)["spec"]["replicas"] == 0
    assert "deployment shop/db: left: the run was a restore, so its claim may be half-written" in (
        kept.stderr
    )
    assert f"restore {safety_id} --yes` puts back what it held before" in kept.stderr
    assert deployment_now(fake.kmock)["spec"]["replicas"] == 0

    taken_over = await run(cmd, "restore", safety_id, "--yes", "--json")
    assert "this restore takes over" in taken_over.stderr
    taken = json.loads(taken_over.stdout)
    assert tree(data) == before
    assert_scaled_back(fake.kmock)
    # Its own safety snapshot holds the half-written claim: marked, never offered as a way back.
    assert taken["safety_snapshot"]["meta"]["took_over"] == "restore-0123456789ab"


# What the API server answers when the namespace enforces Pod Security "restricted" (its words).
RESTRICTED = (
    'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": unrestricted '
    'capabilities (container "snapvol" must not include "DAC_OVERRIDE" in '
    "securityContext.capabilities.add), runAsNonRoot != true (pod must not set "
    "securityContext.runAsNonRoot=false), runAsUser=0 (pod must not set runAsUser=0)"
)


def restricted(fake: Fake, admitted: list[dict[str, Any]]) -> None:
    """Pod creations as Pod Security's admission answers them in a "restricted" namespace: a
    pod that asks for root is refused with the API server's 403 (turned into snapvol's error by
    the client's own ``api_error``); the others are recorded and created in the fake."""
    connect = fake.connect

    def connect_restricted(*args: Any) -> Kube:
        kube = connect(*args)
        create = kube.create_pod

        def create_pod(namespace: str, pod: dict[str, Any]) -> Any:
            security = pod["spec"]["securityContext"]
            if security.get("runAsUser") == 0 or security.get("runAsNonRoot") is not True:
                name = pod["metadata"]["name"]
                call = kclient.Call("create", "pods", "", name, namespace)
                body = json.dumps({"kind": "Status", "message": RESTRICTED.format(name=name)})
                raise kclient.api_error(call, 403, body)
            admitted.append(pod)
            return create(namespace, pod)

        kube.create_pod = create_pod  # type: ignore[method-assign]
        return kube

    fake.connect = connect_restricted  # type: ignore[method-assign]


async def test_a_restricted_namespace_gets_its_helper_as_the_workloads_user(
    cmd, fake: Fake, controllers, data: Path
):
    """Pod Security "restricted" refuses the root helper: snapvol says so (not an RBAC
    message) and runs it as the workload's runAsUser/fsGroup. A restore then writes only
    entries of that user: one owned by another is refused before anything changes."""
    admitted: list[dict[str, Any]] = []
    restricted(fake, admitted)
    for path in [data, *data.rglob("*")]:
        os.lchown(path, 999, 999)  # the workload's runAsUser and fsGroup
    before = tree(data)

    taken = await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "a")
    warned = " ".join(taken.stderr.split())
    assert "the namespace's Pod Security admission refused pods \"snapvol-read-" in warned
    assert "the helper runs as the workload's user (999) with no capability instead" in warned
    assert "account needs verb" not in warned
    [read] = admitted
    assert read["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 999,
        "fsGroup": 999,
    }
    assert read["spec"]["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert_scaled_back(fake.kmock)

    (data / "written-later").write_text("replaced by the restore")
    os.lchown(data / "written-later", 999, 999)
    await run(cmd, "restore", "a", "--yes")
    assert tree(data) == before
    assert len(admitted) == 2 and admitted[1]["metadata"]["labels"]["snapvol.io/helper"] == "write"
    assert_scaled_back(fake.kmock)

    # An entry another user owns: the helper (not root) could not give it its owner.
    os.lchown(data / "PG_VERSION", 0, 0)
    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "b")
    os.lchown(data / "PG_VERSION", 999, 999)
    changed = tree(data)
    refused = await run(cmd, "restore", "b", "--yes", exit_code=8)
    said = " ".join(refused.stderr.split())
    assert "as the workload's user (999:999) it cannot restore" in said  # PG_VERSION, its link
    assert "owned by others or device nodes (first: 'PG_VERSION', 0:0); nothing was changed" in said
    assert tree(data) == changed
    assert_scaled_back(fake.kmock)


def _left_by_an_interrupted_restore(fake: Fake) -> None:
    """The workload as a restore killed half-way leaves it: down, with its mark."""
    import socket
    from datetime import UTC, datetime

    _marked(
        fake,
        {
            "replicas": 1,
            "scaled_to": 0,
            "operation": "restore-0123456789ab",
            "host": socket.gethostname(),
            "pid": _dead_pid(),
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )


def _marked(fake: Fake, mark: dict[str, Any]) -> None:
    """Deployment db scaled down by a snapvol run that left ``mark`` on it."""
    left = deployment()
    left["spec"]["replicas"] = 0
    left["metadata"]["annotations"] = {ANNOTATION: json.dumps(mark)}
    fake.kmock.objects[DEPLOYMENTS, NS, "db"] = left


async def test_a_failed_take_over_restore_leaves_the_workload_down(
    cmd, fake: Fake, controllers, data: Path
):
    """A restore that takes over an interrupted one's mark copies a half-written claim: when
    it fails, even once that copy was put back, the workload must not start on it."""
    import shutil

    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "good")
    shutil.rmtree(data / "base")  # the interrupted restore's half-written claim
    _left_by_an_interrupted_restore(fake)
    writes = []

    def first_breaks(argv: list[str]) -> list[str]:  # the restore's tar -x, not the rollback's
        if argv[0] == "tar" and "-xpf" in argv:
            writes.append(argv)
            if len(writes) == 1:
                return [*argv, "--touch"]
        return argv

    fake.execs.rewrite = first_breaks
    failed = await run(cmd, "restore", "good", "--yes", exit_code=11)
    assert len(writes) == 2  # the restore, then the rollback to the half-written copy
    now = deployment_now(fake.kmock)
    assert now["spec"]["replicas"] == 0, error_line(failed)
    assert ANNOTATION in now["metadata"]["annotations"]
    line = error_line(failed)
    assert "is left scaled down" in line and "maybe half-written" in line
    assert line.endswith("Restore a snapshot into it to bring it back")


async def test_a_take_over_restore_whose_rollback_fails_names_no_half_written_copy(
    cmd, fake: Fake, controllers, data: Path
):
    """Its safety copy holds the half-written claim (took_over): the error must not offer
    restoring it as the way back."""
    import shutil

    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "good")
    shutil.rmtree(data / "base")
    _left_by_an_interrupted_restore(fake)

    def broken(argv: list[str]) -> list[str]:
        return [*argv, "--touch"] if argv[0] == "tar" and "-xpf" in argv else argv

    fake.execs.rewrite = broken
    failed = await run(cmd, "restore", "good", "--yes", exit_code=11)
    line = error_line(failed)
    [taken] = [s for s in await run_json(cmd, "ls") if s["meta"].get("took_over")]
    assert f"restore {taken['id']}" not in line
    assert deployment_now(fake.kmock)["spec"]["replicas"] == 0


async def test_a_helper_that_cannot_be_deleted_does_not_start_a_half_written_claim(
    cmd, fake: Fake, controllers, data: Path
):
    """The restore and its rollback fail (the API going away, say), and so does deleting the
    helper pod: that error must not let the workload start on the half-written claim."""
    from snapvol.errors import ClusterError

    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "good")
    connect = fake.connect

    def connect_undeletable(*args: Any) -> Kube:
        kube = connect(*args)

        def delete_pod(name: str, namespace: str) -> None:
            raise ClusterError("the API server did not answer")

        kube.delete_pod = delete_pod  # type: ignore[method-assign]
        return kube

    fake.connect = connect_undeletable  # type: ignore[method-assign]

    def broken(argv: list[str]) -> list[str]:
        return [*argv, "--touch"] if argv[0] == "tar" and "-xpf" in argv else argv

    fake.execs.rewrite = broken
    failed = await run(cmd, "restore", "good", "--yes", exit_code=11)
    line = error_line(failed)
    now = deployment_now(fake.kmock)
    assert now["spec"]["replicas"] == 0, line
    assert ANNOTATION in now["metadata"]["annotations"]
    assert "left scaled down" in line and ": run `snapvol" in line


async def test_a_restricted_helper_refuses_a_claim_it_could_not_empty_or_put_back(
    cmd, fake: Fake, controllers, data: Path
):
    """The claim holds a directory of another user now (readable, so the safety copy is
    taken): the helper, not root, could not delete its files (emptying stops half-way) nor
    give them back their owner in a rollback. Refused before anything changes."""
    admitted: list[dict[str, Any]] = []
    restricted(fake, admitted)
    for path in [data, *data.rglob("*")]:
        os.lchown(path, 999, 999)
    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "a")
    (data / "roots").mkdir()
    (data / "roots" / "file").write_text("root's, in root's directory")  # owned 0:0
    changed = tree(data)
    refused = await run(cmd, "restore", "a", "--yes", exit_code=8)
    said = " ".join(refused.stderr.split())
    assert "'roots', 0:0" in said and "nothing was changed" in said
    assert tree(data) == changed
    assert_scaled_back(fake.kmock)


async def test_a_restricted_helper_restores_into_a_claim_whose_root_is_roots(
    cmd, fake: Fake, controllers, data: Path
):
    """As a provisioned volume with fsGroup has it, the claim's root is root's (group 999,
    setgid, group-writable); the helper really runs as 999 here (setpriv). tar cannot set the
    root's mode and times, which are the volume's own: the restore must not fail on that
    (after emptying the claim, with the workload then left down)."""
    admitted: list[dict[str, Any]] = []
    restricted(fake, admitted)
    for path in data.rglob("*"):
        os.lchown(path, 999, 999)
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o2000)  # as kubelet leaves an fsGroup volume
    os.chown(data, 0, 999)
    data.chmod(0o2775)
    for parent in data.parents:  # the helper (999) reaches the claim, as a pod its mount
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)

    def as_999(argv: list[str]) -> list[str]:
        return ["setpriv", "--reuid=999", "--regid=999", "--clear-groups", *argv]

    fake.execs.rewrite = as_999
    await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--name", "a")
    before = tree(data)
    (data / "written-later").write_text("replaced by the restore")
    os.lchown(data / "written-later", 999, 999)
    restored = await run(cmd, "restore", "a", "--yes", exit_code=0)
    assert "Restored" in restored.stdout + restored.stderr
    assert tree(data) == before
    assert_scaled_back(fake.kmock)
