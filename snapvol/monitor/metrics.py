"""The store as Prometheus metrics, in node_exporter's textfile format.

Every value comes from the manifest store (so a metrics file can always be made again from it),
except the outcome of each command's last run, which only this file remembers: it is read back
from the previous file and carried forward. The file is replaced atomically (written beside it,
then renamed), so node_exporter never reads half of one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from snapvol.adapters.store import COMPLETE, FAILED, Snapshot, Store, as_utc
from snapvol.retention import is_safety, is_suspect, source_of

PREFIX = "snapvol"
_HELP = {
    "last_success_timestamp_seconds": "When the newest good snapshot of the source was taken.",
    "last_duration_seconds": "How long the newest complete snapshot took.",
    "last_size_bytes": "The newest complete snapshot's archive size.",
    "last_raw_bytes": "The newest complete snapshot's data, uncompressed.",
    "last_downtime_seconds": "How long the newest complete snapshot stopped the service.",
    "last_snapshot_suspect": "1 when the newest snapshot is flagged empty or much smaller.",
    "snapshots": "Snapshots recorded, by status.",
    "last_failure_timestamp_seconds": "When the newest failed snapshot of the source was taken.",
    "last_copy_timestamp_seconds": "When the newest complete copy of the source's snapshots ended.",
    "last_verify_ok": "1 when the newest verified snapshot of the source passed `snapvol verify`.",
    "last_drill_ok": "1 when the source's last restore drill passed.",
    "last_drill_timestamp_seconds": "When the source's last restore drill ended.",
    "last_run_success": "1 when the command's last run succeeded.",
    "last_run_timestamp_seconds": "When the command last ran.",
}
_RUN_LINE = re.compile(
    rf'^{PREFIX}_last_run_(success|timestamp_seconds)\{{command="([a-z-]+)"\}} (\S+)$'
)


@dataclass(frozen=True)
class Run:
    """A command's run: its name, whether it succeeded, when it ended (Unix time)."""

    command: str
    ok: bool
    at: float


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _ts(when: datetime) -> float:
    return as_utc(when).timestamp()


def previous_runs(text: str) -> dict[str, Run]:
    """The last runs of each command a metrics file written by ``render`` records."""
    found: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _RUN_LINE.match(line)
        if m:
            found.setdefault(m[2], {})[m[1]] = float(m[3])
    return {
        cmd: Run(cmd, bool(v.get("success")), v.get("timestamp_seconds", 0.0))
        for cmd, v in found.items()
    }


def render(store: Store | None, runs: Mapping[str, Run]) -> str:
    """Every metric, one family after the other, each with its HELP and TYPE (``store`` None:
    there is none yet, only the runs are known)."""
    families: dict[str, list[str]] = {name: [] for name in _HELP}

    def add(name: str, labels: str, value: float) -> None:
        text = str(int(value)) if float(value).is_integer() else repr(float(value))
        families[name].append(f"{PREFIX}_{name}{labels} {text}")

    by_source: dict[tuple[str, str, str], list[Snapshot]] = {}
    for snap in store.snapshots() if store is not None else []:  # newest first
        if is_safety(snap):
            continue  # a restore's own: not the schedule's health
        src = source_of(snap)
        by_source.setdefault((src.container, src.kind, src.item), []).append(snap)
    newest_copy: dict[str, float] = {}
    for copy in store.copies(status=COMPLETE) if store is not None else []:
        if copy.completed_at is not None:
            at = _ts(copy.completed_at)
            newest_copy[copy.snapshot_id] = max(at, newest_copy.get(copy.snapshot_id, 0.0))
    drills = store.last_drills() if store is not None else {}
    for (container, kind, item), snaps in sorted(by_source.items()):
        labels = _labels(container=container, kind=kind, source=item)
        counts: dict[str, int] = {}
        for s in snaps:
            counts[s.status] = counts.get(s.status, 0) + 1
        for status, n in sorted(counts.items()):
            add("snapshots", _labels(container=container, kind=kind, source=item, status=status), n)
        newest = next((s for s in snaps if s.status == COMPLETE), None)
        if newest is not None:
            add("last_snapshot_suspect", labels, 1 if is_suspect(newest) else 0)
        good = next((s for s in snaps if s.status == COMPLETE and not is_suspect(s)), None)
        if good is not None:
            add("last_success_timestamp_seconds", labels, _ts(good.created_at))
            add("last_duration_seconds", labels, good.duration_s or 0.0)
            add("last_size_bytes", labels, good.size_bytes or 0)
            add("last_raw_bytes", labels, good.raw_bytes or 0)
            if good.downtime_s is not None:
                add("last_downtime_seconds", labels, good.downtime_s)
        failed = next((s for s in snaps if s.status == FAILED), None)
        if failed is not None:
            add("last_failure_timestamp_seconds", labels, _ts(failed.created_at))
        copied = [newest_copy[s.id] for s in snaps if s.id in newest_copy]
        if copied:
            add("last_copy_timestamp_seconds", labels, max(copied))
        drilled = [drills[s.id] for s in snaps if s.id in drills]
        if drilled:
            last = max(drilled, key=lambda d: as_utc(d.finished_at or d.started_at))
            add("last_drill_ok", labels, 1 if last.ok else 0)
            add("last_drill_timestamp_seconds", labels, _ts(last.finished_at or last.started_at))
        verified = next((s for s in snaps if s.verified_at is not None), None)
        if verified is not None:
            add("last_verify_ok", labels, 1 if verified.verify_ok else 0)
    for run in sorted(runs.values(), key=lambda r: r.command):
        add("last_run_success", _labels(command=run.command), 1 if run.ok else 0)
        add("last_run_timestamp_seconds", _labels(command=run.command), run.at)
    return "".join(_family(name, lines) for name, lines in families.items() if lines)


def _family(name: str, lines: Iterable[str]) -> str:
    head = f"# HELP {PREFIX}_{name} {_HELP[name]}\n# TYPE {PREFIX}_{name} gauge\n"
    return head + "".join(f"{line}\n" for line in lines)


def write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; readable by all (node_exporter runs as its
    own user): metrics hold names and numbers, no secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def update(path: Path, store: Store | None, run: Run) -> None:
    """Write the metrics file at ``path`` with ``run`` as its command's last run."""
    try:
        old = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        old = ""
    runs = {**previous_runs(old), run.command: run}
    write(path, render(store, runs))
