"""Which lane serves a volume, and when a lane refuses, without Docker (the lanes' round trips
against the real engine: tests/integration/test_lanes.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snapvol.adapters.engine import ContainerInfo, Mount, VolumeInfo
from snapvol.errors import OperationFailed, UsageError
from snapvol.pipeline.members import CAPABILITY, REGULAR, Member
from snapvol.volume import target as target_module
from snapvol.volume.endpoint_lane import EndpointLane
from snapvol.volume.host_lane import HostLane
from snapvol.volume.target import choose_lane, resolve_volume_target

ENGINE = object()  # the choice itself never talks to the engine


def vol(tmp_path: Path, driver: str = "local", mountpoint: str | None = None, **options: str):
    where = str(tmp_path) if mountpoint is None else mountpoint
    return VolumeInfo(name="v", mountpoint=where, driver=driver, labels={}, options=options)


def choose(volume: VolumeInfo, reader: str):
    return choose_lane(ENGINE, volume, reader, "sha256:img")  # type: ignore[arg-type]


def test_a_local_readable_volume_takes_the_host_lane_unless_told_otherwise(tmp_path: Path) -> None:
    for reader in ("auto", "host"):
        lane = choose(vol(tmp_path), reader)
        assert isinstance(lane, HostLane) and lane.name == "host"
        assert lane.directory == tmp_path
        assert lane.host_path("data/postmaster.pid") == tmp_path / "data" / "postmaster.pid"
        # what it cannot write (a directory not writable here) goes through a helper
        assert lane.fallback == EndpointLane(ENGINE, "v", "sha256:img")  # type: ignore[arg-type]
    lane = choose(vol(tmp_path), "endpoint")
    assert lane == EndpointLane(ENGINE, "v", "sha256:img")  # type: ignore[arg-type]
    assert lane.name == "endpoint" and lane.host_path("x") is None


@pytest.mark.parametrize(
    "options",
    [
        {"type": "none", "o": "bind", "device": "/srv/x"},
        {"type": "nfs", "o": "addr=10.0.0.1,rw", "device": ":/export"},
        {"type": "cifs", "o": "username=u,password=hunter2", "device": "//h/s"},
    ],
)
def test_a_volume_docker_mounts_only_on_use_takes_the_endpoint_or_is_refused(
    tmp_path: Path, options: dict[str, str]
) -> None:
    assert isinstance(choose(vol(tmp_path, **options), "auto"), EndpointLane)
    with pytest.raises(OperationFailed) as caught:
        choose(vol(tmp_path, **options), "host")
    assert caught.value.retry_with == {"reader": "endpoint"}
    assert "archive endpoint" in caught.value.message and "--" not in caught.value.message
    assert "hunter2" not in caught.value.message and "10.0.0.1" not in caught.value.message


@pytest.mark.parametrize(
    "why", ["remote engine", "other driver", "no mountpoint", "missing directory"]
)
def test_a_volume_this_host_cannot_read_takes_the_endpoint_or_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    volume = vol(tmp_path)
    if why == "remote engine":
        monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.9:2375")
    elif why == "other driver":
        volume = vol(tmp_path, driver="rexray")
    elif why == "no mountpoint":
        volume = vol(tmp_path, mountpoint="")
    else:
        volume = vol(tmp_path, mountpoint=str(tmp_path / "gone"))
    assert isinstance(choose(volume, "auto"), EndpointLane)
    with pytest.raises(OperationFailed) as caught:
        choose(volume, "host")
    assert "cannot be read on this host" in caught.value.message
    assert caught.value.retry_with == {"reader": "endpoint"}


def test_a_local_engine_socket_still_allows_the_host_lane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert isinstance(choose(vol(tmp_path), "auto"), HostLane)


def member(path: str, *xattrs: tuple[str, bytes], mtime_ns: int = 0) -> Member:
    return Member(
        path=path,
        type=REGULAR,
        size=0,
        mode=0o644,
        uid=0,
        gid=0,
        mtime_ns=mtime_ns,
        xattrs=tuple(xattrs),
    )


def test_the_endpoint_refuses_what_it_would_drop_and_warns_of_what_it_cannot_check() -> None:
    endpoint = EndpointLane(ENGINE, "v", "img")  # type: ignore[arg-type]
    host = HostLane(Path("/"), fallback=endpoint)
    cap = member("cap", (CAPABILITY, b"\x01"))
    acl = member("acl", ("system.posix_acl_access", b"\x02"))
    empty = member("empty", ("user.empty", b""))
    assert endpoint.refuse_unwritable([cap]) is None
    warning = endpoint.refuse_unwritable([cap, acl])
    assert warning is not None and warning.startswith("1 file(s)") and "--" not in warning
    with pytest.raises(UsageError) as caught:
        endpoint.refuse_unwritable([cap, acl, empty])
    assert "'empty'" in caught.value.message and "nothing was changed" in caught.value.message
    assert caught.value.retry_with == {"reader": "host"}
    assert host.refuse_unwritable([cap, acl, empty]) is None  # the host lane writes them all


def test_each_lane_compares_what_its_read_back_can_see() -> None:
    endpoint = EndpointLane(ENGINE, "v", "img")  # type: ignore[arg-type]
    host = HostLane(Path("/"), fallback=endpoint)
    full = member("f", (CAPABILITY, b"\x01"), ("user.a", b"x"), mtime_ns=1_700_000_000_123_456_789)
    assert host.carried(full) == full
    seen = endpoint.carried(full)
    assert seen.mtime_ns == 1_700_000_000 * 10**9 and seen.xattrs == ((CAPABILITY, b"\x01"),)
    assert endpoint.carried(member("old", mtime_ns=-5 * 10**9)).mtime_ns == -1  # not compared


class FakeEngine:
    def container(self, ref: str) -> ContainerInfo:
        return ContainerInfo(
            id="c0ffee",
            name="app",
            image="app:1",
            image_id="sha256:own",
            status="running",
            mounts=(Mount("volume", "data", "/v/data", "/srv/data", True),),
            labels={},
            cmd=("sleep",),
            entrypoint=(),
            health=None,
            _env={},
        )

    def volume(self, name: str) -> VolumeInfo:
        return VolumeInfo(name=name, mountpoint=os.getcwd(), driver="local", labels={}, options={})


@pytest.mark.parametrize(("given", "image"), [(None, "sha256:own"), ("busybox:1", "busybox:1")])
def test_the_helper_image_is_resolved_once_with_the_target(
    monkeypatch: pytest.MonkeyPatch, given: str | None, image: str
) -> None:
    monkeypatch.setattr(target_module.cluster, "detect", lambda engine, info: None)
    engine = FakeEngine()
    endpoint = resolve_volume_target(engine, "app", None, "endpoint", given)  # type: ignore[arg-type]
    assert endpoint.image == image and endpoint.lane == EndpointLane(engine, "data", image)  # type: ignore[arg-type]
    assert endpoint.reader == "endpoint"
    host = resolve_volume_target(engine, "app", None, "auto", given)  # type: ignore[arg-type]
    assert isinstance(host.lane, HostLane) and host.reader == "host"
    assert host.image == image and host.lane.fallback == endpoint.lane
