"""`snapvol run --config FILE`: the long-running mode, a real process on a short schedule
against a real container, stopped by SIGTERM; and `--once`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.docker_helpers import TestBed


def complete(cmd) -> int:
    if not Path(os.environ["SNAPVOL_DB"]).exists():
        return 0
    return sum(s["status"] == "complete" for s in cmd.json("ls"))


def test_run_takes_snapshots_on_schedule_and_stops_cleanly(
    bed: TestBed, cmd, tmp_path: Path
) -> None:
    container, vol = bed.plain(mount="/srv/data")
    (Path(bed.client.volumes.get(vol).attrs["Mountpoint"]) / "f").write_bytes(b"x" * 4096)
    prom = tmp_path / "snapvol.prom"
    conf = tmp_path / "snapvol.toml"
    conf.write_text(
        f'db = "{os.environ["SNAPVOL_DB"]}"\nmetrics_file = "{prom}"\n'
        f'[[target]]\ncontainer = "{container.name}"\nschedule = "@every 2s"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SNAPVOL_DB",)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapvol", "run", "--config", str(conf)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and complete(cmd) < 2:
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    taken = cmd.json("ls")
    assert complete(cmd) >= 2  # (one running at the SIGTERM is interrupted, recorded failed)
    assert f"snapshot-{container.name}-volume: exit 0" in err and err.rstrip().endswith("stopped")
    assert 'snapvol_last_run_success{command="snapshot"} 1' in prom.read_text()
    container.reload()
    assert container.status == "running"

    once = subprocess.run(
        [sys.executable, "-m", "snapvol", "run", "--config", str(conf), "--once",
         f"snapshot-{container.name}-volume"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert once.returncode == 0, once.stderr
    assert len(cmd.json("ls")) == len(taken) + 1
    unknown = cmd("run", "--config", str(conf), "--once", "nope", exit_code=2)
    assert "has no job 'nope'" in unknown.stderr
