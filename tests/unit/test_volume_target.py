"""Which volume of a PostgreSQL container holds its data, and how the container is stopped
whichever volume is worked on (the real engine's side: tests/integration/test_pg_other_volumes.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from snapvol.adapters.engine import ContainerInfo, Mount, VolumeInfo
from snapvol.pg.cluster import Server
from snapvol.volume import target as volume
from snapvol.volume.host_lane import HostLane

SERVER = Server("/var/lib/postgresql/data", None, running=True)


def container() -> ContainerInfo:
    return ContainerInfo(
        id="c0ffee",
        name="db",
        image="postgres:15",
        image_id="sha256:abc",
        status="running",
        mounts=(
            Mount("volume", "data", "/v/data", "/var/lib/postgresql", True),
            Mount("volume", "backups", "/v/backups", "/backups", True),
            Mount("volume", "dotted", "/v/dotted", "/var/lib/postgresql/data..old", True),
        ),
        labels={},
        cmd=("postgres",),
        entrypoint=("docker-entrypoint.sh",),
        health=None,
        _env={},
    )


class FakeEngine:
    def container(self, ref: str) -> ContainerInfo:
        return container()

    def volume(self, name: str) -> VolumeInfo:
        return VolumeInfo(name=name, mountpoint="", driver="local", labels={}, options={})


@pytest.mark.parametrize(
    ("name", "holds", "subdir"),
    [("data", True, "data"), ("backups", False, "."), ("dotted", False, ".")],
)
def test_only_the_volume_holding_the_data_directory_is_a_postgres_volume(
    monkeypatch: pytest.MonkeyPatch, name: str, holds: bool, subdir: str
) -> None:
    monkeypatch.setattr(volume.cluster, "detect", lambda engine, info: SERVER)
    target = volume.resolve_volume_target(FakeEngine(), "db", name, "endpoint")  # type: ignore[arg-type]
    assert (target.is_postgres, target.pg_subdir) == (holds, subdir)
    assert target.runs_postgres  # the container is PostgreSQL whichever volume it is


@pytest.mark.parametrize("holds", [True, False])
def test_the_container_is_stopped_as_postgresql_whichever_volume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, holds: bool
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(volume, "stopped", lambda engine, info, **kwargs: seen.update(kwargs))
    lane = HostLane(tmp_path, fallback=None)  # type: ignore[arg-type]
    target = volume.VolumeTarget(
        container(), "v", "/m", holds, "data" if holds else ".", lane, "sha256:abc", SERVER
    )
    volume.stopped_container(None, target, None, None)  # type: ignore[arg-type]
    assert seen["is_postgres"] is True  # clean shutdown, wait until ready
    # readiness is read from the volume's postmaster.pid only when the cluster is on it
    assert seen["pid_file"] == (tmp_path / "data" / "postmaster.pid" if holds else None)


def test_the_pod_hint_names_a_command_the_pod_takes() -> None:
    """Exit 13 for one container of a Podman pod whose other container writes the volume too:
    the hint must be a command that works. ``--pod P`` alone is refused there (several
    containers write the claim: "retry with --container NAME", exit 2), so it names the
    container as well."""
    from types import SimpleNamespace

    from snapvol.adapters.engine import PodInfo, PodMember, VolumeUser

    members = (PodMember("1nfra", "app-infra", "running"),)
    members += (
        PodMember("aaaa1", "app-left", "running"),
        PodMember("bbbb2", "app-right", "running"),
    )
    pod = PodInfo("p0d", "app", "Running", "1nfra", members, {})
    engine = SimpleNamespace(is_podman=lambda: True, pods=lambda: [pod])
    target = SimpleNamespace(pod=None, container=SimpleNamespace(id="aaaa1", name="app-left"))
    hint = volume._pod_hint(engine, target, [VolumeUser("bbbb2", "app-right", True)])  # type: ignore[arg-type]
    assert hint.endswith("take pod app whole: --pod app --container left")
