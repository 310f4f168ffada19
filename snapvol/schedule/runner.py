"""The long-running mode (a compose sidecar): each job when its schedule says, one at a time,
each as its own snapvol process (a job that crashes never takes the loop with it). SIGTERM or
SIGINT ends the loop: a job running then gets the signal too (it unwinds as snapvol does: its
container started again) and is waited for."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime

from snapvol.runtime import python_module
from snapvol.schedule.config import Config, Job, job_env


def run_once(config: Config, job: Job, stop: threading.Event | None = None) -> int:
    """Run ``job`` as a snapvol process in the configuration's environment; its exit code."""
    proc = subprocess.Popen(
        [*python_module("snapvol"), *job.args], env=job_env(config), stdin=subprocess.DEVNULL
    )
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if stop is not None and stop.is_set():
                proc.send_signal(signal.SIGTERM)
                return proc.wait()


def loop(
    config: Config,
    say: Callable[[str], None],
    stop: threading.Event,
    now: Callable[[], datetime] = datetime.now,
) -> None:
    """Until ``stop`` is set: run each job at its next time, one after the other. A job that
    became due while another ran runs once, right after (missed times are not made up)."""
    due = {job.name: job.schedule.next_after(now()) for job in config.jobs}
    for job in config.jobs:
        say(f"{job.name}: {job.schedule.text}, next at {due[job.name]:%Y-%m-%d %H:%M:%S}")
    while not stop.is_set():
        name = min(due, key=lambda n: due[n])
        wait = (due[name] - now()).total_seconds()
        if wait > 0:
            stop.wait(wait)
            continue
        job = config.job(name)
        started = time.monotonic()
        code = run_once(config, job, stop)
        say(f"{job.name}: exit {code} after {time.monotonic() - started:.1f} s")
        due[name] = job.schedule.next_after(now())


def serve(config: Config, say: Callable[[str], None]) -> None:
    """``loop`` until SIGTERM or SIGINT."""
    stop = threading.Event()

    def ask_to_stop(_signum: int, _frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, ask_to_stop)
    loop(config, say, stop)
    say("stopped")
