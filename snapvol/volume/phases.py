"""What snapvol tells its rescue process while it holds a container stopped.

One JSON object per line on a pipe, the last one wins: ``{"phase": "stopped", ...}`` (the volume
is intact), ``{"phase": "dirty", ...}`` (a restore is rewriting the volume; what to put back),
``{"phase": "done"}`` (all is well). The writer is the guard's client
(``snapvol.volume.watchdog``); the reader is the rescue process (``snapvol.volume.rescue``).
Nothing here imports the rest of snapvol, so both ends can use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stopped:
    """The container is (being) stopped and its volume is intact: start it again if it ran."""

    was_running: bool


@dataclass(frozen=True)
class Dirty:
    """A restore is rewriting ``volume``: put ``safety`` back (with the helper ``image``) before
    the container starts; with no safety snapshot the container must stay stopped."""

    was_running: bool
    volume: str
    image: str
    safety: str | None


@dataclass(frozen=True)
class Done:
    """snapvol put the container back itself: nothing to do."""


Phase = Stopped | Dirty | Done

# Before the first line arrives: snapvol writes ``Stopped`` before it stops anything, so a
# silent pipe means the container was never touched, and starting a running one is harmless.
INITIAL: Phase = Stopped(was_running=True)


def encode(phase: Phase) -> bytes:
    """One line of the wire format, newline included."""
    data: dict[str, Any]
    if isinstance(phase, Done):
        data = {"phase": "done"}
    elif isinstance(phase, Stopped):
        data = {"phase": "stopped", "was_running": phase.was_running}
    else:
        data = {
            "phase": "dirty",
            "was_running": phase.was_running,
            "safety": phase.safety,
            "volume": phase.volume,
            "image": phase.image,
        }
    return json.dumps(data).encode() + b"\n"


def decode(line: bytes | str) -> Phase:
    """The phase a line holds; ``ValueError`` when it is not one (garbled, truncated, unknown)."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError(f"a phase is a JSON object, not {type(data).__name__}")
    name = data.get("phase")
    if name == "done":
        return Done()
    was_running = data.get("was_running", True)
    if not isinstance(was_running, bool):
        raise ValueError(f"was_running is not a boolean: {was_running!r}")
    if name == "stopped":
        return Stopped(was_running=was_running)
    if name == "dirty":
        volume, image, safety = data.get("volume"), data.get("image"), data.get("safety")
        if not isinstance(volume, str) or not isinstance(image, str):
            raise ValueError("a dirty phase names its volume and helper image")
        if safety is not None and not isinstance(safety, str):
            raise ValueError(f"safety is not a snapshot id: {safety!r}")
        return Dirty(was_running=was_running, volume=volume, image=image, safety=safety or None)
    raise ValueError(f"unknown phase {name!r}")


# What a line that speaks of a dirty volume but cannot be read stands for: the volume may be
# half-written and there is no usable safety snapshot, so the container stays stopped.
UNREADABLE_DIRTY = Dirty(was_running=True, volume="", image="", safety=None)


def last(lines: Iterable[bytes]) -> Phase:
    """The last phase in a stream; lines that are not phases are skipped, except a whole one that
    names a dirty volume without what a rescue needs: the rescue must then fail closed
    (``UNREADABLE_DIRTY``), never start the container on what may be a half-written volume."""
    phase = INITIAL
    for line in lines:
        try:
            phase = decode(line)
        except ValueError:
            if _names_dirty(line):
                phase = UNREADABLE_DIRTY
    return phase


def _names_dirty(line: bytes) -> bool:
    """Whether a line that is not a valid phase is still a whole JSON object saying "dirty". A
    line cut short is not: the volume is touched only after the dirty phase was written whole."""
    try:
        data = json.loads(line)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("phase") == "dirty"
