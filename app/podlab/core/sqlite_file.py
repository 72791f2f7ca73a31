"""One SQLite file of Podlab's: conversations, evaluation results.

Both are private (a user's chats and results), written from several threads (the UI's worker
threads, the runner) under one lock with explicit transactions, and must survive a crash
without losing what was committed: WAL with synchronous=NORMAL does that at a fraction of
the cost of full syncs. One place opens them that way.
"""

from __future__ import annotations

import sqlite3
import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from podlab.core.errors import PodlabError
from podlab.core.paths import private_file

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
)


class SqliteFile:
    """A SQLite database readable by the user alone; subclasses make their schema in `_create`."""

    what = "database"
    """How errors name the file ("the evaluation database")."""
    unusable_hint = "move the file away to start a new one"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            private_file(self.path)  # SQLite gives its -wal and -shm files the same mode
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                str(path), timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise PodlabError(f"cannot open the {self.what} {path}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        try:
            for pragma in PRAGMAS:
                self._db.execute(pragma)
            self._create()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise PodlabError(
                f"{path} is not a usable Podlab {self.what}: {exc}", self.unusable_hint
            ) from None

    def _create(self) -> None:
        """Make or upgrade the schema (a broken file raises sqlite3.DatabaseError here)."""

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()
