"""User-facing errors: library code raises them, entry points turn them into one line and a non-zero exit.

Every layer (data, model, sampling, scripts) raises ``GeNVSError`` for a user's mistake: a bad file, a setting out of
range, an index past the end. It is a ``ValueError``, so a caller (a notebook, a test, ``except Exception``) can
handle it. Only the points where a command enters the plugin convert it, with ``exits_on_user_error``: our console
scripts' ``entrypoint``s, and the methods nerfstudio's own commands call (the trainer's ``setup``/``train`` for
``ns-train``, the pipeline config's ``setup`` for ``ns-eval``/``ns-render``/``ns-viewer``/``ns-export``, and the model
methods those tools render through). The line names the command that ran, so one run prints one prefix.

No nerfstudio import here: the data layer's file checks import this module, and nerfstudio loads them while its
method configs import.
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NoReturn, TypeVar

F = TypeVar("F", bound=Callable)


class GeNVSError(ValueError):
    """A user's mistake, or a run that cannot go on, said in one line without a traceback."""


class DataError(GeNVSError):
    """A problem with one of the user's files: ``<path>: <problem>``."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def command_name() -> str:
    """The command the user typed (ns-train, genvs-sample, ...); python -m / a script path give its file name."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name.removesuffix(".py") or "genvs-ns"


def report(error: BaseException) -> None:
    """``<command>: error: <message>`` on one line of stderr, red where it is a terminal (nerfstudio's look: rich)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(
        f"[bold red]{escape(command_name())}: error:[/bold red] {escape(str(error))}", soft_wrap=True
    )


@contextmanager
def user_errors_exit() -> Iterator[None]:
    """Inside: a ``GeNVSError`` prints its line and exits with status 1 (a ``SystemExit``, which nerfstudio's commands
    and DDP workers let through)."""
    try:
        yield
    except GeNVSError as error:
        report(error)
        _exit()


def _exit() -> NoReturn:
    raise SystemExit(1) from None


def exits_on_user_error(function: F) -> F:
    """Decorator form of ``user_errors_exit`` for the functions a command enters through."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with user_errors_exit():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
