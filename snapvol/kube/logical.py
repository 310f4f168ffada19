"""Logical snapshots of a workload's PostgreSQL: ``pg_dump`` in its running pod, through the API.

The workload keeps running (no scaling, no helper pod). The container snapshot's own code
(``snapvol.pg.logical.snapshot_logical``) does all of it, through the API's exec stream instead
of ``docker exec`` (``podexec.PodExec``, as a restore into the pod does): a psql session in the
PostgreSQL container of one of its running pods opens a REPEATABLE READ transaction, exports its
snapshot and counts every table's rows in it while ``pg_dump --snapshot`` dumps that same state,
so the recorded counts match the dump exactly. Both run as that container's own user over its
local socket (the password, when the server wants one, is read from the container's own
environment, inside it: it never reaches snapvol); pg_dump's stdout arrives through the exec
stream into the archive pipeline, hashed on this side, and its exit status is required: a dump
that ended short is never recorded complete. ``snapvol restore`` restores these
(``logical_restore``).

Snapshots taken before row counts were recorded here say ``rows_counted: false``; a restore
reads those whole with ``pg_restore`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from snapvol.adapters.engine import ContainerInfo, Engine
from snapvol.adapters.store import Snapshot, Store
from snapvol.errors import OperationFailed, UsageError
from snapvol.kube.claims import Workload, claims_of, owned_by
from snapvol.kube.client import Kube
from snapvol.kube.podexec import PodExec
from snapvol.kube.records import META, SOURCE, WorkloadSource, claim_key, source_name
from snapvol.options import SnapshotOptions
from snapvol.output import Reporter
from snapvol.pg import logical as pg_logical
from snapvol.pg import pgexec
from snapvol.pg.dumpfile import CUSTOM
from snapvol.pg.pgexec import PgTarget
from snapvol.workspace import Workspace

# The role and database: given, else the container's POSTGRES_USER and POSTGRES_DB (as the
# official image sets them up).
_NAMES = 'U="${1:-${POSTGRES_USER:-postgres}}"; printf "%s\\n%s\\n" "$U" "${2:-${POSTGRES_DB:-$U}}"'


def workload_key(kube: Kube, workload: Workload) -> str:
    """A workload's lock key (a logical dump's; a cold copy locks its claim)."""
    return claim_key(kube.server, workload.namespace, f"{workload.kind}/{workload.name}")


@dataclass(frozen=True)
class DumpTarget:
    workload: Workload
    pod: str  # a running replica
    container: str  # its container that runs PostgreSQL
    image: str


def _container(workload: Workload) -> tuple[str, str]:
    """The pod template's PostgreSQL container (name, image): the one that mounts a claim, else
    the one whose image or name says postgres."""
    containers = workload.template.get("containers") or []
    volumes = set(claims_of(workload.template))
    mounting = [
        c for c in containers if any(m.get("name") in volumes for m in c.get("volumeMounts") or [])
    ]
    named = [c for c in containers if "postgres" in f"{c.get('name')} {c.get('image')}".lower()]
    for found in (mounting, named):
        if len(found) == 1:
            return str(found[0].get("name", "")), str(found[0].get("image", ""))
    raise UsageError(
        f"cannot tell which container of {workload.describe()} runs PostgreSQL "
        f"({', '.join(str(c.get('name')) for c in containers) or 'none'})"
    )


def find(kube: Kube, workload: Workload) -> DumpTarget:
    """A running pod of ``workload`` (a StatefulSet's lowest ordinal: its primary, as a
    replicated set names it) and its PostgreSQL container."""
    running = [
        pod
        for pod in kube.pods(workload.namespace)
        if owned_by(pod, workload)
        and pod.get("status", {}).get("phase") == "Running"
        and not pod.get("metadata", {}).get("deletionTimestamp")
    ]
    if not running:
        raise OperationFailed(
            f"{workload.describe()} has no running pod: pg_dump runs in one (a cold copy of "
            "its claim, --volume, does not need it to run)"
        )
    pod = sorted(running, key=lambda p: str(p.get("metadata", {}).get("name", "")))[0]
    container, image = _container(workload)
    return DumpTarget(workload, str(pod["metadata"]["name"]), container, image)


def source_of(kube: Kube, target: DumpTarget) -> WorkloadSource:
    """The workload as ``lifecycle.begin`` records a logical snapshot's source."""
    workload = target.workload
    return WorkloadSource(
        id=workload_key(kube, workload),
        name=source_name(workload.namespace, workload.kind, workload.name),
        image=target.image,
    )


def recorded_meta(kube: Kube, target: DumpTarget) -> dict[str, object]:
    """What a logical snapshot of a workload records of where it was taken (its safety
    snapshots' too): what ``snapvol restore`` finds the workload by."""
    workload = target.workload
    return {
        "source": SOURCE,
        META: {
            "context": kube.context,
            "server": kube.server,
            "namespace": workload.namespace,
            "workload_kind": workload.kind,
            "workload": workload.name,
            "pod": target.pod,
            "container": target.container,
            "image": target.image,
        },
    }


@dataclass(frozen=True)
class PodTarget:
    """A database of a workload's PostgreSQL, as ``snapvol.pg`` works on one."""

    dump: DumpTarget  # the running pod and its PostgreSQL container
    ws: Workspace  # whose engine runs commands in that container
    pg: PgTarget


def in_pod(
    kube: Kube,
    dump: DumpTarget,
    store: Store,
    backup_dir: Path,
    reporter: Reporter,
    *,
    database: str | None = None,
    user: str | None = None,
    ends_input: bool = True,
) -> PodTarget:
    """``database`` in the pod, as ``user`` (defaults: its POSTGRES_DB and POSTGRES_USER).
    ``ends_input=False`` (a snapshot: nothing it runs needs its input to end) also works on a
    cluster without exec protocol v5."""
    engine = PodExec(kube, dump.pod, dump.workload.namespace, dump.container, ends_input=ends_input)
    code, out, err = engine.exec_run(
        "", ["sh", "-c", _NAMES, "snapvol", user or "", database or ""]
    )
    names = out.decode("utf-8", "replace").splitlines()
    if code != 0 or len(names) != 2:
        raise OperationFailed(
            f"cannot read POSTGRES_USER and POSTGRES_DB in pod {dump.pod}: "
            f"{pgexec.pg_message(err.decode('utf-8', 'replace'))}"
        )
    user, database = names
    pgexec.check_names(database, user)
    source = source_of(kube, dump)
    # What the records and messages name (the workload, as its snapshots do): commands go to
    # the pod whatever the id, which only keys a container's facts (has_zstd).
    info = ContainerInfo(
        id=source.id,
        name=source.name,
        image=dump.image,
        image_id="",
        status="running",
        mounts=(),
        labels={},
        cmd=(),
        entrypoint=(),
        health=None,
        _env={},
    )
    # snapvol.pg asks of its engine exec_run and exec_stream only, which PodExec offers.
    ws = Workspace(cast(Engine, engine), store, backup_dir, reporter)
    return PodTarget(dump, ws, PgTarget(info, database, user))


def snapshot(
    kube: Kube, target: PodTarget, options: SnapshotOptions, fmt: str = CUSTOM
) -> Snapshot:
    """pg_dump the target's database in the running pod, with its tables' row counts; the
    snapshot recorded complete once the dump arrived whole and pg_dump exited 0."""
    return pg_logical.snapshot_logical(
        target.ws,
        target.pg,
        options,
        pg_logical.DumpOptions(fmt),
        meta=recorded_meta(kube, target.dump),
    )
