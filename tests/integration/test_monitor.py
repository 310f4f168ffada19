"""Metrics (a node_exporter textfile, read with prometheus_client's own parser) and notifications
(Apprise's json:// to a receiver on 127.0.0.1) after real snapshots (issue 13, item 3)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.docker_helpers import TestBed


def filled(bed: TestBed) -> tuple[Any, str]:
    """A running container whose volume holds a file (an empty one is flagged suspect)."""
    container, vol = bed.plain(mount="/srv/data")
    (Path(bed.client.volumes.get(vol).attrs["Mountpoint"]) / "data").write_bytes(b"x" * 4096)
    return container, vol


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(
                    {
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        **json.loads(self.rfile.read(length)),
                    }
                )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_metrics_say_when_each_source_last_succeeded_and_how_runs_went(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    container, vol = filled(bed)
    prom = tmp_path / "textfile" / "snapvol.prom"
    cmd("snapshot", "--volume", "--container", container.name, "--metrics-file", str(prom))
    snap = cmd.json("ls")[0]
    got = samples(prom)
    src = (("container", container.name), ("kind", "volume"), ("source", vol))
    created = snap["created_at"]
    from datetime import datetime

    when = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    assert got[("snapvol_last_success_timestamp_seconds", src)] == pytest.approx(when, abs=1)
    assert got[("snapvol_last_size_bytes", src)] == snap["size_bytes"]
    assert got[("snapvol_last_downtime_seconds", src)] == pytest.approx(snap["downtime_s"])
    assert got[("snapvol_snapshots", tuple(sorted((*src, ("status", "complete")))))] == 1
    assert got[("snapvol_last_run_success", (("command", "snapshot"),))] == 1
    assert oct(prom.stat().st_mode & 0o777) == "0o644"

    # a run that fails: recorded as such, and what the store knows stays
    cmd(
        "snapshot",
        "--volume",
        "--container",
        "snapvol-test-no-such",
        "--metrics-file",
        str(prom),
        exit_code=3,
    )
    cmd("verify", "--metrics-file", str(prom))
    got = samples(prom)
    assert got[("snapvol_last_run_success", (("command", "snapshot"),))] == 0
    assert got[("snapvol_last_run_success", (("command", "verify"),))] == 1
    assert got[("snapvol_last_size_bytes", src)] == snap["size_bytes"]
    assert got[("snapvol_last_verify_ok", src)] == 1
    cmd("ls", "--metrics-file", str(prom))  # ls is no run that counts: nothing changes
    assert samples(prom) == got


def test_a_failed_run_notifies_and_a_good_one_only_when_asked(
    bed: TestBed, cmd, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-token"
    monkeypatch.setenv("SNAPVOL_NOTIFY", f"json://user:{secret}@127.0.0.1:{receiver.port}/hook")
    container, _vol = filled(bed)
    cmd("snapshot", "--volume", "--container", container.name)
    assert receiver.received == []  # success: silent by default

    failed = cmd("snapshot", "--volume", "--container", "snapvol-test-gone", exit_code=3)
    assert secret not in failed.stderr and secret not in failed.stdout
    [message] = receiver.received
    assert message["path"] == "/hook" and message["type"] == "failure"
    assert "snapvol snapshot FAILED on" in message["title"]
    assert "no container named 'snapvol-test-gone'" in message["message"]

    cmd("snapshot", "--volume", "--container", container.name, "--notify-success")
    assert [m["type"] for m in receiver.received] == ["failure", "success"]
    assert "snapvol snapshot succeeded" in receiver.received[1]["title"]


def test_notification_problems_are_one_warning_and_never_the_runs_outcome(
    bed: TestBed, cmd, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container, _vol = filled(bed)
    cmd("snapshot", "--volume", "--container", container.name)
    config = tmp_path / "apprise.txt"
    config.write_text(f"json://127.0.0.1:{receiver.port}/from-config\n")
    os.chmod(config, 0o644)
    lax = cmd("verify", "--notify-config", str(config), "--notify-success")
    assert "must be a file only its owner can read" in lax.stderr and receiver.received == []
    os.chmod(config, 0o600)
    cmd("verify", "--notify-config", str(config), "--notify-success")
    assert [m["path"] for m in receiver.received] == ["/from-config"]

    monkeypatch.setenv("SNAPVOL_NOTIFY", "json://127.0.0.1:9/nobody-listens")
    gone = cmd("snapshot", "--volume", "--container", "snapvol-test-gone", exit_code=3)
    assert "1 notification target(s) could not be reached" in gone.stderr


def test_an_empty_or_much_smaller_snapshot_is_flagged_alerted_and_never_the_good_one(
    bed: TestBed, cmd, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAPVOL_NOTIFY", f"json://127.0.0.1:{receiver.port}/hook")
    container, vol = bed.plain(mount="/srv/data")
    root = Path(bed.client.volumes.get(vol).attrs["Mountpoint"])
    (root / "data").write_bytes(os.urandom(2_000_000))
    prom = tmp_path / "snapvol.prom"
    take = ("snapshot", "--volume", "--container", container.name, "--metrics-file", str(prom))
    cmd(*take)
    good = cmd.json("ls")[0]
    assert receiver.received == [] and "suspect" not in good["meta"]

    (root / "data").write_bytes(os.urandom(500_000))  # three quarters gone
    shrunk = cmd(*take)
    bad = cmd.json("ls")[0]
    assert f"snapshot {bad['id']} ({bad['name']}) is suspect" in shrunk.stderr
    assert f"less than {good['id']} before it" in bad["meta"]["suspect"]
    [alert] = receiver.received
    assert alert["type"] == "warning" and "needs a look" in alert["title"]
    assert bad["id"] in alert["message"]
    src = (("container", container.name), ("kind", "volume"), ("source", vol))
    got = samples(prom)
    assert got[("snapvol_last_snapshot_suspect", src)] == 1
    assert got[("snapvol_last_size_bytes", src)] == good["size_bytes"]  # the good one's

    planned = cmd.json("prune", "--keep-last", "1", "--dry-run")
    plan = {d["id"]: d for d in planned["snapshots"]}
    assert plan[good["id"]]["action"] == "keep" and plan[bad["id"]]["action"] == "keep"
    assert plan[bad["id"]]["reasons"][0].startswith("suspect")

    (root / "data").unlink()
    cmd(*take, "--max-shrink", "1")  # whatever the fraction
    assert cmd.json("ls")[0]["meta"]["suspect"].startswith("the volume was empty, and held 1 ")
    cmd(*take)
    assert "suspect" not in cmd.json("ls")[0]["meta"]  # empty after empty: no drop
