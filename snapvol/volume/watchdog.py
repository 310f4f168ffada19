"""snapvol's end of the watchdog: start the rescue process and tell it each phase.

The downtime guard starts it *before* it stops a container and writes one phase per line on a
pipe (``snapvol.volume.phases``), then ``Done``. If the pipe closes without ``Done`` (snapvol was
killed, even with SIGKILL, or crashed) the detached process (``snapvol.volume.rescue``) puts the
container back. This module only starts it and writes; it imports nothing of what the rescue does.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from snapvol.runtime import python_module, run_dir
from snapvol.volume.phases import Done, Phase, encode

RESCUE_MODULE = "snapvol.volume.rescue"


@dataclass
class WatchdogConfig:
    """What a watchdog needs beyond the container: the store (for rollbacks) and the locks
    (the container's, and those of a pod's other containers), held on by the rescue process
    for as long as it may still act."""

    db: Path
    lock_fds: tuple[int, ...] = ()


@dataclass
class Watchdog:
    """snapvol's end of the pipe (``Watchdog(None, None)``: no watchdog, every call a no-op)."""

    process: subprocess.Popen[bytes] | None
    pipe: IO[bytes] | None

    def send(self, phase: Phase) -> None:
        """Tell the rescue process what it would have to do if snapvol died now."""
        if self.pipe is not None:
            self.pipe.write(encode(phase))  # one write, shorter than PIPE_BUF: never torn
            self.pipe.flush()

    def done(self) -> None:
        """Tell the watchdog all is well and wait for it to exit (it shares our lock)."""
        if self.pipe is None or self.process is None:
            return
        self.send(Done())
        self.pipe.close()
        self.pipe = None
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def abandon(self) -> None:
        """Close the pipe without ``Done``: the watchdog recovers as if snapvol had died."""
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None


def spawn(
    config: WatchdogConfig, container_id: str, *, is_postgres: bool, pod: str | None = None
) -> Watchdog:
    """Start the watchdog for ``container_id`` (and its Podman ``pod``, started whole); it lives
    in its own session, so a Ctrl-C sent to snapvol's terminal does not reach it."""
    read_fd, write_fd = os.pipe()
    log = run_dir() / f"watchdog-{container_id[:12]}.log"
    pass_fds = [read_fd]
    args = [
        *python_module(RESCUE_MODULE),
        "--container",
        container_id,
        "--db",
        str(config.db.resolve()),
        "--pipe-fd",
        str(read_fd),
    ]
    for fd in config.lock_fds:
        pass_fds.append(fd)
        args += ["--lock-fd", str(fd)]
    if is_postgres:
        args.append("--postgres")
    if pod is not None:
        args += ["--pod", pod]
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=pass_fds,
            start_new_session=True,
            close_fds=True,
        )
    os.close(read_fd)
    return Watchdog(process, os.fdopen(write_fd, "wb"))
