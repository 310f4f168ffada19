"""Kubernetes manifests run by Podman (issue 14, item 2): a Deployment `podman kube play` runs,
with its PostgreSQL data in a PersistentVolumeClaim, snapshotted and restored by its Kubernetes
names (--pod, --claim), the whole pod stopped meanwhile and started again. Whole databases
compared, not counts."""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker_helpers import PgContainer
from tests.integration.test_podman import whole_database
from tests.podman import Podman

pytestmark = pytest.mark.serial  # Podman's service is one per run; its storage is shared

# A Deployment of two containers sharing one claim: PostgreSQL on it, and a sidecar that reads
# it (it exits on SIGTERM, as a pod's containers should, so a pod stop is quick).
MANIFEST = """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {claim}
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: db
        image: {image}
        env:
        - name: POSTGRES_PASSWORD
          value: {password}
        - name: POSTGRES_DB
          value: pc_db
        volumeMounts:
        - name: data
          mountPath: /var/lib/postgresql/data
      - name: reader
        image: {image}
        command: ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"]
        volumeMounts:
        - name: data
          mountPath: /data
          readOnly: true
      volumes:
      - name: data
        persistentVolumeClaim:
          claimName: {claim}
"""


# A Pod whose two containers both write to one claim (neither runs PostgreSQL).
TWO_WRITERS = """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {claim}
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: left
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"]
    volumeMounts:
    - name: data
      mountPath: /data
  - name: right
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: {claim}
"""


@dataclass
class KubeApp:
    """A Deployment (or a Pod) played by `podman kube play` for one test."""

    podman: Podman
    manifest: Path
    name: str
    claim: str
    kind: str = "Deployment"

    @property
    def pod(self) -> str:
        """Its pod: a Pod's own name; a Deployment's as Podman 4.3 names it (``<name>-pod-0``;
        later: ``-pod``)."""
        if self.kind == "Pod":
            return self.name
        names = self.podman.podman("pod", "ps", "--format", "{{.Name}}").stdout.split()
        return next(n for n in names if n.startswith(f"{self.name}-pod"))

    def container(self, short: str) -> PgContainer:
        found = self.podman.client.containers.get(f"{self.pod}-{short}")
        return PgContainer(container=found, volume=self.claim, password="", database="pc_db")

    def pod_state(self) -> dict[str, str]:
        """Each of the pod's containers (infra included) and its state."""
        found = self.podman.client.containers.list(all=True, filters={"pod": self.pod})
        return {str(c.name): str(c.status) for c in found}


@contextlib.contextmanager
def _played(podman: Podman, tmp_path: Path, manifest: str, kind: str) -> Iterator[KubeApp]:
    """``manifest`` (a template of name, claim, image and password) played, with names of the
    test's own; the pod and the claim are removed after, whatever happened."""
    tag = uuid.uuid4().hex[:8]
    name, claim = f"svk-{tag}", f"svk-data-{tag}"
    path = tmp_path / f"{name}.yaml"
    password = secrets.token_hex(8)
    path.write_text(manifest.format(name=name, claim=claim, image=podman.image, password=password))
    try:
        podman.podman("kube", "play", str(path))
        yield KubeApp(podman, path, name, claim, kind)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            podman.podman("kube", "down", str(path))
        pods = podman.podman("pod", "ps", "-q", "--filter", f"name={name}").stdout.split()
        for pod in pods:
            podman.podman("pod", "rm", "-f", pod)
        podman.podman("volume", "rm", "-f", claim)


@pytest.fixture
def kube(
    podman_service: Podman, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KubeApp]:
    """A PostgreSQL Deployment with a claim of its own and a sidecar reading it, running."""
    monkeypatch.setenv("DOCKER_HOST", podman_service.docker_host)
    with _played(podman_service, tmp_path, MANIFEST, "Deployment") as app:
        app.container("db").wait_ready(timeout=120)
        yield app


@pytest.fixture
def writers(
    podman_service: Podman, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KubeApp]:
    """A Pod of two containers writing to one claim."""
    monkeypatch.setenv("DOCKER_HOST", podman_service.docker_host)
    with _played(podman_service, tmp_path, TWO_WRITERS, "Pod") as app:
        yield app


def _all_running(app: KubeApp) -> bool:
    states = app.pod_state()
    return len(states) == 3 and all(s == "running" for s in states.values())


def test_a_claim_snapshot_and_restore_by_its_kubernetes_names(kube: KubeApp, cmd) -> None:
    pg = kube.container("db")
    pg.psql(
        "CREATE TABLE items (id int PRIMARY KEY, name text, at timestamptz);"
        "INSERT INTO items SELECT g, md5(g::text), now() - g * interval '1 minute' "
        "FROM generate_series(1, 20000) g"
    )
    before = whole_database(pg)
    reader_started = kube.container("reader").container.attrs["State"]["StartedAt"]

    # By the Deployment's name: its one pod; the claim is the pod's only one.
    cmd("snapshot", "--volume", "--pod", kube.name)
    snap = cmd.json("ls")[0]
    assert snap["status"] == "complete" and snap["volume"] == kube.claim
    assert snap["meta"]["pod"] == kube.pod and snap["meta"]["claim"] == kube.claim
    assert snap["container"] == f"{kube.pod}-db" and snap["meta"]["is_postgres"]
    assert f"pod/{kube.pod}:{kube.claim}" in cmd("ls").stdout
    assert f"{kube.pod}, claim {kube.claim}" in cmd("show", snap["id"]).stdout
    # The whole pod was stopped (the sidecar too, started again since) and runs again.
    assert _all_running(kube)
    reader = kube.container("reader").reload()
    assert reader.container.attrs["State"]["StartedAt"] != reader_started

    pg.psql("DELETE FROM items WHERE id % 3 = 0; UPDATE items SET name = 'changed'")
    changed = whole_database(pg)
    assert changed != before
    # No --pod: the snapshot's own pod and claim, confirmed by typing the pod's name.
    declined = cmd("restore", snap["id"], input=f"{kube.name}\n", exit_code=10)
    assert f"Type the pod's name ({kube.pod}) to restore" in declined.stderr
    assert whole_database(pg) == changed
    done = cmd.json("restore", snap["id"], "--yes")
    assert done["pod"] == kube.pod and done["claim"] == kube.claim
    pg = kube.container("db")
    pg.wait_ready()
    assert _all_running(kube) and whole_database(pg) == before

    # The undo goes back to the pod too: the safety snapshot remembers it.
    safety = done["safety_snapshot"]
    assert safety["meta"]["pod"] == kube.pod
    cmd("restore", safety["id"], "--yes", "--pod", kube.pod, "--claim", kube.claim)
    pg.wait_ready()
    assert _all_running(kube) and whole_database(pg) == changed


def test_a_pod_stopped_for_a_snapshot_starts_again_when_it_fails(kube: KubeApp, cmd) -> None:
    # The helper image is first needed once the pod is stopped (the cluster's state is read
    # beside the archive): the snapshot fails then, and the whole pod must run again.
    reader_started = kube.container("reader").container.attrs["State"]["StartedAt"]
    failed = cmd(
        "snapshot", "--volume", "--pod", kube.pod, "--claim", kube.claim,
        "--helper-image", "localhost/snapvol/no-such-image:0", exit_code=11,
    )  # fmt: skip
    assert "no-such-image" in failed.stderr
    assert _all_running(kube)
    reader = kube.container("reader").reload()
    assert reader.container.attrs["State"]["StartedAt"] != reader_started  # stopped, started
    kube.container("db").wait_ready()
    assert cmd.json("ls")[0]["status"] == "failed"


def test_unknown_pods_and_claims_are_one_line_errors(kube: KubeApp, cmd) -> None:
    missing_pod = cmd("snapshot", "--volume", "--pod", "svk-nosuch", exit_code=3)
    assert "no pod named 'svk-nosuch'" in missing_pod.stderr
    assert kube.pod in missing_pod.stderr  # the pods there are, named
    gone = cmd("snapshot", "--volume", "--pod", "svk-nosuch-pod-0", exit_code=3)
    assert "no pod named 'svk-nosuch-pod-0'" in gone.stderr  # a Deployment's pod, by its name
    assert "play its manifest again (podman kube play)" in gone.stderr
    missing_claim = cmd(
        "snapshot", "--volume", "--pod", kube.pod, "--claim", "svk-nosuch", exit_code=3
    )
    assert "no claim 'svk-nosuch'" in missing_claim.stderr
    other = f"svk-other-{kube.claim}"
    kube.podman.podman("volume", "create", other)
    try:
        unmounted = cmd("snapshot", "--volume", "--pod", kube.pod, "--claim", other, exit_code=2)
        assert f"no container of pod {kube.pod} mounts claim {other!r}" in unmounted.stderr
    finally:
        kube.podman.podman("volume", "rm", "-f", other)
    claim_alone = cmd("snapshot", "--volume", "--claim", kube.claim, exit_code=2)
    assert "--claim goes with --pod" in claim_alone.stderr
    for err in (missing_pod, gone, missing_claim, unmounted, claim_alone):
        assert len(err.stderr.strip().splitlines()) == 1, err.stderr
    assert _all_running(kube)  # nothing was stopped


def _sh(app: KubeApp, script: str) -> str:
    code, out = app.container("left").container.exec_run(["sh", "-c", script])
    assert code == 0, out
    return out.decode()


def _tree(app: KubeApp) -> str:
    """Every path of the claim with its type, size, mode and owner, and every file's SHA-256."""
    return _sh(
        app,
        "cd /data && find . -printf '%p %y %s %m %u:%g %l\\n' | sort && "
        "find . -type f -exec sha256sum {} + | sort",
    )


def test_a_claim_several_containers_write_is_named_with_container(writers: KubeApp, cmd) -> None:
    _sh(writers, "mkdir -p /data/sub && seq 1 5000 > /data/sub/a && echo hi > /data/b "
        "&& ln -s b /data/c && chmod 600 /data/b")  # fmt: skip
    before = _tree(writers)
    assert "./sub/a f" in before

    # One container of the pod, while the other writes: refused, pointing at the pod whole.
    alone = cmd("snapshot", "--volume", "--container", f"{writers.pod}-left", exit_code=13)
    assert f"also mounted by running container(s) {writers.pod}-right" in alone.stderr
    assert alone.stderr.strip().endswith(
        f"or take pod {writers.pod} whole: --pod {writers.pod} --container left"
    )
    ambiguous = cmd("snapshot", "--volume", "--pod", writers.pod, exit_code=2)
    assert "mounted read-write by several containers" in ambiguous.stderr
    assert "(left, right)" in ambiguous.stderr
    assert "(retry with --container NAME)" in ambiguous.stderr
    unknown = cmd(
        "snapshot", "--volume", "--pod", writers.pod, "--container", "middle", exit_code=3
    )
    assert f"pod {writers.pod} has no container 'middle'" in unknown.stderr

    cmd("snapshot", "--volume", "--pod", writers.pod, "--container", "left")
    snap = cmd.json("ls")[0]
    assert snap["container"] == f"{writers.pod}-left" and not snap["meta"]["is_postgres"]
    assert snap["meta"]["pod"] == writers.pod and snap["meta"]["claim"] == writers.claim
    assert snap["meta"]["pod_container"] == "left"  # the restore picks it again

    _sh(writers, "rm /data/b && echo new > /data/new && echo more >> /data/sub/a")
    assert _tree(writers) != before
    cmd("restore", snap["id"], "--yes")  # the snapshot's pod and claim
    assert writers.pod_state() and all(s == "running" for s in writers.pod_state().values())
    assert len(writers.pod_state()) == 3
    assert _tree(writers) == before


# snapvol killed (SIGKILL, by itself) right after it stopped the pod: the real code runs, only
# the point of death is chosen here.
KILLED_ONCE_STOPPED = """
import os, signal
from snapvol.adapters.engine import Engine
from snapvol.cli import main
stop = Engine.stop_pod
def killing(self, pod_id, timeout):
    stop(self, pod_id, timeout)
    os.kill(os.getpid(), signal.SIGKILL)
Engine.stop_pod = killing
main()
"""


def test_a_pod_snapvol_dies_holding_is_started_whole_by_the_rescue(kube: KubeApp) -> None:
    reader_started = kube.container("reader").container.attrs["State"]["StartedAt"]
    died = subprocess.run(
        [sys.executable, "-c", KILLED_ONCE_STOPPED, "snapshot", "--volume", "--pod", kube.pod],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert died.returncode == -signal.SIGKILL, died.stderr
    deadline = time.monotonic() + 90
    while not _all_running(kube) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _all_running(kube), kube.pod_state()
    reader = kube.container("reader").reload()
    assert reader.container.attrs["State"]["StartedAt"] != reader_started  # stopped, started
    kube.container("db").wait_ready()


def test_a_pod_container_someone_starts_meanwhile_spoils_the_snapshot(
    kube: KubeApp, cmd, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapvol.adapters.engine import Engine

    stop = Engine.stop_pod

    def stop_then_theirs(self: Engine, pod_id: str, timeout: int) -> None:
        stop(self, pod_id, timeout)
        self.start(f"{kube.pod}-reader")  # someone else starts the sidecar, not the server

    monkeypatch.setattr(Engine, "stop_pod", stop_then_theirs)
    failed = cmd("snapshot", "--volume", "--pod", kube.pod, exit_code=11)
    assert f"pod {kube.pod} was started by someone else" in failed.stderr
    assert "not a cold copy" in failed.stderr
    assert cmd.json("ls")[0]["status"] == "failed"
    states = kube.pod_state()  # theirs now: left as it is
    assert states[f"{kube.pod}-reader"] == "running" and states[f"{kube.pod}-db"] == "exited"


def test_a_pod_is_locked_whole(kube: KubeApp, cmd) -> None:
    from snapvol import locking

    # Another run holds the sidecar (it would stop and start the same pod): refused, untouched.
    reader = kube.container("reader").container
    lock = locking.acquire(str(reader.id), str(reader.name), "snapshot --volume (another run)")
    try:
        refused = cmd("snapshot", "--volume", "--pod", kube.pod, exit_code=9)
    finally:
        lock.release()
    assert reader.name in refused.stderr and "another run" in refused.stderr
    assert _all_running(kube)
    cmd("snapshot", "--volume", "--pod", kube.pod)  # free again
