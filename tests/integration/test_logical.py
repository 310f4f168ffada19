"""Logical snapshots and restores against a real engine and a real PostgreSQL 15.

One PostgreSQL container serves the whole module; the ``demo`` fixture gives each test a freshly
created ``pc_db`` holding the demo's tables, and checks afterwards that no scratch database of
snapvol was left behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import secrets
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests import docker_helpers
from tests.archives import flip_middle_byte
from tests.docker_helpers import PgContainer, TestBed, databases
from tests.faults.procs import snapvol_process
from tests.pgdata import DEMO_COUNTS, fill_demo

pytestmark = pytest.mark.docker

BASE_DATABASES = {"postgres", "template0", "template1"}


@pytest.fixture
def demo(pg: PgContainer) -> Iterator[PgContainer]:
    """A fresh pc_db with the demo's tables; no scratch database may survive the test."""
    for name in databases(pg) - BASE_DATABASES:
        pg.psql(f'DROP DATABASE "{name}" WITH (FORCE)', database="postgres")
    pg.psql("CREATE DATABASE pc_db", database="postgres")
    fill_demo(pg)
    yield pg
    assert databases(pg) - BASE_DATABASES - {"pc_db", "bigdb"} == set()


@pytest.fixture(scope="module")
def bigdb(pg: PgContainer) -> str:
    """A database that takes pg_dump a second or two."""
    pg.psql("CREATE DATABASE bigdb", database="postgres")
    pg.psql(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, md5((g * 7)::text) AS b, "
        "repeat('x', 40) AS c FROM generate_series(1, 1000000) g",
        database="bigdb",
    )
    return "bigdb"


def change_data(pg: PgContainer) -> None:
    pg.psql("DELETE FROM pedidos WHERE pedido_id % 3 = 0; UPDATE usuarios SET nombre = 'otro';")
    pg.psql("CREATE TABLE extra (x int); INSERT INTO extra VALUES (1);")


def logical(cmd: Any, pg: PgContainer, *extra: str) -> dict[str, Any]:
    return cmd.json("snapshot", "--logical", "--container", pg.name, *extra)  # type: ignore[no-any-return]


def container_bytes(pg: PgContainer, argv: list[str]) -> bytes:
    code, out = pg.container.exec_run(argv, demux=True)
    assert code == 0, out[1]
    return out[0] or b""


def assert_unchanged(pg: PgContainer, before: str) -> None:
    assert pg.dump() == before
    assert databases(pg) - BASE_DATABASES - {"bigdb"} == {"pc_db"}


# --- snapshot and restore -------------------------------------------------------------------------


DATABASE_PROPS = """
SELECT d.datacl::text, d.datconnlimit, shobj_description(d.oid, 'pg_database'),
  (SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, '|'), ';'
     ORDER BY r.rolname NULLS FIRST)
   FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
   WHERE s.setdatabase = d.oid)
FROM pg_database d WHERE datname = 'pc_db'
"""


def test_restore_keeps_the_database_grants_and_settings(demo: PgContainer, cmd: Any) -> None:
    role = f"lector_{secrets.token_hex(3)}"
    demo.psql(f"CREATE ROLE {role} LOGIN", database="postgres")
    demo.psql(
        "REVOKE CONNECT, TEMPORARY ON DATABASE pc_db FROM PUBLIC;"
        f"GRANT CONNECT ON DATABASE pc_db TO {role} WITH GRANT OPTION;"
        'ALTER DATABASE pc_db SET search_path = "$user", public, "Otro ""Esquema""";'
        "ALTER DATABASE pc_db SET work_mem = '8MB';"
        f"ALTER ROLE {role} IN DATABASE pc_db SET statement_timeout = '5s';"
        "COMMENT ON DATABASE pc_db IS 'la base de la demo; it''s ours';"
        "ALTER DATABASE pc_db CONNECTION LIMIT 40",
        database="postgres",
    )
    before = demo.psql(DATABASE_PROPS, database="postgres")
    assert role in before and "Otro" in before and "it's ours" in before
    snap = logical(cmd, demo)
    expected = demo.dump()
    change_data(demo)

    cmd("restore", snap["id"], "--yes")
    assert demo.dump() == expected
    after = demo.psql(DATABASE_PROPS, database="postgres")
    assert after == before
    assert "=Tc/" not in after and "=c/" not in after  # PUBLIC did not get CONNECT back


def test_database_settings_never_travel_in_process_arguments(
    demo: PgContainer, cmd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgREST and others keep secrets in ALTER DATABASE ... SET: they go through stdin."""
    from snapvol.adapters.engine import Engine

    secret = f"jwt-{secrets.token_hex(12)}"
    demo.psql(f"ALTER DATABASE pc_db SET app.jwt_secret = '{secret}'", database="postgres")
    snap = logical(cmd, demo)
    argvs: list[str] = []
    for method in ("exec_run", "exec_stream"):
        real = getattr(Engine, method)

        def spy(
            self: Engine, container_id: str, argv: list[str], *a: Any, __real: Any = real, **kw: Any
        ) -> Any:
            argvs.append(" ".join(argv))
            return __real(self, container_id, argv, *a, **kw)

        monkeypatch.setattr(Engine, method, spy)
    cmd("restore", snap["id"], "--yes")
    assert any("pg_restore" in a for a in argvs), "the spy saw no exec"
    assert not any(secret in a for a in argvs)
    assert secret in demo.psql(
        "SELECT setconfig::text FROM pg_db_role_setting s JOIN pg_database d "
        "ON d.oid = s.setdatabase WHERE datname = 'pc_db'",
        database="postgres",
    )


def test_no_owner_restores_a_dump_whose_roles_do_not_exist_here(
    demo: PgContainer, cmd: Any
) -> None:
    role = f"ajeno_{secrets.token_hex(3)}"
    demo.psql(f"CREATE ROLE {role}", database="postgres")
    demo.psql(
        "CREATE TABLE propia (x int); INSERT INTO propia VALUES (1), (2);"
        f"ALTER TABLE propia OWNER TO {role}; GRANT SELECT ON pedidos TO {role}"
    )
    snap = logical(cmd, demo)
    plain = logical(cmd, demo, "--format", "plain")
    demo.psql(f"DROP TABLE propia; REVOKE ALL ON pedidos FROM {role}")
    demo.psql(f"DROP ROLE {role}", database="postgres")  # as on a server that never had it
    before = demo.dump()

    failed = cmd("restore", snap["id"], "--yes", exit_code=11)
    assert f'role "{role}" does not exist' in failed.stderr
    assert_unchanged(demo, before)
    refused = cmd("restore", plain["id"], "--yes", "--no-owner", exit_code=2)
    assert "skipping the dump's owners needs a custom-format dump" in refused.stderr

    result = cmd.json("restore", snap["id"], "--yes", "--no-owner")
    assert result["no_owner"] is True
    assert demo.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'propia'") == "postgres"
    assert demo.psql("SELECT count(*) FROM propia") == "2"


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_round_trip(demo: PgContainer, cmd: Any, fmt: str) -> None:
    before = demo.dump()
    snap = logical(cmd, demo, "--format", fmt)

    assert snap["status"] == "complete" and snap["kind"] == "logical"
    assert snap["name"].startswith(f"{demo.name}-logical-")
    assert snap["database"] == "pc_db" and snap["format"] == fmt
    assert snap["pg_version"].startswith("15.")
    assert snap["meta"]["tables"] == DEMO_COUNTS
    archive = Path(snap["path"])
    assert archive.name.endswith(".dump.zst" if fmt == "custom" else ".sql.zst")
    assert archive.stat().st_mode & 0o777 == 0o600
    assert not list(archive.parent.glob("*.partial"))
    raw = zstandard.ZstdDecompressor().stream_reader(archive.open("rb")).read()
    assert len(raw) == snap["raw_bytes"]
    assert raw.startswith(b"PGDMP") if fmt == "custom" else b"-- PostgreSQL database dump" in raw

    change_data(demo)
    assert demo.dump() != before
    result = cmd.json("restore", snap["id"], "--yes")

    assert result["restored"]["id"] == snap["id"] and result["database"] == "pc_db"
    assert result["tables"] == DEMO_COUNTS and result["replaced_existing"] is True
    assert result["previous_kept_as"] is None
    assert_unchanged(demo, before)


def test_round_trip_when_the_image_has_no_zstd(
    demo: PgContainer, cmd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapvol.pg import pgexec

    monkeypatch.setattr(pgexec, "has_zstd", lambda _engine, _target: False)
    before = demo.dump()
    snap = logical(cmd, demo)
    assert snap["meta"]["compressed_in"] == "host"
    assert snap["meta"]["tables"] == DEMO_COUNTS
    change_data(demo)
    result = cmd.json("restore", snap["id"], "--yes")
    assert result["tables"] == DEMO_COUNTS
    assert_unchanged(demo, before)


def test_restore_shows_what_it_replaces_and_can_be_cancelled(demo: PgContainer, cmd: Any) -> None:
    snap = logical(cmd, demo, "--name", "antes")
    change_data(demo)
    before = demo.dump()
    result = cmd("restore", "antes", input="no\n", exit_code=10)
    for text in ("antes", "Replaces", "database pc_db", "public.extra", "SHA-256", "verified"):
        assert text in result.stderr
    assert "cancelled; nothing was changed" in result.stderr
    assert snap["id"] in result.stderr
    assert_unchanged(demo, before)


def test_restore_into_a_database_that_does_not_exist_creates_it(
    demo: PgContainer, cmd: Any
) -> None:
    snap = logical(cmd, demo)
    expected = demo.dump()
    result = cmd.json("restore", snap["id"], "--database", "copia", "--yes")
    assert result["replaced_existing"] is False and result["tables"] == DEMO_COUNTS
    assert demo.dump(database="copia") == expected
    demo.psql('DROP DATABASE "copia"', database="postgres")


def test_a_partial_restore_brings_only_what_it_names_into_a_new_database(
    demo: PgContainer, cmd: Any
) -> None:
    snap = logical(cmd, demo)
    rows = "SELECT md5(string_agg(u::text, ',' ORDER BY u::text)) FROM usuarios u"
    result = cmd.json("restore", snap["id"], "--table", "usuarios", "--database", "parte", "--yes")
    assert result["replaced_existing"] is False
    assert result["tables"] == {"public.usuarios": 500}  # and nothing else
    assert demo.psql(rows, database="parte") == demo.psql(rows)

    # never over a database that exists, never a table the dump does not hold
    refused = cmd("restore", snap["id"], "--table", "usuarios", "--yes", exit_code=2)
    assert "creates a new database" in refused.stderr and "pc_db exists" in refused.stderr
    unknown = cmd(
        "restore", snap["id"], "--table", "nope", "--database", "otra", "--yes", exit_code=2
    )
    assert "holds no table that --table / --schema select" in unknown.stderr
    assert databases(demo) - BASE_DATABASES == {"pc_db", "parte"}
    demo.psql('DROP DATABASE "parte"', database="postgres")


@pytest.mark.parametrize("kind", [".sql", ".sql.zst", ".dump", ".dump.zst"])
def test_restore_from_file(demo: PgContainer, cmd: Any, tmp_path: Path, kind: str) -> None:
    before = demo.dump()
    if kind.startswith(".sql"):
        data = before.encode()
    else:
        data = container_bytes(demo, ["pg_dump", "-U", "postgres", "-d", "pc_db", "-Fc"])
    if kind.endswith(".zst"):
        data = zstandard.ZstdCompressor(level=3).compress(data)
    path = tmp_path / f"backup{kind}"
    path.write_bytes(data)
    change_data(demo)

    result = cmd("restore", "--file", str(path), "--container", demo.name, input=f"{demo.name}\n")
    assert "public.pedidos" in result.stderr and "whole and readable" in result.stderr
    assert_unchanged(demo, before)


def test_restore_file_json(demo: PgContainer, cmd: Any, tmp_path: Path) -> None:
    path = tmp_path / "backup.bin"  # the format comes from the content, not the name
    path.write_bytes(demo.dump().encode())
    result = cmd.json("restore", "--file", str(path), "--container", demo.name, "--yes")
    assert result["format"] == "plain" and result["file"] == str(path)
    assert result["tables"] == DEMO_COUNTS and result["restored"] is None


def test_bad_files_are_refused_before_anything_changes(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    before = demo.dump()
    custom = container_bytes(demo, ["pg_dump", "-U", "postgres", "-d", "pc_db", "-Fc"])
    plain = before.encode()
    cases = {
        "custom_truncated.dump": (custom[: len(custom) * 2 // 3], 7, "truncated"),
        "custom_tail_cut.dump": (custom[:-40], 7, "truncated"),
        "plain_truncated.sql": (plain[: len(plain) // 2], 7, "truncated"),
        "zst_truncated.sql.zst": (zstandard.ZstdCompressor().compress(plain)[:-100], 7, "zstd"),
        "notes.txt": (b"just some notes\nnot a dump\n", 2, "not a PostgreSQL dump"),
        "image.zst": (zstandard.ZstdCompressor().compress(b"\x89PNG" * 100), 2, "not a Post"),
        "garbage.dump": (b"PGDMP" + bytes(range(256)) * 4, 7, "pg_restore"),
    }
    for name, (data, code, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        result = cmd(
            "restore", "--file", str(path), "--container", demo.name, "--yes", exit_code=code
        )
        assert result.stderr.startswith("Error: ") and message in result.stderr, (
            name,
            result.stderr,
        )
        assert result.stderr.count("\n") == 1, result.stderr
    assert_unchanged(demo, before)


def test_restore_failing_halfway_leaves_the_database_as_it_was(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    dump = demo.dump()
    change_data(demo)
    before = demo.dump()
    # Valid up to the middle of the pedidos data: a row with a column too many.
    lines = dump.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("COPY public.pedidos"))
    lines[start + 2500] = "1\t2\t3\t4\t2026-01-01 00:00:00\tone too many\n"
    path = tmp_path / "broken.sql"
    path.write_text("".join(lines))

    result = cmd("restore", "--file", str(path), "--container", demo.name, "--yes", exit_code=11)
    assert (
        "psql failed" in result.stderr and "extra data after last expected column" in result.stderr
    )
    assert "database pc_db was not changed" in result.stderr
    assert_unchanged(demo, before)


def test_restore_whose_check_fails_leaves_the_database_as_it_was(
    demo: PgContainer, cmd: Any, isolated_env: Path
) -> None:
    snap = logical(cmd, demo)
    change_data(demo)
    before = demo.dump()
    # The store says pedidos had one row more than the dump holds: the check must catch it.
    meta = dict(snap["meta"], tables=dict(DEMO_COUNTS, **{"public.pedidos": 5001}))
    with sqlite3.connect(isolated_env / "manifests.db") as db:
        db.execute(
            "UPDATE snapshots SET meta_json = ? WHERE id = ?", (json.dumps(meta), snap["id"])
        )

    result = cmd("restore", snap["id"], "--yes", exit_code=7)
    assert "public.pedidos has 5000 rows" in result.stderr and "was not changed" in result.stderr
    assert_unchanged(demo, before)


def test_a_dump_that_ends_short_of_its_recorded_size_is_not_loaded(
    demo: PgContainer, cmd: Any, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The custom-format load checks the bytes pg_restore was fed against the recorded size:
    the store says the dump holds one byte more than the archive gives."""
    from snapvol.pg import pgexec

    monkeypatch.setattr(pgexec, "has_zstd", lambda _engine, _target: False)  # raw bytes fed
    snap = logical(cmd, demo)
    change_data(demo)
    before = demo.dump()
    with sqlite3.connect(isolated_env / "manifests.db") as db:
        db.execute("UPDATE snapshots SET raw_bytes = raw_bytes + 1 WHERE id = ?", (snap["id"],))

    result = cmd("restore", snap["id"], "--yes", exit_code=11)
    name = Path(snap["path"]).name
    read = f"pg_restore read {snap['raw_bytes']} bytes of {name}, expected {snap['raw_bytes'] + 1}"
    assert read in result.stderr, result.stderr
    assert "database pc_db was not changed" in result.stderr
    assert_unchanged(demo, before)


def test_tampered_archive_is_refused(demo: PgContainer, cmd: Any) -> None:
    snap = logical(cmd, demo)
    before = demo.dump()
    flip_middle_byte(Path(snap["path"]))
    result = cmd("restore", snap["id"], "--yes", exit_code=7)
    assert "SHA-256" in result.stderr
    assert_unchanged(demo, before)


# --- errors and names -----------------------------------------------------------------------------


def test_names_are_validated_and_unique(demo: PgContainer, cmd: Any) -> None:
    for bad in ("../x", ".hidden", "a b", "a/b", "ñandú", ""):
        result = cmd("snapshot", "--logical", "--container", demo.name, "--name", bad, exit_code=2)
        assert "invalid snapshot name" in result.stderr
    result = cmd("snapshot", "--volume", "--container", demo.name, "--name", "x/y", exit_code=2)
    assert "invalid snapshot name" in result.stderr
    snap = logical(cmd, demo, "--name", "mi_backup_especial")
    assert snap["name"] == "mi_backup_especial"
    result = cmd(
        "snapshot",
        "--logical",
        "--container",
        demo.name,
        "--name",
        "mi_backup_especial",
        exit_code=2,
    )
    assert "already exists" in result.stderr
    assert [s["id"] for s in cmd.json("ls")] == [snap["id"]]


def test_reader_is_refused_on_the_command_line_but_its_variable_is_not(
    demo: PgContainer, cmd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cmd("snapshot", "--logical", "--container", demo.name, "--reader", "host", exit_code=2)
    assert "--reader goes with --volume" in result.stderr
    monkeypatch.setenv("SNAPVOL_READER", "endpoint")  # a default for volume snapshots
    assert logical(cmd, demo)["status"] == "complete"


def test_missing_database_and_stopped_container(
    demo: PgContainer, cmd: Any, module_bed: TestBed, isolated_env: Path
) -> None:
    result = cmd(
        "snapshot", "--logical", "--container", demo.name, "--database", "nosuch", exit_code=3
    )
    assert "database 'nosuch' does not exist" in result.stderr

    stopped = module_bed.client.containers.create(
        module_bed.image, name=module_bed.unique(), labels={docker_helpers.TEST_LABEL: "1"}
    )
    module_bed.containers.append(stopped)
    result = cmd("snapshot", "--logical", "--container", stopped.name, exit_code=11)
    assert "not running" in result.stderr
    result = cmd("snapshot", "--logical", "--container", "snapvol-test-nope", exit_code=3)
    assert cmd.json("ls") == []
    assert (
        not list((isolated_env / "backups").glob("*"))
        if (isolated_env / "backups").exists()
        else True
    )


def test_pg_dump_failing_halfway_leaves_no_file_and_no_complete_snapshot(
    pg: PgContainer, bigdb: str, cmd: Any, isolated_env: Path
) -> None:
    def kill_the_dump() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            killed = pg.psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name LIKE 'snapvol-%' AND query LIKE 'COPY%'",
                database="postgres",
            )
            if killed != "0":
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_dump)
    killer.start()
    result = cmd("snapshot", "--logical", "--container", pg.name, "--database", bigdb, exit_code=11)
    killer.join()
    assert "pg_dump failed" in result.stderr
    [snap] = cmd.json("ls")
    assert snap["status"] == "failed" and "pg_dump failed" in snap["error"]
    assert list((isolated_env / "backups").iterdir()) == []


def test_password_never_appears_in_process_arguments(pg: PgContainer, bigdb: str, cmd: Any) -> None:
    assert pg.password in " ".join(pg.container.attrs["Config"]["Env"])
    samples: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(docker_helpers.host_ps_args())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        snap = logical(cmd, pg, "--database", bigdb, "--format", "plain")
    finally:
        done.set()
        sampler.join()
    assert snap["meta"]["tables"] == {"public.big": 1000000}
    assert any("pg_dump" in s for s in samples), "the samples missed pg_dump"
    assert len(samples) > 5
    assert not any(pg.password in s for s in samples)


# --- interactive restore --------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class PtyRun:
    """The snapvol console script on a pseudo-terminal: read what it shows, type answers."""

    def __init__(self, args: list[str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "snapvol"), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(os.environ, TERM="xterm", COLUMNS="200"),
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.output = ""
        self._seen = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.output += _ANSI.sub("", data.decode("utf-8", "replace"))
        return True

    def expect(self, text: str, timeout: float = 60) -> str:
        """Everything shown since the last expect, up to and including ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.output[self._seen :]:
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"never saw {text!r}; the terminal showed:\n{self.output}")
        end = self.output.index(text, self._seen) + len(text)
        shown, self._seen = self.output[self._seen : end], end
        return shown

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while self._read(0.2) and time.monotonic() < deadline:
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))

    def __enter__(self) -> PtyRun:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_interactive_picker_through_a_pseudo_terminal(demo: PgContainer, cmd: Any) -> None:
    first = logical(cmd, demo, "--name", "primero")
    expected = demo.dump()
    change_data(demo)
    second = logical(cmd, demo, "--name", "segundo")

    with PtyRun(["restore"]) as run:
        listing = run.expect("Snapshot to restore")
        assert listing.index("segundo") < listing.index("primero")  # newest first
        assert re.search(rf"^1 +{second['id']} +segundo +logical", listing, re.M)
        assert re.search(rf"^2 +{first['id']} +primero +logical", listing, re.M)
        run.send("9\n")  # out of range, never an id prefix however the ids fall: asked again
        assert "there is no number 9 in the list" in run.expect("Snapshot to restore")
        run.send("2\n")
        shown = run.expect("Type the container's name")
        assert first["id"] in shown and second["id"] not in shown.split("Snapshot", 2)[-1]
        run.send(f"{demo.name}\n")
        assert run.wait() == 0, run.output
    assert demo.dump() == expected


def test_copies_left_by_a_killed_restore_are_dropped_by_the_next_one(
    demo: PgContainer, cmd: Any
) -> None:
    before = demo.dump()
    snap = logical(cmd, demo)
    leftovers = {"pc_db__snapvol_deadbeef", "pc_db__snapvol_old_0123abcd"}
    for name in [*leftovers, "other__snapvol_12345678"]:
        demo.psql(f'CREATE DATABASE "{name}"', database="postgres")
    result = cmd("restore", snap["id"], "--yes")
    for name in leftovers:
        assert f"dropped database {name}, left by an interrupted restore" in result.stderr
    assert "other__snapvol_12345678" in databases(demo)
    assert not leftovers & databases(demo)
    demo.psql('DROP DATABASE "other__snapvol_12345678"', database="postgres")
    assert_unchanged(demo, before)


# --- the way back: a logical restore's safety snapshot --------------------------------------------


def plain_dump_file(pg: PgContainer, path: Path) -> Path:
    path.write_bytes(container_bytes(pg, ["pg_dump", "-U", "postgres", "-d", "pc_db"]))
    return path


def test_restore_from_a_snapshot_takes_a_safety_snapshot_that_undoes_it(
    demo: PgContainer, cmd: Any
) -> None:
    snap = logical(cmd, demo)
    restored = demo.dump()
    change_data(demo)
    before = demo.dump()

    result = cmd.json("restore", snap["id"], "--yes")
    safety = result["safety_snapshot"]
    assert safety["kind"] == "logical" and safety["status"] == "complete"
    assert safety["meta"]["safety_for"] == snap["id"] and safety["database"] == "pc_db"
    assert safety["name"].startswith(f"{demo.name}-safety-")
    assert result["undo"] == f"snapvol --db {os.environ['SNAPVOL_DB']} restore {safety['id']}"
    assert Path(safety["path"]).is_file()
    listed = {s["id"]: s for s in cmd.json("ls")}
    assert set(listed) == {snap["id"], safety["id"]}
    assert listed[safety["id"]]["meta"]["safety_for"] == snap["id"]
    assert demo.dump() == restored

    undo = cmd.json(*result["undo"].split()[1:], "--yes")  # the printed command, as given
    assert undo["restored"]["id"] == safety["id"]
    assert demo.dump() == before  # the whole database as it was before the restore
    assert undo["safety_snapshot"]["meta"]["safety_for"] == safety["id"]  # undoing is undoable


def test_restore_from_a_file_takes_a_safety_snapshot_that_undoes_it(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    path = plain_dump_file(demo, tmp_path / "antes.sql")
    restored = demo.dump()
    change_data(demo)
    before = demo.dump()

    result = cmd("restore", "--file", str(path), "--container", demo.name, input=f"{demo.name}\n")
    plan = result.stderr[: result.stderr.index("Type the container")]
    assert "Safety snapshot" in plan and "undoes the restore" in plan
    [safety] = [s for s in cmd.json("ls") if s["meta"].get("safety_for") == "antes.sql"]
    assert safety["status"] == "complete" and safety["kind"] == "logical"
    db = os.environ["SNAPVOL_DB"]
    assert f"Undo with: snapvol --db {db} restore {safety['id']}" in result.stderr
    assert safety["path"] in result.stderr
    assert demo.dump() == restored

    cmd("restore", safety["id"], "--yes")
    assert demo.dump() == before


def test_no_safety_snapshot_takes_none_and_the_plan_says_so(
    demo: PgContainer, cmd: Any, tmp_path: Path
) -> None:
    snap = logical(cmd, demo)
    restored = demo.dump()
    change_data(demo)
    result = cmd("restore", snap["id"], "--no-safety-snapshot", input=f"{demo.name}\n", exit_code=0)
    assert "no way back" in result.stderr and "Undo with" not in result.stderr
    assert [s["id"] for s in cmd.json("ls")] == [snap["id"]]
    assert demo.dump() == restored

    path = plain_dump_file(demo, tmp_path / "copia.sql")
    out = cmd.json(
        "restore", "--file", str(path), "--container", demo.name, "--yes", "--no-safety-snapshot"
    )
    assert out["safety_snapshot"] is None and out["undo"] is None
    assert [s["id"] for s in cmd.json("ls")] == [snap["id"]]
    assert list((Path(snap["path"]).parent).iterdir()) == [Path(snap["path"])]


def test_restore_into_a_new_database_takes_no_safety_snapshot(demo: PgContainer, cmd: Any) -> None:
    snap = logical(cmd, demo)
    try:
        result = cmd("restore", snap["id"], "--database", "nueva", "--yes")
    finally:
        demo.psql('DROP DATABASE IF EXISTS "nueva"', database="postgres")
    assert "none needed: database nueva does not exist yet" in result.stderr
    assert "Undo with" not in result.stderr
    assert [s["id"] for s in cmd.json("ls")] == [snap["id"]]


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a 16 kB tmpfs: any snapshot written there runs out of space."""
    path = tmp_path / "full"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_failing_safety_snapshot_refuses_the_restore_and_changes_nothing(
    demo: PgContainer, cmd: Any, full_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = logical(cmd, demo)
    assert snap["size_bytes"] > 16 * 1024  # a safety snapshot of the same data cannot fit
    change_data(demo)
    before = demo.dump()
    monkeypatch.setenv("SNAPVOL_BACKUP_DIR", str(full_dir))

    result = cmd("restore", snap["id"], "--yes", exit_code=12)
    *plan, error = result.stderr.splitlines()  # the plan, then one line
    assert error.startswith("Error: restore failed: the safety snapshot failed: no space"), error
    assert error.endswith(
        "database pc_db was not changed (the new copy was dropped) "
        "(retry with --no-safety-snapshot)"
    )
    assert "a restore can go without a safety snapshot, and then without a way back" in error
    assert not [line for line in plan if "Error" in line or "Warning" in line], plan
    assert_unchanged(demo, before)
    assert list(full_dir.iterdir()) == []
    assert [s["status"] for s in cmd.json("ls") if s["id"] != snap["id"]] == ["failed"]


def test_writes_until_the_swap_are_in_the_safety_snapshot(demo: PgContainer, cmd: Any) -> None:
    """No acknowledged write is lost: it is in the restored database (written after the swap)
    or in the safety snapshot (written before it), however the writes fall around the restore."""
    demo.psql("CREATE TABLE marcas (n int PRIMARY KEY)")
    snap = logical(cmd, demo)
    acked: list[int] = []
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                demo.psql(f"INSERT INTO marcas VALUES ({n})")
            except AssertionError:  # disconnected, or the database was being renamed
                continue
            acked.append(n)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acked) < 3:
            time.sleep(0.05)
        result = cmd.json("restore", snap["id"], "--yes")
        done = len(acked)
        while len(acked) < done + 3:  # some writes after the swap too
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join()
    after = {int(n) for n in demo.psql("SELECT n FROM marcas").split()}
    cmd("restore", result["safety_snapshot"]["id"], "--yes")
    safety = {int(n) for n in demo.psql("SELECT n FROM marcas").split()}
    assert safety and after
    assert set(acked) <= after | safety, sorted(set(acked) - after - safety)


def _waiting_on_a_lock(demo: PgContainer) -> int:
    return int(
        demo.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            f"AND datname = '{demo.database}'"
        )
    )


def test_no_write_reaches_the_replaced_database_while_it_is_swapped_out(
    demo: PgContainer, cmd: Any
) -> None:
    """Forced interleaving: when the swap starts, one write is already waiting on the safety
    snapshot's hold; the test makes the swap pause 1 s after each time it ended the database's
    sessions, and new sessions keep writing all through it. Every acknowledged write is in the
    restored database or in the safety snapshot."""
    from snapvol.pg import logical_restore, pgexec

    demo.psql("CREATE TABLE marcas (n int PRIMARY KEY)")
    demo.psql("INSERT INTO marcas VALUES (0)")
    snap = logical(cmd, demo)
    acked: list[int] = []
    stop = threading.Event()

    def write(numbers: range) -> None:
        for n in numbers:
            if stop.is_set():
                return
            try:
                demo.psql(f"INSERT INTO marcas VALUES ({n})")
            except AssertionError:  # refused, or ended by the swap
                continue
            acked.append(n)

    threads = [
        threading.Thread(target=write, args=(range(1, 2),)),  # blocked on the hold
        threading.Thread(target=write, args=(range(100, 100_000),)),  # new sessions throughout
    ]
    ending = pgexec.end_sessions_sql
    swap = logical_restore._swap

    def swap_under_writes(*args: Any) -> None:
        threads[0].start()
        deadline = time.monotonic() + 30
        while _waiting_on_a_lock(demo) < 1:
            assert time.monotonic() < deadline, "the write never waited on the hold"
            time.sleep(0.05)
        threads[1].start()
        time.sleep(0.3)
        swap(*args)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                pgexec,
                "end_sessions_sql",
                lambda *a, **k: f"{ending(*a, **k)}; SELECT pg_sleep(1)",
            )
            patch.setattr(logical_restore, "_swap", swap_under_writes)
            result = cmd.json("restore", snap["id"], "--yes")
        count = len(acked)
        deadline = time.monotonic() + 30
        while len(acked) < count + 3:  # writes after the swap land in the restored database
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()
    after = {int(n) for n in demo.psql("SELECT n FROM marcas").split()}
    cmd("restore", result["safety_snapshot"]["id"], "--yes")
    safety = {int(n) for n in demo.psql("SELECT n FROM marcas").split()}
    assert 1 not in acked  # it waited on the hold, and was ended with the other sessions
    assert set(acked) <= after | safety, sorted(set(acked) - after - safety)
    assert (
        demo.psql("SELECT datallowconn FROM pg_database WHERE datname = current_database()") == "t"
    )


def test_a_swap_that_fails_lets_sessions_in_again_and_changes_nothing(
    demo: PgContainer, cmd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap's psql fails after it closed the database: the psql run next in the container
    opens it again (snapvol's own attempt, after it, is switched off here: it may be dead)."""
    from snapvol.pg import logical_restore, pgexec

    demo.psql("CREATE TABLE marcas (n int PRIMARY KEY); INSERT INTO marcas VALUES (1)")
    snap = logical(cmd, demo)
    demo.psql("INSERT INTO marcas VALUES (2)")
    monkeypatch.setattr(pgexec, "end_sessions_sql", lambda *_a, **_k: "SELECT 1/0")
    monkeypatch.setattr(logical_restore, "reopen_if_interrupted", lambda *_a: False)
    result = cmd("restore", snap["id"], "--yes", exit_code=11)
    assert "division by zero" in result.stderr and "was not changed" in result.stderr
    assert demo.psql("SELECT n FROM marcas ORDER BY n") == "1\n2"
    assert databases(demo) - BASE_DATABASES == {demo.database}


def test_a_database_a_killed_swap_left_closed_is_opened_by_the_next_restore(
    demo: PgContainer, cmd: Any
) -> None:
    """What a swap killed with its psql leaves: the database closed to sessions and the new copy
    beside it. Closed by its owner instead (no copy left), it is refused, not opened."""
    demo.psql("CREATE TABLE marcas (n int PRIMARY KEY); INSERT INTO marcas VALUES (1)")
    snap = logical(cmd, demo)
    demo.psql("INSERT INTO marcas VALUES (2)")
    close = f"ALTER DATABASE {demo.database} ALLOW_CONNECTIONS false"
    demo.psql(close, database="postgres")
    refused = cmd("restore", snap["id"], "--yes", exit_code=11)
    assert "does not allow connections" in refused.stderr, refused.stderr
    assert "nothing was changed" in refused.stderr
    # A copy of another database whose name begins this one's is not this one's.
    demo.psql("CREATE DATABASE pc__snapvol_0123abcd", database="postgres")
    refused = cmd("restore", snap["id"], "--yes", exit_code=11)
    assert "does not allow connections" in refused.stderr, refused.stderr
    demo.psql("DROP DATABASE pc__snapvol_0123abcd", database="postgres")
    demo.psql(f"CREATE DATABASE {demo.database}__snapvol_0123abcd", database="postgres")
    result = cmd("restore", snap["id"], "--yes", "--json")
    assert "left closed to new sessions by an interrupted restore" in result.stderr
    assert demo.psql("SELECT n FROM marcas ORDER BY n") == "1"
    assert databases(demo) - BASE_DATABASES == {demo.database}
    cmd("restore", json.loads(result.stdout)["safety_snapshot"]["id"], "--yes")
    assert demo.psql("SELECT n FROM marcas ORDER BY n") == "1\n2"


def test_a_session_idle_in_a_write_transaction_is_disconnected_not_waited_for(
    demo: PgContainer, cmd: Any
) -> None:
    snap = logical(cmd, demo)
    restored = demo.dump()
    change_data(demo)
    before = demo.dump()
    idle = subprocess.Popen(
        ["docker", "exec", "-i", demo.name, "psql", "-X", "-U", "postgres", "-d", "pc_db"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert idle.stdin is not None
        idle.stdin.write(b"BEGIN; UPDATE usuarios SET nombre = 'sin confirmar';\n")
        idle.stdin.flush()
        deadline = time.monotonic() + 60
        while "idle in transaction" not in demo.psql(
            "SELECT state FROM pg_stat_activity WHERE datname = 'pc_db'", database="postgres"
        ):
            assert time.monotonic() < deadline, "the session never went idle in its transaction"
            time.sleep(0.1)

        result = cmd("restore", snap["id"], "--yes", "--json")
    finally:
        idle.kill()
        idle.wait()
    assert "Warning: sessions kept tables of pc_db busy" in result.stderr
    assert "disconnected 1 session(s)" in result.stderr
    assert demo.dump() == restored
    cmd("restore", json.loads(result.stdout)["safety_snapshot"]["id"], "--yes")
    assert demo.dump() == before  # without the update that was never committed


def test_a_custom_dump_larger_than_the_pipes_restores_without_hanging(
    pg: PgContainer, cmd: Any
) -> None:
    """The restore plan reads only the head of the script ``pg_restore -f -`` makes; with more
    archive than the pipes and socket buffers hold, pg_restore stops reading and the thread
    feeding it blocks. Ending that stream must wake the thread (it hung forever at pgbench
    scale 25). Run as a process with a deadline, so a hang fails the test instead of the run."""
    pg.psql("DROP DATABASE IF EXISTS wide WITH (FORCE)", database="postgres")
    pg.psql("CREATE DATABASE wide", database="postgres")
    pg.psql(
        "CREATE TABLE w AS SELECT g AS id, md5(g::text) || repeat('x', 300) AS a "
        "FROM generate_series(1, 200000) g",
        database="wide",
    )
    check = "SELECT count(*), sum(hashtext(id::text || a)) FROM w"
    before = pg.psql(check, database="wide")
    snap = logical(cmd, pg, "--database", "wide", "--format", "custom")
    # pg_restore writes ten times the bytes it reads: its output fills while we still feed it
    assert snap["raw_bytes"] > 60 << 20 and snap["raw_bytes"] > 10 * snap["size_bytes"]
    pg.psql("DELETE FROM w WHERE id % 2 = 0", database="wide")

    proc = snapvol_process("restore", snap["id"], "--yes", "--no-safety-snapshot", "--json")
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the restore of a custom dump larger than the pipes hung")
    assert proc.returncode == 0, err
    assert json.loads(out)["database"] == "wide"
    assert pg.psql(check, database="wide") == before
    pg.psql("DROP DATABASE wide WITH (FORCE)", database="postgres")
