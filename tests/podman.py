"""Podman for the tests: its Docker-compatible API on a socket of the tests' own.

Test scaffolding, not part of snapvol: this sandbox refuses ``setrlimit``, so Podman's runc fails
with "error setting rlimits"; a wrapper removes ``process.rlimits`` from the OCI spec (a bundle's
``config.json``, an exec's ``--process`` file) before it calls runc, named in a
``containers.conf`` of the tests' own (``CONTAINERS_CONF``). The PostgreSQL test image goes in
from Docker's (``docker save | podman load``, once; Podman keeps it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

WRAPPER = """#!{python}
import json, os, sys
args = sys.argv[1:]
def strip(path):
    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return
    proc = spec.get("process", spec)
    if "rlimits" in proc:
        del proc["rlimits"]
        with open(path, "w") as f:
            json.dump(spec, f)
for i, a in enumerate(args):
    if a in ("--bundle", "-b") and i + 1 < len(args):
        strip(os.path.join(args[i + 1], "config.json"))
    elif a.startswith("--bundle="):
        strip(os.path.join(a.split("=", 1)[1], "config.json"))
    elif a in ("--process", "-p") and i + 1 < len(args):
        strip(args[i + 1])
    elif a.startswith("--process="):
        strip(a.split("=", 1)[1])
os.execv({runc!r}, ["runc", *args])
"""
IMAGE = "localhost/snapvol/postgres:15"


@dataclass
class Podman:
    socket: Path
    env: dict[str, str]  # CONTAINERS_CONF: for the podman command line
    client: docker.DockerClient
    image: str

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, check=True
        )


def _load_image(env: dict[str, str], docker_image: str) -> None:
    present = subprocess.run(["podman", "image", "exists", IMAGE], env=env)
    if present.returncode == 0:
        return
    save = subprocess.Popen(["docker", "save", docker_image], stdout=subprocess.PIPE)
    subprocess.run(["podman", "load", "-q"], stdin=save.stdout, env=env, check=True,
                   capture_output=True)  # fmt: skip
    save.wait()
    if docker_image != "snapvol/postgres:15":
        subprocess.run(["podman", "tag", f"localhost/{docker_image}", IMAGE], env=env, check=False)


def started(root: Path, docker_image: str) -> Iterator[Podman]:
    """Podman's API service on ``root/podman.sock`` until the generator is closed."""
    runc = shutil.which("runc") or "/usr/sbin/runc"
    wrapper = root / "runc-without-rlimits"
    wrapper.write_text(WRAPPER.format(python=sys.executable, runc=runc))
    wrapper.chmod(0o755)
    conf = root / "containers.conf"
    conf.write_text(
        f'[engine]\nruntime = "testrunc"\n[engine.runtimes]\ntestrunc = ["{wrapper}"]\n'
    )
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    env.pop("DOCKER_HOST", None)
    _load_image(env, docker_image)
    sock = root / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if time.monotonic() > deadline or service.poll() is not None:
                raise RuntimeError("podman system service did not start")
            time.sleep(0.1)
        client = docker.DockerClient(base_url=f"unix://{sock}", version="1.41")
        client.ping()
        yield Podman(sock, env, client, IMAGE)
        client.close()
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
