"""snapvol benchmark: the real CLI against the baselines it must beat, measured in one run.

What is measured, and why
-------------------------
Every number is taken in the same run, on the same data, in the same page-cache state, so the
ratios mean something on any machine (absolute times depend on the machine; ratios much less).

Volume snapshots (issue 3), on a PostgreSQL volume filled by ``pgbench -i``:
  * ``snapvol snapshot --volume`` of the running container, as a subprocess with its own --db and
    --backup-dir: wall time (stop, archive, restart and readiness included), its downtime (from its
    JSON) and its peak RSS;
  * (a) the host pipeline ``tar -C <mountpoint> -cf - . | zstd -3 -T0 > file`` on the stopped
    container: the floor for "tar + zstd"; target: snapvol <= 1.3x (a);
  * (b) Docker's documented recipe ``docker run --rm -v VOL:/data -v DIR:/backup IMAGE tar czf ...``
    (no network): what people do today; target: snapvol >= 5x faster;
  * for information, snapvol on the already stopped container (no stop or restart: the pipeline).
Volume restores:
  * ``snapvol restore ID --yes --no-safety-snapshot`` (archive check, in-place extraction and the
    read-back verification included) against ``zstd -d < file | tar -x -C <empty host dir>``;
    target <= 2x; the default restore (a safety snapshot first) is reported as an extra line.
Memory: peak RSS of the snapvol process (``os.wait4`` on that child: the largest of it and the
  children it reaped, such as its watchdog, never a sum) for snapshot and restore at a small and
  the default scale: target <= 200 MB and flat (big/small <= 1.25).
Logical snapshots (issue 4), only when ``snapvol snapshot --help`` offers --logical and --format:
  * ``snapvol snapshot --logical --format custom`` against (c) ``pg_dump -Fc -Z0`` inside the
    container to /dev/null plus host ``zstd -3 -T0`` of such a dump made beforehand (the two times
    added up: the work snapvol cannot avoid); target <= 1.3x (c); and (d) the seed's way,
    ``docker exec c pg_dump -U postgres pc_db > file`` (plain SQL through the docker CLI);
  * ``snapvol restore`` of that snapshot, in place (snapvol restores into a scratch database,
    checks it and swaps it in), against ``docker cp`` of the dump into the container then
    ``createdb`` and ``pg_restore -d`` there; no target, for information.

Copies to a restic repository (issue 12), at both scales, local repositories (``repo_suite``):
  * ``snapvol copy`` of a snapshot into a new repository against ``zstd -d < archive | restic
    backup --stdin`` of the same tar stream into another new one; target <= 1.2x;
  * dedup: after a write load, what the second ``snapvol copy`` adds (restic's data_added, as
    the copy records it) against what a second ``restic backup <mountpoint>`` of the stopped
    volume adds; both backups of the very same stopped state; target <= 1.1x;
  * ``snapvol restore --from-repo --no-safety-snapshot`` (fetch, checks, restore) against
    ``restic dump | tar -x`` into an empty directory; target <= 1.5x (left out, with a note,
    when this snapvol has no --from-repo);
  * peak RSS of the snapvol process alone (VmHWM, sampled: ``wait4`` would count restic, its
    child) for copy and restore --from-repo; target < 200 MB.

Caches: page caches are not dropped (that cannot be done reliably here). Instead the volume is read
once, untimed, before the first measurement, and each contender then runs warm; dirty pages are
flushed (``sync``) before each timed command, so no step pays for the write-back of the one before;
with --repeat the order of the contenders alternates and the best time is kept.

Isolation: the benchmark runs its own uniquely named PostgreSQL container (no network) on its own
volume and removes them at the end, on errors and on Ctrl-C too. ``--keep`` keeps the data volume
(``snapvol-bench-data-s<scale>``) for the next run, which reuses it after checking its row counts,
because ``pgbench -i`` at scale 100 takes a while. It never touches ``pc_db`` or ``postgres_data``.

The output is a report: the exit code is 0 even when a target fails (a FAIL line says which).
Run it as ``make bench`` (``BENCH_ARGS="--scale 20"`` etc.).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTECTED = {"pc_db", "postgres_data"}  # the real service: never touched
BENCH_LABEL = "org.snapvol.bench"
HELPER_LABEL = "org.snapvol.helper"  # snapvol's own helper containers
PGDATA = "/var/lib/postgresql/data"
PSQL = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres"]
DATABASE = "pc_db"  # POSTGRES_DB of the benchmark's container (its own, not the real pc_db)
MB = 1e6

# Targets (issues 3 and 4).
SNAPSHOT_VS_HOST = 1.3  # snapvol snapshot <= 1.3x host tar | zstd
SNAPSHOT_VS_DOCKER = 5.0  # snapvol snapshot >= 5x faster than docker run ... tar czf
RESTORE_VS_HOST = 2.0  # snapvol restore <= 2x host zstd -d | tar -x
RSS_LIMIT_MB = 200.0
RSS_FLAT = 1.25  # peak RSS at the big scale / at the small scale
LOGICAL_VS_PGDUMP = 1.3  # snapvol snapshot --logical <= 1.3x (pg_dump -Z0 + zstd)
# Targets of issue 12 (copies to a restic repository).
DEDUP_VS_RESTIC_DIR = 1.1  # 2nd copy adds <= 1.1x what `restic backup <dir>` adds
COPY_VS_RESTIC_STDIN = 1.2  # snapvol copy <= 1.2x `restic backup --stdin` of the same stream
FETCH_VS_RESTIC_DUMP = 1.5  # restore --from-repo <= 1.5x `restic dump | tar -x`
PARTS = ("volume", "logical", "repo")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- running and timing commands ------------------------------------------------------------------


class CommandFailed(RuntimeError):
    pass


@dataclass
class Timed:
    seconds: float
    rss_mb: float  # peak RSS of the child (and of any child it waited for)
    stdout: str
    stderr: str
    own_rss_mb: float | None = None  # peak RSS of the child alone (VmHWM), when watched


def vm_hwm_mb(pid: int) -> float | None:
    """The peak RSS of process ``pid`` alone (``VmHWM``), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Runner:
    """Runs commands one at a time; on Ctrl-C or SIGTERM the running one is interrupted too."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.current: subprocess.Popen[bytes] | None = None

    def timed(
        self,
        cmd: list[str],
        *,
        stdout: Path | None = None,
        check: bool = True,
        own_rss: bool = False,
    ) -> Timed:
        """Run ``cmd`` and measure its wall time and peak RSS (``os.wait4`` on that very child).

        ``own_rss``: also the child's own peak RSS without its children (VmHWM, read every 20 ms
        while it runs): ``wait4`` counts the largest of it and the children it reaped, and
        snapvol's copy and restore from a repository run restic as a child."""
        out_path = stdout or self.workdir / "last.stdout"
        err_path = self.workdir / "last.stderr"
        # Flush dirty pages first: no step pays for the write-back of the step before.
        os.sync()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.workdir,
            )
            self.current = proc
            own: float | None = None
            try:
                if own_rss:
                    while True:
                        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                        if pid:
                            break
                        own = max(own or 0.0, vm_hwm_mb(proc.pid) or 0.0)
                        time.sleep(0.02)
                else:
                    _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                self.interrupt(proc)
                raise
            finally:
                self.current = None
            seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: Popen must not wait
        text_out = out_path.read_text(errors="replace") if stdout is None else ""
        text_err = err_path.read_text(errors="replace")
        if check and proc.returncode != 0:
            shown = " ".join(shlex.quote(c) for c in cmd)
            raise CommandFailed(f"{shown} exited {proc.returncode}: {text_err.strip()[-800:]}")
        return Timed(seconds, usage.ru_maxrss / 1024, text_out, text_err, own)

    def shell(self, script: str, **kwargs: Any) -> Timed:
        return self.timed(["bash", "-o", "pipefail", "-c", script], **kwargs)

    @staticmethod
    def interrupt(proc: subprocess.Popen[bytes]) -> None:
        """SIGINT first: snapvol then restarts the container it stopped; SIGKILL if it hangs."""
        if proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(cmd: list[str], *, check: bool = True, timeout: float | None = 600) -> str:
    """Run a short untimed command and return its stdout."""
    done = subprocess.run(
        cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
    )
    if check and done.returncode != 0:
        raise CommandFailed(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def docker(*args: str, check: bool = True, timeout: float | None = 600) -> str:
    return run(["docker", *args], check=check, timeout=timeout)


# --- the test bed: our own container and volumes, always removed ------------------------------


@dataclass
class Bed:
    image: str
    keep: bool
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)  # to remove at the end
    all_volumes: list[str] = field(default_factory=list)  # every volume we used
    tag: str = field(default_factory=lambda: secrets.token_hex(4))

    def data_volume(self, scale: int) -> tuple[str, bool]:
        """The volume for ``scale``: the kept one if present (reused), else a new one."""
        kept = f"snapvol-bench-data-s{scale}"
        if exists("volume", kept):
            name, fresh = kept, False
        else:
            name = kept if self.keep else f"{kept}-{self.tag}"
            docker("volume", "create", "--label", f"{BENCH_LABEL}=1", name)
            fresh = True
            if not self.keep:
                self.volumes.append(name)
        assert name not in PROTECTED
        self.all_volumes.append(name)
        return name, fresh

    def free_volume(self, volume: str) -> None:
        """Remove containers a previous, interrupted benchmark left on ``volume``."""
        users = docker("ps", "-a", "-q", "--filter", f"volume={volume}").split()
        for cid in users:
            labels = docker("inspect", "-f", "{{json .Config.Labels}}", cid)
            mine = json.loads(labels or "{}") or {}
            if BENCH_LABEL in mine or HELPER_LABEL in mine:
                docker("rm", "-f", "-v", cid, check=False)
            else:
                raise SystemExit(f"volume {volume} is used by container {cid}, not the benchmark's")

    def postgres(self, volume: str, scale: int) -> str:
        """A running PostgreSQL on ``volume`` (no network)."""
        name = f"snapvol-bench-s{scale}-{self.tag}"
        assert name not in PROTECTED
        self.free_volume(volume)
        password = f"bench-{secrets.token_hex(8)}"  # unused (local connections), but required
        docker(
            *("run", "-d", "--name", name, "--label", f"{BENCH_LABEL}=1", "--network", "none"),
            *("--stop-signal", "SIGINT", "-v", f"{volume}:{PGDATA}"),
            *("-e", f"POSTGRES_PASSWORD={password}", "-e", f"POSTGRES_DB={DATABASE}", self.image),
        )
        self.containers.append(name)
        wait_ready(name)
        return name

    def cleanup(self) -> None:
        for name in self.containers:
            assert name not in PROTECTED
            docker("rm", "-f", "-v", name, check=False)
        # snapvol's helper containers left on our volumes (after an interruption) keep them busy.
        helpers = docker("ps", "-a", "-q", "--filter", f"label={HELPER_LABEL}", check=False)
        for cid in helpers.split():
            mounts = docker("inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}", cid, check=False)
            if set(mounts.split()) & set(self.all_volumes):
                docker("rm", "-f", "-v", cid, check=False)
        for vol in self.volumes:
            assert vol not in PROTECTED
            docker("volume", "rm", "-f", vol, check=False)


def wait_ready(container: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["docker", "exec", container, *PSQL, "-d", DATABASE, "-c", "select 1"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        if probe.returncode == 0:
            return
        state = docker("inspect", "-f", "{{.State.Status}}", container, check=False).strip()
        if state in ("exited", "dead"):
            logs = docker("logs", "--tail", "20", container, check=False)
            raise CommandFailed(f"container {container} exited:\n{logs}")
        time.sleep(0.3)
    raise CommandFailed(f"PostgreSQL in {container} not ready after {timeout:.0f} s")


def psql(container: str, sql: str, database: str = DATABASE) -> str:
    return docker("exec", container, *PSQL, "-A", "-t", "-d", database, "-c", sql).strip()


def ensure_data(container: str, scale: int, fresh: bool) -> float | None:
    """pgbench data at ``scale``; generated unless a reused volume already holds it."""
    if not fresh:
        try:
            if psql(container, "select count(*) from pgbench_branches") == str(scale):
                return None
        except CommandFailed:
            pass
        log(f"the kept volume does not hold scale {scale} data: generating it again")
    log(f"pgbench -i -s {scale} (server-side generation)")
    started = time.monotonic()
    # -I dtGvp: drop, create tables, generate the rows server-side (faster), vacuum, keys.
    generate = ["pgbench", "-U", "postgres", "-i", "-s", str(scale), "-I", "dtGvp", "-q", DATABASE]
    docker("exec", container, *generate, timeout=3600)
    psql(container, "checkpoint")
    return time.monotonic() - started


def volume_stats(mountpoint: str) -> tuple[int, int]:
    """Bytes and files in the volume (as root on the host)."""
    total, files = 0, 0
    for root, dirs, names in os.walk(mountpoint):
        for n in names + dirs:
            files += 1
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, n)).st_size
    return total, files


def stop(container: str) -> None:
    docker("stop", "-t", "120", container)


def start(container: str) -> None:
    docker("start", container)
    wait_ready(container)


# --- results ------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    label: str
    seconds: float | None = None
    mbps: float | None = None
    compare: str = ""  # e.g. "1.42x (a)"
    target: str = ""
    verdict: str = ""  # PASS / FAIL, "info" (a ratio shown but not graded) or ""
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def table(self) -> str:
        """The rows grouped by section, FAIL lines, then the notes."""
        width = 56
        head = f"  {'':<{width}} {'time':>8} {'MB/s':>6}  {'compared':<24} {'target':<16} result"
        lines: list[str] = []
        section = None
        for row in self.rows:
            if row.section != section:
                section = row.section
                lines += ["", section, head]
            secs = f"{row.seconds:7.2f}s" if row.seconds is not None else ""
            rate = f"{row.mbps:6.0f}" if row.mbps is not None else ""
            line = (
                f"  {row.label:<{width}} {secs:>8} {rate:>6}  {row.compare:<24} "
                f"{row.target:<16} {row.verdict:<6} {row.note}"
            )
            lines.append(line.rstrip())
        checks = [r for r in self.rows if r.verdict in ("PASS", "FAIL")]
        fails = [r for r in checks if r.verdict == "FAIL"]
        lines.append("")
        for r in fails:
            where = r.section.split(":")[0]
            lines.append(f"FAIL  {where}: {r.label}: {r.compare}, target {r.target}")
        lines.append(f"{len(checks) - len(fails)} of {len(checks)} targets met")
        if self.notes:
            lines += ["", "Notes:"] + [f"  - {n}" for n in self.notes]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.data,
            "rows": [r.__dict__ for r in self.rows],
            "failed": [f"{r.section}: {r.label}" for r in self.rows if r.verdict == "FAIL"],
            "notes": self.notes,
        }


def faster(snapvol: float, baseline: float) -> str:
    if snapvol <= baseline:
        return f"snapvol {baseline / snapvol:.2f}x faster"
    return f"snapvol {snapvol / baseline:.2f}x slower"


def passfail(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def best(values: list[Timed]) -> Timed:
    return min(values, key=lambda t: t.seconds)


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds if seconds > 0 else 0.0


# --- the benchmark ----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, bed: Bed) -> None:
        self.args = args
        self.workdir = workdir
        self.bed = bed
        env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPVOL_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.runner = Runner(workdir, env)
        self.report = Report()
        self.snapvol = shlex.split(args.snapvol) if args.snapvol else snapvol_command()
        compile_checkout()
        self.load_before = os.getloadavg()[0]
        self.store = workdir / "manifests.db"
        self.backups = workdir / "backups"

    def cli(self, *args: str) -> list[str]:
        return [*self.snapvol, "--db", str(self.store), "--backup-dir", str(self.backups), *args]

    def snapvol_json(self, *args: str) -> tuple[Timed, dict[str, Any]]:
        timed = self.runner.timed(self.cli(*args, "--json"))
        return timed, json.loads(timed.stdout)

    # --- volume -----------------------------------------------------------------------------

    def prepare(self, scale: int) -> dict[str, Any]:
        volume, fresh = self.bed.data_volume(scale)
        container = self.bed.postgres(volume, scale)
        generated = ensure_data(container, scale, fresh)
        mountpoint = docker("volume", "inspect", "-f", "{{.Mountpoint}}", volume).strip()
        if not os.access(mountpoint, os.R_OK | os.X_OK):
            raise SystemExit(f"cannot read {mountpoint}: run the benchmark as root")
        size, files = volume_stats(mountpoint)
        db_size = int(psql(container, f"select pg_database_size('{DATABASE}')"))
        log(
            f"scale {scale}: volume {volume} ({size / MB:.0f} MB in {files} files, "
            f"database {db_size / MB:.0f} MB){' reused' if generated is None else ''}"
        )
        return {
            "scale": scale,
            "volume": volume,
            "container": container,
            "mountpoint": mountpoint,
            "volume_bytes": size,
            "files": files,
            "database_bytes": db_size,
            "generated_s": None if generated is None else round(generated, 1),
        }

    def warm(self, info: dict[str, Any]) -> None:
        """Read the volume once (untimed) so every contender starts from the same warm cache."""
        log("warming up: reading the volume once and starting the image once (untimed)")
        # Through cat: GNU tar does not read the files at all when its output is /dev/null.
        self.runner.shell(f"tar -C {shlex.quote(info['mountpoint'])} -cf - . | cat > /dev/null")
        self.runner.timed(
            ["docker", "run", "--rm", "--network", "none", "--entrypoint", "true", self.bed.image]
        )

    def volume_suite(self, info: dict[str, Any], *, full: bool) -> dict[str, Any]:
        """Snapshot and restore, snapvol against the host and Docker baselines; best of --repeat."""
        c, vol, mp = info["container"], info["volume"], info["mountpoint"]
        q = shlex.quote
        out = self.workdir / f"s{info['scale']}"
        out.mkdir()
        host_file = out / "host.tar.zst"
        res: dict[str, list[Timed]] = {}
        meta: dict[str, Any] = {}

        def add(key: str, t: Timed) -> None:
            res.setdefault(key, []).append(t)

        def baselines() -> None:
            stop(c)
            log("(a) host tar | zstd -3 -T0")
            host_file.unlink(missing_ok=True)
            pipeline = f"tar -C {q(mp)} -cf - . | zstd -q -3 -T0 > {q(str(host_file))}"
            add("host_snapshot", self.runner.shell(pipeline))
            meta["host_archive_bytes"] = host_file.stat().st_size
            # (b) is ~9x slower than snapvol: once is enough, whatever --repeat says.
            if full and not self.args.skip_docker_recipe and "docker_snapshot" not in res:
                log("(b) docker run ... tar czf (Docker's documented recipe)")
                recipe = [
                    *("docker", "run", "--rm", "--network", "none", "--entrypoint", "tar"),
                    *("-v", f"{vol}:/data:ro", "-v", f"{out}:/backup", self.bed.image),
                    *("czf", "/backup/docker.tar.gz", "-C", "/data", "."),
                ]
                add("docker_snapshot", self.runner.timed(recipe))
                meta["docker_archive_bytes"] = (out / "docker.tar.gz").stat().st_size
                (out / "docker.tar.gz").unlink()
            start(c)

        def snapvol_snapshot() -> None:
            log("snapvol snapshot --volume (running container)")
            t, snap = self.snapvol_json("snapshot", "--volume", "--container", c)
            add("snapvol_snapshot", t)
            res.setdefault("downtime", []).append(Timed(snap["downtime_s"] or 0.0, 0, "", ""))
            meta["snapshot_id"] = snap["id"]
            meta["raw_bytes"] = snap["raw_bytes"]
            meta["snapvol_archive_bytes"] = snap["size_bytes"]

        def snapvol_restore() -> None:
            log("snapvol restore --no-safety-snapshot")
            t, result = self.snapvol_json(
                "restore", meta["snapshot_id"], "--yes", "--no-safety-snapshot", "--container", c
            )
            add("snapvol_restore", t)
            res.setdefault("restore_downtime", []).append(Timed(result["downtime_s"], 0, "", ""))

        def host_extract() -> None:
            log("host zstd -d | tar -x into an empty directory")
            target = out / "extract"
            target.mkdir()
            pipeline = f"zstd -q -d -c {q(str(host_file))} | tar -x -C {q(str(target))}"
            add("host_restore", self.runner.shell(pipeline))
            shutil.rmtree(target)

        def snapvol_restore_safety() -> None:
            log("snapvol restore (default: safety snapshot first)")
            t, _ = self.snapvol_json("restore", meta["snapshot_id"], "--yes", "--container", c)
            add("snapvol_restore_safety", t)

        def snapvol_snapshot_stopped() -> None:
            log("snapvol snapshot --volume (container already stopped: the pipeline alone)")
            stop(c)
            try:
                t, _ = self.snapvol_json("snapshot", "--volume", "--container", c)
            finally:
                start(c)
            add("snapvol_snapshot_stopped", t)

        for i in range(self.args.repeat):
            if i:
                log(f"repeat {i + 1} of {self.args.repeat}")
            snapshot_steps: list[Callable[[], None]] = [baselines, snapvol_snapshot]
            restore_steps: list[Callable[[], None]] = [snapvol_restore, host_extract]
            if i % 2:  # alternate the order so neither side always runs first
                snapshot_steps.reverse()
                restore_steps.reverse()
            for step in snapshot_steps + restore_steps:
                step()
            if full:
                snapvol_restore_safety()
                if not self.args.skip_stopped:
                    snapvol_snapshot_stopped()
            host_file.unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        return {
            "best": {k: best(v) for k, v in res.items()},
            "rss": {k: max(t.rss_mb for t in v) for k, v in res.items()},
            **meta,
        }

    def report_volume(self, info: dict[str, Any], r: dict[str, Any]) -> None:
        b, rss, raw = r["best"], r["rss"], r["raw_bytes"]
        section = (
            f"Volume, pgbench scale {info['scale']}: {raw / MB:.0f} MB tar stream, "
            f"{info['files']} files (database {info['database_bytes'] / MB:.0f} MB)"
        )
        rep = self.report

        def row(label: str, t: Timed, **kw: Any) -> Row:
            return rep.add(Row(section, label, t.seconds, mbps(raw, t.seconds), **kw))

        snap, host = b["snapvol_snapshot"], b["host_snapshot"]
        # The speed targets are set for the benchmark's volume (--scale). At the small scale
        # (there for the memory check) the ratios are printed for information: a fixed ~0.7 s
        # (Python start-up, PostgreSQL's stop, start and readiness) weighs several times more.
        graded = info["scale"] == self.args.scale

        def verdict(ok: bool) -> str:
            return passfail(ok) if graded else "info"

        def target(text: str) -> str:
            return text if graded else f"({text} at scale {self.args.scale})"

        row(
            "snapvol snapshot --volume (running container)",
            snap,
            note=f"archive {r['snapvol_archive_bytes'] / MB:.0f} MB, "
            f"peak RSS {rss['snapvol_snapshot']:.0f} MB",
        )
        rep.add(Row(section, "  downtime (the snapshot's downtime_s)", b["downtime"].seconds))
        if "snapvol_snapshot_stopped" in b:
            t = b["snapvol_snapshot_stopped"]
            row(
                "  info: snapvol snapshot, container already stopped",
                t,
                compare=f"snapvol {t.seconds / host.seconds:.2f}x (a)",
                note="no stop, restart or readiness wait",
            )
        ratio = snap.seconds / host.seconds
        row(
            "(a) host tar | zstd -3 -T0 (stopped)",
            host,
            verdict=verdict(ratio <= SNAPSHOT_VS_HOST),
            compare=f"snapvol {ratio:.2f}x",
            target=target(f"<= {SNAPSHOT_VS_HOST}x"),
            note=f"archive {r['host_archive_bytes'] / MB:.0f} MB",
        )
        if "docker_snapshot" in b:
            speedup = b["docker_snapshot"].seconds / snap.seconds
            row(
                "(b) docker run --rm ... tar czf (Docker's recipe)",
                b["docker_snapshot"],
                verdict=passfail(speedup >= SNAPSHOT_VS_DOCKER),
                compare=faster(snap.seconds, b["docker_snapshot"].seconds),
                target=f">= {SNAPSHOT_VS_DOCKER:.0f}x faster",
                note=f"archive {r['docker_archive_bytes'] / MB:.0f} MB",
            )
        rest, extract = b["snapvol_restore"], b["host_restore"]
        row(
            "snapvol restore --no-safety-snapshot (verified)",
            rest,
            note=f"peak RSS {rss['snapvol_restore']:.0f} MB",
        )
        rep.add(
            Row(section, "  downtime (the restore's downtime_s)", b["restore_downtime"].seconds)
        )
        ratio = rest.seconds / extract.seconds
        row(
            "host zstd -d | tar -x (into an empty directory)",
            extract,
            verdict=verdict(ratio <= RESTORE_VS_HOST),
            compare=f"snapvol {ratio:.2f}x",
            target=target(f"<= {RESTORE_VS_HOST:.0f}x"),
        )
        if "snapvol_restore_safety" in b:
            t = b["snapvol_restore_safety"]
            row(
                "  info: snapvol restore, safety snapshot first (default)",
                t,
                compare=f"snapvol {t.seconds / extract.seconds:.2f}x",
                note=f"peak RSS {rss['snapvol_restore_safety']:.0f} MB",
            )

    def report_rss(self, big: dict[str, Any], small: dict[str, Any] | None) -> None:
        section = "Peak RSS of the snapvol process (os.wait4 on it alone)"
        for key, what in (("snapvol_snapshot", "snapshot"), ("snapvol_restore", "restore")):
            big_mb = big["rss"][key]
            self.report.add(
                Row(
                    section,
                    f"{what}, scale {self.args.scale}",
                    compare=f"{big_mb:.0f} MB",
                    target=f"<= {RSS_LIMIT_MB:.0f} MB",
                    verdict=passfail(big_mb <= RSS_LIMIT_MB),
                )
            )
            if small is None:
                continue
            small_mb = small["rss"][key]
            flat = big_mb / small_mb
            self.report.add(
                Row(
                    section,
                    f"{what}, scale {self.args.small_scale}; big/small",
                    compare=f"{small_mb:.0f} MB; {flat:.2f}x",
                    target=f"<= {RSS_FLAT}x (flat)",
                    verdict=passfail(flat <= RSS_FLAT and small_mb <= RSS_LIMIT_MB),
                )
            )

    # --- logical ----------------------------------------------------------------------------

    def logical_supported(self) -> tuple[bool, str]:
        help_text = self.runner.timed(self.cli("snapshot", "--help")).stdout
        if "--logical" in help_text and "--format" in help_text:
            return True, ""
        return False, "snapvol snapshot has no --logical/--format yet: logical benchmark skipped"

    def logical_suite(self, info: dict[str, Any]) -> None:
        c = info["container"]
        section = (
            f"Logical, pgbench scale {info['scale']}: database "
            f"{info['database_bytes'] / MB:.0f} MB (MB/s of the -Z0 dump)"
        )
        rep = self.report
        out = self.workdir / "logical"
        out.mkdir()
        dump = out / "dump.fc"
        log("warming up: pg_dump -Fc -Z0 to a host file (untimed; used by the baselines)")
        self.runner.shell(f"docker exec {c} pg_dump -U postgres -Fc -Z0 {DATABASE} > {dump}")
        dump_bytes = dump.stat().st_size
        res: dict[str, list[Timed]] = {}
        snaps: list[dict[str, Any]] = []

        def add(key: str, t: Timed) -> None:
            res.setdefault(key, []).append(t)

        def baseline_c() -> None:
            log("(c) pg_dump -Fc -Z0 > /dev/null in the container, and host zstd -3 -T0 of a dump")
            to_null = f"pg_dump -U postgres -Fc -Z0 {DATABASE} > /dev/null"
            add("pg_dump", self.runner.timed(["docker", "exec", c, "sh", "-c", to_null]))
            add("zstd", self.runner.shell(f"zstd -q -3 -T0 -c {dump} > {dump}.zst"))
            Path(f"{dump}.zst").unlink()

        def baseline_d() -> None:
            log("(d) docker exec pg_dump (plain SQL) > file")
            add(
                "seed_dump",
                self.runner.shell(
                    f"docker exec {c} pg_dump -U postgres {DATABASE} > {out / 'plain.sql'}"
                ),
            )
            (out / "plain.sql").unlink()

        def snapvol_logical() -> None:
            log("snapvol snapshot --logical --format custom")
            t, snap = self.snapvol_json(
                "snapshot", "--logical", "--format", "custom", "--container", c
            )
            add("snapvol_logical", t)
            snaps.append(snap)

        for i in range(self.args.repeat):
            steps: list[Callable[[], None]] = [baseline_c, snapvol_logical, baseline_d]
            if i % 2:
                steps.reverse()
            for step in steps:
                step()
        b = {k: best(v) for k, v in res.items()}
        snap = snaps[-1]
        if snap.get("kind") != "logical":
            rep.notes.append(
                f"snapshot --logical made a {snap.get('kind')!r} snapshot: "
                "logical results not reported"
            )
            return
        sv, floor = b["snapvol_logical"], b["pg_dump"].seconds + b["zstd"].seconds
        rss = max(t.rss_mb for t in res["snapvol_logical"])
        rep.add(
            Row(
                section,
                "snapvol snapshot --logical --format custom",
                sv.seconds,
                mbps(dump_bytes, sv.seconds),
                note=f"archive {(snap.get('size_bytes') or 0) / MB:.0f} MB, peak RSS {rss:.0f} MB",
            )
        )
        ratio = sv.seconds / floor
        rep.add(
            Row(
                section,
                "(c) pg_dump -Fc -Z0 >/dev/null in it + host zstd -3 -T0",
                floor,
                mbps(dump_bytes, floor),
                compare=f"snapvol {ratio:.2f}x",
                target=f"<= {LOGICAL_VS_PGDUMP}x",
                verdict=passfail(ratio <= LOGICAL_VS_PGDUMP),
                note=f"pg_dump {b['pg_dump'].seconds:.2f} s + zstd {b['zstd'].seconds:.2f} s",
            )
        )
        d = b["seed_dump"]
        rep.add(
            Row(
                section,
                "(d) docker exec pg_dump (plain SQL) > file (the seed)",
                d.seconds,
                mbps(dump_bytes, d.seconds),
                compare=faster(sv.seconds, d.seconds),
            )
        )
        self.logical_restore(section, c, snap, dump, dump_bytes)
        shutil.rmtree(out, ignore_errors=True)

    def logical_restore(
        self, section: str, c: str, snap: dict[str, Any], dump: Path, dump_bytes: int
    ) -> None:
        rep = self.report
        # In place: snapvol restores into a scratch database, checks it and swaps it in.
        restore_args = ["restore", snap["id"], "--yes", "--container", c]
        log("snapvol restore of the logical snapshot (in place)")
        try:
            t, _ = self.snapvol_json(*restore_args)
        except CommandFailed as err:
            rep.notes.append(f"logical restore failed, not reported: {err}")
            return
        log("baseline: docker cp the dump in, createdb, pg_restore -d")
        newdb = "bench_pg_restore"
        psql(c, f"drop database if exists {newdb}", database="postgres")
        cp = self.runner.timed(["docker", "cp", str(dump), f"{c}:/tmp/bench.dump"])
        script = (
            f"createdb -U postgres {newdb} && pg_restore -U postgres -d {newdb} /tmp/bench.dump"
        )
        restore = self.runner.timed(["docker", "exec", c, "sh", "-c", script])
        docker("exec", c, "rm", "-f", "/tmp/bench.dump", check=False)
        psql(c, f"drop database if exists {newdb}", database="postgres")
        base = cp.seconds + restore.seconds
        rep.add(
            Row(
                section,
                "snapvol restore of that snapshot (in place, checked)",
                t.seconds,
                mbps(dump_bytes, t.seconds),
                note=f"peak RSS {t.rss_mb:.0f} MB",
            )
        )
        rep.add(
            Row(
                section,
                "docker cp dump in + createdb + pg_restore -d there",
                base,
                mbps(dump_bytes, base),
                compare=f"snapvol {t.seconds / base:.2f}x",
                note=f"docker cp {cp.seconds:.2f} s + pg_restore {restore.seconds:.2f} s",
            )
        )

    # --- copies to a restic repository (issue 12) --------------------------------------------

    def repo_cli(self, repo: Path, *args: str) -> list[str]:
        password = self.workdir / "restic-password"
        return self.cli("--repo", str(repo), "--password-file", str(password), *args)

    def restic_repo(self, name: str) -> Path:
        """A new, empty local restic repository in the work directory (same password file)."""
        password = self.workdir / "restic-password"
        if not password.exists():
            password.write_text(secrets.token_urlsafe(24) + "\n")
            password.chmod(0o600)
        repo = self.workdir / name
        self.runner.shell(f"{self.restic_env(repo)} restic init --repository-version=2 -q")
        return repo

    def restic_env(self, repo: Path) -> str:
        """The variables restic needs, as a shell prefix: paths only, never the password."""
        password = self.workdir / "restic-password"
        return (
            f"RESTIC_REPOSITORY={shlex.quote(str(repo))} "
            f"RESTIC_PASSWORD_FILE={shlex.quote(str(password))}"
        )

    @staticmethod
    def restic_summary(out: str) -> dict[str, Any]:
        """The summary line of `restic backup --json`."""
        for line in reversed(out.splitlines()):
            with contextlib.suppress(json.JSONDecodeError):
                data = json.loads(line)
                if isinstance(data, dict) and data.get("message_type") == "summary":
                    return data
        raise CommandFailed(f"restic backup printed no summary: {out[-400:]}")

    def copy_of(self, snapshot_id: str) -> dict[str, Any]:
        """The snapshot's complete copy, as `snapvol ls --json` shows it."""
        listed = json.loads(self.runner.timed(self.cli("ls", "--json")).stdout)
        snaps = listed if isinstance(listed, list) else listed.get("snapshots", [])
        for snap in snaps:
            if snap["id"] == snapshot_id:
                done = [c for c in snap.get("copies", []) if c.get("status") == "complete"]
                if done:
                    return dict(done[0])
        raise CommandFailed(f"snapshot {snapshot_id} has no complete copy after `snapvol copy`")

    def fetch_supported(self) -> bool:
        return "--from-repo" in self.runner.timed(self.cli("restore", "--help")).stdout

    def repo_suite(self, info: dict[str, Any]) -> dict[str, Any]:
        """snapvol copy and restore --from-repo against restic's own ways, on one volume.

        1. The container stopped: `restic backup <mountpoint>` into repository D (the
           directory baseline's first backup) and `snapvol snapshot` S1 of the same stopped
           volume; start it again.
        2. `snapvol copy S1` into a new repository A, and `zstd -d < S1's archive | restic
           backup --stdin` (the same tar stream) into a new repository B: copy time.
        3. A write load (pgbench transactions); stopped again: `restic backup <mountpoint>`
           into D and `snapvol snapshot` S2; `snapvol copy S2` into A: what each second backup
           adds (restic's data_added), snapvol against the directory backup.
        4. `snapvol restore S1 --from-repo` against `restic dump A's data | tar -x` into an
           empty directory (when this snapvol has --from-repo); this also puts S1 back.
        """
        c, mp = info["container"], info["mountpoint"]
        q = shlex.quote
        tag = f"s{info['scale']}"
        self.runner.env["RESTIC_CACHE_DIR"] = str(self.workdir / "restic-cache")
        repo_a, repo_b, repo_d = (
            self.restic_repo(f"{tag}-repo-{x}") for x in ("snapvol", "stdin", "dir")
        )
        res: dict[str, Timed] = {}
        meta: dict[str, Any] = {}

        def dir_backup() -> int:
            t = self.runner.shell(f"{self.restic_env(repo_d)} restic backup --json -q {q(mp)}")
            return int(self.restic_summary(t.stdout)["data_added"])

        def stopped_snapshot() -> dict[str, Any]:
            _t, snap = self.snapvol_json("snapshot", "--volume", "--container", c)
            return snap

        log(f"repo {tag}: restic backup of the stopped volume's directory; snapvol snapshot S1")
        stop(c)
        try:
            meta["dir_first_added"] = dir_backup()
            s1 = stopped_snapshot()
        finally:
            start(c)
        raw = s1["raw_bytes"]
        log(f"repo {tag}: snapvol copy S1 (new repository)")
        res["copy"] = self.runner.timed(self.repo_cli(repo_a, "copy", s1["id"]), own_rss=True)
        meta["copy_first_added"] = self.copy_of(s1["id"]).get("bytes_added")
        log(f"repo {tag}: zstd -d < S1's archive | restic backup --stdin (new repository)")
        res["stdin"] = self.runner.shell(
            f"zstd -q -d -c {q(s1['path'])} | {self.restic_env(repo_b)} restic backup -q "
            f"--stdin --stdin-filename {q(Path(s1['path']).name.removesuffix('.zst'))}"
        )
        log(f"repo {tag}: write load (pgbench -n -c 2 -t 1000), then the second backups")
        docker("exec", c, "pgbench", "-U", "postgres", "-n", "-c", "2", "-t", "1000", DATABASE)
        stop(c)
        try:
            meta["dir_second_added"] = dir_backup()
            s2 = stopped_snapshot()
        finally:
            start(c)
        res["copy2"] = self.runner.timed(self.repo_cli(repo_a, "copy", s2["id"]), own_rss=True)
        meta["copy_second_added"] = self.copy_of(s2["id"]).get("bytes_added")
        if self.fetch_supported():
            log(f"repo {tag}: restic dump | tar -x into an empty directory")
            data = [
                x for x in self.restic_snapshots(repo_a) if f"snapvol-id-{s1['id']}" in x["tags"]
            ]
            data = [x for x in data if "snapvol-data" in x["tags"]]
            target = self.workdir / f"{tag}-extract"
            target.mkdir()
            filename = Path(data[0]["paths"][0]).name if data[0].get("paths") else ""
            res["dump"] = self.runner.shell(
                f"{self.restic_env(repo_a)} restic dump {q(data[0]['id'])} /{q(filename)} "
                f"| tar -x -C {q(str(target))}"
            )
            shutil.rmtree(target)
            log(f"repo {tag}: snapvol restore S1 --from-repo (local archive moved away)")
            archive = Path(s1["path"])
            archive.rename(archive.with_name(archive.name + ".away"))
            try:
                res["fetch"] = self.runner.timed(
                    self.repo_cli(
                        repo_a,
                        "restore",
                        s1["id"],
                        "--from-repo",
                        "--yes",
                        "--no-safety-snapshot",
                        "--container",
                        c,
                    ),
                    own_rss=True,
                )
            finally:
                if not archive.exists():
                    archive.with_name(archive.name + ".away").rename(archive)
                else:
                    archive.with_name(archive.name + ".away").unlink(missing_ok=True)
        else:
            meta["no_fetch"] = True
        return {"t": res, "raw_bytes": raw, **meta}

    def restic_snapshots(self, repo: Path) -> list[dict[str, Any]]:
        out = self.runner.shell(f"{self.restic_env(repo)} restic snapshots --json").stdout
        return list(json.loads(out))

    def report_repo(self, info: dict[str, Any], r: dict[str, Any]) -> None:
        t, raw, rep = r["t"], r["raw_bytes"], self.report
        section = (
            f"Repository (restic, local), pgbench scale {info['scale']}: "
            f"{raw / MB:.0f} MB tar stream"
        )

        def row(label: str, timed: Timed, **kw: Any) -> Row:
            return rep.add(Row(section, label, timed.seconds, mbps(raw, timed.seconds), **kw))

        def own(timed: Timed) -> str:
            return f"snapvol {timed.own_rss_mb or 0:.0f} MB, with restic {timed.rss_mb:.0f} MB"

        # Speed is graded at --scale, as in the volume part (a fixed second of start-up and
        # repository opening weighs more on a small stream); bytes added and memory at both.
        graded = info["scale"] == self.args.scale

        def speed(ok: bool) -> str:
            return passfail(ok) if graded else "info"

        def speed_target(text: str) -> str:
            return text if graded else f"({text} at scale {self.args.scale})"

        row(
            "snapvol copy (first copy, new repository)",
            t["copy"],
            note=f"peak RSS {own(t['copy'])}",
        )
        ratio = t["copy"].seconds / t["stdin"].seconds
        row(
            "zstd -d < archive | restic backup --stdin (same stream)",
            t["stdin"],
            compare=f"snapvol {ratio:.2f}x",
            target=speed_target(f"<= {COPY_VS_RESTIC_STDIN}x"),
            verdict=speed(ratio <= COPY_VS_RESTIC_STDIN),
        )
        snap_added, dir_added = r.get("copy_second_added"), r["dir_second_added"]
        if snap_added is None:
            rep.notes.append("snapvol's copy recorded no bytes_added: dedup not graded")
        else:
            dedup = snap_added / max(dir_added, 1)
            rep.add(
                Row(
                    section,
                    "second copy after a write load: bytes added",
                    compare=f"{snap_added / MB:.1f} MB vs {dir_added / MB:.1f} MB",
                    target=f"<= {DEDUP_VS_RESTIC_DIR}x",
                    verdict=passfail(dedup <= DEDUP_VS_RESTIC_DIR),
                    note=f"{dedup:.2f}x `restic backup <dir>` of the stopped volume "
                    f"(first: {(r.get('copy_first_added') or 0) / MB:.0f} MB vs "
                    f"{r['dir_first_added'] / MB:.0f} MB)",
                )
            )
        row("snapvol copy (second copy)", t["copy2"], note=f"peak RSS {own(t['copy2'])}")
        if "fetch" in t:
            ratio = t["fetch"].seconds / t["dump"].seconds
            row(
                "snapvol restore --from-repo --no-safety-snapshot",
                t["fetch"],
                note=f"peak RSS {own(t['fetch'])}",
            )
            row(
                "restic dump | tar -x (into an empty directory)",
                t["dump"],
                compare=f"snapvol {ratio:.2f}x",
                target=speed_target(f"<= {FETCH_VS_RESTIC_DUMP}x"),
                verdict=speed(ratio <= FETCH_VS_RESTIC_DUMP),
            )
        else:
            rep.notes.append(
                f"scale {info['scale']}: restore --from-repo not measured (this snapvol has no "
                "`restore --from-repo`)"
            )
        peaks = [x.own_rss_mb or 0.0 for k, x in t.items() if k in ("copy", "copy2", "fetch")]
        rep.add(
            Row(
                section,
                "peak RSS of the snapvol process (copy, restore --from-repo)",
                compare=f"{max(peaks):.0f} MB",
                target=f"< {RSS_LIMIT_MB:.0f} MB",
                verdict=passfail(max(peaks) < RSS_LIMIT_MB),
                note="VmHWM of snapvol alone; restic, its child, is shown apart above",
            )
        )

    def repo_part(self, big: dict[str, Any]) -> None:
        """The repository suite at both scales (the small one prepared here if needed)."""
        if shutil.which("restic") is None:
            self.report.notes.append("restic is not installed: repository benchmark skipped")
            return
        help_text = self.runner.timed(self.cli("--help")).stdout
        if "copy" not in help_text or "--repo" not in help_text:
            self.report.notes.append("this snapvol has no `copy`: repository benchmark skipped")
            return
        self.report_repo(big, self.repo_suite(big))
        if self.args.small_scale:
            # The volume part removed the small container: a new one on the same volume.
            small = self.prepare(self.args.small_scale)
            self.report_repo(small, self.repo_suite(small))
            docker("rm", "-f", small["container"], check=False)

    # --- the whole run ----------------------------------------------------------------------

    def volume_part(self, big: dict[str, Any]) -> None:
        """Both scales' volume suites, then the RSS comparison between them."""
        args, rep = self.args, self.report
        self.warm(big)
        big_res = self.volume_suite(big, full=True)
        self.report_volume(big, big_res)
        small_res = None
        if args.small_scale:
            small = self.prepare(args.small_scale)
            rep.data["small_volume"] = small
            self.warm(small)
            small_res = self.volume_suite(small, full=False)
            self.report_volume(small, small_res)
            # Its container is not needed any more: free its memory before the logical part.
            docker("rm", "-f", small["container"], check=False)
        self.report_rss(big_res, small_res)

    def run(self) -> Report:
        args = self.args
        rep = self.report
        rep.data["config"] = {
            "scale": args.scale,
            "small_scale": args.small_scale,
            "repeat": args.repeat,
            "image": self.bed.image,
            "cpus": os.cpu_count(),
            "snapvol": " ".join(self.snapvol),
        }
        big = self.prepare(args.scale)
        rep.data["volume"] = big
        if args.skip_volume:
            rep.notes.append("volume benchmark skipped (--skip-volume)")
        else:
            self.volume_part(big)
        if args.skip_logical:
            rep.notes.append("logical benchmark skipped (--skip-logical)")
        else:
            ok, why = self.logical_supported()
            if ok:
                self.logical_suite(big)
            else:
                rep.notes.append(why)
        if args.skip_repo:
            rep.notes.append("repository benchmark skipped (--skip-repo)")
        else:
            self.repo_part(big)
        alternated = "; the order of the contenders alternated" if args.repeat > 1 else ""
        rep.notes.append(
            "page caches were not dropped: the volume was read once (and pg_dump ran once) "
            "untimed first, so every contender ran warm; sync before each timed command; "
            f"best of {args.repeat} run(s){alternated}"
        )
        rep.notes.append(
            "snapvol times are wall times of the CLI process (Python start-up included); a "
            "volume snapshot or restore of the running container includes stopping PostgreSQL, "
            "starting it again and waiting until it accepts connections"
        )
        rep.notes.append("MB/s = uncompressed tar stream (volume) or -Z0 dump (logical) / time")
        measured = f"--snapvol {args.snapvol}" if args.snapvol else source_revision()
        rep.notes.append(f"snapvol measured: {measured}")
        busy = self.load_before > 0.5
        rep.notes.append(
            f"1-minute load average before the run: {self.load_before:.1f} on {os.cpu_count()} "
            f"CPUs{' (other work was running: times are noisy)' if busy else ''}"
        )
        return rep


def compile_checkout() -> None:
    """Compile the checkout's modules, as pip does when it installs a package: an editable
    install run under PYTHONDONTWRITEBYTECODE (set on the development machines) would otherwise
    compile every module it imports at every start, ~0.1 s a command no installed snapvol pays."""
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "snapvol", quiet=1)


def source_revision() -> str:
    """The snapvol checkout's commit, and whether its code had uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    head = subprocess.run(
        ["git", "-C", str(repo), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    if head.returncode != 0:
        return "unknown revision"
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--", "snapvol"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes in snapvol/" if dirty else "")


def snapvol_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m snapvol``."""
    script = Path(sys.executable).parent / "snapvol"
    return [str(script)] if script.exists() else [sys.executable, "-m", "snapvol"]


def exists(kind: str, name: str) -> bool:
    """Whether the engine has the image or volume ``name``."""
    probe = subprocess.run(["docker", kind, "inspect", name], capture_output=True)
    return probe.returncode == 0


def pg_image() -> str:
    """$SNAPVOL_PG_IMAGE (make bench sets it), else a PostgreSQL 15 image that is already here."""
    for name in (os.environ.get("SNAPVOL_PG_IMAGE", ""), "postgres:15", "snapvol/postgres:15"):
        if name and exists("image", name):
            return name
    raise SystemExit("no PostgreSQL 15 image: run `make image` or set SNAPVOL_PG_IMAGE")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark snapvol against host and Docker baselines (see the docstring)."
    )
    p.add_argument(
        "--scale",
        type=int,
        default=100,
        help="pgbench scale of the main run (100: 1.5 GB database, ~2.6 GB volume)",
    )
    p.add_argument(
        "--small-scale",
        type=int,
        default=None,
        help="pgbench scale of the RSS comparison (default: scale/4; 0 skips it)",
    )
    p.add_argument(
        "--repeat", type=int, default=3, help="runs of each measurement; best kept (default 3)"
    )
    p.add_argument("--skip-volume", action="store_true", help="skip the volume benchmark")
    p.add_argument("--skip-logical", action="store_true", help="skip the logical benchmark")
    p.add_argument(
        "--skip-repo", action="store_true", help="skip the repository (restic) benchmark"
    )
    p.add_argument(
        "--only",
        choices=PARTS,
        help="run only this part (volume, logical or repo); the others are skipped",
    )
    p.add_argument(
        "--skip-docker-recipe",
        action="store_true",
        help="skip (b), the slow docker run ... tar czf baseline",
    )
    p.add_argument(
        "--skip-stopped",
        action="store_true",
        help="skip the info line: snapvol snapshot of a stopped container",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the data volumes (snapvol-bench-data-s<scale>) for the next run",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where archives and the manifest store go (a temporary directory in it)",
    )
    p.add_argument(
        "--snapvol",
        help="the command to benchmark (default: the snapvol script beside this Python)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = p.parse_args(argv)
    if args.only:
        for part in PARTS:
            if part != args.only:
                setattr(args, f"skip_{part}", True)
    if args.small_scale is None:
        args.small_scale = max(1, args.scale // 4) if args.scale >= 4 else 0
    if args.small_scale and args.small_scale == args.scale:
        args.small_scale = 0
    if args.repeat < 1 or args.scale < 1:
        p.error("--repeat and --scale must be at least 1")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("zstd") is None or shutil.which("tar") is None:
        raise SystemExit("the host baselines need zstd and tar on PATH")
    image = pg_image()
    bed = Bed(image=image, keep=args.keep)
    workdir = Path(tempfile.mkdtemp(prefix="snapvol-bench-", dir=args.workdir))
    # SIGTERM ends the run like Ctrl-C: the finally below removes what was created.
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        bench = Bench(args, workdir, bed)
        report = bench.run()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except CommandFailed as err:
        log(f"failed: {err}")
        return 1
    finally:
        log("removing the benchmark's containers and volumes")
        bed.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    report.data["total_s"] = round(time.monotonic() - started, 1)
    table = report.table() + f"\n\nTotal: {report.data['total_s']:.0f} s"
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(report.as_json(), indent=2, default=lambda o: o.__dict__))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
