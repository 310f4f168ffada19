"""Real restic repository servers for the tests, each on 127.0.0.1 only.

Every server is a real program (Debian's sshd, SeaweedFS's `weed`, rclone) started as a child
process on free loopback ports, waited for until it answers, and killed (with everything it
forked) afterwards. `RepoServer` is what a restic client needs to reach one: the repository string,
the environment and the password file, whatever the backend, so tests can parametrize over them.
"""

from __future__ import annotations

import ctypes
import datetime
import functools
import getpass
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# A slow, shared machine: a server gets this long to answer before the fixture fails.
READY_TIMEOUT = 90.0


class ServerError(Exception):
    """A test server did not start, answered wrongly or listened beyond loopback."""


def binary(name: str) -> str:
    """The venv's copy of a program installed from PyPI (weed, rclone), else the one on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerError(
            f"{name} is not installed: run `make venv` (weed, rclone) or "
            "`bash scripts/ensure-restic.sh` (restic, sshd)"
        )
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now (held together while chosen)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except (OSError, ValueError):
        return []


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (sshd's per-connection children leave its process group)."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo.extend(_children(p))
    return seen


def kill_tree(pid: int) -> None:
    """Freeze `pid` and every descendant, then SIGKILL them all: the server dies abruptly."""
    stopped: list[int] = []
    for _ in range(10):  # a process forking while we freeze is caught on the next pass
        fresh = [p for p in _tree(pid) if p not in stopped]
        if not fresh:
            break
        for p in fresh:
            with suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
        stopped.extend(fresh)
    for p in stopped:
        with suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _decode_address(hex_addr: str) -> tuple[str, int]:
    host_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # /proc prints IPv6 as four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        host = socket.inet_ntop(socket.AF_INET6, words)
    return host, int(port_hex, 16)


def listening(pid: int) -> list[tuple[str, int]]:
    """Every TCP address the process tree of `pid` listens on (from /proc/net/tcp, tcp6)."""
    inodes: set[str] = set()
    for p in _tree(pid):
        inodes |= _socket_inodes(p)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    found.append(_decode_address(cols[1]))
    return sorted(found)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so a killed pytest leaves
    no server behind (prctl PR_SET_PDEATHSIG)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


@dataclass
class ServerProcess:
    """One server program: started, probed until ready, killed; restartable on the same ports."""

    argv: list[str]
    log: Path
    ready: Callable[[], bool]
    cwd: Path | None = None
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            return
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise ServerError(f"{self.argv[0]} exited {code}\n{self.log_tail()}")
            with suppress(OSError, http.client.HTTPException):
                if self.ready():
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"{self.argv[0]} did not answer in {READY_TIMEOUT:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.2)
        beyond = [a for a in listening(self.proc.pid) if a[0] != "127.0.0.1"]
        if beyond:
            self.stop()
            raise ServerError(f"{self.argv[0]} listens beyond 127.0.0.1: {beyond}")

    def stop(self) -> None:
        """Kill the server and everything it forked, at once, like a crash or a pulled cable."""
        if self.proc is None:
            return
        kill_tree(self.proc.pid)
        self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError("the server is not running")
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class RepoServer:
    """What restic needs to reach one repository: `restic -r repo` with `env` (and options)."""

    backend: str  # "local", "sftp", "s3" or "rest"
    repo: str
    password_file: Path
    env: dict[str, str] = field(default_factory=dict)
    # Extra restic arguments that reach the same repository without `env`'s help (sftp only).
    options: tuple[str, ...] = ()
    process: ServerProcess | None = None
    # Where the server keeps the repository's bytes (the repository itself for local and sftp).
    storage: Path | None = None
    s3: S3Account | None = None  # s3 only: the bucket's endpoint and key
    s3_prefix: str = ""  # s3 only: where in the bucket the repository lives ("" or "NAME/")
    # A repository of its own on a server other tests use too: the server is not the test's to
    # stop, restart or reconfigure (`ServerPool`).
    shared: bool = False
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def _own_server(self, what: str) -> None:
        if self.shared:
            raise ServerError(
                f"cannot {what} the shared {self.backend} server: mark the test "
                "`@pytest.mark.private_server` to get a server of its own"
            )

    def stop(self) -> None:
        """Kill the server (no-op for a local repository); its data stays for `start`."""
        self._own_server("stop")
        if self.process is not None:
            self.process.stop()

    def start(self) -> None:
        """Start the server again on the same ports and data, and wait until it answers.
        Call it from the test's own thread: the server dies with the thread that started it."""
        self._own_server("start")
        if self.process is not None:
            self.process.start()

    @contextmanager
    def down(self) -> Iterator[None]:
        """The server is stopped inside the block and running again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def stored_bytes(self) -> int:
        """How many bytes the server holds now (files under `storage`)."""
        if self.storage is None:
            return 0
        total = 0
        for dirpath, _, files in os.walk(self.storage):
            for name in files:
                with suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
        return total

    @contextmanager
    def stops_when_stored(self, nbytes: int) -> Iterator[threading.Event]:
        """Inside the block, a watcher kills the server once it holds `nbytes` more than at the
        start: "the server dies mid-copy", triggered by the copy's progress, not by a clock.
        The event is set when it did; the server stays down until `start()`."""
        limit = self.stored_bytes() + nbytes
        with self.stops_when(lambda: self.stored_bytes() >= limit) as stopped:
            yield stopped

    @contextmanager
    def stops_when(self, reached: Callable[[], bool]) -> Iterator[threading.Event]:
        """Inside the block, a watcher kills the server as soon as `reached()` is true (polled
        every 10 ms); the event is set when it did; the server stays down until `start()`."""
        self._own_server("stop")
        if self.process is None:
            raise ServerError(f"a {self.backend} repository has no server to stop")
        stopped, done = threading.Event(), threading.Event()

        def watch() -> None:
            while not done.is_set():
                if reached():
                    self.stop()
                    stopped.set()
                    return
                done.wait(0.01)

        watcher = threading.Thread(target=watch, name=f"stop-{self.backend}", daemon=True)
        watcher.start()
        try:
            yield stopped
        finally:
            done.set()
            watcher.join()

    def damage_pack(self) -> str:
        """Flip one byte in the middle of the repository's largest pack file, the way a bad disk
        would; returns the pack's name in the repository (`data/xx/ID`)."""
        if self.s3 is not None:
            keys = self.s3.keys(S3_BUCKET, f"{self.s3_prefix}data/")
            if not keys:
                raise ServerError("the repository holds no pack file")
            blobs = {}
            for key in keys:
                status, body = self.s3.request("GET", f"/{S3_BUCKET}/{key}")
                if status != 200:
                    raise ServerError(f"GET {key} answered {status}")
                blobs[key] = body
            name = max(blobs, key=lambda k: len(blobs[k]))
            damaged = bytearray(blobs[name])
            damaged[len(damaged) // 2] ^= 0xFF
            status, _ = self.s3.request("PUT", f"/{S3_BUCKET}/{name}", bytes(damaged))
            if status != 200:
                raise ServerError(f"PUT {name} answered {status}")
            return name.removeprefix(self.s3_prefix)
        if self.storage is None:
            raise ServerError(f"a {self.backend} repository has no files to damage")
        packs = [p for p in (self.storage / "data").rglob("*") if p.is_file()]
        if not packs:
            raise ServerError("the repository holds no pack file")
        pack = max(packs, key=lambda p: p.stat().st_size)
        mode = pack.stat().st_mode
        pack.chmod(mode | 0o200)  # restic writes its files read-only
        with open(pack, "r+b") as f:
            middle = pack.stat().st_size // 2
            f.seek(middle)
            byte = f.read(1)[0]
            f.seek(middle)
            f.write(bytes([byte ^ 0xFF]))
        pack.chmod(mode)
        return pack.relative_to(self.storage).as_posix()

    def restic_env(self) -> dict[str, str]:
        """The environment for a restic child: ours, less any repository or password of the
        caller's, plus the server's variables and the password file."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RESTIC_", "AWS_")) and k != "RCLONE_CONFIG"
        }
        env.update(self.env)
        env["RESTIC_PASSWORD_FILE"] = str(self.password_file)
        return env

    def restic(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `restic -r REPO [options] ARGS`; the password travels in a file, never in argv."""
        argv = ["restic", "-r", self.repo, *self.options, *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, env=self.restic_env(), check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}\n"
                f"stderr:\n{result.stderr.decode(errors='replace')}"
            )
        return result

    def close(self) -> None:
        """Kill the server (unless shared) and remove what was made for this repository."""
        if not self.shared:
            self.stop()
        while self.cleanup:
            self.cleanup.pop()()

    def fresh(self, root: Path) -> RepoServer:
        """A new, empty repository on this running server, with its own password file and restic
        cache under `root` (removed on its `close`); the server stays up after that `close`."""
        if self.backend == "local" or self.process is None:
            raise ServerError(f"a {self.backend} repository has no server to share")
        root, password = _base(root)
        repo = RepoServer(
            self.backend,
            "",
            password,
            {**self.env, **_common_env(root)},
            options=self.options,
            process=self.process,
            s3=self.s3,
            shared=True,
        )
        repo.cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
        if self.backend == "sftp":
            repo.repo = f"sftp:{SFTP_HOST}:{root / 'repo'}"
            repo.storage = root / "repo"
        elif self.backend == "rest":
            if self.storage is None:
                raise ServerError("the rest server has no data directory")
            name = f"r-{secrets.token_hex(6)}"
            repo.repo = f"{self.repo}{name}/"
            repo.storage = self.storage / name
            repo.cleanup.append(lambda: shutil.rmtree(self.storage / name, ignore_errors=True))
        elif self.backend == "s3":
            # A prefix in the one bucket: SeaweedFS would grow new volumes for each new bucket.
            # `storage` stays None: the server's files hold every test's objects.
            repo.s3_prefix = f"r-{secrets.token_hex(6)}/"
            repo.repo = f"{self.repo}/{repo.s3_prefix.rstrip('/')}"
        else:
            raise ServerError(f"no way to share a {self.backend} server")
        return repo


def use_repository(
    server: RepoServer,
    monkeypatch: pytest.MonkeyPatch,
    *,
    password: Path | None = None,
    auto_copy: bool = False,
) -> None:
    """Point snapvol at ``server``'s repository the way a user would: variables, never argv
    (restic's and AWS's own variables cleared). Snapshots are not copied on their own unless
    ``auto_copy``: tests copy when they say so."""
    for key in list(os.environ):
        if key.startswith(("RESTIC_", "AWS_")):
            monkeypatch.delenv(key)
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SNAPVOL_REPOSITORY", server.repo)
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(password or server.password_file))
    if auto_copy:
        monkeypatch.delenv("SNAPVOL_COPY", raising=False)
    else:
        monkeypatch.setenv("SNAPVOL_COPY", "no")


# Logs each restic command line, one per line (the tests' arguments have no newline).
_LOGGING_RESTIC = """#!/bin/sh
echo "$*" >> {log}
exec {real} "$@"
"""


class ResticLog:
    """Every restic process snapvol starts, logged by a wrapper first on PATH (its subcommand),
    so a test can tell how many restic processes an operation costs: each one opens the
    repository, which is most of a small copy's time."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        real = shutil.which("restic")
        assert real is not None
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "restic-calls.log"
        wrapper = folder / "restic"
        wrapper.write_text(_LOGGING_RESTIC.format(log=self.path, real=real))
        wrapper.chmod(0o755)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        self.clear()

    def clear(self) -> None:
        self.path.write_text("")

    def lines(self) -> list[str]:
        """Each process's arguments, space-separated."""
        return self.path.read_text().splitlines()

    def subcommands(self) -> list[str]:
        """Each process's subcommand: its first word that is neither an option nor -o's value."""
        found = []
        for line in self.lines():
            rest = iter(line.split())
            for word in rest:
                if word == "-o":
                    next(rest, None)
                elif not word.startswith("-"):
                    found.append(word)
                    break
        return found


def write_password_file(path: Path) -> Path:
    path.write_text(secrets.token_urlsafe(24) + "\n")
    path.chmod(0o600)
    return path


def _base(root: Path) -> tuple[Path, Path]:
    """The server's own directory (removed on close) and a password file inside it."""
    root.mkdir(parents=True, exist_ok=False)
    root.chmod(0o700)
    (root / "cache").mkdir()
    return root, write_password_file(root / "restic-password")


def _common_env(root: Path) -> dict[str, str]:
    # restic's cache goes with the server, not into the user's ~/.cache.
    return {"RESTIC_CACHE_DIR": str(root / "cache")}


def local_repo(root: Path) -> RepoServer:
    """A repository on a local path: no server at all."""
    root, password = _base(root)
    server = RepoServer("local", str(root / "repo"), password, _common_env(root))
    server.storage = root / "repo"
    server.cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    return server


def _banner(port: int, prefix: bytes) -> Callable[[], bool]:
    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).startswith(prefix)

    return ready


SFTP_HOST = "snapvol-test-sftp"


def sftp_repo(root: Path) -> RepoServer:
    """Debian's sshd in the foreground on a loopback port, with its own host key and a client key
    made for the test. restic reaches it as `sftp:snapvol-test-sftp:/path` through an `ssh`
    wrapper (first on the server's PATH) that reads the test's client config, or through
    `options` (`-o sftp.command=...`)."""
    root, password = _base(root)
    server = RepoServer("sftp", "", password, _common_env(root))
    server.cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    try:
        sshd, ssh, keygen = "/usr/sbin/sshd", binary("ssh"), binary("ssh-keygen")
        if not os.access(sshd, os.X_OK):
            raise ServerError("/usr/sbin/sshd is missing: run `bash scripts/ensure-restic.sh`")
        for key in ("host_key", "client_key"):
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(root / key)],
                check=True,
                capture_output=True,
            )
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        host_pub = (root / "host_key.pub").read_text().split()
        (root / "known_hosts").write_text(f"{SFTP_HOST} {host_pub[0]} {host_pub[1]}\n")
        if os.geteuid() == 0:  # sshd as root insists on its privilege-separation directory
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        user = getpass.getuser()
        (port,) = free_ports(1)
        (root / "sshd_config").write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {root / 'host_key'}\n"
            f"PidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
            f"AllowUsers {user}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "UsePAM no\n"
            # tmp_path's parents (/tmp) are world-writable, which StrictModes refuses.
            "StrictModes no\n"
            "PermitTTY no\n"
            "AllowTcpForwarding no\n"
            "AllowAgentForwarding no\n"
            "X11Forwarding no\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel INFO\n"
        )
        (root / "ssh_config").write_text(
            f"Host {SFTP_HOST}\n"
            "  HostName 127.0.0.1\n"
            f"  Port {port}\n"
            f"  User {user}\n"
            f"  IdentityFile {root / 'client_key'}\n"
            "  IdentitiesOnly yes\n"
            f"  HostKeyAlias {SFTP_HOST}\n"
            f"  UserKnownHostsFile {root / 'known_hosts'}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ControlMaster no\n"
            "  ServerAliveInterval 5\n"
            "  ServerAliveCountMax 2\n"
            "  LogLevel ERROR\n"
        )
        bindir = root / "bin"
        bindir.mkdir()
        (bindir / "ssh").write_text(f'#!/bin/sh\nexec {ssh} -F {root / "ssh_config"} "$@"\n')
        (bindir / "ssh").chmod(0o755)
        server.env["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
        server.options = (
            "-o",
            f"sftp.command={ssh} -F {root / 'ssh_config'} {SFTP_HOST} -s sftp",
        )
        server.repo = f"sftp:{SFTP_HOST}:{root / 'repo'}"
        server.storage = root / "repo"
        server.process = ServerProcess(
            [sshd, "-D", "-e", "-f", str(root / "sshd_config")],
            root / "sshd.log",
            _banner(port, b"SSH-2.0-"),
        )
        server.process.start()
    except BaseException:
        server.close()
        raise
    return server


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


S3_BUCKET = "snapvol-test"
S3_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Account:
    """An S3 endpoint on loopback and the key made for the test."""

    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str

    def request(
        self, method: str, path: str, body: bytes = b"", query: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """One AWS-SigV4-signed request (for set-up, probes and damaging objects)."""
        host = self.endpoint.removeprefix("http://")
        now = datetime.datetime.now(datetime.UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest()
        signed = "host;x-amz-content-sha256;x-amz-date"
        qs = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
            for k, v in sorted((query or {}).items())
        )
        canonical = (
            f"{method}\n{path}\n{qs}\nhost:{host}\nx-amz-content-sha256:{payload}\n"
            f"x-amz-date:{amz_date}\n\n{signed}\n{payload}"
        )
        scope = f"{day}/{S3_REGION}/s3/aws4_request"
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{digest}"
        key = f"AWS4{self.secret_key}".encode()
        for part in (day, S3_REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {
            "x-amz-date": amz_date,
            "x-amz-content-sha256": payload,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            ),
        }
        conn = http.client.HTTPConnection(host, timeout=30)
        try:
            conn.request(method, f"{path}?{qs}" if qs else path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def keys(self, bucket: str, prefix: str) -> list[str]:
        """The object keys under `prefix` (one page of up to 1000: enough for a test)."""
        status, body = self.request("GET", f"/{bucket}", query={"list-type": "2", "prefix": prefix})
        if status != 200:
            raise ServerError(f"listing s3://{bucket}/{prefix} answered {status}: {body[:200]!r}")
        return re.findall(r"<Key>([^<]+)</Key>", body.decode())


def s3_repo(root: Path) -> RepoServer:
    """SeaweedFS (`weed server` with master, volume, filer and S3 gateway in one process), every
    listener on 127.0.0.1, an S3 identity file with a key made for the test and one bucket.
    restic reaches it as `s3:http://127.0.0.1:PORT/snapvol-test` with AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY."""
    root, password = _base(root)
    server = RepoServer("s3", "", password, _common_env(root))
    server.cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    try:
        weed = binary("weed")
        access_key, secret_key = "SV" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)
        identities = root / "s3.json"
        identity = {
            "name": "snapvol-test",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        identities.write_text(json.dumps({"identities": [identity]}))
        identities.chmod(0o600)
        data = root / "data"
        data.mkdir()
        # Unix sockets need a short path; weed also makes /tmp/seaweedfs-*-grpc-PORT.sock.
        sockets = Path(tempfile.mkdtemp(prefix="svweed-"))
        server.cleanup.append(lambda: shutil.rmtree(sockets, ignore_errors=True))
        ports = free_ports(8)
        master, master_g, vol, vol_g, filer, filer_g, s3, s3_g = ports
        grpc_ports = (master_g, vol_g, filer_g, s3_g)
        grpc_sockets = [
            Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")
            for kind, port in zip(("master", "volume", "filer", "s3"), grpc_ports, strict=True)
        ]
        server.cleanup.append(functools.partial(_unlink_all, grpc_sockets))
        endpoint = f"http://127.0.0.1:{s3}"
        account = S3Account(endpoint, access_key, secret_key)

        def ready() -> bool:
            """The bucket exists (made now, or kept from before a restart) and takes a write."""
            status, _ = account.request("PUT", f"/{S3_BUCKET}")
            if status not in (200, 409):  # 409: already there
                return False
            probe = f"/{S3_BUCKET}/snapvol-test-probe"
            status, _ = account.request("PUT", probe, b"ready")
            if status != 200:
                return False
            status, _ = account.request("DELETE", probe)
            return status == 204

        server.process = ServerProcess(
            [
                weed,
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={data}",
                "-master.telemetry=false",
                # A restarted master would wait for a raft election (10 s) before it serves.
                "-master.resumeState=false",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=0",
                "-volume.preStopSeconds=0",
                f"-master.port={master}",
                f"-master.port.grpc={master_g}",
                f"-volume.port={vol}",
                f"-volume.port.grpc={vol_g}",
                "-filer",
                f"-filer.port={filer}",
                f"-filer.port.grpc={filer_g}",
                f"-filer.localSocket={sockets / 'filer.sock'}",
                "-s3",
                f"-s3.port={s3}",
                f"-s3.port.grpc={s3_g}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.localSocket={sockets / 's3.sock'}",
                f"-s3.config={identities}",
                "-webdav=false",
                "-sftp=false",
            ],
            root / "weed.log",
            ready,
            cwd=data,
        )
        server.env.update({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
        server.repo = f"s3:{endpoint}/{S3_BUCKET}"
        server.storage = data
        server.s3 = account
        server.process.start()
    except BaseException:
        server.close()
        raise
    return server


def rest_repo(root: Path) -> RepoServer:
    """rclone's restic REST server (`rclone serve restic`) on a loopback port, no credentials
    (restic 0.14 reads REST credentials only from the URL, that is from its arguments).
    restic reaches it as `rest:http://127.0.0.1:PORT/`."""
    root, password = _base(root)
    server = RepoServer("rest", "", password, _common_env(root))
    server.cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    try:
        rclone = binary("rclone")
        (root / "data").mkdir()
        (port,) = free_ports(1)

        def ready() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("HEAD", "/config")
                return conn.getresponse().status in (200, 404)
            finally:
                conn.close()

        env = {**os.environ, "RCLONE_CONFIG": str(root / "rclone.conf")}
        env["RCLONE_CACHE_DIR"] = str(root / "rclone-cache")
        server.process = ServerProcess(
            [rclone, "serve", "restic", "--addr", f"127.0.0.1:{port}", str(root / "data")],
            root / "rclone.log",
            ready,
            env=env,
        )
        server.repo = f"rest:http://127.0.0.1:{port}/"
        server.storage = root / "data"
        server.process.start()
    except BaseException:
        server.close()
        raise
    return server


STARTERS: dict[str, Callable[[Path], RepoServer]] = {
    "local": local_repo,
    "sftp": sftp_repo,
    "s3": s3_repo,
    "rest": rest_repo,
}
BACKENDS: Sequence[str] = tuple(STARTERS)


@contextmanager
def repo_server(backend: str, root: Path) -> Iterator[RepoServer]:
    """Start a repository server of `backend` under `root`; kill it and remove `root` after."""
    server = STARTERS[backend](root)
    try:
        yield server
    finally:
        server.close()


class ServerPool:
    """One server per backend for many tests, started when first asked for under `root`. Each
    test gets a fresh, empty repository of its own on it (`RepoServer.fresh`), so only the
    start-up is shared; a server found dead (a test broke it) is started again first."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: dict[str, RepoServer] = {}

    def repository(self, backend: str, root: Path) -> RepoServer:
        server = self.servers.get(backend)
        if server is None:
            server = STARTERS[backend](self.root / backend)
            self.servers[backend] = server
        else:
            server.start()  # a no-op while it runs
        return server.fresh(root)

    def close(self) -> None:
        while self.servers:
            self.servers.popitem()[1].close()
