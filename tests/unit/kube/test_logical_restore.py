"""`snapvol restore` of a workload's logical snapshot, on the command line: which pod it goes to,
what it refuses before anything runs (the exec plumbing it runs on: test_podexec).

AGAINST AN API FAKE, NOT A CLUSTER: the API calls go to kmock (see conftest), and each exec in
the workload's pod runs here, through the channel interface the client's exec websocket
offers, with the real ``sh`` wrapper snapvol sends and stand-ins for psql, pg_dump and
pg_restore (shell scripts that log what they were given). A restore that reaches PostgreSQL is
tested against a real server in tests/integration/test_kube_logical.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import kmock as km
import pytest

from snapvol.adapters.store import Store
from snapvol.cli import kube_target
from snapvol.kube.client import Kube
from snapvol.kube.scale import ANNOTATION
from tests.unit.kube.conftest import (
    DEPLOYMENTS,
    NS,
    PODS,
    LocalChannel,
    deployment,
    make_kube,
    pod,
)

pytestmark = pytest.mark.asyncio

# A psql session as snapvol's PsqlSession holds one: statements on stdin, each followed by an
# \\echo of a marker, which it prints back once the statement's rows (here: a version, an
# exported snapshot's id, no tables) are out.
PSQL_SESSION = r"""while IFS= read -r line; do
  case "$line" in
    *"SHOW server_version"*) echo 15.6 ;;
    *"pg_export_snapshot()"*) echo 00000003-0000001B-1 ;;
    '\echo '*) printf '%s\n' "${line#\\echo }" ;;
  esac
done
"""
# The stand-ins log "tool <TAB> PGAPPNAME <TAB> args" to $FAKE_LOG; pg_restore keeps its stdin.
FAKES = {
    "psql": 'printf "psql\\t%s\\t%s\\n" "${PGAPPNAME:-}" "$*" >> "$FAKE_LOG"\n' + PSQL_SESSION,
    "pg_dump": 'printf "pg_dump\\t%s\\t%s\\n" "${PGAPPNAME:-}" "$*" >> "$FAKE_LOG"\n'
    'cat "$FAKE_DUMP"\n',
    "pg_restore": 'printf "pg_restore\\t%s\\t%s\\n" "${PGAPPNAME:-}" "$*" >> "$FAKE_LOG"\n'
    'cat > "$FAKE_STDIN"\n'
    'echo "pg_restore: error: input file does not appear to be a valid archive" >&2; exit 1\n',
}
# Binary, with empty lines and a NUL: what follows the variables on stdin must arrive intact.
DUMP = b"PGDMP\x01\x0e\x00\n\n=not a variable\n" + bytes(range(256)) * 64


class PodHere:
    """``Kube.exec`` run on this host, the stand-ins first on PATH."""

    def __init__(self, bin_dir: Path, env: dict[str, str]) -> None:
        self.path = f"{bin_dir}:{os.environ['PATH']}"
        self.env = env
        self.calls: list[tuple[str, str | None, list[str]]] = []
        self.subprotocol: str | None = None  # what the channel says it speaks (None: not said)

    def __call__(
        self,
        name: str,
        namespace: str,
        command: list[str],
        *,
        stdin: bool = False,
        container: str | None = None,
    ) -> LocalChannel:
        self.calls.append((name, container, command))
        env = [f"{k}={v}" for k, v in {**self.env, "PATH": self.path}.items()]
        channel = LocalChannel(["env", "-i", *env, *command], stdin=stdin)
        if self.subprotocol is not None:
            channel.subprotocol = self.subprotocol  # type: ignore[attr-defined]
            if self.subprotocol != "v5.channel.k8s.io":
                # As the client's websocket before v5: closing stdin is not possible (a no-op).
                channel.close_channel = lambda _channel: None  # type: ignore[method-assign]
        return channel


@pytest.fixture
def here(cluster: km.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in FAKES.items():
        script = bin_dir / tool
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "dump").write_bytes(DUMP)
    found = PodHere(
        bin_dir,
        {
            "FAKE_LOG": str(tmp_path / "log"),
            "FAKE_DUMP": str(tmp_path / "dump"),
            "FAKE_STDIN": str(tmp_path / "stdin"),
        },
    )

    def connect(kubeconfig: Path | None, context: str | None, namespace: str | None) -> Kube:
        kube = make_kube(cluster)
        kube.namespace = namespace or NS
        kube.context = context or "kmock"
        kube.exec = found  # type: ignore[method-assign]
        return kube

    monkeypatch.setattr(kube_target, "connect_cluster", connect)
    return found


async def run(cmd: Any, *args: str, exit_code: int = 0) -> Any:
    return await asyncio.to_thread(cmd, *args, exit_code=exit_code)


def logged(tmp_path: Path) -> list[list[str]]:
    return [line.split("\t") for line in (tmp_path / "log").read_text().splitlines()]


async def dumped(cmd: Any, here: PodHere) -> dict[str, Any]:
    """A workload's logical snapshot, recorded as snapvol recorded one before it counted the
    tables' rows there: with none, a restore reads a custom-format dump whole in the pod first
    (what these tests watch; the stand-ins cannot restore, a real server's tests do)."""
    result = await run(cmd, "snapshot", "--logical", "--workload", "deployment/db", "--json")
    snap = json.loads(result.stdout)
    assert snap["meta"]["tables"] == {}  # counted (the stand-in psql has no tables)
    meta = {k: v for k, v in snap["meta"].items() if k not in ("tables", "rows")}
    store = Store.open(Path(os.environ["SNAPVOL_DB"]))
    try:
        store.update(snap["id"], meta_json=json.dumps({**meta, "rows_counted": False}))
    finally:
        store.close()
    here.calls.clear()
    return snap  # type: ignore[no-any-return]


def error_line(result: Any) -> str:
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    return line


async def test_the_dump_is_checked_in_the_recorded_workloads_pod_first(
    cmd, cluster, here: PodHere, tmp_path: Path
):
    snap = await dumped(cmd, here)
    (tmp_path / "log").unlink()
    result = await run(cmd, "restore", snap["id"], "--yes", exit_code=7)
    assert error_line(result) == (
        f"Error: {Path(snap['path']).name} is not readable by pg_restore --list: "
        "error: input file does not appear to be a valid archive"
    )
    # The snapshot's workload, found from its record: its running pod, its postgres container.
    assert {(name, container) for name, container, _ in here.calls} == {("db-5d8f-x2x", "postgres")}
    # pg_restore read the whole dump, byte for byte, after the variables snapvol sent first.
    assert (tmp_path / "stdin").read_bytes() == DUMP
    [(tool, app, args)] = logged(tmp_path)
    assert (tool, app, args) == ("pg_restore", "snapvol", "--list")
    # Nothing else ran: no database was created, no psql was started.
    assert cluster.objects[DEPLOYMENTS, NS, "db"]["spec"]["replicas"] == 1


async def test_workload_names_another_target(cmd, cluster, here: PodHere, tmp_path: Path):
    cluster.objects[DEPLOYMENTS, NS, "db2"] = deployment("db2", claim="pgdata2")
    cluster.objects[PODS, NS, "db2-7c-q"] = pod(
        "db2-7c-q", "pgdata2", {"app": "db2"}, ("ReplicaSet", "db2-7c")
    )
    snap = await dumped(cmd, here)
    await run(cmd, "restore", snap["id"], "--workload", "deploy/db2", "--yes", exit_code=7)
    assert {name for name, _, _ in here.calls} == {"db2-7c-q"}


async def test_a_cluster_that_cannot_end_stdin_is_refused_before_anything_runs(
    cmd, cluster, here: PodHere, tmp_path: Path
):
    snap = await dumped(cmd, here)
    (tmp_path / "log").unlink()
    here.subprotocol = "v4.channel.k8s.io"
    result = await run(cmd, "restore", snap["id"], "--yes", exit_code=8)
    assert "speaks exec protocol v4.channel.k8s.io, not v5.channel.k8s.io" in error_line(result)
    assert error_line(result).endswith("nothing was changed")
    assert not (tmp_path / "log").exists()
    assert [s["id"] for s in json.loads((await run(cmd, "ls", "--json")).stdout)] == [snap["id"]]


async def test_a_cluster_without_protocol_v5_still_takes_logical_snapshots(
    cmd, cluster, here: PodHere, tmp_path: Path
):
    """A logical snapshot never needs a command's input to end (its psql session is ended by
    closing the stream, its read-only transaction rolled back; pg_dump reads nothing): a cluster
    that speaks only v4 (Kubernetes 1.28, 1.29 without its feature gate, a proxy that offers
    v4) took them before 6ee93e0 and still must. Only a restore needs v5."""
    import zstandard

    here.subprotocol = "v4.channel.k8s.io"
    result = await run(cmd, "snapshot", "--logical", "--workload", "deploy/db", "--json")
    snap = json.loads(result.stdout)
    assert snap["status"] == "complete" and snap["meta"]["tables"] == {}
    with open(snap["path"], "rb") as archive:
        assert zstandard.ZstdDecompressor().stream_reader(archive).read() == DUMP
    result = await run(cmd, "restore", snap["id"], "--yes", exit_code=8)
    assert "speaks exec protocol v4.channel.k8s.io, not v5.channel.k8s.io" in error_line(result)


async def test_refusals(cmd, cluster, here: PodHere, tmp_path: Path):
    snap = await dumped(cmd, here)
    for args, said in (
        (["--container", "pg"], "--container goes with a container's"),
        (["--helper-image", "x"], "--helper-image goes with a container's"),
        (["--pod", "p"], "--pod and --claim go with volume snapshots"),
        (["--stop-timeout", "3"], "--stop-timeout goes with volume snapshots"),
        (["--kube-lane", "host"], "--kube-lane goes with a volume snapshot's restore"),
        (["--node-name", "n1"], "--node-name goes with a volume snapshot's restore"),
    ):
        result = await run(cmd, "restore", snap["id"], *args, "--yes", exit_code=2)
        assert said in error_line(result), args
    dump = tmp_path / "x.sql"
    dump.write_text("SELECT 1;\n")
    result = await run(cmd, "restore", "--file", str(dump), "--namespace", "x", exit_code=2)
    assert "--namespace goes with --workload" in error_line(result)
    result = await run(
        cmd, "restore", "--file", str(dump), "--workload", "deploy/db", "--pod", "p", exit_code=2
    )
    assert "--pod and --claim go with volume snapshots" in error_line(result)
    assert here.calls == []

    # No running pod: nothing to run pg_restore in.
    cluster.objects[PODS, NS, "db-5d8f-x2x"]["status"] = {"phase": "Pending"}
    result = await run(cmd, "restore", snap["id"], "--yes", exit_code=11)
    assert "deployment shop/db has no running pod" in error_line(result)
    assert here.calls == []


async def test_a_workload_marked_by_a_cold_copy_is_refused(cmd, cluster, here: PodHere):
    snap = await dumped(cmd, here)
    left = deployment()
    mark = {
        "replicas": 1,
        "scaled_to": 0,
        "operation": "0123456789ab",
        "host": socket.gethostname(),
        "pid": os.getpid(),  # alive: a run in progress
        "at": "2026-12-04T16:00:00Z",
    }
    left["metadata"]["annotations"] = {ANNOTATION: json.dumps(mark)}
    cluster.objects[DEPLOYMENTS, NS, "db"] = left
    result = await run(cmd, "restore", snap["id"], "--yes", exit_code=9)
    assert "is being worked on by snapvol" in error_line(result)
    assert here.calls == []
