"""A local-path (hostPath) claim read and written on its node by snapvol itself: the host lane.

AGAINST AN API FAKE, NOT A CLUSTER (see test_cli.py): every API call goes to kmock. The claim's
volume is a hostPath volume whose directory is a real directory here, holding the awkward tree
of tests/fidelity_tree.py (hard links, sparse files, xattrs, ACLs, a capability, odd modes,
owners, times and names, links, a FIFO, a device, a path beyond PATH_MAX), and whose node is
this machine's (its host name, as the kubelet names a node). No helper pod runs: the fake's
exec fails the test if anything calls it. Needs root, as the host lane does.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from snapvol.errors import OperationFailed
from snapvol.kube import node
from snapvol.kube.claims import ClaimTarget, Workload
from snapvol.kube.scale import ANNOTATION
from snapvol.volume import hosttar
from tests import fidelity_tree
from tests.unit.kube.conftest import NS, PVS, local_path_volume
from tests.unit.kube.test_cli import (
    Fake,
    assert_scaled_back,
    deployment_now,
    error_line,
    run,
    run_json,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the host lane and the tree need root")

HERE = socket.gethostname().lower()  # this machine's node name, as the kubelet gives it


def _no_sockets(prints: dict[bytes, dict]) -> dict[bytes, dict]:
    return {k: v for k, v in prints.items() if v["type"] != stat.S_IFSOCK}


def _writes(fake: Fake) -> list[tuple[str, str, str | None]]:
    return [(r.method, r.resource.plural, r.name) for r in fake.kmock if r.method != "GET"]


def _scalings(fake: Fake) -> list[tuple[int, bool]]:
    """Each patch of the workload: the replicas it sets, and whether it writes the mark."""
    return [
        (
            r.data["spec"]["replicas"],
            bool((r.data["metadata"].get("annotations") or {}).get(ANNOTATION)),
        )
        for r in fake.kmock
        if r.method == "PATCH" and r.resource.plural == "deployments"
    ]


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """The claim's directory on the node: the awkward tree, and a PG_VERSION (the claim holds
    PostgreSQL 15 data, as far as snapvol is concerned: its version is read on the host lane
    too). A short path: the tree's Unix socket needs one."""
    root = tmp_path / "pvc-1234"
    root.mkdir(parents=True)
    fidelity_tree.build(root)
    (root / "PG_VERSION").write_text("15\n")
    return root


def _volume_here(fake: Fake, storage: Path, node_name: str = HERE) -> None:
    pv = local_path_volume("pvc-1234", node=node_name)
    pv["spec"]["hostPath"]["path"] = str(storage)
    fake.kmock.objects[PVS, None, "pvc-1234"] = pv


@pytest.fixture
def here(cluster, storage: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    """The fake cluster, its claim pgdata a hostPath volume on this node. The claim's helper
    pods would exec on ``storage`` (for the tests where one runs)."""
    from snapvol.cli import kube_target

    faked = Fake(cluster, {"pgdata": storage})
    monkeypatch.setattr(kube_target, "connect_cluster", faked.connect)
    _volume_here(faked, storage)
    return faked


def _change(root: Path) -> None:
    """Change the tree in every respect the restore must undo."""
    (root / "plain.txt").write_text("changed content\n")
    os.chmod(root / "setuid", 0o755)
    os.chown(root / "big-owner", 1, 1)
    os.utime(root / "time-nanoseconds", ns=(5, 5))
    os.setxattr(root / "attrs", "user.plain", b"other value")
    os.removexattr(root / "attrs", "user.binary")
    os.remove(root / "relative")  # a symbolic link
    os.remove(root / "sub" / "hard-2")  # a hard link broken: a copy in its place
    (root / "sub" / "hard-2").write_bytes((root / "big.bin").read_bytes())
    os.remove(root / "fifo")
    (root / "only-in-the-new").write_text("gone after the restore\n")
    (root / "PG_VERSION").write_text("15\n")  # the same version: the restore is allowed


@pytest.mark.asyncio
async def test_a_local_path_claim_on_this_node_is_read_and_written_here(
    cmd, here: Fake, controllers, storage: Path
):
    original = fidelity_tree.fingerprint(storage)
    assert any(len(k) > 4096 for k in original)  # the tree holds a path beyond PATH_MAX

    taken = await run(cmd, "snapshot", "--volume", "--workload", "deployment/db", "--json")
    snap = json.loads(taken.stdout)
    assert "skipped 1 Unix socket(s)" in taken.stderr
    assert (snap["status"], snap["meta"]["reader"], snap["pg_version"]) == (
        "complete",
        "host",
        "15",
    )
    assert snap["meta"]["kubernetes"]["node"] == HERE
    assert snap["meta"]["skipped_sockets"] == {"count": 1, "paths": ["service.sock"]}
    assert snap["file_count"] == len(original)  # every entry but the socket, plus the root
    # No helper pod, no exec: the workload scaled down and back, marked, and nothing else.
    assert _writes(here) == [("PATCH", "deployments", "db"), ("PATCH", "deployments", "db")]
    assert _scalings(here) == [(0, True), (1, False)]  # down with the mark, back without
    assert here.execs.calls == []
    assert_scaled_back(here.kmock)

    _change(storage)
    changed = fidelity_tree.fingerprint(storage)
    assert fidelity_tree.differences(original, changed) != []
    restored = await run(cmd, "restore", snap["id"], "--yes", "--json")
    assert (
        f"\nWritten by       snapvol, here in {storage} (the claim's directory on this node)\n"
        in (restored.stderr)
    )
    done = json.loads(restored.stdout)
    assert (
        fidelity_tree.differences(_no_sockets(original), fidelity_tree.fingerprint(storage)) == []
    )
    assert done["reader"] == "host"
    assert done["safety_snapshot"]["meta"]["reader"] == "host"
    assert here.execs.calls == []
    assert [w for w in _writes(here) if w[1] == "pods"] == []
    assert _scalings(here) == [(0, True), (1, False)] * 2  # the restore's: the same
    assert_scaled_back(here.kmock)

    # The undo puts the changed tree back, as exactly (the safety copy was read here too).
    await run(cmd, "restore", done["safety_snapshot"]["id"], "--yes")
    assert fidelity_tree.differences(_no_sockets(changed), fidelity_tree.fingerprint(storage)) == []


@pytest.mark.asyncio
async def test_a_restore_that_fails_midway_is_rolled_back_here(
    cmd, here: Fake, controllers, storage: Path, monkeypatch: pytest.MonkeyPatch
):
    snap = await run_json(cmd, "snapshot", "--volume", "--workload", "deployment/db")
    _change(storage)
    before = _no_sockets(fidelity_tree.fingerprint(storage))

    # The disk fills up half-way through the restore's extraction (the directory emptied and
    # part of the snapshot written); the rollback's extraction is left alone.
    real_data = hosttar._Extractor.data
    writes = {"restore": 0, "extractions": 0}
    real_extract = hosttar.extract

    def counted_extract(*args: Any, **kwargs: Any) -> dict[str, str]:
        writes["extractions"] += 1
        return real_extract(*args, **kwargs)

    def filling_up(self: Any, view: memoryview, offset: int) -> None:
        if writes["extractions"] == 1:
            writes["restore"] += 1
            if writes["restore"] > 20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_data(self, view, offset)

    monkeypatch.setattr(hosttar, "extract", counted_extract)
    monkeypatch.setattr(hosttar._Extractor, "data", filling_up)
    result = await run(cmd, "restore", snap["id"], "--yes", exit_code=11)
    assert error_line(result) == (
        "Error: restoring claim pgdata failed (no space left in the volume while extracting "
        f"({storage})); what it held before was put back and checked"
    )
    assert writes == {"restore": 21, "extractions": 2}  # failed mid-way, then rolled back
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(storage)) == []
    assert here.execs.calls == []
    assert_scaled_back(here.kmock)


@pytest.mark.asyncio
async def test_auto_takes_a_helper_pod_when_the_data_is_on_another_node(
    cmd, here: Fake, controllers, storage: Path
):
    _volume_here(here, storage, node_name="node-a")  # the same directory, but node-a's
    snap = await run_json(cmd, "snapshot", "--volume", "--workload", "deployment/db")
    assert (snap["status"], snap["meta"]["reader"]) == ("complete", "pod")
    posted = [w for w in _writes(here) if w[1] == "pods"]
    assert posted == [("POST", "pods", None), ("DELETE", "pods", posted[1][2])]
    assert [call[2][0] for call in here.execs.calls if call[2][0] == "tar"] == ["tar"]
    assert_scaled_back(here.kmock)

    # Told that this machine is node-a, snapvol reads it here (and so does its variable).
    calls = len(here.execs.calls)
    again = await run_json(
        cmd, "snapshot", "--volume", "--workload", "deployment/db", "--node-name", "node-a"
    )
    assert again["meta"]["reader"] == "host"
    assert len(here.execs.calls) == calls


@pytest.mark.asyncio
async def test_the_lane_can_be_forced(cmd, here: Fake, controllers, storage: Path, monkeypatch):
    # GNU tar in the helper pod does not extract a path beyond PATH_MAX: out of this tree.
    shutil.rmtree(storage / fidelity_tree.DEEP_NAME.decode())
    snap = await run_json(
        cmd, "snapshot", "--volume", "--workload", "deployment/db", "--kube-lane", "pod"
    )
    assert snap["meta"]["reader"] == "pod"
    assert any(call[2][0] == "tar" for call in here.execs.calls)
    monkeypatch.setenv("SNAPVOL_KUBE_LANE", "pod")
    restored = await run(cmd, "restore", snap["id"], "--yes", "--json")
    assert f"\nWritten by       a helper pod on node {HERE}\n" in restored.stderr
    done = json.loads(restored.stdout)
    assert done["reader"] == "pod"
    monkeypatch.setenv("SNAPVOL_KUBE_LANE", "host")
    snap = await run_json(cmd, "snapshot", "--volume", "--workload", "deployment/db")
    assert snap["meta"]["reader"] == "host"


def _as_tar_carries(prints: dict[bytes, dict]) -> dict[bytes, dict]:
    """What GNU tar in a helper pod carries of each entry: no extended attributes, no holes,
    times in whole seconds."""
    out = {}
    for key, entry in _no_sockets(prints).items():
        kept = {k: v for k, v in entry.items() if k not in ("xattrs", "blocks")}
        kept["mtime_ns"] = entry["mtime_ns"] // 10**9
        out[key] = kept
    return out


@pytest.mark.asyncio
@pytest.mark.parametrize(("taken_by", "written_by"), [("pod", "host"), ("host", "pod")])
async def test_a_snapshot_one_lane_took_is_restored_by_the_other(
    cmd, here: Fake, controllers, storage: Path, taken_by: str, written_by: str
):
    """tar in the pod and the host lane name a hard-link group's file differently (the order
    each walks the tree in): the read-back compares the groups, not which name came first."""
    shutil.rmtree(storage / fidelity_tree.DEEP_NAME.decode())  # beyond GNU tar's extraction
    original = _as_tar_carries(fidelity_tree.fingerprint(storage))
    args = ["--workload", "deployment/db", "--kube-lane"]
    snap = await run_json(cmd, "snapshot", "--volume", *args, taken_by)
    firsts = {m["path"] for m in await _files(cmd, snap["id"]) if m["type"] == "file"}
    assert len({"big.bin", "hard-1", "sub/hard-2"} & firsts) == 1
    _change(storage)
    done = await run_json(cmd, "restore", snap["id"], "--yes", *args, written_by)
    assert done["reader"] == written_by
    got = _as_tar_carries(fidelity_tree.fingerprint(storage))
    assert fidelity_tree.differences(original, got) == []
    assert_scaled_back(here.kmock)


async def _files(cmd, snap_id: str) -> list[dict[str, Any]]:
    shown = await run_json(cmd, "show", snap_id, "--files")
    files: list[dict[str, Any]] = shown["files"]
    return files


@pytest.mark.asyncio
@pytest.mark.parametrize("command", ["snapshot", "restore"])
async def test_host_forced_where_it_cannot_be_is_refused_before_anything_changes(
    cmd, here: Fake, controllers, storage: Path, command: str
):
    snap = await run_json(cmd, "snapshot", "--volume", "--workload", "deployment/db")
    _volume_here(here, storage, node_name="node-a")
    before = _writes(here)
    args = ["snapshot", "--volume", "--workload", "deployment/db"]
    if command == "restore":
        args = ["restore", snap["id"], "--yes"]
    result = await run(cmd, *args, "--kube-lane", "host", exit_code=11)
    verb = "read" if command == "snapshot" else "written"
    assert error_line(result) == (
        f"Error: claim pgdata cannot be {verb} on this node: its volume pvc-1234 is on node "
        f"node-a and this machine is node {HERE}; nothing was changed (retry with --kube-lane "
        "pod or --node-name NAME)"
    )
    assert _writes(here) == before
    assert [s["id"] for s in await run_json(cmd, "ls")] == [snap["id"]]  # nothing recorded
    assert deployment_now(here.kmock)["spec"]["replicas"] == 1


@pytest.mark.asyncio
async def test_the_lane_options_go_with_a_workloads_volume(cmd, here: Fake):
    result = await run(cmd, "snapshot", "--volume", "--kube-lane", "host", exit_code=2)
    assert error_line(result) == "Error: --kube-lane goes with --workload"
    result = await run(
        cmd, "snapshot", "--logical", "--workload", "deployment/db", "--node-name", "x", exit_code=2
    )
    assert error_line(result) == "Error: --node-name goes with --volume"
    assert _writes(here) == []


# --- the choice itself ---------------------------------------------------------------------------


def _target(path: str | None, node_name: str | None) -> ClaimTarget:
    workload = Workload("deployment", "db", NS, 1, {})
    return ClaimTarget(
        workload, "pgdata", "data", "/data", "img", "pg", None, ("ReadWriteOnce",),
        "pvc-1234", node_name, path, (None, None),
    )  # fmt: skip


def test_why_the_host_lane_cannot_serve_a_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    d = str(tmp_path)
    assert node.why_not_here(_target(d, HERE), None, writing=True) is None
    assert node.why_not_here(_target(None, HERE), None, writing=False) == (
        "its volume pvc-1234 is not a hostPath or local volume (no directory on a node)"
    )
    assert node.why_not_here(_target(d, None), None, writing=False) == (
        "its volume pvc-1234 is tied to no node, so its directory may be on any"
    )
    assert node.why_not_here(_target(d, "node-x"), "node-x", writing=False) is None
    assert "is on node node-x and this machine is node" in str(
        node.why_not_here(_target(d, "node-x"), None, writing=False)
    )
    assert node.why_not_here(_target(d + "/nope", HERE), None, writing=False) == (
        f"its directory {d}/nope is not a directory on this machine"
    )
    (tmp_path / "file").write_text("")
    assert node.why_not_here(_target(d + "/file", HERE), None, writing=False) is not None
    assert node.why_not_here(_target("relative/dir", HERE), None, writing=False) is not None
    monkeypatch.setattr(node.os, "access", lambda path, mode: mode != os.W_OK)
    assert node.why_not_here(_target(d, HERE), None, writing=False) is None
    assert node.why_not_here(_target(d, HERE), None, writing=True) == (
        f"its directory {d} cannot be written here (read-only?)"
    )
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    assert node.why_not_here(_target(d, HERE), None, writing=False) == (
        "snapvol does not run as root here"
    )


def test_the_choice_by_lane(tmp_path: Path):
    here, there = _target(str(tmp_path), HERE), _target(str(tmp_path), "node-x")
    assert node.host_directory(here, "auto", None) == tmp_path
    assert node.host_directory(here, "host", None, writing=True) == tmp_path
    assert node.host_directory(here, "pod", None) is None
    assert node.host_directory(there, "auto", None) is None
    with pytest.raises(OperationFailed) as err:
        node.host_directory(there, "host", None)
    assert err.value.retry_with == {"kube_lane": "pod", "node_name": ""}
    no_dir = dataclasses.replace(here, host_path=None)
    with pytest.raises(OperationFailed) as err:
        node.host_directory(no_dir, "host", None)
    assert err.value.retry_with == {"kube_lane": "pod"}  # no node name would help
    assert node.this_node("Given") == "Given"
    assert node.this_node() == HERE
