"""Recognising a PostgreSQL server by what runs and what is on disk (pure logic, and the probe
script run by this host's own sh on real directories)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from snapvol.pg.cluster import (
    Cluster,
    choose_cluster,
    choose_major,
    data_dir_args,
    major_of,
    parse_binary_versions,
    parse_probe,
    postmaster_argv,
    probe_argv,
)

OFFICIAL = [
    "postgres",
    "postgres: checkpointer",
    "postgres: background writer",
    "postgres: walwriter",
]
COMPANY = [
    "/bin/sh /opt/company/run.sh serve",
    "setpriv --reuid=postgres /usr/lib/postgresql/15/bin/pg_ctl start -D /srv/pg/cluster",
    "/usr/lib/postgresql/15/bin/postgres -D /srv/pg/cluster -c listen_addresses=",
    "postgres: main: checkpointer",
]


def test_the_server_is_the_process_running_the_server_program() -> None:
    assert postmaster_argv(OFFICIAL) == ["postgres"]
    assert postmaster_argv(COMPANY) == [
        "/usr/lib/postgresql/15/bin/postgres",
        "-D",
        "/srv/pg/cluster",
        "-c",
        "listen_addresses=",
    ]
    assert postmaster_argv(["/opt/bitnami/postgresql/bin/postmaster -D /bitnami/data"]) == [
        "/opt/bitnami/postgresql/bin/postmaster",
        "-D",
        "/bitnami/data",
    ]


@pytest.mark.parametrize(
    "processes",
    [
        [],
        ["sh -c while :; do sleep 1; done", "sleep 1"],
        ["postgres: checkpointer", "postgres: walwriter"],  # children only: titles, not a server
        # an entrypoint initialising a cluster: single-user mode, not a server yet
        ["bash /usr/local/bin/docker-entrypoint.sh postgres", "postgres --single -F template1"],
        ["/usr/bin/pg_ctl start -D /srv/pg", "postgres -C data_directory"],
        ["python3 -m postgres_exporter", "/usr/bin/postgres_exporter --web.listen-address=:9187"],
    ],
)
def test_no_server_among(processes: list[str]) -> None:
    assert postmaster_argv(processes) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["postgres"], []),
        (["postgres", "-D", "/srv/pg/cluster"], ["/srv/pg/cluster"]),
        (["postgres", "-D/srv/pg//cluster/"], ["/srv/pg/cluster"]),
        (["postgres", "--data-directory=/a", "-D", "/etc/pg"], ["/a", "/etc/pg"]),
        (
            ["postgres", "-D", "/etc/postgresql/15/main", "-c", "data_directory=/var/lib/x"],
            ["/var/lib/x", "/etc/postgresql/15/main"],
        ),
        (["postgres", "-cdata_directory='/q'"], ["/q"]),
        (["postgres", "-D", "relative/dir", "-c", "port=5433"], []),  # never guessed
        (["postgres", "-D"], []),
    ],
)
def test_data_directory_from_the_server_command_line(argv: list[str], expected: list[str]) -> None:
    assert data_dir_args(argv) == expected


def line(how: str, version: str, path: str, port: str = "", sockets: str = "") -> str:
    return "\t".join(["cluster", how, version, "100", "postgres", port, sockets, path])


def test_probe_output_is_parsed_and_the_surest_cluster_chosen() -> None:
    output = "\n".join(
        [
            "sh: stat: not found",
            line("found", "15", "/srv/b/deeper/cluster"),
            line("found", "15", "/srv/a/cluster", "5433", "/tmp"),
            line("found", "not-a-version", "/srv/c"),
            line("found", "15", "relative/path"),
            "cluster\tfound\t15\ttoo few fields",
            line("found", "9.6", "/srv/old/dir\twith a tab"),
        ]
    )
    clusters = parse_probe(output)
    assert [c.path for c in clusters] == [
        "/srv/b/deeper/cluster",
        "/srv/a/cluster",
        "/srv/old/dir\twith a tab",
    ]
    assert clusters[1] == Cluster(
        "/srv/a/cluster", "15", "100", "postgres", False, socket_dir="/tmp", port="5433"
    )
    chosen = choose_cluster(clusters)
    assert chosen is not None and chosen.path == "/srv/a/cluster"  # the shallowest found
    named = parse_probe(line("named", "16", "/var/lib/postgresql/data") + "\n" + output)
    chosen = choose_cluster(named)
    assert chosen is not None and (chosen.path, chosen.version) == (
        "/var/lib/postgresql/data",
        "16",
    )
    assert choose_cluster([]) is None
    live = parse_probe(
        line("found", "15", "/srv/copy/of/old")
        + "\n"
        + line("found", "15", "/srv/live/deeper/cluster", "5432", "/var/run/postgresql")
        + "\n"
        + line("found", "15", "/srv/x")
    )
    chosen = choose_cluster(live)
    assert chosen is not None and chosen.path == "/srv/live/deeper/cluster"  # the one in use


def make_cluster(root: Path, version: str) -> Path:
    (root / "global").mkdir(parents=True)
    (root / "global" / "pg_control").write_bytes(b"\0" * 64)
    (root / "PG_VERSION").write_text(version + "\n")
    (root / "base" / "1").mkdir(parents=True)
    (root / "base" / "1" / "PG_VERSION").write_text(version + "\n")  # every database has one
    return root


def run_probe(named: list[Path], search: list[Path]) -> list[Cluster]:
    argv = probe_argv([str(p) for p in named], [str(p) for p in search])
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    return parse_probe(done.stdout)


def test_the_probe_finds_a_cluster_below_a_mount_whatever_pgdata_says(tmp_path: Path) -> None:
    mount = tmp_path / "srv" / "company"
    cluster = make_cluster(mount / "pg" / "cluster", "15")
    (mount / "pg" / "notes").mkdir()
    (mount / "pg" / "notes" / "PG_VERSION").write_text("15\n")  # no pg_control: not a cluster
    (cluster / "postmaster.pid").write_text(
        "\n".join(["42", str(cluster), "1700000000", "5433", "/srv/company/run", "*", "", "ready"])
    )
    other = tmp_path / "empty-default"
    other.mkdir()

    found = run_probe([other, tmp_path / "missing"], [mount, tmp_path / "missing"])
    assert [(c.path, c.version, c.named) for c in found] == [(str(cluster), "15", False)]
    assert (found[0].port, found[0].socket_dir) == ("5433", "/srv/company/run")
    assert found[0].owner_uid == str(cluster.stat().st_uid)

    # a named directory that is a cluster wins, and the search is not even made
    named = run_probe([other, cluster], [mount])
    assert [(c.path, c.named) for c in named] == [(str(cluster), True)]
    assert run_probe([other], [other]) == []


@pytest.mark.parametrize(
    ("version", "major"),
    [
        ("15", "15"),
        ("15.8", "15"),
        ("15.20 (Debian 15.20-0+deb12u1)", "15"),
        ("16beta1", "16"),
        ("9.6", "9.6"),
        ("9.6.24", "9.6"),
        ("9", "9"),
        ("none", None),
        ("", None),
    ],
)
def test_major_of(version: str, major: str | None) -> None:
    assert major_of(version) == major


def test_the_major_version_that_will_serve_a_cluster() -> None:
    output = (
        "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"
        "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"  # on PATH and in its bin dir
        "postgres (PostgreSQL) 9.6.24\n"
        "sh: 1: /usr/pgsql-*/bin/postgres: not found\n"
    )
    assert parse_binary_versions(output) == ["15", "9.6"]
    assert parse_binary_versions("") == []
    assert choose_major(["15"], None) == "15"
    assert choose_major(["15"], "14") == "15"  # the image's programs, not the old cluster's
    assert choose_major(["15", "9.6"], "9.6") == "9.6"  # several: the one the cluster runs on
    assert choose_major(["15", "16"], "14") is None  # cannot tell
    assert choose_major(["15", "16"], None) is None
    assert choose_major([], "15") == "15"  # no programs found where we look: the cluster's own
    assert choose_major([], None) is None
