"""User errors: raised as exceptions by library code, one line and exit 1 at a command's entry."""

from __future__ import annotations

import sys

import pytest

from genvs_ns.errors import DataError, GeNVSError, exits_on_user_error, user_errors_exit


def test_library_errors_are_value_errors_that_code_can_catch(tmp_path):
    error = DataError(tmp_path / "pose.txt", "malformed pose")
    assert isinstance(error, ValueError) and not isinstance(error, SystemExit)
    assert str(error) == f"{tmp_path / 'pose.txt'}: malformed pose" and error.path == tmp_path / "pose.txt"


def test_an_entry_point_prints_one_line_with_its_command_name_and_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/genvs-sample", "--object", "9"])
    # Longer than any terminal and holding rich markup: printed as it is, on one line.
    message = "object [red]9[/red] out of range " + "x" * 200

    @exits_on_user_error
    def command() -> None:
        raise GeNVSError(message)

    with pytest.raises(SystemExit) as stop:
        command()
    assert stop.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"genvs-sample: error: {message}\n"


def test_other_exceptions_pass_through_the_entry_point():
    with pytest.raises(KeyError), user_errors_exit():
        raise KeyError("a bug, with its traceback")
