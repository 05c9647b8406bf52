"""User-facing data errors."""

from __future__ import annotations

from pathlib import Path


class DataError(SystemExit):
    """A problem with the user's files, reported as one line that names the file.

    It derives from ``SystemExit`` so that ``ns-train`` (which does not catch it) prints the line and exits with
    status 1 instead of dumping a traceback from deep inside the datamanager.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"genvs-ns: error: {path}: {problem}")

    def __str__(self) -> str:
        return str(self.code)
