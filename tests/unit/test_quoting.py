"""SQL quoting of identifiers and literals."""

from __future__ import annotations

from snapvol.pg import quoting


def test_quoting() -> None:
    assert quoting.ident('we"ird') == '"we""ird"'
    assert quoting.literal("it's") == "'it''s'"
