"""Volume snapshots and restores: the target, the lanes that read and write it, host tar, the
downtime guard and its watchdog."""
