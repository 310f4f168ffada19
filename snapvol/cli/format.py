"""How snapshots look to people: tables and one-line summaries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from rich.text import Text

from snapvol.adapters.store import Snapshot, as_utc
from snapvol.output import human_bytes


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


Cell = str | Text


def aligned(
    header: Sequence[str], rows: Iterable[Sequence[Cell]], right: Sequence[str] = ()
) -> Text:
    """Columns padded to their widest cell, as one Text; ``right`` names right-aligned columns.

    rich's Table measures and lays out every cell, which took over a second for 3,000 snapshots;
    this is linear and about ten times faster. Lines are never wrapped or cropped.
    """
    table = [[Text(c) if isinstance(c, str) else c for c in row] for row in rows]
    heads = [Text(h, style="bold") for h in header]
    widths = [max([h.cell_len, *(row[i].cell_len for row in table)]) for i, h in enumerate(heads)]
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


def snapshots_table(snaps: list[Snapshot]) -> Text:
    header = ("ID", "NAME", "KIND", "CONTAINER", "VOLUME/DB", "CREATED", "SIZE", "STATUS")
    rows = (
        (
            s.id,
            s.name,
            s.kind,
            s.container,
            s.volume or s.database or "-",
            local_time(s.created_at),
            human_bytes(s.size_bytes),
            Text(s.status, style=_STATUS_STYLE.get(s.status, "yellow")),
        )
        for s in snaps
    )
    return aligned(header, rows, right=("SIZE",))
