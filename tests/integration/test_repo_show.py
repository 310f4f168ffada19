"""A configured repository copies each snapshot as `snapshot --copy` does; `show` and `ls` say
what was copied where. Real restic repositories (local, sftp), real Docker and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from snapvol.adapters.store import Store
from snapvol.cli.format import local_time
from snapvol.output import human_bytes
from snapvol.pipeline.archive import decompressed_chunks
from snapvol.repo import manifest
from tests import fidelity_tree
from tests.docker_helpers import PgContainer, TestBed
from tests.servers import RepoServer, use_repository, write_password_file


def use(server: RepoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configured the way a user would: variables, no --copy anywhere (snapshots copy)."""
    use_repository(server, monkeypatch, auto_copy=True)


def restic_ids(server: RepoServer) -> set[str]:
    return {s["id"] for s in json.loads(server.restic("snapshots", "--json").stdout)}


def fields(shown: str) -> dict[str, str]:
    """`show`'s record as {label: value} (the lines before the copies table)."""
    out = {}
    for line in shown.split("\n\n")[0].splitlines():
        label, _, value = line.partition("  ")
        out[label.strip()] = value.strip()
    return out


def copy_rows(shown: str, repository: str) -> list[list[str]]:
    """`show`'s copies table: the rows of ``repository``, split into words."""
    return [line.split() for line in shown.splitlines() if line.startswith(repository + " ")]


def copies_column(cmd: Any) -> dict[str, str]:
    lines = cmd("ls").stdout.splitlines()
    assert lines[0].split()[-1] == "COPIES"
    return {line.split()[0]: line.split()[-1] for line in lines[1:]}


def in_repository(server: RepoServer, db: Path, snapshot_id: str, restic_id: str) -> bytes:
    """The data file of ``snapshot_id``'s copy, as restic gives it back."""
    store = Store.open(db, create=False)
    try:
        snap = store.get(snapshot_id)
    finally:
        store.close()
    assert snap is not None
    return server.restic("dump", restic_id, "/" + manifest.data_filename(snap)).stdout


def test_a_configured_repository_copies_and_show_and_ls_say_so(
    bed: TestBed,
    pg: PgContainer,
    restic_local: RepoServer,
    cmd: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, vol = bed.plain()
    code, out = container.exec_run(
        ["sh", "-c", "head -c 2M /dev/urandom > /srv/data/big && echo hi > /srv/data/small"]
    )
    assert code == 0, out

    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    container.reload()
    assert container.status == "running"
    [copy] = snap["copies"]
    assert copy["status"] == "complete" and copy["repository"] == restic_local.repo
    raw = b"".join(decompressed_chunks(Path(snap["path"])))
    db = tmp_path / "manifests.db"
    assert in_repository(restic_local, db, snap["id"], copy["restic_snapshot"]) == raw
    logical = cmd.json("snapshot", "--logical", "--container", pg.name)
    [lcopy] = logical["copies"]
    assert lcopy["status"] == "complete"
    dump = b"".join(decompressed_chunks(Path(logical["path"])))
    assert in_repository(restic_local, db, logical["id"], lcopy["restic_snapshot"]) == dump
    held = restic_ids(restic_local)
    assert len(held) == 4  # data and manifest of each

    skipped = cmd.json("snapshot", "--volume", "--no-copy", "--container", container.name)
    assert skipped["copies"] == [] and restic_ids(restic_local) == held

    listed = {s["id"]: s for s in cmd.json("ls")}
    assert copies_column(cmd) == {snap["id"]: "1", logical["id"]: "1", skipped["id"]: "-"}

    shown = cmd("show", snap["id"][:6]).stdout
    record = fields(shown)
    assert record["Snapshot"] == f"{snap['id']}  {snap['name']}  (volume)"
    assert record["Volume"] == vol
    assert record["Archive"] == snap["path"] and record["SHA-256"] == snap["sha256"]
    assert record["Copies"] == "1 complete of 1"
    [row] = copy_rows(shown, restic_local.repo)
    added = listed[snap["id"]]["copies"][0]["bytes_added"]
    assert added > 0
    assert row == [
        restic_local.repo,
        copy["restic_snapshot"][:8],
        *local_time(datetime.fromisoformat(copy["completed_at"]), seconds=False).split(),
        *human_bytes(added).split(),
        "complete",
    ]
    as_json = cmd.json("show", snap["id"])
    [extra] = as_json["copies"]
    assert extra.pop("error") is None and extra.pop("started_at") <= copy["completed_at"]
    assert as_json == listed[snap["id"]]

    shown = cmd("show", logical["name"]).stdout
    record = fields(shown)
    assert record["Snapshot"] == f"{logical['id']}  {logical['name']}  (logical)"
    assert record["Database"] == f"{pg.database} (custom format)"
    assert record["PostgreSQL"] == logical["pg_version"]
    assert record["Copies"] == "1 complete of 1"
    assert len(copy_rows(shown, restic_local.repo)) == 1

    record = fields(cmd("show", skipped["name"]).stdout)
    assert record["Copies"] == f"none (`snapvol copy {skipped['id']}` sends it to the repository)"


def test_a_failing_automatic_copy_keeps_the_snapshot_complete_and_restorable(
    bed: TestBed,
    restic_local: RepoServer,
    cmd: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    container, vol = bed.plain()
    root = Path(bed.client.volumes.get(vol).attrs["Mountpoint"])
    fidelity_tree.build(root, socket_too=False, deep=False)
    before = fidelity_tree.fingerprint(root)
    wrong = write_password_file(tmp_path / "wrong-password")
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(wrong))

    failed = cmd("snapshot", "--volume", "--json", "--container", container.name, exit_code=14)
    snap = json.loads(failed.stdout)
    repo = restic_local.repo
    said = (
        f"Error: snapshot {snap['id']} ({snap['name']}) is complete and kept, but copying it to "
        f"{repo} failed: wrong password for repository {repo} (or no key found) "
        f"(`snapvol copy {snap['id']}` tries again)"
    )
    assert [ln for ln in failed.stderr.splitlines() if ln.startswith("Error:")] == [said]
    assert "Traceback" not in failed.stderr
    # --copy goes the same way and says the same
    flagged = cmd(
        "snapshot", "--volume", "--copy", "--json", "--container", container.name, exit_code=14
    )
    again = json.loads(flagged.stdout)
    assert [ln for ln in flagged.stderr.splitlines() if ln.startswith("Error:")] == [
        said.replace(snap["id"], again["id"]).replace(snap["name"], again["name"])
    ]
    assert [s["status"] for s in cmd.json("ls")] == ["complete", "complete"]
    container.reload()
    assert container.status == "running"
    assert snap["status"] == "complete" and snap["copies"] == []
    assert hashlib.sha256(Path(snap["path"]).read_bytes()).hexdigest() == snap["sha256"]

    (root / "added-later").write_text("not in the snapshot")
    (root / "plain.txt").write_text("changed after the snapshot\n")
    (root / "sub" / "hard-2").unlink()
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) != []
    cmd("restore", snap["id"], "--yes")
    assert fidelity_tree.differences(before, fidelity_tree.fingerprint(root)) == []

    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(restic_local.password_file))
    cmd("copy", snap["id"])  # what the error said to do
    assert fields(cmd("show", snap["id"]).stdout)["Copies"] == "1 complete of 1"


@pytest.mark.private_server
def test_a_copy_cut_off_mid_stream_is_recorded_failed_and_shown(
    bed: TestBed,
    sftp_server: RepoServer,
    cmd: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(sftp_server, monkeypatch)
    cmd("repo", "init")
    container, _vol = bed.plain()
    code, out = container.exec_run(["sh", "-c", "head -c 40M /dev/urandom > /srv/data/big"])
    assert code == 0, out

    during_copy: list[str] = []

    def look_when_stopped(stopped: threading.Event) -> None:
        """The container's state while the copy is cut off mid-stream."""
        if stopped.wait(timeout=900):
            container.reload()
            during_copy.append(container.status)

    with sftp_server.stops_when_stored(4 << 20) as stopped:
        looker = threading.Thread(target=look_when_stopped, args=(stopped,), daemon=True)
        looker.start()
        failed = cmd("snapshot", "--volume", "--json", "--container", container.name, exit_code=14)
    assert stopped.is_set()
    looker.join()
    assert during_copy == ["running"]  # the copy runs once the container runs again
    snap = json.loads(failed.stdout)
    [line] = [ln for ln in failed.stderr.splitlines() if ln.startswith("Error:")]
    assert line.startswith(f"Error: snapshot {snap['id']} ({snap['name']}) is complete and kept")
    assert line.endswith(f"(`snapvol copy {snap['id']}` tries again)")
    assert snap["status"] == "complete"
    assert [c["status"] for c in snap["copies"]] == ["failed"]
    assert hashlib.sha256(Path(snap["path"]).read_bytes()).hexdigest() == snap["sha256"]
    assert copies_column(cmd) == {snap["id"]: "failed"}
    shown = cmd("show", snap["name"]).stdout
    assert fields(shown)["Copies"] == "0 complete of 1"
    [row] = copy_rows(shown, sftp_server.repo)
    assert row[1] == "-" and row[6] == "failed:"  # no restic snapshot; then why
    [shown_copy] = cmd.json("show", snap["name"])["copies"]
    assert shown_copy["status"] == "failed" and shown_copy["error"]

    sftp_server.start()
    cmd("copy")
    shown = cmd("show", snap["name"]).stdout
    assert fields(shown)["Copies"] == "1 complete of 2"
    [done] = [r for r in copy_rows(shown, sftp_server.repo) if r[-1] == "complete"]
    assert done[1] != "-"  # the restic snapshot it made
    assert copies_column(cmd) == {snap["id"]: "1"}


def test_a_busy_repository_delays_the_automatic_copy_but_fails_an_asked_one(
    bed: TestBed, restic_local: RepoServer, cmd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two snapshots at the same minute with a repository configured: the one that finds the
    repository held by another copy still succeeds (a warning; `snapvol copy` sends it later);
    asked for with --copy, the copy is refused (exit 9). The holder is a real process on the
    repository's lock, so the interleaving is forced."""
    use(restic_local, monkeypatch)
    cmd("repo", "init")
    repository_id = json.loads(restic_local.restic("cat", "config").stdout)["id"]
    container, _vol = bed.plain()
    hold = (
        "from snapvol import locking\n"
        f"lock = locking.acquire('repository-{repository_id}', 'repository', 'copy')\n"
        "print('held', flush=True)\n"
        "input()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        auto = cmd("snapshot", "--volume", "--json", "--container", container.name)
        snap = json.loads(auto.stdout)
        assert snap["status"] == "complete" and snap["copies"] == []
        assert "is complete and kept" in auto.stderr and f"snapvol copy {snap['id']}" in auto.stderr
        asked = cmd("snapshot", "--volume", "--copy", "--container", container.name, exit_code=9)
        assert asked.stderr.count("Error:") == 1 and "is complete and kept" in asked.stderr
    finally:
        holder.communicate("\n", timeout=30)
    assert restic_ids(restic_local) == set()
    cmd("copy")
    assert all(row["copies"] for row in cmd.json("ls"))
