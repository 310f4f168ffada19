"""How the command line says an error whose way out the core names in its own terms
(``SnapvolError.retry_with``): the core never names a flag, the CLI adds it."""

from __future__ import annotations

from snapvol.cli import error_line
from snapvol.errors import OperationFailed, UsageError


def test_an_error_without_a_way_out_is_its_message() -> None:
    assert error_line(UsageError("bad name")) == "bad name"


def test_the_settings_the_core_names_become_the_flags_that_set_them() -> None:
    err = OperationFailed("cannot read it here", retry_with={"reader": "endpoint"})
    assert error_line(err) == "cannot read it here (retry with --reader endpoint)"
    err = OperationFailed("no count", retry_with={"reader": "host", "helper_image": ""})
    assert error_line(err) == "no count (retry with --reader host or --helper-image IMAGE)"
    err = UsageError("several volumes", retry_with={"volume_name": ""})
    assert error_line(err) == "several volumes (retry with --volume-name NAME)"


def test_a_setting_the_command_line_has_no_flag_for_is_left_out() -> None:
    assert error_line(UsageError("x", retry_with={"unknown": "y"})) == "x"


def test_only_the_flags_the_running_command_has_are_named() -> None:
    err = UsageError("several volumes", retry_with={"volume_name": "", "reader": "endpoint"})
    assert (
        error_line(err, {"reader", "container"}) == "several volumes (retry with --reader endpoint)"
    )
    assert error_line(err, {"container"}) == "several volumes"


def test_going_without_a_safety_snapshot_is_the_no_safety_snapshot_switch() -> None:
    err = OperationFailed("no safety snapshot", retry_with={"safety_snapshot": "false"})
    assert error_line(err, {"no_safety_snapshot"}) == (
        "no safety snapshot (retry with --no-safety-snapshot)"
    )


def test_a_restore_switch_is_named_as_its_flag() -> None:
    err = UsageError("it creates roles", retry_with={"allow_roles": "true"})
    assert error_line(err) == "it creates roles (retry with --allow-roles)"
    err = UsageError("not a superuser", retry_with={"user": ""})
    assert error_line(err) == "not a superuser (retry with --user ROLE)"
    assert error_line(UsageError("x", retry_with={"allow_roles": "maybe"})) == "x"


def test_the_command_that_finishes_the_job_is_spelled_for_this_run() -> None:
    err = OperationFailed("the container was left stopped. To put it back", run=("restore", "ab12"))
    assert str(err) == "the container was left stopped. To put it back: run `snapvol restore ab12`"
    assert error_line(err, command=lambda *a: "snapvol --db '/x y/m.db' " + " ".join(a)) == (
        "the container was left stopped. To put it back: "
        "run `snapvol --db '/x y/m.db' restore ab12`"
    )
