"""Which lane reads (or writes) a claim: a helper pod, or this host when the data is here.

A ``hostPath`` or ``local`` volume (local-path provisioner volumes are ``hostPath``) is a
directory on one node. When snapvol runs on that node as root, it reads and writes that
directory itself with the host lane (``snapvol.volume.host_lane``, the Docker host lane's own
code: ``hosttar.DirTar`` out, ``hosttar.extract`` in, ``hosttar.scan`` to read back), which
keeps what tar in a helper pod cannot (extended attributes, times to the nanosecond) and needs
no helper pod, no image on the node and no exec through the API.

"This node" is known by name: the node name given (``--node-name``, ``SNAPVOL_NODE_NAME``:
set it from the downward API's ``spec.nodeName`` when snapvol runs in a pod), else this
machine's host name in lower case, which is what the kubelet registers a node as unless it was
told otherwise (``--hostname-override``, some clouds' DNS names): there, give the name. The
volume's node is its node affinity's (``kubernetes.io/hostname``), else the node the workload's
pod ran on. The directory is the volume's path, as the node sees it: snapvol must see the same
path (a pod running snapvol mounts the node's directory at the same path).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from snapvol.errors import OperationFailed

if TYPE_CHECKING:  # the command line reads LANES: no Kubernetes client for that
    from snapvol.kube.claims import ClaimTarget

AUTO, HOST, POD = "auto", "host", "pod"
LANES = (AUTO, HOST, POD)
"""auto: the host lane when it can serve the claim, else a helper pod; host: only this host
(refused when it cannot); pod: always a helper pod."""


def this_node(node_name: str | None = None) -> str:
    """The name of the node snapvol runs on: ``node_name`` if given, else the host name as
    the kubelet registers it (in lower case)."""
    return node_name or socket.gethostname().strip().lower()


def why_not_here(target: ClaimTarget, node_name: str | None, *, writing: bool) -> str | None:
    """Why the host lane cannot serve ``target``'s claim on this machine (None: it can)."""
    if not target.host_path:
        return f"its volume {target.pv} is not a hostPath or local volume (no directory on a node)"
    node = this_node(node_name)
    if target.node is None:
        return f"its volume {target.pv} is tied to no node, so its directory may be on any"
    if target.node != node:
        return f"its volume {target.pv} is on node {target.node} and this machine is node {node}"
    if os.geteuid() != 0:
        return "snapvol does not run as root here"
    path = Path(target.host_path)
    if not path.is_absolute() or not path.is_dir():
        return f"its directory {target.host_path} is not a directory on this machine"
    if writing and not os.access(path, os.W_OK):
        return f"its directory {target.host_path} cannot be written here (read-only?)"
    return None


def host_directory(
    target: ClaimTarget, lane: str, node_name: str | None, *, writing: bool = False
) -> Path | None:
    """The claim's directory when the host lane serves it (``lane``: one of ``LANES``), else
    None: a helper pod does. ``lane`` host when the host lane cannot is refused (nothing has
    changed yet); ``writing``: for a restore, which writes the directory too."""
    if lane == POD:
        return None
    why = why_not_here(target, node_name, writing=writing)
    if why is None:
        assert target.host_path is not None
        return Path(target.host_path)
    if lane == HOST:
        retry = {"kube_lane": POD}
        if target.node is not None and target.node != this_node(node_name):
            retry["node_name"] = ""  # when this machine is that node by another name
        raise OperationFailed(
            f"claim {target.claim} cannot be {'written' if writing else 'read'} on this node: "
            f"{why}; nothing was changed",
            retry_with=retry,
        )
    return None


def reader(directory: Path | None) -> str:
    """How the record names the lane (``Lane.name``): host, or pod."""
    return HOST if directory is not None else POD
