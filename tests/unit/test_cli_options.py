"""cli/options.py: shared option stacks apply as if written one above the other."""

from __future__ import annotations

import click

from snapvol.cli.options import stacked


def test_a_stack_keeps_the_order_it_is_written_in() -> None:
    both = stacked(click.option("--first"), click.option("--second"))

    @click.command()
    @both
    @click.option("--third")
    def command(**_: object) -> None:
        pass

    assert [p.name for p in command.params] == ["first", "second", "third"]
    shown = command.get_help(click.Context(command))
    assert shown.index("--first") < shown.index("--second") < shown.index("--third")
