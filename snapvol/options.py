"""Options every snapshot takes, checked once, where they are built: before anything is looked
up or stopped, whether the CLI or a library caller builds them."""

from __future__ import annotations

from dataclasses import dataclass

from snapvol.errors import UsageError
from snapvol.names import validate_name

# zstd's levels, fast to strong (the CLI's --level choices come from here too).
MIN_LEVEL, MAX_LEVEL, DEFAULT_LEVEL = 1, 19, 3


@dataclass(frozen=True)
class SnapshotOptions:
    # A unique name for the snapshot (None: one is made from the container and the time).
    name: str | None = None
    # The zstd level the archive is compressed with.
    level: int = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        if self.name is not None:
            validate_name(self.name)
        if not MIN_LEVEL <= self.level <= MAX_LEVEL:
            raise UsageError(
                f"the compression level must be between {MIN_LEVEL} and {MAX_LEVEL}, "
                f"not {self.level}"
            )
