"""Running PostgreSQL's tools in the container: the pipelines (run here with this machine's sh
and zstd), the password's way in, and the server's words picked out of a failure."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import zstandard

from snapvol.pg import logical, pgexec


def test_pg_message_picks_the_server_words() -> None:
    stderr = (
        "psql:<stdin>:40: ERROR:  extra data after last expected column\n"
        "CONTEXT:  COPY pedidos, line 2500\nsnapvol: exit statuses: zstd=0 psql=3\n"
    )
    assert pgexec.pg_message(stderr) == "ERROR:  extra data after last expected column"
    assert pgexec.pg_message("") == "no error message"
    assert pgexec.pg_message("something\nelse\n") == "else"


# --- the in-container pipelines, run with this machine's sh ------------------------------------

needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd on this machine")


def run_script(script: str, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", script, "snapvol", *argv], input=stdin, capture_output=True, check=False
    )


@needs_zstd
def test_compressing_pipeline_fails_unless_both_sides_succeed() -> None:
    ok = run_script(pgexec.compressing(3), "printf", "hello")
    assert ok.returncode == 0
    assert zstandard.ZstdDecompressor().stream_reader(ok.stdout).read() == b"hello"
    assert logical._ZSTD_REPORT.findall(ok.stderr.decode())[-1] == ("5", str(len(ok.stdout)))

    failed = run_script(pgexec.compressing(3), "sh", "-c", "printf partial; exit 3")
    assert failed.returncode == 1 and b"pg_dump=3" in failed.stderr

    broken = pgexec.pipeline('"$@"', "zstd --no-such-option", ("pg_dump", "zstd"))
    zstd_failed = run_script(broken, "printf", "hello")
    assert zstd_failed.returncode == 1 and b"zstd=1" in zstd_failed.stderr


@needs_zstd
def test_decompressing_pipeline_fails_unless_both_sides_succeed() -> None:
    data = zstandard.ZstdCompressor().compress(b"select 1;\n" * 1000)
    ok = run_script(pgexec.decompressing("psql"), "wc", "-c", stdin=data)
    assert ok.returncode == 0 and ok.stdout.strip() == b"10000"
    corrupt = run_script(pgexec.decompressing("psql"), "wc", "-c", stdin=data[:-20])
    assert corrupt.returncode == 1 and b"zstd=1" in corrupt.stderr
    tool_failed = run_script(pgexec.decompressing("psql"), "false", stdin=data)
    assert tool_failed.returncode == 1 and b"psql=1" in tool_failed.stderr


def test_password_comes_from_the_environment_not_the_arguments() -> None:
    argv = pgexec.shell(["sh", "-c", 'printf "%s" "$PGPASSWORD"'])
    assert not any("s3cret" in arg for arg in argv)
    env = {"PATH": os.environ["PATH"], "POSTGRES_PASSWORD": "s3cret"}
    out = subprocess.run(argv, env=env, capture_output=True, check=True).stdout
    assert out == b"s3cret"
