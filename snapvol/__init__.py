"""snapvol: fast, verified snapshots and safe restores of stateful Docker services."""

__version__ = "0.1.0"
