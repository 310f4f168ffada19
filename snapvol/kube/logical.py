"""Logical snapshots of a workload's PostgreSQL: ``pg_dump`` in its running pod, through the API.

The workload keeps running (no scaling, no helper pod): ``pg_dump`` runs in the container of one
of its running pods, as that container's own user over its local socket (the password, when
the server wants one, is read from the container's own environment, inside it: it never
reaches snapvol), and its stdout arrives through the exec stream (``execstream``) into the
archive pipeline, compressed and hashed on this side. Its exit status is required: a dump that
ended short is never recorded complete.

Unlike a container's logical snapshot, no row counts are recorded: the Docker path counts them
in a psql session that holds the dump's exported snapshot, which an exec stream cannot hold
open beside pg_dump here. ``snapvol restore`` restores these (``logical_restore``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from snapvol import lifecycle
from snapvol.adapters.store import Snapshot, Store
from snapvol.errors import OperationFailed, UsageError
from snapvol.kube.claims import Workload, claims_of, owned_by
from snapvol.kube.client import Kube
from snapvol.kube.execstream import ExecOutput
from snapvol.kube.records import META, SOURCE, WorkloadSource, claim_key, source_name
from snapvol.options import SnapshotOptions
from snapvol.output import Reporter
from snapvol.pg import pgexec
from snapvol.pg.dumpfile import CUSTOM
from snapvol.pipeline import archive

KIND = "logical"  # pg.logical.KIND (not imported: it brings the Docker adapter)
SUFFIXES = {CUSTOM: ".dump.zst", "plain": ".sql.zst"}

# The role and database (given, else the container's POSTGRES_USER and POSTGRES_DB, as the
# official image sets them up), then the server's version.
_INFO = (
    'U="${1:-${POSTGRES_USER:-postgres}}"; D="${2:-${POSTGRES_DB:-$U}}"; '
    'printf "%s\\n%s\\n" "$U" "$D"; '
    'exec psql -X -A -t -v ON_ERROR_STOP=1 -U "$U" -d "$D" -c "SHOW server_version"'
)


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


def _run(kube: Kube, target: DumpTarget, argv: list[str], what: str) -> ExecOutput:
    channel = kube.exec(target.pod, target.workload.namespace, argv, container=target.container)
    return ExecOutput(channel, what)


def snapshot(
    store: Store,
    backup_dir: Path,
    kube: Kube,
    target: DumpTarget,
    options: SnapshotOptions,
    reporter: Reporter,
    *,
    database: str | None = None,
    user: str | None = None,
    fmt: str = CUSTOM,
) -> Snapshot:
    """pg_dump ``database`` (default: the container's POSTGRES_DB) in the running pod; the
    snapshot recorded complete once the dump arrived whole and pg_dump exited 0."""
    started = time.monotonic()
    where = f"pod {target.pod}, container {target.container}"
    info = b"".join(
        _run(kube, target, ["sh", "-c", _INFO, "snapvol", user or "", database or ""], where)
    )
    lines = info.decode("utf-8", "replace").splitlines()
    if len(lines) < 3:
        raise OperationFailed(f"psql in {where} did not say the server's version")
    role, dbname, version = lines[0], lines[1], lines[2].strip()
    dump = ["pg_dump", "-U", role, "-d", dbname]
    dump += ["--format=custom", "--compress=0"] if fmt == CUSTOM else ["--format=plain"]
    began = lifecycle.begin(
        store,
        backup_dir,
        source_of(kube, target),
        kind=KIND,
        name=options.name,
        volume=None,
        suffix=SUFFIXES[fmt],
        meta={
            **recorded_meta(kube, target),
            "user": role,
            "level": options.level,
            "server_version": version,
            "compressed_in": "host",
            "rows_counted": False,
        },
        database=dbname,
        format=fmt,
    )
    with lifecycle.recorded(store, began) as snap:
        reporter.step(f"dumping database {dbname} in {where} ({fmt})")
        output = _run(kube, target, pgexec.shell(dump), f"pg_dump in {where}")
        with reporter.transfer("dumping", None) as advance:
            result = archive.write_compressed(
                output, Path(snap.path), level=options.level, progress=advance
            )
        return lifecycle.complete_dump(store, snap, result, time.monotonic() - started, version)
