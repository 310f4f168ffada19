"""Cron schedules, the configuration file and the units made from it (no Docker)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from snapvol.errors import UsageError
from snapvol.schedule import config, cron, units


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        ("0 3 * * *", "2026-12-03 02:59", "2026-12-03 03:00"),
        ("0 3 * * *", "2026-12-03 03:00", "2026-12-04 03:00"),
        ("*/15 * * * *", "2026-12-03 10:07", "2026-12-03 10:15"),
        ("30 4 * * 0", "2026-12-03 10:00", "2026-12-06 04:30"),  # a Thursday: next Sunday
        ("30 4 * * 7", "2026-12-03 10:00", "2026-12-06 04:30"),  # 7 is Sunday too
        ("0 0 1 * *", "2026-12-03 10:00", "2027-01-01 00:00"),
        ("0 12 29 2 *", "2026-03-01 00:00", "2028-02-29 12:00"),  # the next leap day
        ("0 0 13 * 5", "2026-12-03 00:00", "2026-12-04 00:00"),  # cron: the 13th OR a Friday
        ("@daily", "2026-12-03 10:00", "2026-12-04 00:00"),
        ("@every 90s", "2026-12-03 10:00", "2026-12-03 10:01:30"),
    ],
)
def test_next_time(spec: str, after: str, expected: str) -> None:
    got = cron.parse(spec).next_after(datetime.fromisoformat(after))
    assert got == datetime.fromisoformat(expected)


@pytest.mark.parametrize(
    "spec", ["", "* * * *", "61 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"]
)
def test_unreadable_schedules_are_refused(spec: str) -> None:
    with pytest.raises(UsageError):
        cron.parse(spec)


def test_systemd_calendars_say_exactly_what_cron_says() -> None:
    assert cron.on_calendar(cron.parse("0 3 * * *")) == "*-*-* 03:00:00"
    assert cron.on_calendar(cron.parse("*/20 8-9 * * 1-5")) == (
        "Mon,Tue,Wed,Thu,Fri *-*-* 08,09:00,20,40:00"
    )
    assert cron.on_calendar(cron.parse("@every 1h")) is None
    with pytest.raises(UsageError, match="either"):
        cron.on_calendar(cron.parse("0 0 13 * 5"))


GOOD = """
repository = "sftp:user@host:/srv/restic"
password_file = "/etc/snapvol/pass"
metrics_file = "/var/lib/node_exporter/snapvol.prom"

[[target]]
container = "pc_db"
schedule = "0 3 * * *"

[[target]]
container = "pc_db"
kind = "logical"
database = "shop"
schedule = "@every 6h"

[prune]
schedule = "30 4 * * *"
keep_daily = 7
keep_weekly = 4

[verify]
schedule = "0 5 * * 0"
read_data_subset = "5%"
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "snapvol.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_a_configuration_becomes_jobs_and_an_environment(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, GOOD))
    assert {j.name: j.args for j in loaded.jobs} == {
        "snapshot-pc_db-volume": ("snapshot", "--volume", "--container", "pc_db", "--copy"),
        "snapshot-pc_db-logical": (
            "snapshot", "--logical", "--container", "pc_db", "--database", "shop", "--copy"
        ),
        "prune": ("prune", "--yes", "--keep-daily", "7", "--keep-weekly", "4"),
        "verify": ("verify", "--repo", "--read-data-subset", "5%"),
    }  # fmt: skip
    assert loaded.env == {
        "SNAPVOL_REPOSITORY": "sftp:user@host:/srv/restic",
        "SNAPVOL_PASSWORD_FILE": "/etc/snapvol/pass",
        "SNAPVOL_METRICS_FILE": "/var/lib/node_exporter/snapvol.prom",
    }
    service = units.systemd(loaded)["snapvol-prune.service"]
    assert f"run --config {loaded.path} --once prune" in service
    assert "sftp:" not in "".join(units.systemd(loaded).values())  # never in a command line
    assert "OnUnitActiveSec=21600s" in units.systemd(loaded)["snapvol-snapshot-pc_db-logical.timer"]
    with pytest.raises(UsageError, match="cron cannot run"):
        units.crontab(loaded)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[target]]\ncontainer = 'a'\n", "has no schedule"),
        ("[[target]]\nschedule = '@daily'\n", "names one of container, pod .* not none"),
        ("[[target]]\ncontainer='a'\npod='b'\nschedule='@daily'\n", "not container and pod"),
        ("[[target]]\ncontainer='a'\nnamspace='x'\nschedule='@daily'\n", "unknown key 'namspace'"),
        ("[[target]]\ncontainer='a'\nnamespace='x'\nschedule='@daily'\n", "goes with workload"),
        (
            "[[target]]\nworkload='sts/pg'\nclaim='d'\nkind='logical'\nschedule='@daily'\n",
            "claim goes with a pod or a workload's volume",
        ),
        ("[[target]]\npod='a'\nkind='logical'\nschedule='@daily'\n", "takes kind volume"),
        ("[[target]]\ncontainer='a'\nclaim='d'\nschedule='@daily'\n", "claim goes with a pod"),
        ("[[target]]\ncontainer='a'\nkind='disk'\nschedule='@daily'\n", "volume or logical"),
        ("[prune]\nschedule = '@daily'\n", "keep_"),
        ("colour = 'blue'\n", "unknown setting 'colour'"),
        ("this is not toml", "is not TOML"),
        ("", "schedules nothing"),
    ],
)
def test_a_bad_configuration_is_one_clear_error(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        config.load(write(tmp_path, text))


def test_a_pod_s_claim_is_a_target(tmp_path: Path) -> None:
    text = "[[target]]\npod = 'app'\nclaim = 'app-data'\nschedule = '@daily'\n"
    loaded = config.load(write(tmp_path, text))
    assert {j.name: j.args for j in loaded.jobs} == {
        "snapshot-app-volume": ("snapshot", "--volume", "--pod", "app", "--claim", "app-data")
    }
    # Without engine_host a job reaches whatever DOCKER_HOST its scheduler has: none.
    assert "DOCKER_HOST" not in config.job_env(loaded, {})
    assert "Wants=docker.service" in units.systemd(loaded)["snapvol-snapshot-app-volume.service"]

    sock = "unix:///run/podman/podman.sock"
    loaded = config.load(write(tmp_path, f"engine_host = '{sock}'\n" + text))
    assert config.job_env(loaded, {"DOCKER_HOST": "unix:///var/run/docker.sock"}) == {
        "DOCKER_HOST": sock
    }
    service = units.systemd(loaded)["snapvol-snapshot-app-volume.service"]
    assert "Wants=podman.socket\nAfter=podman.socket\n" in service
    assert sock not in service  # the job's environment comes from the file, read by `run`


def test_a_kubernetes_workload_is_a_target(tmp_path: Path, cmd) -> None:
    text = (
        "[[target]]\nworkload = 'sts/pg'\nclaim = 'data-pg-0'\nnamespace = 'shop'\n"
        "context = 'prod'\nkubeconfig = '/etc/snapvol/kubeconfig'\nschedule = '@daily'\n"
        "[[target]]\nworkload = 'deployment/pg'\nkind = 'logical'\ndatabase = 'shop'\n"
        "schedule = '@hourly'\n"
    )
    loaded = config.load(write(tmp_path, text))
    assert {j.name: j.args for j in loaded.jobs} == {
        "snapshot-sts-pg-volume": (
            "snapshot", "--volume", "--workload", "sts/pg", "--claim", "data-pg-0",
            "--namespace", "shop", "--context", "prod", "--kubeconfig", "/etc/snapvol/kubeconfig",
        ),
        "snapshot-deployment-pg-logical": (
            "snapshot", "--logical", "--workload", "deployment/pg", "--database", "shop"
        ),
    }  # fmt: skip
    for job in loaded.jobs:  # a command line snapvol takes (--help: parsed, not run)
        cmd(*job.args, "--help")


def test_a_repository_in_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="chmod 600"):
        config.load(write(tmp_path, GOOD, 0o644))


def test_crontab_lines(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, "[[target]]\ncontainer='db'\nschedule='0 3 * * *'\n"))
    lines = units.crontab(loaded).splitlines()
    assert lines[1].startswith("0 3 * * * ") and lines[1].endswith(
        f"run --config {loaded.path} --once snapshot-db-volume"
    )


def test_jobs_and_the_rescue_run_this_snapvol_whatever_the_working_directory_holds(
    tmp_path: Path,
) -> None:
    """A cron job starts in $HOME, where a clone may sit at ~/snapvol: ``python -m snapvol``
    there would import that folder. The command lines snapvol makes (jobs, units, the rescue
    watchdog: ``runtime.python_module``) run the installed one."""
    import subprocess
    import sys

    from snapvol import __version__
    from snapvol.runtime import python_module

    decoy = tmp_path / "snapvol"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('the decoy was imported')\n")
    plain = subprocess.run(
        [sys.executable, "-m", "snapvol", "--version"], cwd=tmp_path, capture_output=True, text=True
    )
    assert "the decoy was imported" in plain.stderr  # the hazard is real
    done = subprocess.run(
        [*python_module("snapvol"), "--version"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0 and __version__ in done.stdout, done.stderr


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("target = [1]\n", "a \\[\\[target\\]\\] is a table"),
        ("target = ['pc_db']\n", "a \\[\\[target\\]\\] is a table"),
        ("[[target]]\ncontainer='a'\nname=5\nschedule='@daily'\n", "name must be a non-empty"),
        (
            "[[target]]\ncontainer='a'\ndatabase='shop'\nschedule='@daily'\n",
            "database goes with kind logical",
        ),
    ],
)
def test_an_odd_target_is_one_clear_error(tmp_path: Path, text: str, problem: str) -> None:
    """A target that is not a table, a name that is not text (tracebacks before), and a key
    that does not go with the target (a database for a volume snapshot, silently dropped
    before, though the README says such keys are refused)."""
    with pytest.raises(UsageError, match=problem):
        config.load(write(tmp_path, text))


def test_a_relative_kubeconfig_is_refused(tmp_path: Path) -> None:
    """A job runs from cron's home or systemd's /, not from where the file was written: a
    relative kubeconfig would name another file there (another cluster's, or none)."""
    text = "[[target]]\nworkload='sts/pg'\nkubeconfig='kube.yaml'\nschedule='@daily'\n"
    with pytest.raises(UsageError, match="kubeconfig must be an absolute path"):
        config.load(write(tmp_path, text))


@pytest.mark.parametrize("host", ["/run/podman/podman.sock", "podman.sock", "run/docker.sock"])
def test_an_engine_host_that_is_no_address_is_refused_when_the_file_is_read(
    tmp_path: Path, host: str
) -> None:
    """A socket's path without unix:// is what one writes first; Docker's client refuses it
    (`Invalid bind address format`) only when a job runs, at night: refused here instead."""
    text = f"engine_host = '{host}'\n[[target]]\ncontainer='db'\nschedule='@daily'\n"
    with pytest.raises(UsageError, match=f"engine_host {host!r} .*unix://"):
        config.load(write(tmp_path, text))
