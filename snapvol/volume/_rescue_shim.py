"""TRANSITIONAL, for the merge of issue 11: the two calls ``watchdog._recover`` makes today,
mapped onto ``restore.put_back_safety``. Delete this module once the rescue process calls
``put_back_safety`` itself."""

from __future__ import annotations

from snapvol.adapters.engine import Engine
from snapvol.adapters.store import Snapshot
from snapvol.output import Reporter
from snapvol.pipeline.tarscan import Member
from snapvol.volume.restore import put_back_safety


def resolve_target(engine: Engine, container_id: str, volume_name: str) -> tuple[str, str]:
    return container_id, volume_name


def put_back(
    engine: Engine,
    image: str,
    target: tuple[str, str],
    safety: Snapshot,
    members: list[Member],
    reporter: Reporter,
) -> None:
    put_back_safety(engine, target[0], target[1], image, safety, members)
