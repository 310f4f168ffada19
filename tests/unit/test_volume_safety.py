"""What makes a volume snapshot safe to record, without Docker: the one check restore and
completion share, the host lane's refusal of volumes Docker mounts only on use, and the
detection of a container someone else started while snapvol held it stopped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from snapvol import lifecycle
from snapvol.adapters.engine import ContainerState, VolumeInfo
from snapvol.adapters.store import Snapshot, Store
from snapvol.errors import IntegrityError, OperationFailed
from snapvol.pipeline.members import DIRECTORY, HARDLINK, REGULAR, SYMLINK, Member
from snapvol.volume import archiving, guard, hostpath


def member(path: str, type: str = REGULAR, linkname: str = "") -> Member:
    return Member(
        path=path, type=type, size=0, mode=0o644, uid=0, gid=0, mtime_ns=0, linkname=linkname
    )


TREE = [member(".", DIRECTORY), member("a", DIRECTORY), member("a/f"), member("a/l", SYMLINK, "f")]


def refusal(members: list[Member], **pg: object) -> str | None:
    return lifecycle.restore_refusal(
        members,
        holds_postgres=bool(pg.get("holds_postgres", False)),
        pg_version=pg.get("pg_version"),  # type: ignore[arg-type]
    )


def test_a_plain_tree_is_restorable() -> None:
    assert refusal(TREE) is None
    assert refusal(TREE, holds_postgres=True, pg_version="15") is None


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (member("a/../../etc/passwd"), "'..'"),
        (member("/etc/passwd"), "absolute path"),
        (member("a/h", HARDLINK, "../../etc/shadow"), "outside the archive"),
        (member("a/f"), "recorded twice"),
    ],
)
def test_the_first_member_restore_would_refuse_is_named(bad: Member, why: str) -> None:
    later = member("z/../../later")
    text = refusal([*TREE, bad, later])
    assert text is not None and why in text and repr(bad.path) in text
    assert "later" not in text


def test_an_empty_list_and_postgres_data_without_a_version_are_refused() -> None:
    assert refusal([]) == "it has no recorded files"
    text = refusal(TREE, holds_postgres=True, pg_version=None)
    assert text is not None and "no major version" in text


def test_completion_refuses_what_restore_would_refuse() -> None:
    """archiving.record_complete raises before anything is written to the store (the store is
    not even touched: a None store would fail at once if it were)."""
    done = archiving.Archived(result=None, members=[*TREE, member("../x")], cluster=None)  # type: ignore[arg-type]

    snap = SimpleNamespace(id="00000000", meta={"is_postgres": False})
    with pytest.raises(IntegrityError) as caught:
        archiving.record_complete(None, snap, done, None, 0.0)  # type: ignore[arg-type]
    assert "'../x'" in caught.value.message and "not recorded complete" in caught.value.message


def vol(**options: str) -> VolumeInfo:
    return VolumeInfo(name="v", mountpoint="/", driver="local", labels={}, options=dict(options))


def test_volumes_with_driver_options_never_take_the_host_lane() -> None:
    plain = vol()
    assert hostpath.volume_dir(plain, "auto") == Path("/")  # readable here: the host lane
    for opts in (
        {"type": "none", "o": "bind", "device": "/srv/x"},
        {"type": "nfs", "o": "addr=10.0.0.1,rw", "device": ":/export"},
        {"type": "cifs", "o": "username=u,password=hunter2", "device": "//h/s"},
    ):
        assert hostpath.volume_dir(vol(**opts), "auto") is None
        assert hostpath.volume_dir(vol(**opts), "endpoint") is None
        with pytest.raises(OperationFailed) as caught:
            hostpath.volume_dir(vol(**opts), "host")
        assert caught.value.retry_with == {"reader": "endpoint"}
        assert "hunter2" not in caught.value.message and "10.0.0.1" not in caught.value.message
    assert hostpath.kind(vol(type="none", o="bind", device="/x")) == "bind"
    assert hostpath.kind(vol(type="cifs", o="password=bind")) == "cifs"
    assert hostpath.is_tmpfs(vol(type="tmpfs", device="tmpfs"))


def downtime(before: ContainerState, now: ContainerState) -> guard.Downtime:
    down = guard.Downtime(was_running=True)
    down._before, down._name, down._inspect = before, "container db", lambda: now
    return down


STOPPED_AT_T0 = ContainerState("exited", "2026-01-01T00:00:00.1Z")


def test_a_container_left_alone_passes() -> None:
    downtime(
        ContainerState("running", "2026-01-01T00:00:00.1Z"), STOPPED_AT_T0
    ).check_still_stopped()
    downtime(STOPPED_AT_T0, STOPPED_AT_T0).check_still_stopped()


@pytest.mark.parametrize(
    "now",
    [
        ContainerState("running", "2026-01-01T00:00:05.2Z"),  # started by someone else
        ContainerState("exited", "2026-01-01T00:00:05.2Z"),  # started and stopped again
        ContainerState("paused", "2026-01-01T00:00:05.2Z"),
    ],
)
def test_a_container_someone_started_is_detected_and_left_to_them(now: ContainerState) -> None:
    down = downtime(STOPPED_AT_T0, now)
    with pytest.raises(OperationFailed) as caught:
        down.check_still_stopped()
    assert "started by someone else" in caught.value.message and "db" in caught.value.message
    assert down.taken_over


def test_verify_reports_a_complete_snapshot_restore_would_refuse(cmd, tmp_path: Path) -> None:
    """A record from before the completion check (or edited by hand) that restore refuses is
    not "ok" for verify either: both run the same check."""
    archive = tmp_path / "old.tar.zst"
    archive.write_bytes(b"archive bytes")
    store = Store.open(tmp_path / "manifests.db")
    for snap_id, name, extra in (
        ("a0a0a0a0", "fine", []),
        ("b0b0b0b0", "escapes", [member("a/h", HARDLINK, "../../etc/shadow")]),
    ):
        store.add(
            Snapshot(
                id=snap_id, name=name, kind="volume", container="c", volume="v", path=str(archive)
            )
        )
        store.complete(
            snap_id,
            [*TREE, *extra],
            sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
            size_bytes=archive.stat().st_size,
            raw_bytes=0,
        )
    store.close()

    result = cmd("verify", "--json", exit_code=7)
    verdicts = {r["name"]: r["error"] for r in json.loads(result.stdout)}
    assert verdicts["fine"] is None
    assert "a restore would refuse it" in verdicts["escapes"] and "'a/h'" in verdicts["escapes"]
