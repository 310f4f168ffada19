"""Copies of snapshots in a restic repository: what snapvol writes there and how it reads it back.

Business logic over the restic adapter (``snapvol.adapters.restic``, the only module that runs
restic): the layout of a copy (``manifest``), copying (``copy``), and reading copies back.
"""

TAG = "snapvol"
"""Every restic snapshot snapvol writes carries this tag (``manifest`` adds the others)."""
