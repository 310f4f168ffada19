"""python -m demo's command line without a database: help, usage errors, confirmation."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from demo.cli import cli

COMMANDS = ["init", "usuario", "producto", "pedido", "info", "seed", "counts", "eliminar", "ping"]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("DEMO_DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"):
        monkeypatch.delenv(var, raising=False)
    # Nothing listens on port 9 of a test host; if a test did connect it would fail fast.
    monkeypatch.setenv("PGPORT", "9")
    return CliRunner()


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.stdout
    assert "12345" not in result.stdout


@pytest.mark.parametrize("group", ["usuario", "producto", "pedido"])
def test_groups_have_crear_and_ver(runner: CliRunner, group: str) -> None:
    result = runner.invoke(cli, [group, "--help"])
    assert result.exit_code == 0
    assert "crear" in result.stdout and "ver" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["usuario", "crear", "--id", "x", "--nombre", "a", "--apellido", "b"],
        ["usuario", "crear", "--nombre", "a", "--apellido", "b"],
        ["producto", "crear", "--nombre", "a", "--manufacturador", "b", "--precio", "cheap"],
        ["pedido", "ver", "uno"],
        ["seed", "--pedidos", "-5"],
        ["nope"],
    ],
)
def test_usage_errors_are_one_line(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")


def test_bad_pgport_is_an_error_line(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPORT", "port")
    result = runner.invoke(cli, ["counts"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: PGPORT must be a port number (1-65535), not 'port'"
    ]


def test_eliminar_without_yes_asks_and_stops_on_no(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["eliminar"], input="n\n")
    assert result.exit_code == 1
    assert "Drop usuarios, productos and pedidos" in result.stdout
    assert "***" in result.stdout and "12345" not in result.stdout
    assert result.stderr.splitlines() == ["Error: aborted"]


def test_eliminar_without_an_answer_does_nothing(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["eliminar"], input="")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "Error: aborted"
