"""Restore drills: prove that a snapshot restores, before the day it must.

A drill restores a snapshot into a throwaway PostgreSQL server (``sandbox``: the snapshot's image,
no network, a volume of its own; never the snapshot's container or volume), starts it, and checks
it (``checks``: pg_amcheck on every database, the recorded tables and row counts, an optional
query of the user's). ``run`` records each drill and its result in the store.
"""
