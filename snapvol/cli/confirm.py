"""Asking before anything is overwritten: the user types the container's name."""

from __future__ import annotations

import click

from snapvol.errors import Cancelled


def confirm_by_typing(expected: str, *, assume_yes: bool, what: str) -> None:
    """Return only if the user typed ``expected``; Ctrl-C, EOF or anything else cancels."""
    if assume_yes:
        return
    try:
        answer = click.prompt(
            f"Type the container's name ({expected}) to {what}, anything else cancels",
            default="",
            show_default=False,
            err=True,
        )
    except (click.Abort, EOFError, KeyboardInterrupt):
        raise Cancelled("cancelled; nothing was changed") from None
    if answer.strip() != expected:
        raise Cancelled("cancelled; nothing was changed")
