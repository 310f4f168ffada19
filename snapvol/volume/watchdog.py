"""A small detached process that puts a container back if snapvol dies while holding it.

snapvol starts the watchdog *before* it stops a container and talks to it through a pipe: one
JSON line per phase ("stopped": the volume is intact; "dirty": a restore is rewriting the volume,
with the safety snapshot to put back), then "done". If the pipe closes without "done" (snapvol
was killed, even with SIGKILL, or crashed) the watchdog recovers: it rolls the volume back to the
safety snapshot when one is needed, and starts the container. It shares snapvol's container lock,
so no other snapvol run can touch the container until it has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from snapvol.runtime import run_dir


@dataclass
class WatchdogConfig:
    """What a watchdog needs beyond the container: the store (for rollbacks) and the lock."""

    db: Path
    lock_fd: int | None = None


@dataclass
class Watchdog:
    """snapvol's end of the pipe."""

    process: subprocess.Popen[bytes] | None
    pipe: IO[bytes] | None

    def phase(self, name: str, **data: Any) -> None:
        if self.pipe is not None:
            self.pipe.write(json.dumps({"phase": name, **data}).encode() + b"\n")
            self.pipe.flush()

    def done(self) -> None:
        """Tell the watchdog all is well and wait for it to exit (it shares our lock)."""
        if self.pipe is None or self.process is None:
            return
        self.phase("done")
        self.pipe.close()
        self.pipe = None
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def abandon(self) -> None:
        """Close the pipe without "done": the watchdog recovers as if snapvol had died."""
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None


def spawn(config: WatchdogConfig, container_id: str, *, is_postgres: bool) -> Watchdog:
    """Start the watchdog for ``container_id``; it lives in its own session, so a Ctrl-C sent to
    snapvol's terminal does not reach it."""
    read_fd, write_fd = os.pipe()
    log = run_dir() / f"watchdog-{container_id[:12]}.log"
    pass_fds = [read_fd]
    args = [
        sys.executable,
        "-m",
        "snapvol.volume.watchdog",
        "--container",
        container_id,
        "--db",
        str(config.db.resolve()),
        "--pipe-fd",
        str(read_fd),
    ]
    if config.lock_fd is not None:
        pass_fds.append(config.lock_fd)
        args += ["--lock-fd", str(config.lock_fd)]
    if is_postgres:
        args.append("--postgres")
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


# --- the watchdog process ------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}", flush=True)


def _read_phases(pipe_fd: int) -> dict[str, Any]:
    """Follow the phases until the pipe closes; return the last one."""
    last: dict[str, Any] = {"phase": "stopped"}
    with os.fdopen(pipe_fd, "rb") as pipe:
        for line in pipe:
            try:
                last = json.loads(line)
            except ValueError:
                continue
    return last


def _recover(container_id: str, db: Path, is_postgres: bool, last: dict[str, Any]) -> int:
    from snapvol.adapters.engine import Engine
    from snapvol.adapters.store import COMPLETE, Store
    from snapvol.output import Reporter
    from snapvol.volume import _rescue_shim as volume
    from snapvol.volume import _rescue_shim as volume_restore
    from snapvol.volume import guard

    engine = Engine.connect()
    info = engine.container(container_id)
    if last.get("phase") == "dirty":
        safety_id = last.get("safety")
        if not safety_id:
            _log(
                f"{info.name}: snapvol died while rewriting volume {last.get('volume')} with no "
                "safety snapshot; leaving the container stopped"
            )
            return 1
        store = Store.open(db)
        try:
            safety = store.get(safety_id)
            if safety is None or safety.status != COMPLETE:
                _log(f"{info.name}: safety snapshot {safety_id} is not usable; leaving it stopped")
                return 1
            target = volume.resolve_target(engine, container_id, str(last["volume"]))
            _log(f"{info.name}: snapvol died mid-restore; putting back safety snapshot {safety_id}")
            volume_restore.put_back(
                engine, str(last["image"]), target, safety, store.members(safety.id), Reporter()
            )
        finally:
            store.close()
    if last.get("was_running", True):
        _log(f"{info.name}: snapvol ended while holding the container; starting it")
        engine.start(container_id)
        guard.wait_healthy(engine, info, is_postgres)
        _log(f"{info.name}: running again")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snapvol-watchdog")
    parser.add_argument("--container", required=True)
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--pipe-fd", required=True, type=int)
    parser.add_argument("--lock-fd", type=int)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args(argv)
    last = _read_phases(args.pipe_fd)
    if last.get("phase") == "done":
        return 0
    for attempt in range(1, 6):
        try:
            return _recover(args.container, args.db, args.postgres, last)
        except Exception as err:  # keep trying: the engine may be briefly busy
            _log(f"recovery attempt {attempt} failed: {type(err).__name__}: {err}")
            time.sleep(2)
    return 1


if __name__ == "__main__":
    sys.exit(main())
