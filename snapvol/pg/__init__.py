"""PostgreSQL specifics: cluster detection and control data, exec of psql, pg_dump and
pg_restore, dump files, SQL quoting and scripts, logical snapshots and restores."""
