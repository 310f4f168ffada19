"""How the command line names the restore's own ways out (``retry_with`` of the pg core)."""

from __future__ import annotations

from snapvol.cli import error_line
from snapvol.errors import UsageError


def test_a_restore_switch_is_named_as_its_flag() -> None:
    err = UsageError("it creates roles", retry_with={"allow_roles": "true"})
    assert error_line(err) == "it creates roles (retry with --allow-roles)"
    err = UsageError("not a superuser", retry_with={"user": ""})
    assert error_line(err) == "not a superuser (retry with --user ROLE)"
    assert error_line(UsageError("x", retry_with={"allow_roles": "maybe"})) == "x"
