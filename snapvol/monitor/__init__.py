"""Watching snapvol run unattended: a Prometheus textfile and notifications."""
