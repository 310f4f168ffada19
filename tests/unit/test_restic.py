"""The restic adapter's pure parts: configuration, environment, redaction, parsing, error mapping.

The argv tests run a stand-in ``restic`` (a shell script that records its arguments and
environment), so they need no restic and no repository.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from snapvol.adapters.restic import (
    Node,
    Repository,
    Restic,
    display_location,
    parse_backup_summary,
    parse_nodes,
    parse_snapshots,
    parse_time,
    parse_version,
    translate,
)
from snapvol.errors import (
    IntegrityError,
    LockedError,
    RepositoryAuthError,
    RepositoryDamagedError,
    RepositoryError,
    RepositoryExistsError,
    RepositoryLockedError,
    RepositoryMissingError,
    RepositorySnapshotMissingError,
    RepositoryUnreachableError,
    ResticMissingError,
    UsageError,
)

PASSWORD = "hunter2-correct-horse"


def pwfile(tmp_path: Path, mode: int = 0o600, text: str = PASSWORD) -> Path:
    path = tmp_path / "pw"
    path.write_text(text)
    path.chmod(mode)
    return path


# --- display and redaction ---


@pytest.mark.parametrize(
    ("location", "display"),
    [
        ("/srv/restic", "/srv/restic"),
        ("rest:http://alice:s3cret@127.0.0.1:8000/repo", "rest:http://127.0.0.1:8000/repo"),
        ("rest:https://tok3n@host/alice/", "rest:https://host/alice/"),
        ("rest:https://u:p@ss@host/r", "rest:https://host/r"),
        ("rest:http://127.0.0.1:8000/", "rest:http://127.0.0.1:8000/"),
        ("s3:http://127.0.0.1:8333/bucket/path", "s3:http://127.0.0.1:8333/bucket/path"),
        ("s3:https://user:key@minio.local/bucket", "s3:https://minio.local/bucket"),
        ("sftp:backup@127.0.0.1:/srv/repo", "sftp:backup@127.0.0.1:/srv/repo"),
        ("sftp://backup@127.0.0.1:2222//srv/repo", "sftp://backup@127.0.0.1:2222//srv/repo"),
        ("sftp://backup:pw@127.0.0.1//srv/repo", "sftp://backup@127.0.0.1//srv/repo"),
    ],
)
def test_display_removes_credentials(location: str, display: str) -> None:
    assert display_location(location) == display


def test_redact_hides_url_credentials_and_password() -> None:
    repo = Repository(
        location="rest:http://alice:s3cret@127.0.0.1:8000/repo",
        password_env={"RESTIC_PASSWORD": PASSWORD},
    )
    text = (
        "Fatal: unable to open rest:http://alice:s3cret@127.0.0.1:8000/repo\n"
        f"echo alice:s3cret and s3cret and {PASSWORD}\n"
    )
    text += 'Head "http://alice:***@127.0.0.1:8000/repo/config": refused; mail bob@example.org\n'
    out = repo.redact(text)
    assert "alice" not in out
    assert "mail bob@example.org" in out  # only URLs' user parts go
    assert "s3cret" not in out
    assert PASSWORD not in out
    assert "rest:http://127.0.0.1:8000/repo" in out


# --- configuration ---


def test_configure_prefers_the_password_file(tmp_path: Path) -> None:
    pw = pwfile(tmp_path)
    env = {"RESTIC_PASSWORD": "other", "RESTIC_PASSWORD_FILE": "/elsewhere"}
    repo = Repository.configure("/r", pw, environ=env)
    assert repo.password_file == pw
    assert repo.password_env == {}
    child = repo.child_env(env)
    assert child["RESTIC_PASSWORD_FILE"] == str(pw)
    assert "RESTIC_PASSWORD" not in child


def test_configure_falls_back_to_restics_variables(tmp_path: Path) -> None:
    pw = pwfile(tmp_path)
    assert Repository.configure("/r", environ={"RESTIC_PASSWORD_FILE": str(pw)}).password_file == pw
    cmd = {"RESTIC_PASSWORD_COMMAND": "pass show restic", "RESTIC_PASSWORD": "x"}
    repo = Repository.configure("/r", environ=cmd)
    assert repo.password_env == {"RESTIC_PASSWORD_COMMAND": "pass show restic"}
    assert Repository.configure("/r", environ={"RESTIC_PASSWORD": "x"}).password_env == {
        "RESTIC_PASSWORD": "x"
    }


def test_configure_without_repository_or_password_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no repository"):
        Repository.configure("", environ={"RESTIC_PASSWORD": "x"})
    with pytest.raises(UsageError, match=r"no password for repository rest:http://h/r"):
        Repository.configure("rest:http://u:secret@h/r", environ={})


def test_child_env_replaces_any_other_repository_and_password(tmp_path: Path) -> None:
    pw = pwfile(tmp_path)
    repo = Repository.configure("/mine", pw, env={"AWS_ACCESS_KEY_ID": "k"}, environ={})
    base = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "RESTIC_REPOSITORY": "/theirs",
        "RESTIC_REPOSITORY_FILE": "/theirs-file",
        "RESTIC_PASSWORD": "theirs",
        "RESTIC_PASSWORD_COMMAND": "echo theirs",
        "RESTIC_CACHE_DIR": "/cache",
    }
    env = repo.child_env(base)
    assert env["RESTIC_REPOSITORY"] == "/mine"
    assert env["RESTIC_PASSWORD_FILE"] == str(pw)
    for gone in ("RESTIC_REPOSITORY_FILE", "RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND"):
        assert gone not in env
    assert env["RESTIC_CACHE_DIR"] == "/cache"  # restic's own settings pass through
    assert env["AWS_ACCESS_KEY_ID"] == "k"
    assert env["TZ"] == "UTC"
    assert env["PATH"] == "/usr/bin"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_password_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    pw = pwfile(tmp_path, mode)
    repo = Repository.configure("/r", pw, environ={})
    with pytest.raises(UsageError, match=f"readable by others.*chmod 600 {pw}") as info:
        Restic(repo)
    assert PASSWORD not in str(info.value)


def test_missing_or_empty_password_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        Restic(Repository.configure("/r", tmp_path / "nope", environ={}))
    with pytest.raises(UsageError, match="is empty"):
        Restic(Repository.configure("/r", pwfile(tmp_path, text=""), environ={}))
    Restic(Repository.configure("/r", pwfile(tmp_path, 0o400), environ={}))  # owner-only: fine


# --- argv: what ps shows ---


@pytest.fixture
def fake_restic(tmp_path: Path) -> Path:
    """A stand-in restic that records its argv and environment, and prints no snapshots."""
    script = tmp_path / "restic"
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\nenv > {tmp_path}/env\necho \'[]\'\n'
    )
    script.chmod(0o755)
    return script


def test_argv_never_holds_the_location_or_password(tmp_path: Path, fake_restic: Path) -> None:
    location = "rest:http://alice:s3cret@127.0.0.1:8000/repo"
    repo = Repository.configure(location, environ={"RESTIC_PASSWORD": PASSWORD})
    restic = Restic(repo, binary=str(fake_restic))
    assert restic.snapshots(tags=["snapvol"]) == []
    argv = (tmp_path / "argv").read_text()
    assert argv.splitlines() == ["--no-lock", "snapshots", "--json", "--tag=snapvol"]
    assert "s3cret" not in argv and PASSWORD not in argv and "127.0.0.1" not in argv
    env = (tmp_path / "env").read_text().splitlines()
    assert f"RESTIC_REPOSITORY={location}" in env
    assert f"RESTIC_PASSWORD={PASSWORD}" in env


def test_ids_and_names_cannot_become_options(tmp_path: Path, fake_restic: Path) -> None:
    restic = Restic(Repository.configure("/r", pwfile(tmp_path), environ={}), str(fake_restic))
    restic.forget(["--help"], prune=True)
    assert (tmp_path / "argv").read_text().splitlines() == ["forget", "--prune", "--", "--help"]
    with pytest.raises(UsageError):
        restic.dump("-x", "vol.tar")
    with pytest.raises(UsageError):
        restic.dump("abcd", "../x")
    with pytest.raises(UsageError):
        restic.snapshots(tags=["a,b"])
    with pytest.raises(UsageError, match="subset"):
        restic.check(subset="all of it")


def test_restic_dies_with_snapvol(
    tmp_path: Path, fake_restic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """restic runs under ``setpriv --pdeathsig KILL``: killed with us, it cannot read our end of
    its stdin as the end of the stream and save a truncated snapshot."""
    import subprocess

    seen: list[list[str]] = []
    real = subprocess.Popen

    def spy(argv: list[str], **kwargs: object) -> object:
        seen.append(list(argv))
        return real(argv, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", spy)
    restic = Restic(Repository.configure("/r", pwfile(tmp_path), environ={}), str(fake_restic))
    restic.snapshots()
    (argv,) = seen
    assert Path(argv[0]).name == "setpriv"
    assert argv[1:4] == ["--pdeathsig", "KILL", str(fake_restic)]


def test_restic_missing_says_how_to_install(tmp_path: Path) -> None:
    restic = Restic(
        Repository.configure("/r", pwfile(tmp_path), environ={}), str(tmp_path / "none")
    )
    with pytest.raises(ResticMissingError, match="apt-get install restic") as info:
        restic.snapshots()
    assert info.value.exit_code == RepositoryError.exit_code
    assert "\n" not in info.value.message


# --- parsing ---


def test_parse_time_keeps_microseconds_and_zone() -> None:
    assert parse_time("2024-01-02T03:04:05Z") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_time("2024-01-02T03:04:05.123456789+02:00") == datetime(
        2024, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2))
    )
    assert parse_time("2024-01-02T03:04:05.5-01:00").microsecond == 500000
    with pytest.raises(RepositoryError):
        parse_time("yesterday")


def test_parse_snapshots_from_restic_014() -> None:
    text = (
        '[{"time":"2024-01-02T03:04:05Z","tree":"24396b","paths":["/vol.tar"],"hostname":"h1",'
        '"username":"root","tags":["a","b"],"id":"1386102f4ff2","short_id":"1386102f"},'
        '{"time":"2023-05-06T07:08:09.000000001+00:00","tree":"ff","paths":["/x"],'
        '"hostname":"h2","id":"99aa","short_id":"99aa"}]'
    )
    old, new = parse_snapshots(text)
    assert (old.id, old.tags, old.paths, old.hostname) == ("99aa", (), ("/x",), "h2")
    assert (new.short_id, new.tags, new.paths) == ("1386102f", ("a", "b"), ("/vol.tar",))
    assert new.time == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_snapshots("null") == []
    with pytest.raises(RepositoryError):
        parse_snapshots("not json")


def test_parse_backup_summary_takes_the_summary_line() -> None:
    lines = [
        b'{"message_type":"status","percent_done":0,"total_files":1}\n',
        b"some text\n",
        b'{"message_type":"summary","data_added":3000393,"total_bytes_processed":3000000,'
        b'"snapshot_id":"1386102f"}\n',
    ]
    summary = parse_backup_summary(lines)
    assert summary is not None
    assert (summary["snapshot_id"], summary["data_added"]) == ("1386102f", 3000393)
    assert parse_backup_summary([b'{"message_type":"status"}']) is None


def test_parse_version() -> None:
    assert parse_version("restic 0.14.0 compiled with go1.19.8 on linux/amd64") == (0, 14, 0)
    assert parse_version("restic 0.16.4 (v0.16.4-0) compiled") >= (0, 14)
    assert parse_version("garbage") == (0, 0, 0)


# --- error mapping: restic 0.14's own words ---

REST = Repository(
    location="rest:http://alice:s3cret@127.0.0.1:8000/repo",
    password_env={"RESTIC_PASSWORD": PASSWORD},
)
CASES = [
    ("Fatal: wrong password or no key found\n", RepositoryAuthError, "wrong password"),
    (
        "Fatal: unable to open config file: stat /x/config: no such file or directory\n"
        "Is there a repository at the following location?\n/x\n",
        RepositoryMissingError,
        "snapvol repo init",
    ),
    (
        "Fatal: unable to open config file: client.Head: Head "
        '"http://alice:***@127.0.0.1:8000/repo/config": dial tcp 127.0.0.1:8000: connect: '
        "connection refused\nIs there a repository at the following location?\n"
        "rest:http://alice:***@127.0.0.1:8000/repo\n",
        RepositoryUnreachableError,
        "connection refused",
    ),
    (
        "subprocess ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused\n"
        "Fatal: unable to open repository at sftp:u@127.0.0.1:/x: unable to start the sftp "
        "session, error: EOF\n",
        RepositoryUnreachableError,
        "cannot reach",
    ),
    (
        "unable to create lock in backend: repository is already locked by PID 3647 on vm by "
        "root (UID 0, GID 0)\nlock was created at 2026-12-03 10:36:18 (2.8s ago)\n",
        RepositoryLockedError,
        "PID 3647",
    ),
    (
        "Pack ID does not match, want 44f0f9, got 4cb659\nFatal: repository contains errors\n",
        RepositoryDamagedError,
        "Pack ID does not match",
    ),
    (
        "cannot dump file: decrypting blob dc44c2 failed: ciphertext verification failed\n",
        RepositoryDamagedError,
        "ciphertext",
    ),
    (
        'invalid id "deadbeef": no matching ID found for prefix "deadbeef"\n',
        RepositorySnapshotMissingError,
        "deadbeef",
    ),
    (  # restic 0.14, a short id two snapshots share: a fetch looks the manifest up instead
        'invalid id "e": multiple IDs with prefix "e" found\n',
        RepositorySnapshotMissingError,
        "multiple IDs",
    ),
    (
        'cannot dump file: path "/v.0123abcd.tar" not found in snapshot\n',
        RepositorySnapshotMissingError,
        "not found in snapshot",
    ),
    (
        "Fatal: create repository at /x failed: config file already exists\n",
        RepositoryExistsError,
        "already exists",
    ),
    (
        "Fatal: unable to open config file: Stat: The AWS Access Key Id you provided does not "
        "exist in our records.\nIs there a repository at the following location?\n",
        RepositoryAuthError,
        "refused access",
    ),
    ("\x1b[2Ksomething odd happened\n", RepositoryError, "restic exit 1"),
]


@pytest.mark.parametrize(("stderr", "kind", "words"), CASES)
def test_translate(stderr: str, kind: type[RepositoryError], words: str) -> None:
    err = translate(REST, stderr + f"{REST.location} {PASSWORD}\n", 1, "doing it")
    assert type(err) is kind
    assert words in err.message
    assert "\n" not in err.message and "\x1b" not in err.message
    assert "s3cret" not in err.message and PASSWORD not in err.message
    if kind not in (RepositorySnapshotMissingError, RepositoryExistsError, RepositoryError):
        assert "rest:http://127.0.0.1:8000/repo" in err.message


def test_exit_codes() -> None:
    assert RepositoryError.exit_code not in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
    assert issubclass(RepositoryLockedError, LockedError)
    assert RepositoryLockedError.exit_code == LockedError.exit_code
    assert issubclass(RepositoryDamagedError, IntegrityError)
    assert RepositoryDamagedError.exit_code == IntegrityError.exit_code
    assert RepositoryAuthError.exit_code == RepositoryError.exit_code


def test_a_local_path_is_made_absolute(tmp_path: Path) -> None:
    env = {"RESTIC_PASSWORD": "x"}
    assert Repository.configure("repo", environ=env).location == str(tmp_path / "repo")
    assert Repository.configure("~/r", environ=env).location == str(Path.home() / "r")
    for other in ("sftp:u@h:repo", "rest:http://h/", "s3:h/b", "local:rel", "/abs/r"):
        assert Repository.configure(other, environ=env).location == other


def test_parse_nodes() -> None:
    lines = [
        '{"time":"2026-12-03T10:47:33Z","paths":["/vol.tar"],"id":"f7","struct_type":"snapshot"}',
        '{"name":"vol.tar","type":"file","path":"/vol.tar","size":100000,"struct_type":"node"}',
    ]
    assert parse_nodes(lines) == [Node("/vol.tar", "file", 100000)]


def test_env_of_this_process_is_not_touched(tmp_path: Path) -> None:
    before = dict(os.environ)
    Repository.configure("/r", pwfile(tmp_path)).child_env()
    assert dict(os.environ) == before
