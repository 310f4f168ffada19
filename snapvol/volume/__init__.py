"""Volume snapshots and restores: the target (``target``), the lanes that read and write it
(``lane``: the interface; ``host_lane``, ``endpoint_lane``), what snapshot and restore share
(``archiving``), host tar, the downtime guard and its watchdog."""
