"""One error taxonomy: every failure snapvol anticipates is a SnapvolError with its own exit code.

The CLI's single entry point turns these into one ``Error: ...`` line on stderr; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence


class SnapvolError(Exception):
    """Base of all anticipated failures. ``exit_code`` is what the process exits with."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        retry_with: Mapping[str, str] | None = None,
        run: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        # Settings that would get past this failure, by the core's names (``reader="endpoint"``;
        # "" when the value is the user's to pick): the CLI says which of its flags set them.
        self.retry_with: dict[str, str] = dict(retry_with or {})
        # The snapvol command (its arguments) that finishes the job: the CLI spells it with the
        # store and backup directory this run used.
        self.run: tuple[str, ...] = tuple(run)

    def __str__(self) -> str:
        return self.message + (f": run `{snapvol_command(*self.run)}`" if self.run else "")


def snapvol_command(*args: str) -> str:
    """``snapvol ARGS`` as a shell command, with the default store (the CLI spells it with the
    store and backup directory of the run)."""
    return shlex.join(["snapvol", *args])


class UsageError(SnapvolError):
    """The user asked for something malformed (bad name, bad option combination)."""

    exit_code = 2


class NotFoundError(SnapvolError):
    """A snapshot, container, volume or file that was named does not exist."""

    exit_code = 3


class AmbiguousError(UsageError):
    """A snapshot id prefix or name matches more than one snapshot."""


class DockerUnavailableError(SnapvolError):
    """The Docker engine cannot be reached (not running, or permission denied on its socket)."""

    exit_code = 4


class DockerError(SnapvolError):
    """The Docker engine answered with an error we did not expect."""

    exit_code = 5


class ClusterUnavailableError(DockerUnavailableError):
    """The Kubernetes API server cannot be reached, or no kubeconfig (or context) could be
    loaded: the orchestrator's counterpart of an engine that does not answer."""


class ClusterError(DockerError):
    """The Kubernetes API answered with an error we did not expect."""


class ForbiddenError(ClusterError):
    """The Kubernetes API refused a request: the message names the RBAC verb and resource the
    account lacks (docs/kubernetes.md has the Role to apply)."""


class PodSecurityError(ForbiddenError):
    """The namespace's Pod Security admission refused a pod snapvol made (not RBAC: the pod
    asks for more than the namespace's level allows)."""


class StoreError(SnapvolError):
    """The manifest store cannot be opened, is not a snapvol store, or is corrupt."""

    exit_code = 6


class IntegrityError(SnapvolError):
    """An archive does not match what the store recorded, or would write outside its target."""

    exit_code = 7


class IncompatibleError(SnapvolError):
    """The snapshot cannot be restored into this target (PostgreSQL major version, kind)."""

    exit_code = 8


class LockedError(SnapvolError):
    """Another snapvol operation is running on the same container."""

    exit_code = 9


class Cancelled(SnapvolError):
    """The user declined the confirmation (or its input ended) before anything changed."""

    exit_code = 10


class Interrupted(Cancelled):
    """The user pressed Ctrl-C at a question, before anything changed (128 + SIGINT)."""

    exit_code = 130


class OperationFailed(SnapvolError):
    """A snapshot or restore failed part-way; the message says what state things were left in."""

    exit_code = 11


class InterruptedPartway(OperationFailed):
    """Ctrl-C or SIGTERM part-way through (128 + SIGINT); the message says what state things
    were left in (a restore rolled back, say)."""

    exit_code = 130


def failed(message: str, cause: BaseException, *, run: Sequence[str] = ()) -> OperationFailed:
    """The error for a failure ``cause`` led to: an interruption keeps its exit status 130."""
    kind = InterruptedPartway if isinstance(cause, KeyboardInterrupt) else OperationFailed
    return kind(message, run=run)


class DiskFullError(OperationFailed):
    """The backup directory ran out of space."""

    exit_code = 12


class VolumeInUseError(SnapvolError):
    """Another running container mounts the volume: stopping the target would not make it cold."""

    exit_code = 13


class RepositoryError(SnapvolError):
    """A restic repository cannot be used: missing, unreachable, refused, or restic itself failed.

    Messages show the repository's display form (credentials removed), never its password.
    """

    exit_code = 14


class ResticMissingError(RepositoryError):
    """The restic program is not installed (or not on PATH)."""


class RepositoryMissingError(RepositoryError):
    """No repository at the given location (create one with ``snapvol repo init``)."""


class RepositoryExistsError(RepositoryError):
    """``repo init`` on a location that already holds a repository."""


class RepositoryUnreachableError(RepositoryError):
    """The repository's server cannot be reached (refused, unknown host, timeout, ssh failed)."""


class RepositoryAuthError(RepositoryError):
    """The repository refused us: wrong password, or credentials the server rejected."""


class RepositorySnapshotMissingError(RepositoryError):
    """A restic snapshot (or the file in it) that was asked for is not in the repository."""


class RepositoryLockedError(RepositoryError, LockedError):
    """Another restic process holds the repository's lock."""

    exit_code = LockedError.exit_code


class RepositoryDamagedError(RepositoryError, IntegrityError):
    """The repository's data is damaged: a pack does not match its id, a blob fails to decrypt."""

    exit_code = IntegrityError.exit_code


def describe(err: BaseException) -> str:
    """A short human description of any exception, for messages that wrap it."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    if isinstance(err, SnapvolError):
        return err.message
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
