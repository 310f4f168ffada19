"""`snapvol schedule` (systemd units or crontab lines for a configuration's jobs) and `snapvol
run` (run them: one job once, or every job on its schedule, as a compose sidecar)."""

from __future__ import annotations

from pathlib import Path

import click

from snapvol.cli.context import AppContext, with_app

config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SNAPVOL_CONFIG",
    help="The configuration file (TOML): targets, schedules, retention, repository.",
)


@click.command("schedule")
@config_option
@click.option(
    "--systemd",
    "systemd_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a .service and a .timer per job into this directory (/etc/systemd/system).",
)
@click.option("--cron", "as_cron", is_flag=True, help="Print crontab lines instead.")
@with_app
def schedule(app: AppContext, config_path: Path, systemd_dir: Path | None, as_cron: bool) -> None:
    """Print (or write) what runs the configuration's jobs on their schedules.

    Default: the systemd units on stdout. Each unit runs `snapvol run --config FILE --once JOB`.
    """
    from snapvol.schedule import config, units

    loaded = config.load(config_path)
    if as_cron:
        click.echo(units.crontab(loaded), nl=False)
        return
    made = units.systemd(loaded)
    if systemd_dir is None:
        for name, text in made.items():
            click.echo(f"# {name}\n{text}")
        return
    systemd_dir.mkdir(parents=True, exist_ok=True)
    for name, text in made.items():
        (systemd_dir / name).write_text(text)
    timers = " ".join(n for n in made if n.endswith(".timer"))
    app.console.info(
        f"wrote {len(made)} units into {systemd_dir}; start them with: "
        f"systemctl daemon-reload && systemctl enable --now {timers}"
    )


@click.command("run")
@config_option
@click.option("--once", "job_name", metavar="JOB", help="Run this job now, once, and exit.")
@with_app
def run(app: AppContext, config_path: Path, job_name: str | None) -> None:
    """Run the configuration's jobs, each when its schedule says (until SIGTERM), or one now.

    One job at a time, each as its own snapvol process with the configuration's settings; a
    job's exit code is said, and with --once it is this command's.
    """
    from snapvol.schedule import config, runner

    loaded = config.load(config_path)
    if job_name is not None:
        click.get_current_context().exit(runner.run_once(loaded, loaded.job(job_name)))
    runner.serve(loaded, app.console.info)
