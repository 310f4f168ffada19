"""`snapvol prune` and `rm` on real snapshots: what stays, what goes, why, and --dry-run."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

from tests.archives import flip_middle_byte
from tests.docker_helpers import TestBed, fail_a_snapshot


def write(container: Any, text: str) -> None:
    code, out = container.exec_run(["sh", "-c", f"echo {text} > /srv/data/a"])
    assert code == 0, out


def read(container: Any) -> str:
    code, out = container.exec_run(["cat", "/srv/data/a"])
    assert code == 0, out
    return str(out.decode().strip())


def snapshot(cmd: Any, container: Any, name: str) -> dict[str, Any]:
    return dict(cmd.json("snapshot", "--volume", "--container", container.name, "--name", name))


def backups(tmp_path: Path) -> dict[str, str]:
    """Every file in the backup directory with its SHA-256: the whole directory, compared."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((tmp_path / "backups").iterdir())
    }


def set_created(db: Path, snapshot_id: str, when: str) -> None:
    """Move a real snapshot in time (as if taken then): retention reads only created_at."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE snapshots SET created_at = ? WHERE id = ?", (when, snapshot_id))


def test_prune_after_a_restore_keeps_the_users_snapshot(bed: TestBed, cmd, tmp_path: Path) -> None:
    """The issue: `prune --keep 1` after a restore kept the safety snapshot, deleted the user's."""
    container, _vol = bed.plain()
    write(container, "mine")
    mine = snapshot(cmd, container, "mine")
    write(container, "changed")
    restored = cmd.json("restore", "mine", "--container", container.name, "--yes")
    safety = restored["safety_snapshot"]
    assert safety["meta"]["safety_for"] == mine["id"] and read(container) == "mine"

    result = cmd("prune", "--keep", "1", "--yes")
    assert "nothing to prune" in result.stderr
    assert {s["id"] for s in cmd.json("ls")} == {mine["id"], safety["id"]}
    assert Path(mine["path"]).exists() and Path(safety["path"]).exists()

    # Both still do their job: the safety snapshot undoes the restore, and the user's restores.
    undo = cmd.json("restore", safety["id"], "--container", container.name, "--yes")
    assert read(container) == "changed"
    again = cmd.json("restore", "mine", "--container", container.name, "--yes")
    assert read(container) == "mine"

    # Three safety snapshots now: --keep-last 1 keeps the user's and the newest safety one.
    removed = cmd.json("prune", "--keep-last", "1", "--yes")["snapshots"]
    assert [(s["id"], s["reasons"]) for s in removed] == [
        (undo["safety_snapshot"]["id"], ["older safety snapshot"]),
        (safety["id"], ["older safety snapshot"]),
    ]
    newest_safety = again["safety_snapshot"]
    assert {s["id"] for s in cmd.json("ls")} == {mine["id"], newest_safety["id"]}
    assert set(backups(tmp_path)) == {
        Path(mine["path"]).name,
        Path(newest_safety["path"]).name,
    }


def test_prune_dry_run_lists_keep_and_remove_with_reasons_and_deletes_nothing(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    container, _vol = bed.plain()
    db = tmp_path / "manifests.db"
    snaps = {}
    # Noon and half past, days apart: the same local days in any zone from UTC-11 to UTC+11.
    for name, when in (
        ("day1", "2026-11-01 12:00:00.000000"),
        ("day2-early", "2026-11-02 12:00:00.000000"),
        ("day2-late", "2026-11-02 12:30:00.000000"),
        ("day3", "2026-11-03 12:00:00.000000"),
    ):
        write(container, name)
        snaps[name] = snapshot(cmd, container, name)
        set_created(db, snaps[name]["id"], when)
    cmd("verify", "day1")  # the last known-good: kept whatever the counts say
    failed = fail_a_snapshot(cmd, container.name)
    [failed_rec] = [s for s in cmd.json("ls") if s["status"] == "failed"]
    write(container, "changed")
    safety = cmd.json("restore", "day2-early", "--container", container.name, "--yes")[
        "safety_snapshot"
    ]
    listed, files = cmd.json("ls"), backups(tmp_path)

    plan = cmd.json("prune", "--keep-daily", "2", "--dry-run")["snapshots"]
    expected = {
        safety["id"]: ("keep", ["safety snapshot"]),
        snaps["day3"]["id"]: ("keep", ["daily snapshot"]),
        snaps["day2-late"]["id"]: ("keep", ["daily snapshot"]),
        snaps["day2-early"]["id"]: ("remove", ["matches no keep rule"]),
        snaps["day1"]["id"]: ("keep", ["newest verified"]),
        failed_rec["id"]: ("remove", ["failed"]),
    }
    assert {p["id"]: (p["action"], p["reasons"]) for p in plan} == expected, failed.stderr
    assert cmd.json("ls") == listed and backups(tmp_path) == files  # nothing deleted

    human = cmd("prune", "--keep-daily", "2", "-n").stderr
    lines = human.splitlines()
    keep_at, remove_at = lines.index("keep 4 snapshot(s):"), lines.index("remove 2 snapshot(s):")
    assert keep_at < remove_at
    for snap_id, (action, why) in expected.items():
        [line] = [i for i, line in enumerate(lines) if line.startswith(snap_id)]
        assert (keep_at < line < remove_at) == (action == "keep")
        assert lines[line].endswith(", ".join(why))
    assert "dry run: would delete 2 snapshot(s)" in human and "nothing was deleted" in human
    assert cmd.json("ls") == listed and backups(tmp_path) == files

    # The same policy for real deletes exactly what the dry run said.
    removed = cmd.json("prune", "--keep-daily", "2", "--yes")["snapshots"]
    assert [s["id"] for s in removed] == [failed_rec["id"], snaps["day2-early"]["id"]]
    left = {k: v for k, v in files.items() if k != Path(snaps["day2-early"]["path"]).name}
    assert backups(tmp_path) == left
    assert {s["id"] for s in cmd.json("ls")} == {
        i for i, (action, _why) in expected.items() if action == "keep"
    }
    assert all(r["ok"] for r in cmd.json("verify"))


def test_verify_records_its_result_and_prune_keeps_the_newest_good(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    container, _vol = bed.plain()
    uno, dos, tres = (snapshot(cmd, container, n) for n in ("uno", "dos", "tres"))
    assert all(s["verify_ok"] is None and s["verified_at"] is None for s in cmd.json("ls"))
    cmd("verify")
    assert all(s["verify_ok"] is True and s["verified_at"] for s in cmd.json("ls"))

    flip_middle_byte(Path(dos["path"]))
    flip_middle_byte(Path(tres["path"]))
    cmd("verify", exit_code=7)
    assert {s["name"]: s["verify_ok"] for s in cmd.json("ls")} == {
        "uno": True,
        "dos": False,
        "tres": False,
    }

    removed = cmd.json("prune", "--keep-last", "1", "--yes")["snapshots"]
    assert [s["id"] for s in removed] == [dos["id"]]
    reasons = {
        p["name"]: p["reasons"] for p in cmd.json("prune", "--keep-last", "1", "-n")["snapshots"]
    }
    assert reasons == {"tres": ["last snapshot"], "uno": ["newest verified"]}
    # The last known-good one is whole: it restores.
    write(container, "changed")
    cmd("restore", "uno", "--container", container.name, "--yes", "--no-safety-snapshot")
    assert Path(uno["path"]).exists()


def test_rm_dry_run_lists_what_it_would_delete_and_deletes_nothing(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    container, _vol = bed.plain()
    uno, dos = snapshot(cmd, container, "uno"), snapshot(cmd, container, "dos")
    listed, files = cmd.json("ls"), backups(tmp_path)

    plan = cmd.json("rm", "uno", dos["id"][:7], "--dry-run")
    assert [(p["id"], p["action"], p["reasons"]) for p in plan] == [
        (uno["id"], "remove", ["named: uno"]),
        (dos["id"], "remove", [f"named: {dos['id'][:7]}"]),
    ]
    human = cmd("rm", "uno", "-n").stderr
    assert "remove 1 snapshot(s):" in human and "named: uno" in human
    assert "dry run: would delete 1 snapshot(s)" in human
    assert cmd.json("ls") == listed and backups(tmp_path) == files

    cmd("rm", "uno", "--yes")
    assert [s["id"] for s in cmd.json("ls")] == [dos["id"]]
