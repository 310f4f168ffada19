"""The aligned tables `ls`, `rm`, `prune` and the picker print."""

from __future__ import annotations

from rich.text import Text

from snapvol.cli.format import aligned


def test_columns_are_padded_to_their_widest_cell() -> None:
    table = aligned(
        ("ID", "NAME", "SIZE", "STATUS"),
        [
            ("a1", "long-name", "1.0 MB", Text("complete", style="green")),
            ("b2", "x", "12 B", "failed"),
        ],
        right=("SIZE",),
    )
    assert table.plain.splitlines() == [
        "ID  NAME         SIZE  STATUS",
        "a1  long-name  1.0 MB  complete",
        "b2  x            12 B  failed",
    ]
    assert any(span.style == "green" for span in table.spans)


def test_no_rows_is_the_header_alone() -> None:
    assert aligned(("ID", "NAME"), []).plain == "ID  NAME"
