"""What a scheduler runs: systemd service and timer units, or crontab lines, each calling
``snapvol run --config FILE --once JOB``."""

from __future__ import annotations

import shlex

from snapvol.errors import UsageError
from snapvol.runtime import python_module
from snapvol.schedule import cron
from snapvol.schedule.config import Config, Job


def command(config: Config, job: Job) -> str:
    """The command line that runs ``job`` once (this snapvol's interpreter, absolute paths)."""
    return shlex.join(
        [*python_module("snapvol"), "run", "--config", str(config.path), "--once", job.name]
    )


def systemd(config: Config) -> dict[str, str]:
    """``snapvol-<job>.service`` and ``.timer`` for each job, by file name."""
    units = {}
    podman = "podman" in config.env.get("DOCKER_HOST", "")
    engine = "podman.socket" if podman else "docker.service"
    for job in config.jobs:
        calendar = cron.on_calendar(job.schedule)
        when = (
            f"OnCalendar={calendar}\nPersistent=true\n"
            if calendar is not None
            else f"OnActiveSec=0\nOnUnitActiveSec={job.schedule.every}s\n"
        )
        units[f"snapvol-{job.name}.service"] = (
            f"[Unit]\nDescription=snapvol {job.name} ({' '.join(job.args)})\n"
            f"Wants={engine}\nAfter={engine}\n\n"
            f"[Service]\nType=oneshot\nExecStart={command(config, job)}\n"
        )
        units[f"snapvol-{job.name}.timer"] = (
            f"[Unit]\nDescription=snapvol {job.name}: {job.schedule.text}\n\n"
            f"[Timer]\n{when}\n[Install]\nWantedBy=timers.target\n"
        )
    return units


def crontab(config: Config) -> str:
    """One crontab line per job (cron schedules only: cron has no ``@every``)."""
    lines = [f"# snapvol jobs of {config.path}"]
    for job in config.jobs:
        if job.schedule.every is not None:
            raise UsageError(
                f"job {job.name}: cron cannot run {job.schedule.text!r}; use a cron expression, "
                "systemd timers (--systemd) or `snapvol run`"
            )
        lines.append(f"{job.schedule.text} {command(config, job)}")
    return "\n".join(lines) + "\n"
