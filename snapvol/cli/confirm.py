"""Asking before anything is overwritten: the user types the container's (or workload's) name."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from snapvol.errors import Cancelled, Interrupted


@contextlib.contextmanager
def answering(unchanged: str = "nothing was changed") -> Iterator[None]:
    """Around a question: Ctrl-C is an interruption (exit 130), the end of its input a
    cancellation (exit 10), each said on a line of its own (after the ``^C`` or the prompt)."""
    try:
        yield
    except (click.Abort, EOFError, KeyboardInterrupt) as err:
        cause = err.__context__ if isinstance(err, click.Abort) else err
        click.echo(err=True)
        if isinstance(cause, KeyboardInterrupt):
            raise Interrupted(f"interrupted; {unchanged}") from None
        raise Cancelled(f"cancelled; {unchanged}") from None


def confirm_by_typing(
    expected: str, *, assume_yes: bool, what: str, noun: str = "the container's name"
) -> None:
    """Return only if the user typed ``expected`` (``noun`` says what it is); Ctrl-C, EOF or
    anything else cancels."""
    if assume_yes:
        return
    with answering():
        answer = click.prompt(
            f"Type {noun} ({expected}) to {what}, anything else cancels",
            default="",
            show_default=False,
            err=True,
        )
    if answer.strip() != expected:
        raise Cancelled("cancelled; nothing was changed")
