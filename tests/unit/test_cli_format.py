"""cli/format.py: what a restore shows before it asks, and the lines other commands print."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from snapvol.adapters.store import COMPLETE, FAILED, Copy, Snapshot
from snapvol.cli import format
from snapvol.pg.logical_restore import CurrentDb, DumpSource, LogicalRestorePlan
from snapvol.pg.sqlscript import Extension
from snapvol.retention import Decision
from snapvol.volume.restore import VolumeRestorePlan


def text(renderable: Any) -> str:
    """What a person sees: the renderable as plain lines, wide enough never to wrap."""
    console = Console(file=io.StringIO(), width=400, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def rows(renderable: Any) -> dict[str, str]:
    """A two-column table as {label: value}; a label shown twice keeps its last value."""
    out = {}
    for line in text(renderable).splitlines():
        label, _, value = line.partition("  ")
        out[label.strip()] = value.strip()
    return out


def snapshot(**fields: Any) -> Snapshot:
    base: dict[str, Any] = dict(
        id="ab12cd34",
        name="nightly",
        kind="volume",
        status=COMPLETE,
        container="db",
        volume="pgdata",
        path="/b/nightly.ab12cd34.tar.zst",
        sha256="f" * 64,
        size_bytes=2_000_000,
        raw_bytes=8_000_000,
        file_count=42,
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    return Snapshot(**{**base, **fields})


def container(name: str = "db", status: str = "running") -> Any:
    return SimpleNamespace(name=name, status=status)


def volume_plan(**fields: Any) -> VolumeRestorePlan:
    base: dict[str, Any] = dict(
        snapshot=snapshot(),
        target=SimpleNamespace(volume="pgdata", container=container(), pod=None),
        members=[],
        current_bytes=1_000_000,
        current_files=7,
        target_pg_major=None,
    )
    return VolumeRestorePlan(**{**base, **fields})


# --- volume restore plan -------------------------------------------------------------------------


def test_the_volume_plan_names_what_it_overwrites_and_the_way_back() -> None:
    shown = rows(format.volume_plan_table(volume_plan(), safety=True))
    assert shown["Snapshot"] == "ab12cd34  nightly  (volume)"
    assert shown["Size"] == "2.0 MB archive, 8.0 MB of data in 42 files"
    assert shown["Overwrites"] == "volume pgdata of container db (running)"
    assert shown["Current data"] == "1.0 MB in 7 files"
    assert shown["Safety snapshot"] == "yes, taken first (rolled back to on failure)"
    assert "PostgreSQL" not in shown  # no version recorded: nothing to compare


def test_the_volume_plan_says_when_there_is_no_way_back() -> None:
    plan = volume_plan(
        snapshot=snapshot(pg_version="15.4"),
        current_bytes=None,
        target_pg_major="15",
        warnings=["restoring into volume other, not the snapshot's source pgdata"],
    )
    shown = rows(format.volume_plan_table(plan, safety=False))
    assert shown["Safety snapshot"] == ("no (--no-safety-snapshot): the current data will be gone")
    assert shown["Current data"] == "unknown"
    assert shown["PostgreSQL"] == "15.4 (target runs 15)"
    assert shown["Note"] == "restoring into volume other, not the snapshot's source pgdata"


# --- logical restore plan ------------------------------------------------------------------------


def logical_plan(current: CurrentDb, **fields: Any) -> LogicalRestorePlan:
    source = DumpSource(
        path=Path("/dumps/app.sql.zst"),
        format="plain",
        compressed=True,
        size_bytes=1_000,
        raw_bytes=4_000,
        tables={"orders": 3, "users": 2},
    )
    target = SimpleNamespace(container=container("pg"), database="app", user="postgres")
    base: dict[str, Any] = dict(
        source=source,
        target=target,
        current=current,
        server_version="15.4",
        server_version_num=150004,
        token="t0k3",
    )
    return LogicalRestorePlan(**{**base, **fields})


def test_a_logical_plan_over_an_existing_database_replaces_it_after_a_safety_snapshot() -> None:
    current = CurrentDb(exists=True, owner="app", size_bytes=9_000, tables={"users": 5})
    shown = rows(format.logical_plan_table(logical_plan(current)))
    assert shown["File"] == "/dumps/app.sql.zst  (plain format, zstd-compressed)"
    assert shown["Contains"] == "tables 2: orders (3), users (2)"
    assert shown["Replaces"] == "database app (container pg, PostgreSQL 15.4)"
    assert shown["Current data"] == "9.0 KB, tables 1: users (~5)"
    assert shown["How"].startswith("restored into new database app__snapvol_t0k3, checked,")
    assert shown["Safety snapshot"].startswith("yes: a logical snapshot of database app")
    assert "Owners" not in shown and "Roles" not in shown and "Extensions" not in shown


def test_a_logical_plan_for_a_new_database_creates_it_and_needs_no_safety() -> None:
    plan = logical_plan(
        CurrentDb(exists=False),
        no_owner=True,
        allow_roles=True,
        new_roles=["reader"],
        existing_roles=["app"],
        extensions=[Extension("pg_trgm")],
    )
    shown = rows(format.logical_plan_table(plan))
    assert shown["Creates"] == (
        "database app (container pg, PostgreSQL 15.4; it does not exist yet)"
    )
    assert "Replaces" not in shown and "Current data" not in shown
    assert shown["Safety snapshot"] == "none needed: database app does not exist yet"
    assert shown["Owners"] == (
        "the dump's owners and privileges are skipped: postgres owns every object"
    )
    assert shown["Extensions"] == "pg_trgm (created by the superuser before the load)"
    assert shown["Roles"].startswith("the dump creates role(s): reader (--allow-roles;")
    assert shown["Roles"].endswith("; already here, left as they are: app")


def test_no_safety_snapshot_over_an_existing_database_says_there_is_no_way_back() -> None:
    plan = logical_plan(CurrentDb(exists=True), safety=False)
    assert rows(format.logical_plan_table(plan))["Safety snapshot"].startswith(
        "no (--no-safety-snapshot): there is no way back"
    )


def test_table_lists_are_cut_after_a_dozen() -> None:
    assert format.tables_text(None) == "not recorded"
    assert format.tables_text({}) == "none"
    assert format.tables_text(["b", "a"]) == "2: a, b"
    many = {f"t{n:02}": n for n in range(15)}
    shown = format.tables_text(many, estimated=True)
    assert shown.startswith("15: t00 (~0), t01 (~1),")
    assert shown.endswith("t11 (~11), … 3 more")


# --- one-line results ----------------------------------------------------------------------------


def test_restored_lines() -> None:
    plan = volume_plan()
    result = SimpleNamespace(snapshot=plan.snapshot, duration_s=3.25, downtime_s=1.04)
    assert format.volume_restored_line(plan, result) == (  # type: ignore[arg-type]
        "Restored ab12cd34 (nightly) into pgdata: 3.2 s, downtime 1.0 s"
    )
    lplan = logical_plan(CurrentDb(exists=True))
    lresult = SimpleNamespace(tables={"orders": 3, "users": 2}, duration_s=0.5)
    assert format.logical_restored_line("dump.sql", lplan, lresult) == (  # type: ignore[arg-type]
        "Restored dump.sql into database app of pg: 2 tables, 5 rows checked, 0.5 s"
    )


def test_logical_summary_counts_tables_and_rows() -> None:
    snap = snapshot(
        kind="logical",
        database="app",
        format="custom",
        pg_version="15.4",
        meta_json='{"tables": {"orders": 3, "users": 2}}',
    )
    assert format.logical_summary(snap) == (
        "Database app (custom format, PostgreSQL 15.4): 2 tables, 5 rows"
    )


def test_verdict_line_escapes_the_problem() -> None:
    snap = snapshot()
    assert format.verdict_line(snap, None) == "ab12cd34  nightly: [green]ok[/green]"
    line = format.verdict_line(snap, "archive [x] is missing")
    assert line == "ab12cd34  nightly: [red]archive \\[x] is missing[/red]"


def test_decisions_table_shows_source_and_reasons() -> None:
    decision = Decision(snapshot(), keep=False, reasons=("not kept by any rule",))
    lines = format.decisions_table([decision]).plain.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SOURCE", "CREATED", "SIZE", "STATUS", "REASONS"]
    assert lines[1].startswith("ab12cd34  nightly  ")
    assert "2.0 MB  complete  not kept by any rule" in lines[1]


def test_choices_table_numbers_the_snapshots() -> None:
    lines = format.choices_table([snapshot(), snapshot(id="ef56", name="b")]).plain.splitlines()
    assert lines[1].startswith("1  ab12cd34  nightly  volume  db:pgdata  ")
    assert lines[2].startswith("2  ef56      b        volume  db:pgdata  ")


def copy_record(**fields: Any) -> Copy:
    base: dict[str, Any] = dict(
        id="c1",
        snapshot_id="ab12cd34",
        repository_id="R",
        repository="sftp://backup@host//srv/repo",
        status=COMPLETE,
        data_snapshot="0123456789abcdef",
        bytes_added=1_500_000,
        created_at=datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC),
        completed_at=datetime(2026, 1, 2, 4, 0, 9, tzinfo=UTC),
    )
    return Copy(**{**base, **fields})


def test_ls_table_counts_complete_copies() -> None:
    snaps = [snapshot(), snapshot(id="ef56", name="b"), snapshot(id="aa99", name="c")]
    copies = {
        "ab12cd34": [copy_record(), copy_record(id="c2", status=FAILED), copy_record(id="c3")],
        "ef56": [copy_record(id="c4", snapshot_id="ef56", status=FAILED)],
    }
    lines = format.snapshots_table(snaps, copies).plain.splitlines()
    assert lines[0].split()[-2:] == ["STATUS", "COPIES"]
    assert [line.split()[-2:] for line in lines[1:]] == [
        ["complete", "2"],
        ["complete", "failed"],
        ["complete", "-"],
    ]
    # `ls --repo` lists what the repository holds: no column for the store's copies
    assert "COPIES" not in format.snapshots_table(snaps).plain


def test_details_show_the_whole_record_of_a_volume_snapshot() -> None:
    snap = snapshot(
        container_id="0123456789abcdef",
        image="postgres:15",
        pg_version="15",
        duration_s=3.25,
        downtime_s=1.5,
        completed_at=datetime(2026, 1, 2, 3, 4, 9, tzinfo=UTC),
        verified_at=datetime(2026, 1, 3, 0, 0, 0, tzinfo=UTC),
        verify_ok=False,
    )
    shown = rows(format.snapshot_details(snap, []))
    assert shown["Snapshot"] == "ab12cd34  nightly  (volume)"
    assert shown["Status"] == f"complete at {format.local_time(snap.completed_at)}"
    assert shown["Container"] == "db (0123456789ab), image postgres:15"
    assert shown["Volume"] == "pgdata"
    assert shown["PostgreSQL"] == "15"
    assert shown["Created"] == (
        f"{format.local_time(snap.created_at)} (took 3.2 s, downtime 1.5 s)"
    )
    assert shown["Size"] == "2.0 MB archive, 8.0 MB of data in 42 files"
    assert shown["Archive"] == "/b/nightly.ab12cd34.tar.zst"
    assert shown["SHA-256"] == "f" * 64
    assert shown["Verified"] == f"{format.local_time(snap.verified_at)}: failed"
    assert shown["Copies"] == "none (`snapvol copy ab12cd34` sends it to the repository)"
    assert "Database" not in shown and "Tables" not in shown


def test_details_of_a_logical_snapshot_and_its_copies() -> None:
    snap = snapshot(
        kind="logical",
        volume=None,
        database="app",
        format="plain",
        pg_version="15.4",
        file_count=None,
        status=FAILED,
        error="pg_dump [exit 1]: no such table",
        meta_json='{"tables": {"orders": 3}}',
    )
    copies = [
        copy_record(
            repository="rest:https://user:secret@host:8000/repo",
            status=FAILED,
            data_snapshot=None,
            bytes_added=None,
            completed_at=None,
            error="connection refused",
        ),
        copy_record(id="c2"),
    ]
    lines = text(format.snapshot_details(snap, copies)).splitlines()
    shown = rows(format.snapshot_details(snap, copies))
    assert shown["Database"] == "app (plain format)"
    assert shown["Size"] == "2.0 MB archive, 8.0 MB of dump"
    assert shown["Error"] == "pg_dump [exit 1]: no such table"  # data, not markup
    assert shown["Tables"] == "1: orders (3)"
    assert shown["Verified"] == "never (`snapvol verify` checks it)"
    assert shown["Copies"] == "1 complete of 2"
    assert "Volume" not in shown
    header = lines.index(next(ln for ln in lines if ln.startswith("REPOSITORY")))
    assert lines[header].split() == ["REPOSITORY", "RESTIC", "SNAPSHOT", "TIME", "ADDED", "STATUS"]
    failed, done = lines[header + 1], lines[header + 2]
    started = format.local_time(copies[0].created_at, seconds=False).split()
    finished = format.local_time(copies[1].completed_at, seconds=False).split()
    assert failed.split() == [
        "rest:https://host:8000/repo",
        "-",
        *started,
        "-",
        "failed:",
        "connection",
        "refused",
    ]
    repo, restic_id, *rest = done.split()
    assert (repo, restic_id, rest) == (
        "sftp://backup@host//srv/repo",
        "01234567",
        [*finished, "1.5", "MB", "complete"],
    )
    assert "secret" not in "\n".join(lines)


def test_times_name_their_zone_and_tables_end_without_padding() -> None:
    snaps = [snapshot(), snapshot(id="ef56", name="a-much-longer-name-than-the-others-have")]
    table = format.snapshots_table(snaps, {}).plain
    zone = datetime.now().astimezone().strftime("%Z")
    assert all(line.split()[6] == zone for line in table.splitlines()[1:])
    assert table.splitlines()[0].split()[:4] == ["ID", "NAME", "KIND", "SOURCE"]
    assert "db:pgdata" in table
    plan = text(format.volume_plan_table(volume_plan(), True))
    assert all(line == line.rstrip() for line in plan.splitlines())
    assert f"{zone} from db:pgdata" in plan


def test_ls_cuts_names_to_fit_a_terminal_and_only_there() -> None:
    snaps = [snapshot(), snapshot(id="ef56", name="n" * 60)]
    full = format.snapshots_table(snaps, {}).plain.splitlines()
    assert "n" * 60 in full[2]
    fitted = format.snapshots_table(snaps, {}, width=100).plain.splitlines()
    assert max(len(line) for line in fitted) <= 100
    assert "n" * 20 + "…" in fitted[2] and "n" * 60 not in fitted[2]
    assert fitted[1].split()[0] == "ab12cd34"


def test_the_snapshot_summary_says_where_the_archive_is() -> None:
    lines = format.snapshot_summary(snapshot(duration_s=2.0, downtime_s=1.0)).splitlines()
    assert lines[0].startswith("Snapshot ab12cd34 (nightly): 2.0 MB, from 8.0 MB")
    assert lines[1] == "Archive: /b/nightly.ab12cd34.tar.zst"


def test_a_pod_s_claim_is_named_the_kubernetes_way() -> None:
    pod = SimpleNamespace(name="app-pod-0", status="Running")
    target = SimpleNamespace(volume="app-data", container=container("app-pod-0-db"), pod=pod)
    snap = snapshot(volume="app-data", meta_json='{"pod": "app-pod-0", "claim": "app-data"}')
    shown = rows(format.volume_plan_table(volume_plan(snapshot=snap, target=target), safety=True))
    assert shown["Overwrites"] == (
        "volume app-data of pod app-pod-0 (Running; stopped whole, then started)"
    )
    assert shown["Taken"].endswith("from pod/app-pod-0:app-data")
    assert format.source_cell(snapshot()) == f"{snapshot().container}:{snapshot().volume}"
