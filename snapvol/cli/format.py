"""How snapshots look to people: tables and one-line summaries."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table

from snapvol.output import human_bytes
from snapvol.store import Snapshot, as_utc


def local_time(value: datetime) -> str:
    return as_utc(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def snapshot_summary(snap: Snapshot) -> str:
    """One line: what was made, how big, how fast, how long the service was down."""
    ratio = (snap.raw_bytes or 0) / snap.size_bytes if snap.size_bytes else 0.0
    speed = (snap.raw_bytes or 0) / snap.duration_s / 1e6 if snap.duration_s else 0.0
    parts = [
        f"Snapshot {snap.id} ({snap.name}): {human_bytes(snap.size_bytes)}",
        f"from {human_bytes(snap.raw_bytes)} (ratio {ratio:.1f}x)",
        f"{snap.duration_s or 0:.1f} s, {speed:.0f} MB/s",
    ]
    if snap.downtime_s is not None:
        parts.append(f"downtime {snap.downtime_s:.1f} s")
    return ", ".join(parts)


def snapshots_table(snaps: list[Snapshot]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "KIND", "CONTAINER", "VOLUME/DB", "CREATED", "SIZE", "STATUS"):
        table.add_column(column, justify="right" if column == "SIZE" else "left", no_wrap=True)
    for s in snaps:
        status = {"complete": "[green]complete[/]", "failed": "[red]failed[/]"}.get(
            s.status, f"[yellow]{s.status}[/]"
        )
        table.add_row(
            s.id,
            s.name,
            s.kind,
            s.container,
            s.volume or s.database or "-",
            local_time(s.created_at),
            human_bytes(s.size_bytes),
            status,
        )
    return table
