"""scripts/ensure-restic.sh (needs restic and sshd installed, as `make test` makes sure): silent
when restic and sshd are there, and it never settles for a restic too old for repository format 2
(run with fake `restic` and `id` first on PATH, so that no apt runs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-restic.sh"


def run(path_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path_dir is not None:
        env["PATH"] = f"{path_dir}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def fake(bindir: Path, name: str, body: str) -> None:
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bindir / name).chmod(0o755)


def test_quiet_when_installed() -> None:
    """`make test` and CI run it every time: with everything there it prints nothing."""
    result = run()
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("version", ["0.13.1", "0.9.6"])
def test_old_restic_is_not_enough(tmp_path: Path, version: str) -> None:
    bindir = tmp_path / "bin"
    fake(bindir, "restic", f'echo "restic {version} compiled with go1.15 on linux/amd64"')
    fake(bindir, "id", "echo 1000")  # not root: the script must say what to do, not run apt
    result = run(bindir)
    assert result.returncode == 1
    assert "restic 0.14 or later is missing" in result.stderr


@pytest.mark.parametrize("version", ["0.14.0", "0.16.4", "1.0.0"])
def test_new_enough_restic_is_kept(tmp_path: Path, version: str) -> None:
    bindir = tmp_path / "bin"
    fake(bindir, "restic", f'echo "restic {version} compiled with go1.22 on linux/amd64"')
    fake(bindir, "id", "echo 1000")
    result = run(bindir)
    assert (result.returncode, result.stderr) == (0, "")
