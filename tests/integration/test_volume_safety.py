"""A volume snapshot is recorded complete only when it holds what the container sees, was taken
cold, and can be restored: against a real engine and a real PostgreSQL 15."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from docker.models.containers import Container

from snapvol.adapters import engine as engine_module
from snapvol.adapters.store import Store
from snapvol.cli import cli
from snapvol.pipeline import archive
from snapvol.volume import archiving
from tests.docker_helpers import TEST_LABEL, TestBed
from tests.pgdata import fill_demo

MOUNT = "/srv/data"

# Everything a file is, as the container sees it: type, mode, owner, size, mtime, name (with
# its link target), and the content of regular files.
SEEN = (
    f"cd {MOUNT} && find . -mindepth 1 -exec stat -c '%F|%a|%u|%g|%s|%Y|%N' {{}} + | sort"
    " && find . -type f -exec sha256sum {} + | sort"
)

TREE = f"""
set -e; cd {MOUNT}
head -c 2000000 /dev/urandom > random.bin
mkdir -p deep/er/still 'with space' empty
printf 'hola\\n' > 'with space/ñandú.txt'
ln -s random.bin link-to-random
ln random.bin hardlink.bin
: > deep/er/still/empty-file
chmod 640 random.bin; chmod 700 deep
chown 1234:4321 deep/er/still/empty-file
touch -d '2001-02-03 04:05:06' 'with space/ñandú.txt'
mkfifo pipe
"""


def seen(container: Container) -> str:
    """The whole tree under the mount, as the running container sees it."""
    code, out = container.exec_run(["sh", "-c", SEEN], user="root")
    assert code == 0, out
    return out.decode()


def run(container: Container, script: str) -> None:
    code, out = container.exec_run(["sh", "-c", script], user="root")
    assert code == 0, out


def recorded_paths(tmp_path: Path, snap_id: str) -> set[str]:
    store = Store.open(tmp_path / "manifests.db")
    try:
        return {m.path for m in store.members(snap_id)} - {"."}
    finally:
        store.close()


def seen_paths(container: Container) -> set[str]:
    code, out = container.exec_run(
        ["sh", "-c", f"cd {MOUNT} && find . -mindepth 1 | cut -c3-"], user="root"
    )
    assert code == 0, out
    return set(out.decode().splitlines())


def option_volume(bed: TestBed, **options: str) -> str:
    name = bed.unique("snapvol-test-optvol")
    bed.client.volumes.create(name, driver="local", driver_opts=options, labels={TEST_LABEL: "1"})
    bed.volumes.append(name)
    return name


def archives(tmp_path: Path) -> list[str]:
    backups = tmp_path / "backups"
    return sorted(os.listdir(backups)) if backups.exists() else []


# --- issue 9 item 1: volumes Docker mounts only while a container uses them ------------------


def test_bind_option_volume_round_trips_as_the_container_sees_it(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    device = tmp_path / "device"
    device.mkdir()
    vol = option_volume(bed, type="none", o="bind", device=str(device))
    container, _ = bed.plain(mount=MOUNT, volume=vol)
    run(container, TREE)
    before = seen(container)
    assert "random.bin" in before and "ñandú" in before

    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    assert recorded_paths(tmp_path, snap["id"]) == seen_paths(container)
    assert snap["status"] == "complete" and snap["meta"]["reader"] == "endpoint"
    container.reload()
    assert container.status == "running"

    run(container, f"cd {MOUNT} && rm -rf deep random.bin && echo new > new.txt && chmod 600 pipe")
    changed = seen(container)
    assert changed != before

    result = cmd.json("restore", snap["id"], "--yes")
    container.reload()
    assert container.status == "running"
    assert seen(container) == before
    # The safety snapshot holds what the container saw just before the restore, and brings it
    # back in the same way.
    safety = result["safety_snapshot"]
    assert recorded_paths(tmp_path, safety["id"]) == {"new.txt", *_paths_of(changed)}
    cmd("restore", safety["id"], "--yes", "--no-safety-snapshot")
    assert seen(container) == changed


def _paths_of(listing: str) -> set[str]:
    """The paths in a ``SEEN`` listing's stat part (its ``%N`` field: 'name' or 'name' -> 'x')."""
    paths = set()
    for line in listing.splitlines():
        if "|" in line:
            name = line.split("|", 6)[6].split(" -> ")[0]
            paths.add(name.strip("'")[2:])
    return paths


def test_reader_host_refuses_a_bind_option_volume(bed: TestBed, cmd, tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.mkdir()
    vol = option_volume(bed, type="none", o="bind", device=str(device))
    container, _ = bed.plain(mount=MOUNT, volume=vol)
    run(container, f"echo keep > {MOUNT}/precious")
    snap = cmd.json("snapshot", "--volume", "--container", container.name)

    result = cmd(
        "snapshot", "--volume", "--container", container.name, "--reader", "host", exit_code=11
    )
    assert result.stderr.strip().startswith("Error: volume ")
    assert "--reader endpoint" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    run(container, f"echo changed > {MOUNT}/precious")
    result = cmd("restore", snap["id"], "--yes", "--reader", "host", exit_code=11)
    assert "--reader endpoint" in result.stderr
    container.reload()
    assert container.status == "running"
    assert container.exec_run(["cat", f"{MOUNT}/precious"]).output == b"changed\n"
    assert [s["id"] for s in cmd.json("ls")] == [snap["id"]]


def test_a_tmpfs_volume_is_refused_before_it_is_stopped(bed: TestBed, cmd) -> None:
    """Stopping the container would erase a tmpfs volume: refuse before anything changes."""
    vol = option_volume(bed, type="tmpfs", device="tmpfs", o="size=8m")
    container, _ = bed.plain(mount=MOUNT, volume=vol)
    run(container, f"echo only-in-memory > {MOUNT}/f")
    result = cmd("snapshot", "--volume", "--container", container.name, exit_code=2)
    assert "tmpfs" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    container.reload()
    assert container.status == "running"
    assert container.exec_run(["cat", f"{MOUNT}/f"]).output == b"only-in-memory\n"
    assert cmd.json("ls") == []


# --- issue 9 item 10: a container someone else starts during a cold snapshot -----------------


def test_a_container_started_by_someone_else_mid_snapshot_fails_it(
    bed: TestBed, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = bed.postgres()
    fill_demo(pg)
    code, out = pg.container.exec_run(["du", "-sb", "/var/lib/postgresql/data"])
    half = int(out.split()[0]) // 2
    assert code == 0 and half > 1 << 20
    intruder: dict[str, str] = {}
    real = archive.write_compressed

    def someone_starts_it_halfway(chunks: Iterable[bytes], dest: Path, **kwargs):
        def source() -> Iterator[bytes]:
            read = 0
            for chunk in chunks:
                read += len(chunk)
                if read > half and not intruder:
                    container = bed.client.containers.get(pg.name)
                    assert container.status == "exited"  # snapvol stopped it
                    container.start()  # `docker start` by someone else
                    container.reload()
                    intruder["started_at"] = container.attrs["State"]["StartedAt"]
                yield chunk

        return real(source(), dest, **kwargs)

    monkeypatch.setattr(archive, "write_compressed", someone_starts_it_halfway)
    result = cmd("snapshot", "--volume", "--container", pg.name, exit_code=11)

    assert intruder, "the volume was never half read"
    assert "started by someone else" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    [snap] = cmd.json("ls")
    assert snap["status"] == "failed" and "started by someone else" in snap["error"]
    assert archives(tmp_path) == []
    # Left running, as whoever started it left it: snapvol neither stopped nor started it again.
    pg.container.reload()
    assert pg.container.status == "running"
    assert pg.container.attrs["State"]["StartedAt"] == intruder["started_at"]
    pg.wait_ready()
    assert pg.psql("select count(*) from usuarios") == "500"


def test_a_container_started_by_someone_else_mid_restore_is_left_to_them(
    bed: TestBed, cmd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same during a restore: never "Restored", and no rollback under the new owner."""
    container, _ = bed.plain(mount=MOUNT)
    run(container, f"head -c 4000000 /dev/urandom > {MOUNT}/random.bin")
    snap = cmd.json("snapshot", "--volume", "--container", container.name)
    run(container, f"echo after > {MOUNT}/after.txt")
    intruder: dict[str, str] = {}
    real = archive.decompressed_chunks

    def someone_starts_it(path: Path, progress=None):
        for n, chunk in enumerate(real(path, progress)):
            if path == Path(snap["path"]) and n == 1 and not intruder:
                container.reload()
                assert container.status == "exited"  # snapvol stopped it
                container.start()
                container.reload()
                intruder["started_at"] = container.attrs["State"]["StartedAt"]
            yield chunk

    monkeypatch.setattr(archive, "decompressed_chunks", someone_starts_it)
    result = cmd("restore", snap["id"], "--yes", exit_code=11)
    assert intruder, "the archive was never half extracted"
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "started by someone else" in error and "left as it is" in error
    # the way on names this run's store, which is not the default one
    assert error.endswith(
        f"restore again: run `snapvol --db {tmp_path / 'manifests.db'} restore {snap['id']} "
        f"--container {container.name}`"
    )
    assert "Restored" not in result.stderr
    container.reload()
    assert container.status == "running"
    assert container.attrs["State"]["StartedAt"] == intruder["started_at"]


# --- issue 9 item 11: a PostgreSQL snapshot without its version and cluster state -------------


@pytest.mark.parametrize("how", ["vanished", "failed"])
def test_a_postgres_snapshot_whose_cluster_could_not_be_read_is_not_complete(
    bed: TestBed, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    pg = bed.postgres()
    fill_demo(pg, users=50, products=10, orders=100)
    real = engine_module.Engine.create_helper

    def broken_controldata_helper(self, image, volume_name, mount, *, cmd=None, **kwargs):
        if cmd and "pg_controldata" in " ".join(cmd):
            if how == "failed":
                cmd = ["sh", "-c", "echo 'pg_controldata: could not open file' >&2; exit 1"]
            else:
                helper_id = real(self, image, volume_name, mount, cmd=cmd, **kwargs)
                self.remove(helper_id)  # gone as soon as it was created
                return helper_id
        return real(self, image, volume_name, mount, cmd=cmd, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(engine_module.Engine, "create_helper", broken_controldata_helper)
        result = cmd("snapshot", "--volume", "--container", pg.name, exit_code=11)
    assert "not recorded complete" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    [snap] = cmd.json("ls")
    assert snap["status"] == "failed" and snap["pg_version"] is None
    assert archives(tmp_path) == []
    assert pg.status == "running"
    assert pg.psql("select count(*) from usuarios") == "50"

    refused = cmd("restore", snap["id"], "--yes", exit_code=7)
    assert "not complete" in refused.stderr


# --- "never record as complete a snapshot that restore would refuse" --------------------------


def test_a_snapshot_is_complete_only_if_restore_takes_it(bed: TestBed, cmd, tmp_path: Path) -> None:
    """A tree with what restores have refused (a device node, absolute and escaping symbolic
    links): either the snapshot is refused when it is taken, naming a member, or it is recorded
    complete and restores exactly. Never complete and refused."""
    container, _ = bed.plain(mount=MOUNT)
    run(
        container,
        f"""set -e; cd {MOUNT}; echo data > file
        mknod null-device c 1 3
        ln -s /var/lib/postgresql/tablespace absolute-link
        ln -s ../../../etc/passwd escaping-link""",
    )
    before = seen(container)
    result = cmd.runner.invoke(cli, ["snapshot", "--volume", "--container", container.name])
    [snap] = cmd.json("ls")
    if result.exit_code == 0:
        assert snap["status"] == "complete"
        run(container, f"rm -rf {MOUNT}/* && echo other > {MOUNT}/other")
        cmd("restore", snap["id"], "--yes")
        assert seen(container) == before
    else:
        assert result.exit_code == 7
        assert "a restore would refuse this snapshot" in result.stderr
        assert any(
            f"'{name}'" in result.stderr
            for name in ("null-device", "absolute-link", "escaping-link")
        )
        assert snap["status"] == "failed" and archives(tmp_path) == []
        container.reload()
        assert container.status == "running"


def test_a_member_list_restore_would_refuse_fails_the_snapshot(
    bed: TestBed, cmd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a lane records, the completion runs restore's own check on it: a lane that
    records a member twice (which restore refuses) makes a failed snapshot, not a complete one."""
    container, _ = bed.plain(mount=MOUNT)
    run(container, f"echo one > {MOUNT}/one && echo two > {MOUNT}/two")
    real = archiving.archive_volume

    def recording_twice(*args, **kwargs) -> archiving.Archived:
        done = real(*args, **kwargs)
        twice = next(m for m in done.members if m.path == "two")
        return archiving.Archived(done.result, [*done.members, twice], done.cluster)

    monkeypatch.setattr(archiving, "archive_volume", recording_twice)
    result = cmd("snapshot", "--volume", "--container", container.name, exit_code=7)
    assert "'two' is recorded twice" in result.stderr
    [snap] = cmd.json("ls")
    assert snap["status"] == "failed" and archives(tmp_path) == []
    container.reload()
    assert container.status == "running"
