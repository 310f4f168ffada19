"""When the host lane (``snapvol.volume.host_lane``) may serve a volume, and its directory work.

Docker's archive endpoint is the portable way to read a volume (any engine, no root), but it is
also the slowest step: the engine builds the tar on one core that zstd needs too. When the engine
is local, the volume uses the ``local`` driver and its directory is readable by us (root),
snapvol reads and writes the directory itself (``snapvol.volume.hosttar``), several times
faster, numeric owners and modes kept. Every restore reads the volume back and compares every
file with the store, whichever lane wrote it.

A volume created with driver options (``--opt type=none --opt o=bind --opt device=...``, nfs,
cifs, tmpfs) is different: the local driver mounts it on its directory only while a container
uses it, so once the container is stopped that directory is an empty stand-in. Such volumes go
through the archive endpoint, whose helper container makes Docker mount them.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from snapvol.errors import OperationFailed

if TYPE_CHECKING:
    from snapvol.adapters.engine import VolumeInfo

# How a volume may be read: the host lane when it can be (auto), only it, or always the endpoint.
READERS = ("auto", "host", "endpoint")


def _engine_is_local() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    return host == "" or host.startswith("unix://")


def mounted_on_use(volume: VolumeInfo) -> bool:
    """Whether Docker mounts the volume only while a container uses it (driver options)."""
    return bool(volume.options)


def kind(volume: VolumeInfo) -> str:
    """What the volume is made of, for messages: ``bind`` or its ``type`` option, else its
    driver. Never the options' values themselves: cifs keeps a password in ``o``."""
    flags = volume.options.get("o", "").split(",")
    if "bind" in flags or "rbind" in flags:
        return "bind"
    return volume.options.get("type") or volume.driver


def is_tmpfs(volume: VolumeInfo) -> bool:
    """A tmpfs volume: its files vanish as soon as no container uses it."""
    return volume.options.get("type") == "tmpfs"


def volume_dir(volume: VolumeInfo, reader: str) -> Path | None:
    """The volume's directory when the host lane may be used, else None (use the endpoint)."""
    if reader == "endpoint":
        return None
    if mounted_on_use(volume):
        if reader == "host":
            raise OperationFailed(
                f"volume {volume.name} is a {kind(volume)} volume (driver options): Docker "
                "mounts it only while a container uses it, so its directory on this host is not "
                "what the container sees; read it through Docker's archive endpoint instead",
                retry_with={"reader": "endpoint"},
            )
        return None
    path = Path(volume.mountpoint) if volume.mountpoint else None
    usable = (
        _engine_is_local()
        and volume.driver == "local"
        and path is not None
        and path.is_dir()
        and os.access(path, os.R_OK | os.X_OK)
    )
    if usable:
        return path
    if reader == "host":
        raise OperationFailed(
            f"volume {volume.name} cannot be read on this host (needs a local engine, the local "
            "driver and root); read it through Docker's archive endpoint instead",
            retry_with={"reader": "endpoint"},
        )
    return None


def empty_dir(path: Path) -> None:
    """Remove everything inside ``path`` (not ``path`` itself), without following links."""
    result = subprocess.run(
        ["find", str(path), "-mindepth", "1", "-delete"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise OperationFailed(f"emptying {path} failed: {result.stderr.strip()[-300:]}")


def usage(path: Path) -> tuple[int | None, int | None]:
    """Bytes on disk (like ``du -s -B1``) and entries below ``path``, without following links.

    The service may still be running and changing files: what vanishes meanwhile is skipped.
    """
    from snapvol.volume import hosttar  # not with READERS, which every command's options use

    total, entries = 0, -1  # the root's own blocks count, the root itself does not
    seen: set[tuple[int, int]] = set()  # a hard-linked file's blocks count once, as in du
    try:
        for _, st in hosttar.walk(path, skip_errors=True):
            entries += 1
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    except OSError:
        return None, None
    return total, entries
