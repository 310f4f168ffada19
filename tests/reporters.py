"""Reporters for tests."""

from __future__ import annotations

from snapvol.output import Reporter


class Said(Reporter):
    """A reporter that keeps its warnings."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)
