"""Running snapvol unattended: a configuration file, cron schedules, systemd and cron units, and
a small long-running mode for a compose sidecar."""
