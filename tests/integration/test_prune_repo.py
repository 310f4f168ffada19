"""`snapvol prune` with a repository: the same policy judges the copies there, and the copies it
removes are forgotten (data and manifest); copies of snapshots deleted locally stay while the
policy keeps them. restic's own snapshot list is compared before and after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.docker_helpers import TestBed
from tests.integration.test_verify_repo import use
from tests.servers import RepoServer


def restic_ids(server: RepoServer) -> dict[str, set[str]]:
    """snapvol snapshot id -> the restic snapshot ids tagged with it, as restic lists them."""
    listed = json.loads(server.restic("snapshots", "--json").stdout)
    found: dict[str, set[str]] = {}
    for snap in listed:
        ids = [t.removeprefix("snapvol-id-") for t in snap["tags"] if t.startswith("snapvol-id-")]
        assert len(ids) == 1, snap
        found.setdefault(ids[0], set()).add(snap["id"])
    return found


def take(cmd: Any, container: Any, name: str) -> str:
    code, out = container.exec_run(["sh", "-c", f"head -c 300000 /dev/urandom > /srv/data/{name}"])
    assert code == 0, out
    snap = cmd.json("snapshot", "--volume", "--container", container.name, "--name", name)
    return str(snap["id"])


def copies_in_store(cmd: Any) -> dict[str, list[str]]:
    return {s["id"]: [c["status"] for c in s["copies"]] for s in cmd.json("ls")}


def test_prune_forgets_exactly_the_copies_the_policy_removes(
    bed: TestBed,
    cmd,
    restic_local: RepoServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    restic_local.restic("init")
    container, _vol = bed.plain()
    a, b, c = (take(cmd, container, n) for n in ("a", "b", "c"))
    use(restic_local, monkeypatch)
    cmd("copy")
    before = restic_ids(restic_local)
    assert set(before) == {a, b, c} and all(len(ids) == 2 for ids in before.values())

    # --dry-run shows the repository's decisions too, and changes nothing.
    plan = cmd.json("prune", "--keep-last", "2", "--dry-run")
    assert {d["id"]: d["action"] for d in plan["snapshots"]} == {
        a: "remove",
        b: "keep",
        c: "keep",
    }
    assert {d["id"]: (d["action"], d["local"]) for d in plan["copies"]} == {
        a: ("remove", True),
        b: ("keep", True),
        c: ("keep", True),
    }
    assert set(plan["copies"][-1]["restic_snapshots"]) == before[a]
    text = cmd("prune", "--keep-last", "2", "--dry-run").stderr
    assert f"forget the copies of 1 snapshot(s) in {restic_local.repo}" in text
    assert restic_ids(restic_local) == before

    cmd("prune", "--keep-last", "2", "--yes")
    assert restic_ids(restic_local) == {b: before[b], c: before[c]}
    assert copies_in_store(cmd) == {b: ["complete"], c: ["complete"]}

    # B deleted locally: its copy stays while the policy keeps it in the repository.
    cmd("rm", b, "--yes")
    result = cmd("prune", "--keep-last", "2", "--yes")
    assert "nothing to prune" in result.stderr
    assert restic_ids(restic_local) == {b: before[b], c: before[c]}

    d = take(cmd, container, "d")
    cmd("copy", d)
    after_d = restic_ids(restic_local)
    plan = cmd.json("prune", "--keep-last", "2", "--dry-run")
    assert {x["id"]: (x["action"], x["local"]) for x in plan["copies"]} == {
        b: ("remove", False),
        c: ("keep", True),
        d: ("keep", True),
    }
    assert "no local snapshot" in cmd("prune", "--keep-last", "2", "--dry-run").stderr
    assert restic_ids(restic_local) == after_d
    done = cmd.json("prune", "--keep-last", "2", "--yes")
    assert done["snapshots"] == [] and [x["id"] for x in done["copies"]] == [b]
    assert restic_ids(restic_local) == {c: after_d[c], d: after_d[d]}
    assert {s["id"] for s in cmd.json("ls")} == {c, d}
    # forget --prune left a sound repository: every pack read back.
    restic_local.restic("check", "--read-data")


def test_prune_keeps_copies_of_locally_deleted_snapshots_the_policy_keeps(
    bed: TestBed, cmd, restic_local: RepoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    restic_local.restic("init")
    container, _vol = bed.plain()
    a, b = (take(cmd, container, n) for n in ("a", "b"))
    use(restic_local, monkeypatch)
    cmd("copy")
    cmd("rm", a, b, "--yes")  # nothing local any more: the repository holds the only copies
    before = restic_ids(restic_local)
    assert set(before) == {a, b}

    result = cmd("prune", "--keep-last", "5", "--yes")
    assert "nothing to prune" in result.stderr
    assert restic_ids(restic_local) == before
    plan = cmd.json("prune", "--keep-last", "1", "--dry-run")
    assert {x["id"]: (x["action"], x["local"]) for x in plan["copies"]} == {
        a: ("remove", False),
        b: ("keep", False),
    }
    cmd("prune", "--keep-last", "1", "--yes")
    assert restic_ids(restic_local) == {b: before[b]}


def test_prune_refuses_a_wrong_password_and_deletes_nothing(
    bed: TestBed, cmd, restic_local: RepoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.servers import write_password_file

    restic_local.restic("init")
    container, _vol = bed.plain()
    a, b = (take(cmd, container, n) for n in ("a", "b"))
    use(restic_local, monkeypatch)
    cmd("copy")
    before = restic_ids(restic_local)
    monkeypatch.setenv("SNAPVOL_PASSWORD_FILE", str(write_password_file(tmp_path / "wrong")))
    result = cmd("prune", "--keep-last", "1", "--yes", exit_code=14)
    assert len(result.stderr.strip().splitlines()) == 1
    assert {s["id"] for s in cmd.json("ls")} == {a, b}  # nothing local deleted either
    assert restic_ids(restic_local) == before
