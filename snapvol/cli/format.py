"""How snapshots, plans and results look to people: tables and one-line summaries."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.markup import escape
from rich.text import Text

from snapvol.adapters.restic import display_location
from snapvol.adapters.store import COMPLETE, FAILED, Copy, Drill, Snapshot, as_utc
from snapvol.output import human_bytes
from snapvol.pipeline.members import Member
from snapvol.retention import Decision, source_of

if TYPE_CHECKING:  # imported when a restore runs, not for every command
    from snapvol.pg.logical_restore import LogicalRestorePlan, LogicalRestoreResult
    from snapvol.volume.restore import VolumeRestorePlan, VolumeRestoreResult


def local_time(value: datetime, seconds: bool = True) -> str:
    """The time in this machine's zone, which it names (``2026-12-03 19:07:26 UTC``)."""
    return as_utc(value).astimezone().strftime(f"%Y-%m-%d %H:%M{':%S' if seconds else ''} %Z")


class Fields:
    """Labelled rows (a record, a plan): labels bold and aligned, a long value wrapped under
    itself on a terminal, and no trailing spaces (rich's Table pads every row to the widest)."""

    def __init__(self) -> None:
        self.rows: list[tuple[Text, Text]] = []

    def add_row(self, label: str, value: str | Text) -> None:
        """``label``, and ``value`` when a str, are rich markup; a Text is data, kept as it is."""
        shown = value if isinstance(value, Text) else Text.from_markup(value)
        self.rows.append((Text.from_markup(label, style="bold"), shown))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        indent = max((label.cell_len for label, _ in self.rows), default=0) + 2
        room = max(options.max_width - indent, 20) if console.is_terminal else None
        for label, value in self.rows:
            lines = value.wrap(console, room) if room is not None else [value]
            for n, line in enumerate(lines):
                out = Text(no_wrap=True, overflow="ignore")
                out.append_text(label if n == 0 else Text())
                out.append(" " * (indent - (label.cell_len if n == 0 else 0)))
                out.append_text(line)
                out.rstrip()
                yield out


def snapshot_summary(snap: Snapshot) -> str:
    """What was made, how big, how fast, how long the service was down; where it is."""
    ratio = (snap.raw_bytes or 0) / snap.size_bytes if snap.size_bytes else 0.0
    speed = (snap.raw_bytes or 0) / snap.duration_s / 1e6 if snap.duration_s else 0.0
    parts = [
        f"Snapshot {snap.id} ({snap.name}): {human_bytes(snap.size_bytes)}",
        f"from {human_bytes(snap.raw_bytes)} (ratio {ratio:.1f}x)",
        f"{snap.duration_s or 0:.1f} s, {speed:.0f} MB/s",
    ]
    if snap.downtime_s is not None:
        parts.append(f"downtime {snap.downtime_s:.1f} s")
    return ", ".join(parts) + (f"\nArchive: {snap.path}" if snap.path else "")


def logical_summary(snap: Snapshot) -> str:
    """One line: which database a logical snapshot holds, and how much of it."""
    tables = snap.meta.get("tables") or {}
    counted = (
        f"{len(tables)} tables, {sum(tables.values())} rows"
        if snap.meta.get("rows_counted", True)
        else "tables and rows not counted"
    )
    return (
        f"Database {snap.database} ({snap.format} format, PostgreSQL {snap.pg_version}): " + counted
    )


Cell = str | Text


def aligned(
    header: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    right: Sequence[str] = (),
    fit: tuple[str, int] | None = None,
) -> Text:
    """Columns padded to their widest cell, as one Text; ``right`` names right-aligned columns.
    ``fit``: (a column, a width): cut that column's cells (with "…", never below 12 cells) so
    that the lines fit the width (a terminal's); else lines are never wrapped or cropped.

    rich's Table measures and lays out every cell, which took over a second for 3,000 snapshots;
    this is linear and about ten times faster.
    """
    table = [[Text(c) if isinstance(c, str) else c for c in row] for row in rows]
    heads = [Text(h, style="bold") for h in header]
    widths = [max([h.cell_len, *(row[i].cell_len for row in table)]) for i, h in enumerate(heads)]
    if fit is not None:
        column, width = header.index(fit[0]), fit[1]
        over = sum(widths) + 2 * (len(widths) - 1) - width
        cut = max(widths[column] - over, 12, heads[column].cell_len)
        if over > 0 and cut < widths[column]:
            widths[column] = cut
            for row in table:
                row[column].truncate(cut, overflow="ellipsis")
    out = Text(no_wrap=True, overflow="ignore")
    for row in [heads, *table]:
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - cell.cell_len)
            last = i == len(row) - 1
            if header[i] in right:
                out.append(pad)
                out.append_text(cell)
            else:
                out.append_text(cell)
                if not last:
                    out.append(pad)
            out.append("\n" if last else "  ")
    out.rstrip()
    return out


_STATUS_STYLE = {"complete": "green", "failed": "red"}


def _status(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, "yellow"))


def snapshots_table(
    snaps: list[Snapshot],
    copies: Mapping[str, Sequence[Copy]] | None = None,
    width: int | None = None,
) -> Text:
    """`ls`'s table; with ``copies`` (each snapshot's, by its id) a COPIES column too. SOURCE
    is the container and its volume or database; ``width`` (a terminal's): names are cut to fit."""
    header: tuple[str, ...] = ("ID", "NAME", "KIND", "SOURCE", "CREATED", "SIZE")
    header += ("STATUS",) if copies is None else ("STATUS", "COPIES")
    rows = (
        (
            s.id,
            s.name,
            s.kind,
            source_cell(s),
            local_time(s.created_at, seconds=False),
            human_bytes(s.size_bytes),
            _status(s.status),
            *(() if copies is None else (copies_cell(copies.get(s.id, ())),)),
        )
        for s in snaps
    )
    fit = ("NAME", width) if width is not None else None
    return aligned(header, rows, right=("SIZE", "COPIES"), fit=fit)


def source_cell(snap: Snapshot) -> str:
    """Where a snapshot was taken: ``container:volume`` (or database), or ``pod/NAME:claim`` for
    a claim of a pod `podman kube play` runs."""
    meta = snap.meta
    pod, claim = meta.get("pod"), meta.get("claim")
    if pod and claim:
        return f"pod/{pod}:{claim}"
    return f"{snap.container}:{snap.volume or snap.database or '-'}"


def copies_cell(copies: Sequence[Copy]) -> Text:
    """How many complete copies a snapshot has in restic repositories; "-" for none, and
    "failed" when every attempt failed (`snapvol copy` tries again)."""
    done = sum(c.status == COMPLETE for c in copies)
    if done:
        return Text(str(done))
    if any(c.status == FAILED for c in copies):
        return _status(FAILED)
    return Text("-")


def snapshot_details(snap: Snapshot, copies: Sequence[Copy], drill: Drill | None = None) -> Group:
    """`show`: one snapshot's whole record (``drill``: its last restore drill), then its
    copies in restic repositories."""
    table = Fields()

    def row(label: str, value: str | Text) -> None:  # values are data, never markup
        table.add_row(label, value if isinstance(value, Text) else Text(value))

    row("Snapshot", f"{snap.id}  {snap.name}  ({snap.kind})")
    status = _status(snap.status)
    if snap.completed_at is not None:
        status.append(f" at {local_time(snap.completed_at)}")
    row("Status", status)
    if snap.error:
        row("Error", Text(snap.error, style="red"))
    kube = snap.meta.get("kubernetes") if snap.meta.get("source") == "kubernetes" else None
    if isinstance(kube, dict):  # its container_id is its claim's lock key: not shown
        row("Source", snap.container + (f", image {snap.image}" if snap.image else ""))
        row("Kubernetes", kube_where(kube))
    else:
        container = snap.container + (f" ({snap.container_id[:12]})" if snap.container_id else "")
        row("Container", container + (f", image {snap.image}" if snap.image else ""))
    if snap.meta.get("pod"):
        row("Pod", f"{snap.meta['pod']}, claim {snap.meta.get('claim', '?')} (podman kube play)")
    if snap.compose_project or snap.compose_service:
        row("Compose", f"service {snap.compose_service or '?'} of {snap.compose_project or '?'}")
    if snap.kind == "logical":
        row("Database", f"{snap.database or '?'} ({snap.format or '?'} format)")
    else:
        row("Volume", snap.volume or "-")
    if snap.pg_version:
        row("PostgreSQL", snap.pg_version)
    taken = [f"took {snap.duration_s:.1f} s"] if snap.duration_s is not None else []
    if snap.downtime_s is not None:
        taken.append(f"downtime {snap.downtime_s:.1f} s")
    row("Created", local_time(snap.created_at) + (f" ({', '.join(taken)})" if taken else ""))
    data = "of dump" if snap.kind == "logical" else "of data"
    files = f" in {snap.file_count} files" if snap.file_count is not None else ""
    row(
        "Size",
        f"{human_bytes(snap.size_bytes)} archive, {human_bytes(snap.raw_bytes)} {data}{files}",
    )
    if snap.status == FAILED and not (snap.path and Path(snap.path).exists()):
        row("Archive", "none (the snapshot failed; what it wrote was removed)")
    else:
        row("Archive", snap.path or "-")
    row("SHA-256", snap.sha256 or "-")
    if snap.verified_at is None:
        row("Verified", "never (`snapvol verify` checks it)")
    else:
        verdict = Text("ok", style="green") if snap.verify_ok else Text("failed", style="red")
        row("Verified", Text(f"{local_time(snap.verified_at)}: ").append_text(verdict))
    if snap.kind == "logical":
        row("Tables", tables_text(snap.meta.get("tables")))
    row("Drilled", drill_text(snap, drill))
    if not copies:
        row("Copies", f"none (`snapvol copy {snap.id}` sends it to the repository)")
        return Group(table)
    row("Copies", f"{sum(c.status == COMPLETE for c in copies)} complete of {len(copies)}")
    return Group(table, Text(), copies_table(copies))


def shown_path(path: str) -> str:
    """A member's path for a line of text: undecodable bytes and control characters escaped,
    so that one path is one line whatever its name."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def files_table(members: Sequence[Member]) -> Text:
    """A volume snapshot's files as ``tar -tv`` lists them: mode, owner, size, time, path."""
    rows = (
        (
            stat.filemode(m.mode | _TYPE_BITS.get(m.type, 0)),
            f"{m.uid}/{m.gid}",
            str(m.size),
            local_time(datetime.fromtimestamp(m.mtime, UTC), seconds=False),
            shown_path(m.path) + (f" -> {shown_path(m.linkname)}" if m.linkname else ""),
        )
        for m in members
    )
    return aligned(("MODE", "OWNER", "SIZE", "MODIFIED", "PATH"), rows, right=("SIZE",))


def drill_text(snap: Snapshot, drill: Drill | None) -> Text:
    """A snapshot's last restore drill: when, and whether it passed (and why not)."""
    if drill is None:
        return Text(f"never (`snapvol drill {snap.id}` proves it restores)")
    verdict = Text("passed", style="green") if drill.ok else Text("FAILED", style="red")
    text = Text(f"{local_time(drill.finished_at or drill.started_at)}: ").append_text(verdict)
    return text.append(f" ({drill.error})" if drill.error else f" (drill {drill.id})")


def copies_table(copies: Sequence[Copy]) -> Text:
    """A snapshot's copies, newest first: where, which restic snapshot, when, what it added."""
    header = ("REPOSITORY", "RESTIC SNAPSHOT", "TIME", "ADDED", "STATUS")
    rows = (
        (
            display_location(c.repository),  # stored without credentials; said twice is safe
            (c.data_snapshot or "-")[:8],
            local_time(c.completed_at or c.created_at, seconds=False),
            "-" if c.bytes_added is None else human_bytes(c.bytes_added),
            _status(c.status).append(f": {c.error}" if c.error else ""),
        )
        for c in copies
    )
    return aligned(header, rows, right=("ADDED",))


def verdict_line(snap: Snapshot, problem: str | None) -> str:
    """`verify`'s line for one snapshot (rich markup): ok, or what is wrong."""
    verdict = "[green]ok[/green]" if problem is None else f"[red]{escape(problem)}[/red]"
    return f"{snap.id}  {snap.name}: {verdict}"


def choices_table(snaps: list[Snapshot]) -> Text:
    """The restore picker's numbered list."""
    header = ("#", "ID", "NAME", "KIND", "SOURCE", "CREATED", "SIZE")
    rows = (
        (
            str(n),
            s.id,
            s.name,
            s.kind,
            source_cell(s),
            local_time(s.created_at, seconds=False),
            human_bytes(s.size_bytes),
        )
        for n, s in enumerate(snaps, 1)
    )
    return aligned(header, rows, right=("#", "SIZE"))


def decisions_table(decisions: list[Decision]) -> Text:
    """`rm` and `prune`: each snapshot with its source and the reasons it is kept or removed."""
    header = ("ID", "NAME", "SOURCE", "CREATED", "SIZE", "STATUS", "REASONS")
    rows = (
        (
            d.snapshot.id,
            d.snapshot.name,
            str(source_of(d.snapshot)),
            local_time(d.snapshot.created_at, seconds=False),
            human_bytes(d.snapshot.size_bytes),
            d.snapshot.status,
            ", ".join(d.reasons),
        )
        for d in decisions
    )
    return aligned(header, rows, right=("SIZE",))


# --- what a restore will do, shown before the user is asked -------------------------------------

MAX_TABLES_SHOWN = 12

_TYPE_BITS = {
    "file": 0o100000,
    "hardlink": 0o100000,
    "dir": 0o040000,
    "symlink": 0o120000,
    "fifo": 0o010000,
    "chardev": 0o020000,
    "blockdev": 0o060000,
}


def kube_where(where: dict[str, Any]) -> str:
    """A Kubernetes source as its record keeps it (``snapvol.kube.records.where``)."""
    context = where.get("context") or "in-cluster"
    return (
        f"{where.get('workload_kind')} {where.get('namespace')}/{where.get('workload')}, "
        f"claim {where.get('claim')} (volume {where.get('pv') or '?'} on node "
        f"{where.get('node') or '?'}), context {context} at {where.get('server') or '?'}"
    )


def restored_snapshot_rows(snap: Snapshot) -> Fields:
    """The first rows of a volume restore's plan: which snapshot, taken when and where, how big."""
    table = Fields()
    table.add_row("Snapshot", f"{snap.id}  {snap.name}  ({snap.kind})")
    table.add_row("Taken", f"{local_time(snap.created_at)} from {source_cell(snap)}")
    table.add_row(
        "Size",
        f"{human_bytes(snap.size_bytes)} archive, {human_bytes(snap.raw_bytes)} "
        f"of data in {snap.file_count} files",
    )
    return table


def volume_plan_table(
    plan: VolumeRestorePlan, safety: bool, one_pass_from: str | None = None
) -> Fields:
    """A volume restore's plan: the snapshot, what it overwrites, the way back.
    ``one_pass_from``: the repository it is read from in one pass (no local archive)."""
    snap, target = plan.snapshot, plan.target
    table = restored_snapshot_rows(snap)
    if snap.pg_version:
        table.add_row(
            "PostgreSQL", f"{snap.pg_version} (target runs {plan.target_pg_major or '?'})"
        )
    if one_pass_from is None:
        table.add_row("SHA-256", f"{snap.sha256}  [green]verified[/]")
    else:
        table.add_row(
            "Source",
            f"{one_pass_from}: checked as it is read (SHA-256, every file), beside the volume, "
            "before the volume changes",
        )
    owner = f"container {target.container.name} ({target.container.status})"
    if target.pod is not None:
        owner = f"pod {target.pod.name} ({target.pod.status}; stopped whole, then started)"
    table.add_row("[red]Overwrites[/]", f"volume {target.volume} of {owner}")
    table.add_row(
        "Current data",
        f"{human_bytes(plan.current_bytes)} in {plan.current_files} files"
        if plan.current_bytes is not None
        else "unknown",
    )
    table.add_row(
        "Safety snapshot",
        "yes, taken first (rolled back to on failure)"
        if safety
        else "[red]no[/] (--no-safety-snapshot): the current data will be gone",
    )
    for warning in plan.warnings:
        table.add_row("[yellow]Note[/]", warning)
    return table


def tables_text(tables: dict[str, int] | list[str] | None, estimated: bool = False) -> str:
    """``N: a (rows), b (rows), …``: the first few tables by name, with rows when known."""
    if tables is None:
        return "not recorded"
    if not tables:
        return "none"
    names = sorted(tables)
    shown = [
        f"{name} ({'~' if estimated else ''}{tables[name]})" if isinstance(tables, dict) else name
        for name in names[:MAX_TABLES_SHOWN]
    ]
    more = f", … {len(names) - MAX_TABLES_SHOWN} more" if len(names) > MAX_TABLES_SHOWN else ""
    return f"{len(names)}: {', '.join(shown)}{more}"


def logical_plan_table(plan: LogicalRestorePlan) -> Fields:
    """A logical restore's plan: the dump, the database it replaces or creates, and how."""
    source, target, current = plan.source, plan.target, plan.current
    table = Fields()
    snap = source.snapshot
    if snap is not None:
        table.add_row("Snapshot", f"{snap.id}  {snap.name}  (logical, {snap.format} format)")
        table.add_row(
            "Taken",
            f"{local_time(snap.created_at)} from database {snap.database} of {snap.container} "
            f"(PostgreSQL {snap.pg_version})",
        )
        table.add_row(
            "Size",
            f"{human_bytes(snap.size_bytes)} archive, {human_bytes(snap.raw_bytes)} of dump",
        )
        table.add_row("SHA-256", f"{snap.sha256}  [green]verified[/]")
    else:
        compressed = ", zstd-compressed" if source.compressed else ""
        table.add_row("File", f"{source.path}  ({source.format} format{compressed})")
        header = source.header
        if header:
            table.add_row(
                "Dumped",
                f"from database {header.get('database', '?')} at {header.get('created', '?')} "
                f"(PostgreSQL {header.get('server_version', '?')})",
            )
        table.add_row(
            "Size",
            f"{human_bytes(source.size_bytes)} file, {human_bytes(source.raw_bytes)} of dump",
        )
        table.add_row("Checked", "[green]whole and readable[/] (nothing changed yet)")
    table.add_row("Contains", "tables " + tables_text(source.tables or source.listed))
    if plan.partial:
        parts = [f"table {t}" for t in plan.only_tables] + [
            f"schema {n}" for n in plan.only_schemas
        ]
        table.add_row("[yellow]Only[/]", ", ".join(parts) + " (a partial restore)")
    where = f"container {target.container.name}, PostgreSQL {plan.server_version}"
    if current.exists:
        table.add_row("[red]Replaces[/]", f"database {target.database} ({where})")
        table.add_row(
            "Current data",
            f"{human_bytes(current.size_bytes)}, tables "
            + tables_text(current.tables, estimated=True),
        )
    else:
        table.add_row("Creates", f"database {target.database} ({where}; it does not exist yet)")
    if current.exists:
        how = (
            f"restored into new database {plan.scratch}, checked, given the current one's "
            "grants and settings, then swapped in; the current one is dropped only after the "
            "swap, and left as it is on any failure"
        )
    else:
        how = f"restored into new database {plan.scratch}, checked, then renamed"
    table.add_row("How", how)
    if plan.takes_safety:
        safety = (
            f"yes: a logical snapshot of database {target.database}, taken after the new copy "
            "was checked and right before the swap, while writes wait; "
            "`snapvol restore <its id>` undoes the restore"
        )
    elif current.exists:
        safety = (
            "[red]no[/] (--no-safety-snapshot): there is no way back, the current database is "
            "dropped after the swap"
        )
    else:
        safety = f"none needed: database {target.database} does not exist yet"
    table.add_row("Safety snapshot", safety)
    if plan.no_owner:
        table.add_row(
            "Owners",
            f"the dump's owners and privileges are skipped: {plan.db_owner} owns every object",
        )
    table.add_row(
        "Loads as",
        "a temporary role without superuser rights; meta-commands and statements beyond the "
        "database are refused",
    )
    if plan.extensions:
        table.add_row(
            "Extensions",
            ", ".join(e.name for e in plan.extensions)
            + " (created by the superuser before the load)",
        )
    if plan.allow_roles:
        roles = ", ".join(plan.new_roles) or "none"
        kept = f"; already here, left as they are: {', '.join(plan.existing_roles)}"
        table.add_row(
            "[red]Roles[/]",
            f"the dump creates role(s): {roles} (--allow-roles; never superusers, never a change "
            f"to an existing role){kept if plan.existing_roles else ''}",
        )
    for warning in plan.warnings:
        table.add_row("[yellow]Note[/]", warning)
    return table


def volume_restored_line(plan: VolumeRestorePlan, result: VolumeRestoreResult) -> str:
    return (
        f"Restored {result.snapshot.id} ({result.snapshot.name}) into {plan.target.volume}: "
        f"{result.duration_s:.1f} s, downtime {result.downtime_s:.1f} s"
    )


def logical_restored_line(what: str, plan: LogicalRestorePlan, result: LogicalRestoreResult) -> str:
    """``what``: the snapshot (id and name) or the dump file restored."""
    target = plan.target
    return (
        f"Restored {what} into database {target.database} of {target.container.name}: "
        f"{len(result.tables)} tables, {sum(result.tables.values())} rows checked, "
        f"{result.duration_s:.1f} s"
    )
