"""What `--help` says after the options, and the man page with it: per command, examples, the
environment variables it reads and the exit codes it can end with. One source for both (the
man page, docs/man/snapvol.1, is written from it by scripts/gen-man.py).

Plain data and the standard library only: `snapvol --help` reads it and imports no command.
"""

from __future__ import annotations

import textwrap
from typing import NamedTuple

WIDTH = 78  # what a line of an epilog may take, with click's indent of 2

ENVIRONMENT = {
    "SNAPVOL_DB": "The manifest store, as --db (default: /var/lib/snapvol/manifests.db as "
    "root, else $XDG_DATA_HOME/snapvol/manifests.db).",
    "SNAPVOL_BACKUP_DIR": "Where archives are written, as --backup-dir (default: backups "
    "beside the store).",
    "SNAPVOL_REPOSITORY": "The restic repository for copies, as --repo; prefer it to --repo "
    "for a location with credentials (a command line shows in ps).",
    "SNAPVOL_PASSWORD_FILE": "The repository's password file, as --password-file (owner-only).",
    "RESTIC_PASSWORD_FILE": "Without SNAPVOL_PASSWORD_FILE: restic's password file.",
    "RESTIC_PASSWORD_COMMAND": "Else: a command that prints the repository's password.",
    "RESTIC_PASSWORD": "Else: the repository's password itself.",
    "SNAPVOL_CONTAINER": "The target container, as --container (snapshot: pc_db; restore: the "
    "snapshot's own).",
    "SNAPVOL_READER": "How a volume is read, as --reader: auto, host or endpoint.",
    "SNAPVOL_STOP_TIMEOUT": "Seconds a stopped container gets to shut down, as --stop-timeout.",
    "SNAPVOL_COPY": "yes or no: whether snapshot copies to a configured repository (as "
    "--copy / --no-copy).",
    "SNAPVOL_RUN_DIR": "Where watchdog logs go (default: $XDG_RUNTIME_DIR/snapvol, else "
    "/tmp/snapvol-<uid>).",
    "DOCKER_HOST": "The Docker engine to use (default: unix:///var/run/docker.sock); Podman's "
    "API socket works too.",
    "SNAPVOL_METRICS_FILE": "A Prometheus textfile written after each snapshot, copy, restore, "
    "verify, prune, rm or drill, as --metrics-file.",
    "SNAPVOL_NOTIFY": "Apprise URLs (space-separated) told when such a run fails or a snapshot "
    "is suspect.",
    "SNAPVOL_NOTIFY_CONFIG": "An Apprise configuration file (owner-only), as --notify-config.",
    "SNAPVOL_NOTIFY_SUCCESS": "Tell the Apprise targets of good runs too, as --notify-success.",
    "SNAPVOL_MAX_SHRINK": "snapshot: the fraction by which a snapshot may be smaller than the one "
    "before it unflagged, as --max-shrink (default 0.5).",
    "SNAPVOL_CONFIG": "schedule and run: the configuration file, as --config.",
    "SNAPVOL_NAMESPACE": "With --workload (and recover): the Kubernetes namespace, as --namespace.",
    "SNAPVOL_KUBE_CONTEXT": "With --workload (and recover): the kubeconfig context, as --context.",
    "SNAPVOL_KUBECONFIG": "With --workload (and recover): the kubeconfig, as --kubeconfig.",
    "KUBECONFIG": "Without SNAPVOL_KUBECONFIG: the kubeconfig (default: ~/.kube/config).",
    "SNAPVOL_KUBE_LANE": "With --workload: who reads and writes the claim, as --kube-lane: "
    "auto, host or pod.",
    "SNAPVOL_NODE_NAME": "With --workload: the Kubernetes node snapvol runs on, as --node-name "
    "(default: the host name).",
}
"""Every variable snapvol reads, and what for. restic's own backend variables (AWS_*, B2_*,
...) reach restic untouched."""

EXIT_CODES = {
    0: "success",
    1: "an unexpected error: a bug (the traceback says where)",
    2: "bad usage, an ambiguous id, or dump content a restore refuses",
    3: "not found: a snapshot, container, volume or file that was named",
    4: "the Docker engine (or the Kubernetes API) cannot be reached",
    5: "the Docker engine answered with an unexpected error (or Kubernetes refused: RBAC)",
    6: "the manifest store is missing or unusable",
    7: "integrity: an archive or copy does not match its record, or restore would refuse it",
    8: "incompatible: PostgreSQL major version, or not PostgreSQL",
    9: "another operation holds the container (or the repository)",
    10: "cancelled: a no, or the end of input, at a question",
    11: "the operation failed part-way (the message says what state it left)",
    12: "disk full",
    13: "another running container uses the volume",
    14: "the repository cannot be used (missing, unreachable, wrong password, no restic)",
    130: "interrupted (Ctrl-C, SIGTERM)",
}
"""Every exit code (snapvol.errors holds the errors that carry them)."""

COMPLETION = (
    ("bash", 'eval "$(_SNAPVOL_COMPLETE=bash_source snapvol)"', "in ~/.bashrc"),
    ("zsh", 'eval "$(_SNAPVOL_COMPLETE=zsh_source snapvol)"', "in ~/.zshrc"),
    ("fish", "_SNAPVOL_COMPLETE=fish_source snapvol | source", "in ~/.config/fish/config.fish"),
)
"""Shell completion (click's own) per shell: the line that turns it on, and where it goes. It
completes commands, options, and snapshot ids and names from the store."""

_STORE = ("SNAPVOL_DB", "SNAPVOL_BACKUP_DIR")
_REPOSITORY = (
    "SNAPVOL_REPOSITORY",
    "SNAPVOL_PASSWORD_FILE",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_PASSWORD_COMMAND",
    "RESTIC_PASSWORD",
)
_ENGINE = (
    "SNAPVOL_CONTAINER",
    "SNAPVOL_READER",
    "SNAPVOL_STOP_TIMEOUT",
    "SNAPVOL_RUN_DIR",
    "DOCKER_HOST",
)
_KUBE = ("SNAPVOL_NAMESPACE", "SNAPVOL_KUBE_CONTEXT", "SNAPVOL_KUBECONFIG", "KUBECONFIG")
_KUBE_LANE = ("SNAPVOL_KUBE_LANE", "SNAPVOL_NODE_NAME")  # snapshot and restore, not recover
_MONITOR = (
    "SNAPVOL_METRICS_FILE",
    "SNAPVOL_NOTIFY",
    "SNAPVOL_NOTIFY_CONFIG",
    "SNAPVOL_NOTIFY_SUCCESS",
)


class Example(NamedTuple):
    command: str  # a command line as typed
    does: str  # what it does


class CommandHelp(NamedTuple):
    examples: tuple[Example, ...]
    environment: tuple[str, ...]  # keys of ENVIRONMENT
    exit_codes: tuple[int, ...]  # keys of EXIT_CODES


def _help(examples: list[tuple[str, str]], env: tuple[str, ...], codes: str) -> CommandHelp:
    return CommandHelp(
        tuple(Example(c, d) for c, d in examples),
        env,
        tuple(int(code) for code in codes.split()),
    )


HELP = {
    "": _help(
        [
            ("snapvol snapshot --volume", "Cold snapshot of pc_db's data volume."),
            ("snapvol ls", "The snapshots, newest first."),
            ("snapvol restore", "Pick a snapshot from a list, see the plan, confirm, restore."),
            ("snapvol --db /srv/snapvol/manifests.db verify", "Check every archive of a store."),
        ],
        tuple(ENVIRONMENT),
        " ".join(map(str, EXIT_CODES)),
    ),
    "copy": _help(
        [
            ("snapvol copy", "Copy every complete snapshot not in the repository yet."),
            ("snapvol copy before-upgrade", "Copy (again) the snapshot named before-upgrade."),
            (
                "SNAPVOL_REPOSITORY=sftp:nas:/srv/restic snapvol copy --json",
                "Copy to that repository; print what was copied as JSON.",
            ),
        ],
        _STORE + _REPOSITORY,
        "0 2 3 6 7 9 11 14 130",
    ),
    "ls": _help(
        [
            ("snapvol ls", "Every snapshot, newest first."),
            ("snapvol ls --container pc_db --kind logical --limit 5", "The last 5 dumps of pc_db."),
            ("snapvol ls --status failed --json", "Failed snapshots, as JSON."),
            (
                "snapvol --repo /mnt/usb/restic ls --repo",
                "What a repository holds; no store needed.",
            ),
        ],
        _STORE + _REPOSITORY,
        "0 2 6 14 130",
    ),
    "prune": _help(
        [
            (
                "snapvol prune --keep-daily 7 --keep-weekly 4 -n",
                "Show what the policy would delete.",
            ),
            ("snapvol prune --keep-last 10 -y", "Keep the newest 10 per source; no question."),
            (
                "snapvol --repo /mnt/usb/restic prune --keep-monthly 12",
                "Apply the policy to the repository's copies as well.",
            ),
        ],
        _STORE + _REPOSITORY,
        "0 2 6 7 9 10 14 130",
    ),
    "repo": _help(
        [
            ("snapvol --repo /mnt/usb/restic repo init", "Create a repository on a USB disk."),
            ("snapvol --repo sftp:nas:/srv/restic repo import", "Record what a repository holds."),
        ],
        _STORE + _REPOSITORY,
        "0 2 6 7 14 130",
    ),
    "repo init": _help(
        [
            (
                "snapvol --repo /mnt/usb/restic --password-file ~/.restic-pw repo init",
                "Create a repository on a USB disk (the password file is chmod 600).",
            ),
            (
                "SNAPVOL_REPOSITORY=s3:https://s3.example.com/backups snapvol repo init",
                "Create one in an S3 bucket (restic reads AWS_ACCESS_KEY_ID and friends).",
            ),
        ],
        _REPOSITORY,
        "0 2 14 130",
    ),
    "repo import": _help(
        [
            (
                "snapvol --repo sftp:nas:/srv/restic repo import",
                "On a new machine: record the snapshots copied there; restore fetches them.",
            ),
            (
                "snapvol --db /tmp/m.db --repo /mnt/usb/restic repo import --json",
                "Into a store of its own, printing what it recorded as JSON.",
            ),
        ],
        _STORE + _REPOSITORY,
        "0 2 6 7 14 130",
    ),
    "restore": _help(
        [
            ("snapvol restore", "On a terminal: pick a snapshot from a numbered list."),
            ("snapvol restore before-upgrade", "Restore that snapshot into its own container."),
            (
                "snapvol restore 3fa9 --container staging_db -y",
                "Restore the snapshot whose id starts 3fa9 elsewhere; no question.",
            ),
            (
                "snapvol restore --file dump.sql.zst --database app",
                "Replace database app of pc_db with a dump file's content.",
            ),
            (
                "snapvol restore nightly --table orders --database recovered",
                "Only table orders of a logical snapshot, into a new database.",
            ),
            (
                "snapvol restore 3fa9 --workload sts/pg --claim data-pg-0",
                "Into that claim of StatefulSet pg (a snapshot of a workload: its own).",
            ),
        ],
        _STORE + _REPOSITORY + _ENGINE + _KUBE + _KUBE_LANE,
        "0 2 3 4 5 6 7 8 9 10 11 12 13 14 130",
    ),
    "recover": _help(
        [
            ("snapvol recover --namespace shop", "Put right what a dead run left in shop."),
            (
                "snapvol recover --context prod --namespace shop --force",
                "Also what a run on another host left (once it is known to be gone).",
            ),
        ],
        _KUBE,
        "0 2 3 4 5 130",
    ),
    "rm": _help(
        [
            ("snapvol rm before-upgrade", "Delete that snapshot (asks first)."),
            ("snapvol rm 3fa9 7c01 -n", "Show what would be deleted; delete nothing."),
            ("snapvol rm 3fa9 -y", "Delete it without a question (for scripts)."),
        ],
        _STORE,
        "0 2 3 6 7 9 10 130",
    ),
    "show": _help(
        [
            ("snapvol show before-upgrade", "The record of that snapshot and its copies."),
            ("snapvol show 3fa9 --json", "The same as JSON (the object ls --json gives)."),
        ],
        _STORE,
        "0 2 3 6 130",
    ),
    "snapshot": _help(
        [
            (
                "snapvol snapshot --volume --name before-upgrade",
                "Stop pc_db, archive its data volume, start it again; name it before-upgrade.",
            ),
            (
                "snapvol snapshot --logical --container app_db --database app",
                "pg_dump of database app, while app_db keeps running.",
            ),
            (
                "snapvol snapshot --volume --pod app --claim app-data",
                "A claim of a Deployment `podman kube play` runs, its whole pod stopped meanwhile.",
            ),
            (
                "snapvol snapshot --volume --workload deployment/pg --namespace shop",
                "A Kubernetes Deployment's claim: scaled to zero, read, scaled back.",
            ),
            (
                "snapvol snapshot --volume --workload deploy/pg --kube-lane host",
                "As root on the node of its local-path claim: read the directory here, no pod.",
            ),
            (
                "snapvol snapshot --logical --workload sts/pg --database app",
                "pg_dump of database app in a running pod of StatefulSet pg (no downtime).",
            ),
            (
                "snapvol snapshot --volume --reader endpoint --level 9",
                "Read the volume through Docker's archive endpoint; compress harder.",
            ),
            (
                "SNAPVOL_COPY=no snapvol --repo /mnt/usb/restic snapshot --volume",
                "Do not copy it to the repository now (a later `snapvol copy` will).",
            ),
        ],
        _STORE
        + _REPOSITORY
        + ("SNAPVOL_COPY", "SNAPVOL_MAX_SHRINK", *_ENGINE, *_KUBE, *_KUBE_LANE, *_MONITOR),
        "0 2 3 4 5 6 7 8 9 11 12 13 14 130",
    ),
    "diff": _help(
        [
            ("snapvol diff nightly-mon nightly-tue", "What changed in the volume in a day."),
            ("snapvol diff 3fa9 7c01 --json", "The same as JSON: added, removed, changed."),
        ],
        _STORE,
        "0 2 3 6 130",
    ),
    "drill": _help(
        [
            ("snapvol drill", "Restore the newest snapshot into a throwaway server; check it."),
            (
                "snapvol drill before-upgrade --json",
                "Drill that snapshot; print the result (tables, counts, checks) as JSON.",
            ),
        ],
        _STORE + _ENGINE + _MONITOR,
        "0 2 3 4 5 6 7 11 130",
    ),
    "extract": _help(
        [
            ("snapvol extract 3fa9 --to /tmp/all", "Every file of the snapshot, checked."),
            (
                "snapvol extract 3fa9 base/16384 --to /tmp/db",
                "Only that directory (and those above it).",
            ),
            ("snapvol extract nightly-dump --to /tmp/dumps", "A logical snapshot's dump file."),
        ],
        _STORE,
        "0 2 3 6 7 11 12 130",
    ),
    "run": _help(
        [
            (
                "snapvol run --config /etc/snapvol/snapvol.toml",
                "Every job on its schedule, until SIGTERM (a compose sidecar).",
            ),
            (
                "snapvol run --config /etc/snapvol/snapvol.toml --once prune",
                "The job named prune, now (what a systemd unit runs).",
            ),
        ],
        ("SNAPVOL_CONFIG",),
        "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 130",
    ),
    "schedule": _help(
        [
            (
                "snapvol schedule --config /etc/snapvol/snapvol.toml",
                "Print a systemd service and timer for each job.",
            ),
            (
                "snapvol schedule --config snapvol.toml --systemd /etc/systemd/system",
                "Write them there.",
            ),
            ("snapvol schedule --config snapvol.toml --cron", "Crontab lines instead."),
        ],
        ("SNAPVOL_CONFIG",),
        "0 2 130",
    ),
    "verify": _help(
        [
            ("snapvol verify", "Re-hash every complete snapshot's archive (a cron job)."),
            ("snapvol verify before-upgrade 3fa9", "Check those two."),
            (
                "snapvol --repo /mnt/usb/restic verify --repo --read-data-subset 10%",
                "restic check of the repository, reading a tenth of its data.",
            ),
        ],
        _STORE + _REPOSITORY,
        "0 2 3 6 7 14 130",
    ),
}
"""Per command, by its path below `snapvol` ("" is snapvol itself, "repo init" a subcommand)."""


def _rows(rows: list[tuple[str, str]], gap: int) -> list[str]:
    """Two columns, the second ``gap`` to the right of the first and wrapped under itself."""
    indent = " " * (2 + gap)
    lines = []
    for left, right in rows:
        if len(left) < gap:
            first = f"  {left:<{gap}}"
        else:
            lines.append(f"  {left}")
            first = indent
        lines += textwrap.wrap(right, WIDTH, initial_indent=first, subsequent_indent=indent)
    return lines


def examples_lines(help_: CommandHelp) -> list[str]:
    lines = []
    for example in help_.examples:
        lines.append(f"  {example.command}")
        lines += textwrap.wrap(
            example.does, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    return lines


def environment_lines(names: tuple[str, ...]) -> list[str]:
    return _rows([(name, ENVIRONMENT[name]) for name in names], 25)


def exit_code_lines(codes: tuple[int, ...]) -> list[str]:
    return _rows([(str(code), EXIT_CODES[code]) for code in codes], 5)


def completion_lines() -> list[str]:
    lines = ["Shell completion (commands, options, snapshot ids and names):"]
    for shell, line, where in COMPLETION:
        lines += [f"  {shell} ({where}):", f"      {line}"]
    return lines


def epilog(path: str) -> str:
    """The epilog of the command at ``path`` (see ``HELP``): click keeps each section's lines as
    they are (its ``\\b`` marker) and indents them by 2."""
    help_ = HELP[path]
    sections = [
        ["Examples:", *examples_lines(help_)],
        ["Environment:", *environment_lines(help_.environment)],
        ["Exit codes:", *exit_code_lines(help_.exit_codes)],
    ]
    if path == "":
        sections += [
            completion_lines(),
            ["The manual: docs/man/snapvol.1 (man -l docs/man/snapvol.1 in the source)."],
        ]
    else:
        sections.append(["Every exit code and variable: snapvol --help, and the manual."])
    return "\n\n".join("\n".join(["\b", *lines]) for lines in sections)
