"""The ``kubernetes`` source: cold copies of a workload's persistent volume claims.

``client`` is the adapter (the only module that imports the official client), ``claims``
resolves a workload to its claim, volume and node, ``scale`` scales it down and back (recorded
on the workload, recoverable), ``helper_pod`` is the pod that mounts the claim, ``execstream``
and ``lane`` carry its tar through the API into the archive pipeline, and ``cold`` ties them
into a snapshot and a restore. docs/kubernetes.md has the design and the RBAC it needs.
"""
