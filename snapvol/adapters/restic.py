"""The restic adapter: the only module that runs restic.

Each operation runs ``restic`` as a child process. The repository's location and its password go
in the child's environment, never in its arguments (which ``ps`` shows every user of the machine);
``--json`` output is read into dataclasses; restic's failures become snapvol errors in one place,
``translate``. Nothing here decides what to send, tag or keep: that is the caller's business.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen
from typing import IO, Any

from snapvol.background import Background
from snapvol.errors import (
    RepositoryAuthError,
    RepositoryDamagedError,
    RepositoryError,
    RepositoryExistsError,
    RepositoryLockedError,
    RepositoryMissingError,
    RepositorySnapshotMissingError,
    RepositoryUnreachableError,
    ResticMissingError,
    UsageError,
)
from snapvol.pipeline.archive import CHUNK

STDERR_LIMIT = 64 << 10  # the tail of restic's stderr kept for error messages
STOP_GRACE = 15.0  # seconds restic gets after SIGINT to remove its lock before it is killed
INSTALL_HINT = (
    "restic is not installed (snapvol needs restic 0.14 or newer): install it with "
    "`apt-get install restic` on Debian or Ubuntu, or see https://restic.readthedocs.io"
)

# restic's own password variables, in the order restic itself prefers them.
PASSWORD_VARS = ("RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND", "RESTIC_PASSWORD")
_REPO_VARS = ("RESTIC_REPOSITORY", "RESTIC_REPOSITORY_FILE")
_SUBSET = re.compile(r"^(\d+/\d+|\d+(\.\d+)?%|\d+[KMGT]?)$")


# --- the repository's configuration -----------------------------------------------------------


_BACKEND = re.compile(r"^(local|sftp|rest|s3|b2|azure|gs|swift|rclone):")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s\"']*)@")


def display_location(location: str) -> str:
    """``location`` with its credentials removed, for messages and the store.

    In an http(s) URL (``rest:``, ``s3:``) the whole ``user:pass@`` goes (a user name there may be
    a token); elsewhere (``sftp://user@host``) only a password does, the login name stays.
    """
    return _strip_userinfo(location, count=1)


def _strip_userinfo(text: str, count: int = 0) -> str:
    def strip(m: re.Match[str]) -> str:
        scheme, info = m["scheme"], m["userinfo"]
        if scheme.lower().startswith("http"):
            return scheme
        if ":" in info:
            return f"{scheme}{info.split(':', 1)[0]}@"
        return m.group(0)

    return _URL_USERINFO.sub(strip, text, count=count)


def _url_secrets(location: str) -> list[str]:
    m = _URL_USERINFO.search(location)
    if m is None:
        return []
    info = m["userinfo"]
    return [info, *info.split(":", 1)[1:]]


@dataclass(frozen=True)
class Repository:
    """Where a restic repository is and how to open it.

    ``location`` is restic's syntax (a path, ``sftp:``, ``s3:``, ``rest:``...) and may hold
    credentials: it is never printed (use ``display``). ``password_file`` or ``password_env`` (one
    of restic's ``RESTIC_PASSWORD*`` variables) unlocks it. ``env`` adds variables for the backend
    (``AWS_ACCESS_KEY_ID``...). ``options`` become ``restic -o key=value`` and so show in ``ps``:
    they must hold no secret (``sftp.command=ssh -p 2222 ...`` is their use).
    """

    location: str = field(repr=False)
    password_file: Path | None = None
    password_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    options: tuple[str, ...] = ()

    @classmethod
    def configure(
        cls,
        location: str | None,
        password_file: str | Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        options: Sequence[str] = (),
    ) -> Repository:
        """The repository the user named: ``password_file`` (``--password-file``) or else the
        first of restic's own password variables found in ``environ``."""
        environ = os.environ if environ is None else environ
        if not location or not location.strip():
            raise UsageError("no repository: give --repo or set SNAPVOL_REPOSITORY")
        if not _BACKEND.match(location):  # a local path: made absolute, as the store keeps it
            location = str(Path(location).expanduser().absolute())
        if password_file is None and environ.get("RESTIC_PASSWORD_FILE"):
            password_file = environ["RESTIC_PASSWORD_FILE"]
        password_env: dict[str, str] = {}
        if password_file is None:
            for var in PASSWORD_VARS[1:]:
                if environ.get(var):
                    password_env = {var: environ[var]}
                    break
            else:
                raise UsageError(
                    f"no password for repository {display_location(location)}: give "
                    "--password-file or set SNAPVOL_PASSWORD_FILE (or RESTIC_PASSWORD_FILE, "
                    "RESTIC_PASSWORD_COMMAND, RESTIC_PASSWORD)"
                )
        return cls(
            location=location,
            password_file=Path(password_file).absolute() if password_file is not None else None,
            password_env=password_env,
            env=dict(env or {}),
            options=tuple(options),
        )

    @property
    def display(self) -> str:
        return display_location(self.location)

    def validate(self) -> None:
        """Refuse a password file that is missing, empty, or readable by anyone but its owner
        (as ssh refuses such a private key): a repository's password is its owner's alone."""
        path = self.password_file
        if path is None:
            if not self.password_env:
                raise UsageError(f"no password for repository {self.display}")
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            raise UsageError(f"password file {path} does not exist") from None
        except OSError as err:
            raise UsageError(f"cannot read password file {path}: {err.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"password file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise UsageError(
                f"password file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}):"
                f" restrict it with `chmod 600 {path}`"
            )
        if st.st_size == 0:
            raise UsageError(f"password file {path} is empty")

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment restic runs with: ``base`` (ours) less any other repository or
        password, plus this repository's. ``TZ=UTC`` makes ``--time`` mean UTC."""
        base = os.environ if base is None else base
        dropped = set(PASSWORD_VARS) | set(_REPO_VARS)
        env = {k: v for k, v in base.items() if k not in dropped}
        env.update({k: v for k, v in self.env.items() if k not in dropped})
        env["RESTIC_REPOSITORY"] = self.location
        if self.password_file is not None:
            env["RESTIC_PASSWORD_FILE"] = str(self.password_file)
        else:
            env.update(self.password_env)
        env["TZ"] = "UTC"
        return env

    def redact(self, text: str) -> str:
        """``text`` (restic's stderr) with the location's credentials and the password hidden."""
        text = _strip_userinfo(text.replace(self.location, self.display))
        secrets = _url_secrets(self.location)
        secrets += [v for k, v in self.password_env.items() if k == "RESTIC_PASSWORD"]
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text


# --- what restic answers ----------------------------------------------------------------------


@dataclass(frozen=True)
class RepoConfig:
    id: str
    version: int


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime
    tags: tuple[str, ...]
    paths: tuple[str, ...]
    hostname: str


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str  # the full id (or, asked for, the short one restic 0.14 prints)
    data_added: int  # bytes this backup added to the repository (after deduplication)
    total_bytes: int  # bytes of the stream restic read


@dataclass(frozen=True)
class CheckReport:
    ok: bool
    problems: tuple[str, ...]  # restic's own lines, when not ok


@dataclass(frozen=True)
class Node:
    path: str
    type: str  # "file" | "dir" | ...
    size: int


def parse_nodes(lines: Iterable[bytes | str]) -> list[Node]:
    """The nodes among ``restic ls --json``'s lines (the first line describes the snapshot)."""
    nodes = []
    for line in lines:
        msg = _json_line(line)
        if msg is not None and msg.get("struct_type") == "node":
            nodes.append(Node(str(msg["path"]), str(msg.get("type", "")), int(msg.get("size", 0))))
    return nodes


def parse_time(text: str) -> datetime:
    """restic's RFC 3339 time (nanoseconds, ``Z`` or an offset) as an aware datetime."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", text)
    if m is None:
        raise RepositoryError(f"restic printed a time snapvol cannot read: {text!r}")
    base, frac, zone = m.groups()
    iso = base + (f".{frac[:6].ljust(6, '0')}" if frac else "")
    iso += "+00:00" if zone in (None, "Z") else zone
    return datetime.fromisoformat(iso)


def parse_snapshots(text: str) -> list[Snapshot]:
    """``restic snapshots --json``, oldest first."""
    try:
        items = json.loads(text or "[]")
    except json.JSONDecodeError as err:
        raise RepositoryError(f"restic printed snapshots snapvol cannot read: {err}") from None
    snaps = [
        Snapshot(
            id=str(item["id"]),
            short_id=str(item.get("short_id") or item["id"][:8]),
            time=parse_time(str(item["time"])),
            tags=tuple(item.get("tags") or ()),
            paths=tuple(item.get("paths") or ()),
            hostname=str(item.get("hostname", "")),
        )
        for item in items or []
    ]
    return sorted(snaps, key=lambda s: s.time)


def parse_backup_summary(lines: Iterable[bytes | str]) -> dict[str, Any] | None:
    """The ``summary`` message among ``restic backup --json``'s lines (None if there is none)."""
    summary = None
    for line in lines:
        msg = _json_line(line)
        if msg is not None and msg.get("message_type") == "summary":
            summary = msg
    return summary


def _json_line(line: bytes | str) -> dict[str, Any] | None:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


def parse_version(text: str) -> tuple[int, ...]:
    """``restic version``'s first line (``restic 0.14.0 compiled with ...``) as a tuple."""
    m = re.search(r"restic (\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(g) for g in m.groups()) if m else (0, 0, 0)


# --- restic's failures, in one place ----------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_AUTH = ("wrong password or no key found",)
_DENIED = (
    "access denied",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "access key id you provided does not exist",
    "401 unauthorized",
    "(401)",
    "403 forbidden",
    "(403)",
    "permission denied (publickey",
)
_LOCKED = ("repository is already locked",)
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "network is unreachable",
    "no route to host",
    "connection reset",
    "unable to start the sftp session",
    "subprocess ssh:",
    "host key verification failed",
    "tls handshake",
    "x509:",
    "context deadline exceeded",
    "server gave http response to https client",
)
_MISSING = ("is there a repository at the following location?", "unable to open config file")
_EXISTS = ("config file already exists", "repository master key and config already initialized")
_SNAPSHOT_MISSING = ("no matching id found", "not found in snapshot", "invalid id ")
_DAMAGED = (
    "repository contains errors",
    "ciphertext verification failed",
    "pack id does not match",
    "does not match",
    "checksum mismatch",
    "invalid data returned",
    "load(<data/",
    "decrypting blob",
)


def _lines(stderr: str) -> list[str]:
    return [ln.strip() for ln in _ANSI.sub("", stderr).splitlines() if ln.strip()]


def _first(lines: list[str], needles: Sequence[str]) -> str | None:
    for line in lines:
        low = line.lower()
        if any(n in low for n in needles):
            return line
    return None


def _reason(line: str) -> str:
    line = re.sub(r"^(Fatal|error):\s*", "", line)
    return line if len(line) <= 300 else line[:297] + "..."


def translate(repo: Repository, stderr: str, returncode: int, what: str) -> RepositoryError:
    """The snapvol error for a restic run that failed: one line, credentials and password hidden,
    the repository shown by its display form."""
    lines = _lines(repo.redact(stderr))
    d = repo.display
    if _first(lines, _AUTH):
        return RepositoryAuthError(f"wrong password for repository {d} (or no key found)")
    if line := _first(lines, _DENIED):
        return RepositoryAuthError(f"repository {d} refused access: {_reason(line)}")
    if line := _first(lines, _LOCKED):
        holder = re.search(r"locked by (.*)$", line)
        by = f" ({holder.group(1)})" if holder else ""
        return RepositoryLockedError(
            f"repository {d} is locked by another restic process{by}: wait for it to finish, "
            "or if it is gone, run `restic unlock`"
        )
    if line := _first(lines, _UNREACHABLE):
        return RepositoryUnreachableError(f"cannot reach repository {d}: {_reason(line)}")
    if _first(lines, _MISSING):
        return RepositoryMissingError(
            f"no restic repository at {d}: create it with `snapvol repo init`"
        )
    if _first(lines, _EXISTS):
        return RepositoryExistsError(f"a repository already exists at {d}")
    if line := _first(lines, _SNAPSHOT_MISSING):
        return RepositorySnapshotMissingError(f"{what}: {_reason(line)} (repository {d})")
    if line := _first(lines, _DAMAGED):
        detail = next((ln for ln in lines if "repository contains errors" not in ln), line)
        return RepositoryDamagedError(f"repository {d} is damaged: {_reason(detail)}")
    if line := _first(lines, ("no space left on device",)):
        return RepositoryError(f"{what}: no space left for repository {d}")
    fatal = next((ln for ln in lines if ln.startswith("Fatal:")), lines[-1] if lines else "")
    detail = f": {_reason(fatal)}" if fatal else ""
    return RepositoryError(f"{what} failed (restic exit {returncode}) on repository {d}{detail}")


# --- running restic ---------------------------------------------------------------------------


class _Tail:
    """Drains a pipe on a thread (restic must never block on a full stderr pipe), keeping the
    last STDERR_LIMIT bytes for error messages."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self._buf = bytearray()
        self._thread = threading.Thread(target=self._drain, name="snapvol-restic-err", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(self._pipe.fileno(), 65536):
                self._buf += chunk
                if len(self._buf) > STDERR_LIMIT:
                    del self._buf[: len(self._buf) - STDERR_LIMIT]

    def text(self, timeout: float | None = None) -> str:
        """What restic wrote, once it closed stderr (or after ``timeout``: an ssh child restic
        left behind may hold the pipe open)."""
        self._thread.join(timeout)
        return bytes(self._buf).decode("utf-8", "replace")


def _stop(proc: Popen[bytes], close: bool = True) -> None:
    """End restic if it still runs: SIGINT first, so that it removes its lock and writes no
    snapshot, then SIGKILL if it does not go. Always reaps it; ``close`` then closes its pipes
    (the stderr reader closes its own)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not close:
        return
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


class _Feeder:
    """Writes a stream to restic's stdin on a thread.

    When the stream itself fails, restic is interrupted *before* its stdin is closed: closing it
    would tell restic the stream ended, and it would save a snapshot of a truncated stream.
    """

    def __init__(
        self,
        proc: Popen[bytes],
        chunks: Iterable[bytes],
        progress: Callable[[int], None] | None,
    ) -> None:
        self.source_error: BaseException | None = None
        self.pipe_error: OSError | None = None
        self.fed = 0
        self._proc = proc
        self._chunks = chunks
        self._progress = progress
        self._thread = threading.Thread(target=self._pump, name="snapvol-restic-in", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        it = iter(self._chunks)
        while True:
            try:
                chunk = next(it)
            except StopIteration:
                break
            except BaseException as err:  # handed to the caller by backup_stream
                self.source_error = err
                _stop(self._proc, close=False)
                return
            try:
                stdin.write(chunk)
            except (OSError, ValueError) as err:  # restic stopped reading: its stderr says why
                self.pipe_error = err if isinstance(err, OSError) else OSError(str(err))
                return
            self.fed += len(chunk)
            if self._progress is not None:
                self._progress(len(chunk))
        try:
            stdin.close()
        except OSError as err:
            self.pipe_error = err

    def join(self) -> None:
        self._thread.join()


class DumpStream:
    """The bytes of one file of a restic snapshot, streamed from ``restic dump``.

    Iterate it inside ``with``: leaving early stops restic; reaching the end raises a
    RepositoryError if restic failed (damaged data: the bytes already read must not be trusted).
    """

    def __init__(self, restic: Restic, proc: Popen[bytes], what: str) -> None:
        self._restic = restic
        self._proc = proc
        self._what = what
        self._stderr = _Tail(proc.stderr) if proc.stderr is not None else None
        self._head = b""
        self.pid = proc.pid

    def begin(self) -> RepositoryError | None:
        """Wait for restic's first bytes (kept for the iteration) or its end: the error if it
        failed before sending any (the repository not opened, no such snapshot, a lock)."""
        stdout = self._proc.stdout
        assert stdout is not None
        self._head = stdout.read(CHUNK)
        return None if self._head else self._failure()

    def _failure(self) -> RepositoryError | None:
        returncode = self._proc.wait()
        stderr = self._stderr.text(5.0) if self._stderr is not None else ""
        if returncode != 0:
            return translate(self._restic.repo, stderr, returncode, self._what)
        return None

    def __iter__(self) -> Iterator[bytes]:
        stdout = self._proc.stdout
        assert stdout is not None
        if self._head:
            head, self._head = self._head, b""
            yield head
        while chunk := stdout.read(CHUNK):
            yield chunk
        if (error := self._failure()) is not None:
            raise error

    def close(self) -> None:
        _stop(self._proc)
        if self._stderr is not None:
            self._stderr.text(5.0)

    def __enter__(self) -> DumpStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class PendingBackup:
    """A ``restic backup --stdin`` that runs and waits for its stream (``start_backup_stream``).

    Its stdin stays open until ``finish`` fed the stream: restic takes the end of its stdin for
    the end of the stream, so ``cancel`` interrupts it (SIGINT: it removes its lock and writes
    no snapshot) *before* its stdin is closed. Its output is read from the start, on threads:
    restic must never block on a full pipe while it waits.
    """

    def __init__(self, restic: Restic, proc: Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self._restic = restic
        self._proc = proc
        self._stderr = _Tail(proc.stderr)
        stdout = proc.stdout
        self._summary = Background(lambda: parse_backup_summary(stdout), name="snapvol-restic-out")
        self.pid = proc.pid
        self._done = False

    def finish(
        self,
        chunks: Iterable[bytes],
        *,
        progress: Callable[[int], None] | None = None,
        full_id: bool = True,
    ) -> BackupSummary:
        """Feed ``chunks`` to restic and wait for its snapshot (see ``Restic.backup_stream``)."""
        if self._done:
            raise RuntimeError("this backup was finished or cancelled already")
        self._done = True
        proc, repo = self._proc, self._restic.repo
        feeder = _Feeder(proc, chunks, progress)
        try:
            summary = self._summary.result()
            returncode = proc.wait()
        finally:
            _stop(proc)
        # The feeder is joined only once restic succeeded (it then read the stream to its end):
        # after a failure it may be blocked in the caller's source, which the caller will close.
        if feeder.source_error is not None:
            raise feeder.source_error
        if returncode != 0:
            raise translate(repo, self._stderr.text(5.0), returncode, "copying to the repository")
        feeder.join()
        if feeder.source_error is not None:
            raise feeder.source_error
        if summary is None or not summary.get("snapshot_id"):
            raise RepositoryError(
                f"restic backup to {repo.display} ended without naming its snapshot"
            )
        if feeder.pipe_error is not None:  # restic said it succeeded yet stopped reading
            raise RepositoryError(f"restic stopped reading the stream: {feeder.pipe_error}")
        snapshot_id = str(summary["snapshot_id"])
        if full_id and len(snapshot_id) < 64:  # restic 0.14 prints the short id
            found = self._restic.snapshots(ids=[snapshot_id])
            if len(found) != 1:
                raise RepositoryError(f"restic's new snapshot {snapshot_id} cannot be listed")
            snapshot_id = found[0].id
        return BackupSummary(
            snapshot_id=snapshot_id,
            data_added=int(summary.get("data_added", 0)),
            total_bytes=int(summary.get("total_bytes_processed", feeder.fed)),
        )

    def cancel(self) -> None:
        """Stop restic without a snapshot (nothing once ``finish`` was called)."""
        if self._done:
            return
        self._done = True
        _stop(self._proc)
        self._stderr.text(5.0)

    def __enter__(self) -> PendingBackup:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cancel()


class Restic:
    """restic operations on one repository. Every failure is a RepositoryError (or UsageError)."""

    def __init__(self, repo: Repository, binary: str = "restic") -> None:
        repo.validate()
        self.repo = repo
        self.binary = binary
        self._version: tuple[int, ...] | None = None

    # --- plumbing ---

    def _spawn(self, args: Sequence[str], stdin: int = subprocess.DEVNULL) -> Popen[bytes]:
        """Start restic. Under ``setpriv --pdeathsig KILL`` it dies with the thread that started
        it: were snapvol killed, restic would otherwise read the end of its stdin and save a
        snapshot of a truncated stream."""
        exe = shutil.which(self.binary)
        if exe is None:
            raise ResticMissingError(INSTALL_HINT)
        setpriv = shutil.which("setpriv")
        argv = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
        argv.append(exe)
        for opt in self.repo.options:
            argv += ["-o", opt]
        argv += list(args)
        try:
            return subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.repo.child_env(),
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as err:
            raise ResticMissingError(INSTALL_HINT) from err

    def _exec(self, args: Sequence[str], what: str) -> tuple[int, str, str]:
        """Run restic to its end: (exit code, stdout, stderr). A lock left by a restic that
        died (its process gone from this host, or 30 minutes old) is removed with ``restic
        unlock``, which removes only such stale locks, and the command is run once more."""
        result = self._exec_once(args)
        if result[0] != 0 and args[:1] != ["unlock"]:
            error = translate(self.repo, result[2], result[0], what)
            if isinstance(error, RepositoryLockedError):
                self._exec_once(["unlock"])
                result = self._exec_once(args)
        return result

    def _exec_once(self, args: Sequence[str]) -> tuple[int, str, str]:
        proc = self._spawn(args)
        try:
            out, err = proc.communicate()
        finally:
            _stop(proc)
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def _run(self, args: Sequence[str], what: str) -> str:
        returncode, out, err = self._exec(args, what)
        if returncode != 0:
            raise translate(self.repo, err, returncode, what)
        return out

    def version(self) -> tuple[int, ...]:
        if self._version is None:
            self._version = parse_version(self._run(["version"], "asking restic its version"))
        return self._version

    # --- the repository ---

    def init(self) -> RepoConfig:
        """Create the repository (format 2, compressed, when restic has it)."""
        args = ["init"]
        if self.version() >= (0, 14):
            args.append("--repository-version=2")
        self._run(args, "creating the repository")
        return self.config()

    def config(self) -> RepoConfig:
        """The repository's id and format (``restic cat config``); opening it checks the
        password."""
        out = self._run([*_NO_LOCK, "cat", "config"], "reading the repository's config")
        try:
            data = json.loads(out)
            return RepoConfig(id=str(data["id"]), version=int(data.get("version", 1)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise RepositoryError(
                f"repository {self.repo.display} has a config snapvol cannot read: {err}"
            ) from None

    def exists(self) -> bool:
        """Whether a repository is there; a wrong password or an unreachable server raise."""
        try:
            self.config()
        except RepositoryMissingError:
            return False
        return True

    # --- snapshots ---

    def snapshots(
        self, tags: Sequence[str] = (), host: str | None = None, ids: Sequence[str] = ()
    ) -> list[Snapshot]:
        """Snapshots carrying every tag in ``tags`` (and from ``host``), oldest first."""
        args = [*_NO_LOCK, "snapshots", "--json"]
        if tags:
            args.append("--tag=" + ",".join(_checked_tags(tags)))
        if host:
            args.append(f"--host={host}")
        if ids:
            args += ["--", *ids]
        return parse_snapshots(self._run(args, "listing the repository's snapshots"))

    def backup_stream(
        self,
        chunks: Iterable[bytes],
        filename: str,
        *,
        tags: Sequence[str] = (),
        host: str | None = None,
        time: datetime | None = None,
        progress: Callable[[int], None] | None = None,
        full_id: bool = True,
    ) -> BackupSummary:
        """Store a stream as one file, ``/<filename>``, of a new restic snapshot.

        ``chunks`` is consumed on a thread and fed to ``restic backup --stdin``; if it raises,
        restic is interrupted (no snapshot is made) and its error is re-raised here. ``time``
        is the snapshot's time (a naive one is taken as UTC); ``progress`` is called with the
        size of each chunk fed. Returns the snapshot id and restic's byte counts: the full id,
        or with ``full_id=False`` the id as restic printed it (restic 0.14 prints its first 8
        hex digits, a prefix every restic command accepts), which spares a restic process.
        """
        pending = self.start_backup_stream(filename, tags=tags, host=host, time=time)
        return pending.finish(chunks, progress=progress, full_id=full_id)

    def start_backup_stream(
        self,
        filename: str,
        *,
        tags: Sequence[str] = (),
        host: str | None = None,
        time: datetime | None = None,
    ) -> PendingBackup:
        """Start ``restic backup --stdin`` for ``/<filename>`` before its bytes are known: restic
        opens the repository (key derivation, index, lock) while the caller prepares them.
        Then ``finish(chunks)`` as ``backup_stream`` does, or ``cancel()``: no snapshot is
        made. Start and finish (or cancel) it on one thread: restic dies with the thread that
        started it (see ``_spawn``)."""
        name = _checked_filename(filename)
        args = ["backup", "--stdin", f"--stdin-filename={name}", "--json"]
        args += [f"--tag={tag}" for tag in _checked_tags(tags)]
        if host:
            args.append(f"--host={host}")
        if time is not None:
            stamp = time.astimezone(UTC) if time.tzinfo else time
            args.append(f"--time={stamp:%Y-%m-%d %H:%M:%S}")
        return PendingBackup(self, self._spawn(args, stdin=subprocess.PIPE))

    def dump(self, snapshot_id: str, filename: str) -> DumpStream:
        """Stream ``/<filename>`` of a snapshot back: ``with restic.dump(id, name) as s: for
        chunk in s: ...``. A failure before the first byte (no such snapshot or file, wrong
        password, unreachable) raises here; a stale lock is removed (``restic unlock``) and the
        dump started once more, as ``_exec`` does. A later error (damaged data) comes at the end
        of the iteration: trust the bytes only once it ended. restic dies with the thread that
        called ``dump`` (see ``_spawn``): keep that thread alive until the stream is read."""
        if not snapshot_id or snapshot_id.startswith("-"):
            raise UsageError(f"not a restic snapshot id: {snapshot_id!r}")
        path = "/" + _checked_filename(filename)
        what = f"reading {path} of snapshot {snapshot_id[:8]}"

        def start() -> DumpStream:
            return DumpStream(self, self._spawn(["dump", "--", snapshot_id, path]), what)

        stream = start()
        error = stream.begin()
        if isinstance(error, RepositoryLockedError):
            stream.close()
            self._exec_once(["unlock"])
            stream = start()
            error = stream.begin()
        if error is not None:
            stream.close()
            raise error
        return stream

    def ls(self, snapshot_id: str) -> list[Node]:
        """The files and directories a snapshot holds (``restic ls --json``)."""
        if not snapshot_id or snapshot_id.startswith("-"):
            raise UsageError(f"not a restic snapshot id: {snapshot_id!r}")
        out = self._run(
            [*_NO_LOCK, "ls", "--json", "--", snapshot_id], f"listing snapshot {snapshot_id[:8]}"
        )
        return parse_nodes(out.splitlines())

    def file_size(self, snapshot_id: str, filename: str) -> int:
        """The size of ``/<filename>`` in a snapshot, as restic stored it."""
        path = "/" + _checked_filename(filename)
        for node in self.ls(snapshot_id):
            if node.path == path and node.type == "file":
                return node.size
        raise RepositorySnapshotMissingError(
            f"snapshot {snapshot_id[:8]} of repository {self.repo.display} has no file {path}"
        )

    def forget(self, snapshot_ids: Sequence[str], prune: bool = True) -> None:
        """Remove snapshots (and, with ``prune``, the data only they used)."""
        if not snapshot_ids:
            return
        args = ["forget", *(["--prune"] if prune else []), "--", *snapshot_ids]
        self._run(args, "removing snapshots from the repository")

    def check(self, read_data: bool = False, subset: str | None = None) -> CheckReport:
        """``restic check``: structure, and every pack's data with ``read_data`` (or a
        ``subset``: ``n/t``, ``x%`` or a size). Damage is reported, other failures raise."""
        args = ["check"]
        if subset is not None:
            if not _SUBSET.match(subset):
                raise UsageError(
                    f"not a subset restic can read: {subset!r} (use n/t, x% or a size)"
                )
            args.append(f"--read-data-subset={subset}")
        elif read_data:
            args.append("--read-data")
        returncode, _out, text = self._exec(args, "checking the repository")
        if returncode == 0:
            return CheckReport(ok=True, problems=())
        error = translate(self.repo, text, returncode, "checking the repository")
        if not isinstance(error, RepositoryDamagedError):
            raise error
        problems = tuple(
            _reason(ln) for ln in _lines(self.repo.redact(text)) if not ln.startswith("Fatal:")
        )
        return CheckReport(ok=False, problems=problems or (error.message,))


_NO_LOCK = ("--no-lock",)
"""For commands that only read the repository's config and snapshot list: restic 0.14 waits
200 ms after taking a lock (to see a rival's), and writes and removes a lock file on the server;
snapshots read while another machine forgets some are what a listing a moment earlier shows."""


def _checked_tags(tags: Iterable[str]) -> list[str]:
    out = list(tags)
    for tag in out:
        if not tag or "," in tag or any(c.isspace() for c in tag):
            raise UsageError(f"not a restic tag: {tag!r} (no commas or spaces)")
    return out


def _checked_filename(filename: str) -> str:
    name = filename.lstrip("/")
    if (
        not name
        or "\0" in name
        or "\n" in name
        or any(p in ("", ".", "..") for p in name.split("/"))
    ):
        raise UsageError(f"not a file name for a restic snapshot: {filename!r}")
    return name
