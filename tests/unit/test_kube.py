"""Where a volume restore goes when the snapshot was taken of a pod's claim (``kube``)."""

from __future__ import annotations

import pytest

from snapvol.errors import UsageError
from snapvol.volume.kube import restore_where

TAKEN = {
    "pod": "app-pod-0",
    "claim": "app-data",
    "pod_container": "db",
    "mount": "/var/lib/postgresql/data",
}


def test_a_pod_s_snapshot_goes_back_to_its_pod_and_claim() -> None:
    assert restore_where(TAKEN, None, None, None) == ("app-pod-0", "app-data", "db")


def test_a_container_s_snapshot_goes_back_to_its_container() -> None:
    assert restore_where({"mount": "/data"}, None, None, None) is None


def test_a_container_named_wins_over_the_recorded_pod() -> None:
    assert restore_where(TAKEN, "staging_db", None, None) is None


def test_another_pod_takes_its_own_claim_unless_one_is_named() -> None:
    assert restore_where(TAKEN, None, "staging", None) == ("staging", None, None)
    assert restore_where(TAKEN, "db", "staging", "st-data") == ("staging", "st-data", "db")
    assert restore_where(TAKEN, None, "app-pod-0", None) == ("app-pod-0", "app-data", "db")
    assert restore_where(TAKEN, "side", "app-pod-0", None) == ("app-pod-0", "app-data", "side")


def test_a_claim_alone_is_one_of_the_recorded_pod() -> None:
    assert restore_where(TAKEN, None, None, "other") == ("app-pod-0", "other", None)
    assert restore_where(TAKEN, None, None, "app-data") == ("app-pod-0", "app-data", "db")
    with pytest.raises(UsageError, match="--claim goes with --pod"):
        restore_where({}, None, None, "other")
