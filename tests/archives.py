"""Damaging archives on purpose, for tests that prove a damaged one is refused."""

from __future__ import annotations

from pathlib import Path


def flip_middle_byte(path: Path) -> None:
    """Invert the byte in the middle of the file: same size, different SHA-256."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
