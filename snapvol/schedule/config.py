"""The configuration file (TOML): where the store and the repository are, what to snapshot, and
when each job runs. Every job is a snapvol command line; the settings reach it through the
SNAPVOL_* environment, so that no secret is ever in a process's arguments.

    db = "/var/lib/snapvol/manifests.db"          # optional, as --db
    backup_dir = "/var/lib/snapvol/backups"       # optional, as --backup-dir
    repository = "sftp:backup@host:/srv/restic"   # optional, as --repo (then snapshots are copied)
    password_file = "/etc/snapvol/restic-pass"    # as --password-file
    metrics_file = "/var/lib/node_exporter/textfile/snapvol.prom"
    notify_config = "/etc/snapvol/apprise.yml"
    engine_host = "unix:///run/podman/podman.sock"  # optional, as DOCKER_HOST (Podman)

    [[target]]                  # one per service: a snapshot job
    container = "pc_db"         # or pod (and claim), or workload = "deployment/pg" (and claim,
    kind = "volume"             #   namespace, context, kubeconfig); kind: or "logical"
    schedule = "0 3 * * *"      # cron (local time), @daily..., or "@every 6h"

    [prune]                     # retention, as `snapvol prune` (keep_last, keep_daily, ...)
    schedule = "30 4 * * *"
    keep_daily = 7
    keep_weekly = 4

    [verify]                    # `snapvol verify`; read_data_subset checks the repository too
    schedule = "0 5 * * 0"
    read_data_subset = "5%"

    [copy]                      # `snapvol copy`: what a failed copy left (snapshots copy anyway)
    schedule = "15 * * * *"

    [drill]                     # `snapvol drill`: restore the newest snapshot somewhere throwaway
    schedule = "0 6 * * 0"
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapvol.errors import UsageError
from snapvol.schedule import cron

_SETTINGS = {
    "db": "SNAPVOL_DB",
    "backup_dir": "SNAPVOL_BACKUP_DIR",
    "repository": "SNAPVOL_REPOSITORY",
    "password_file": "SNAPVOL_PASSWORD_FILE",
    "metrics_file": "SNAPVOL_METRICS_FILE",
    "notify_config": "SNAPVOL_NOTIFY_CONFIG",
    # The engine's socket (Podman's: unix:///run/podman/podman.sock); cron and systemd have no
    # DOCKER_HOST of their own.
    "engine_host": "DOCKER_HOST",
}
_KEEP = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
_JOB_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


@dataclass(frozen=True)
class Job:
    """One scheduled run: its name (systemd unit and `run --once`), schedule and arguments."""

    name: str
    schedule: cron.Schedule
    args: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    path: Path
    env: dict[str, str] = field(repr=False)  # the SNAPVOL_* settings its jobs run with
    jobs: tuple[Job, ...]

    def job(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        names = ", ".join(j.name for j in self.jobs) or "none"
        raise UsageError(f"{self.path} has no job {name!r} (its jobs: {names})")


def load(path: Path) -> Config:
    """Read and check the configuration; UsageError naming the file and the problem."""
    path = path.absolute()
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as err:
        raise UsageError(f"configuration {path}: {err.strerror or err}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"configuration {path} is not TOML: {err}") from None
    if "repository" in doc and mode & 0o077:
        raise UsageError(
            f"configuration {path} names a repository (its location may hold credentials) and "
            f"others can read it: chmod 600 {path}"
        )
    known = {*_SETTINGS, "target", "prune", "verify", "copy", "drill"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise UsageError(f"configuration {path}: unknown setting {unknown[0]!r}")
    env = {}
    for key, var in _SETTINGS.items():
        if key in doc:
            env[var] = str(_text(doc, key, path))
    host = env.get("DOCKER_HOST")
    if host is not None and not re.match(r"(unix|tcp|ssh|http|https|npipe)://", host):
        # Docker's client refuses it only when a job runs: say so now.
        raise UsageError(
            f"configuration {path}: engine_host {host!r} is not an engine address; a socket "
            f"is written unix://{host if host.startswith('/') else '/path/to.sock'}"
        )
    jobs = [*_targets(doc, path, "repository" in doc)]
    for section, args in (("prune", ("prune", "--yes")), ("verify", ("verify",))):
        if section in doc:
            jobs.append(_job(doc[section], section, path, args + _extra(section, doc, path)))
    for section in ("copy", "drill"):
        if section in doc:
            jobs.append(_job(doc[section], section, path, (section,)))
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise UsageError(f"configuration {path}: two jobs are named alike ({sorted(names)})")
    if not jobs:
        raise UsageError(f"configuration {path} schedules nothing: add a [[target]]")
    return Config(path, env, tuple(jobs))


def _text(doc: dict[str, Any], key: str, path: Path) -> str:
    value = doc[key]
    if not isinstance(value, str) or not value:
        raise UsageError(f"configuration {path}: {key} must be a non-empty string")
    return value


# What a [[target]] may say (anything else is a typo, refused).
_TARGET_KEYS = frozenset(
    {"container", "pod", "claim", "workload", "namespace", "context", "kubeconfig"}
    | {"kind", "database", "schedule", "name"}
)
_KUBE_KEYS = ("namespace", "context", "kubeconfig")  # a workload's cluster: --namespace...


def _targets(doc: dict[str, Any], path: Path, copies: bool) -> list[Job]:
    targets = doc.get("target", [])
    if not isinstance(targets, list):
        raise UsageError(f"configuration {path}: target must be a list ([[target]])")
    return [_target(t, path, copies) for t in targets]


def _target(t: dict[str, Any], path: Path, copies: bool) -> Job:
    """A snapshot job: of a container, a `podman kube play` pod's claim, or a Kubernetes
    workload (its claim, or its PostgreSQL with kind logical)."""
    if not isinstance(t, dict):
        raise UsageError(f"configuration {path}: a [[target]] is a table of keys, not {t!r}")
    unknown = sorted(set(t) - _TARGET_KEYS)
    if unknown:
        raise UsageError(f"configuration {path}: a [[target]] has an unknown key {unknown[0]!r}")
    given = {k: _text(t, k, path) for k in ("container", "pod", "workload") if k in t}
    if len(given) != 1:
        raise UsageError(
            f"configuration {path}: a [[target]] names one of container, pod (a `podman kube "
            f"play` pod) and workload (a Kubernetes one), not {' and '.join(given) or 'none'}"
        )
    [(what, source)] = given.items()
    kind = t.get("kind", "volume")
    if kind not in ("volume", "logical"):
        raise UsageError(f"configuration {path}: target {source}: kind is volume or logical")
    if what == "pod" and kind != "volume":
        raise UsageError(f"configuration {path}: target {source}: a pod's claim takes kind volume")
    if "claim" in t and (what == "container" or kind != "volume"):
        raise UsageError(
            f"configuration {path}: target {source}: claim goes with a pod or a workload's volume"
        )
    if "database" in t and kind != "logical":
        raise UsageError(f"configuration {path}: target {source}: database goes with kind logical")
    cluster = [k for k in _KUBE_KEYS if k in t]
    if cluster and what != "workload":
        raise UsageError(f"configuration {path}: target {source}: {cluster[0]} goes with workload")
    # A job runs from cron's home or systemd's /, not from where this file is.
    if "kubeconfig" in t and not Path(_text(t, "kubeconfig", path)).is_absolute():
        raise UsageError(
            f"configuration {path}: target {source}: kubeconfig must be an absolute path (a job "
            "does not run where this file is)"
        )
    name = _text(t, "name", path) if "name" in t else f"snapshot-{source.replace('/', '-')}-{kind}"
    args: tuple[str, ...] = ("snapshot", f"--{kind}", f"--{what}", source)
    for key in [k for k in ("claim", *_KUBE_KEYS) if k in t]:
        args += (f"--{key}", _text(t, key, path))
    if "database" in t and kind == "logical":
        args += ("--database", _text(t, "database", path))
    return _job(t, name, path, args + (("--copy",) if copies else ()))


def _extra(section: str, doc: dict[str, Any], path: Path) -> tuple[str, ...]:
    body = doc[section]
    if section == "prune":
        keep = [(k, body[k]) for k in _KEEP if k in body]
        if not keep:
            raise UsageError(f"configuration {path}: [prune] needs a keep_* rule")
        return tuple(a for k, v in keep for a in (f"--{k.replace('_', '-')}", str(v)))
    if "read_data_subset" in body:
        return ("--repo", "--read-data-subset", str(body["read_data_subset"]))
    return ()


def _job(body: Any, name: str, path: Path, args: tuple[str, ...]) -> Job:
    if not isinstance(body, dict) or "schedule" not in body:
        raise UsageError(f"configuration {path}: job {name!r} has no schedule")
    if not _JOB_NAME.fullmatch(name):
        raise UsageError(f"configuration {path}: {name!r} cannot name a job (a-z, 0-9, . _ -)")
    return Job(name, cron.parse(_text(body, "schedule", path)), args)


def job_env(
    config: Config, base: dict[str, str] | os._Environ[str] | None = None
) -> dict[str, str]:
    """The environment a job runs in: this one, with the configuration's settings over it."""
    return {**(os.environ if base is None else base), **config.env}
