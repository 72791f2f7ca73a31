"""Errors a user can act on: one clear line and a hint, never a traceback."""

from __future__ import annotations


class PodlabError(Exception):
    """An expected failure with a message for people and a hint on how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(PodlabError):
    """A user file (settings, catalog, recipe) is broken; the message names file and line."""

    def __init__(self, path: str, line: int | None, problem: str, hint: str = "") -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}", hint)
        self.path = path
        self.line = line
        self.problem = problem
