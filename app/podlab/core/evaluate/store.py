"""Evaluation results in SQLite (`Locations.eval_database_file`), readable by the user alone.

Runs keep their whole configuration (prompt set with its sha256, cells, parameters, judge,
Podlab version); every answer is written as soon as it is scored, so a run killed at any moment
resumes from the first item without a stored answer. One connection per store, shared by threads
under a lock; the runner writes and the Evaluate page reads the same file (WAL lets both).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from typing import Any

import psutil

from podlab.core.errors import PodlabError
from podlab.core.evaluate.results import (
    CellRecord,
    CellSpec,
    ItemRecord,
    RunConfig,
    RunRecord,
)
from podlab.core.evaluate.stats import CellSummary, summarize_cell
from podlab.core.paths import Locations
from podlab.core.sqlite_file import SqliteFile

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    set_name TEXT NOT NULL,
    set_sha256 TEXT NOT NULL,
    config TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    owner_pid INTEGER
);
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT NOT NULL DEFAULT '',
    model_sha256 TEXT,
    image_digest TEXT,
    endpoint TEXT,
    peak_memory_bytes INTEGER,
    memory_source TEXT,
    energy_j REAL,
    energy_source TEXT,
    started REAL,
    finished REAL,
    UNIQUE (run_id, position)
);
CREATE TABLE IF NOT EXISTS items (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    item_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    answer TEXT NOT NULL DEFAULT '',
    scorer TEXT NOT NULL DEFAULT '',
    score REAL,
    score_state TEXT NOT NULL DEFAULT 'scored',
    score_detail TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    ttft_ms REAL,
    total_ms REAL,
    prompt_tokens INTEGER,
    prompt_ms REAL,
    gen_tokens INTEGER,
    gen_ms REAL,
    completion_tokens INTEGER,
    timing_source TEXT,
    finish_reason TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (cell_id, item_id)
);
CREATE INDEX IF NOT EXISTS items_by_item ON items(item_id);
"""

_CELL_FIELDS = (
    "status",
    "error",
    "model_sha256",
    "image_digest",
    "endpoint",
    "peak_memory_bytes",
    "memory_source",
    "energy_j",
    "energy_source",
    "started",
    "finished",
)
_ITEM_COLUMNS = (
    "cell_id",
    "item_id",
    "position",
    "status",
    "answer",
    "scorer",
    "score",
    "score_state",
    "score_detail",
    "error",
    "ttft_ms",
    "total_ms",
    "prompt_tokens",
    "prompt_ms",
    "gen_tokens",
    "gen_ms",
    "completion_tokens",
    "timing_source",
    "finish_reason",
)


class EvalStore(SqliteFile):
    """Runs, cells and item results. `EvalStore.open_default()` uses Podlab's state folder."""

    what = "evaluation database"

    def _create(self) -> None:
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @classmethod
    def open_default(cls, locations: Locations | None = None) -> EvalStore:
        return cls((locations or Locations.default()).eval_database_file)

    # -- read side (the Evaluate page, `podlab eval list|show|export`) -------------------------

    def list_runs(self) -> list[RunRecord]:
        """Every run, newest first."""
        return [_run(row) for row in self._query("SELECT * FROM runs ORDER BY id DESC")]

    def get_run(self, run_id: int) -> RunRecord:
        rows = self._query("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise PodlabError(f"there is no evaluation run {run_id}", "see `podlab eval list`")
        return _run(rows[0])

    def cells(self, run_id: int) -> list[CellRecord]:
        """The run's cells in the order they run."""
        rows = self._query("SELECT * FROM cells WHERE run_id = ? ORDER BY position", (run_id,))
        return [_cell(row) for row in rows]

    def cell(self, cell_id: int) -> CellRecord:
        rows = self._query("SELECT * FROM cells WHERE id = ?", (cell_id,))
        if not rows:
            raise PodlabError(f"there is no evaluation cell {cell_id}")
        return _cell(rows[0])

    def items(self, cell_id: int) -> list[ItemRecord]:
        """One cell's stored results in the prompt set's order."""
        rows = self._query("SELECT * FROM items WHERE cell_id = ? ORDER BY position", (cell_id,))
        return [_item(row) for row in rows]

    def run_items(self, run_id: int) -> dict[int, list[ItemRecord]]:
        """Every cell's results of a run, by cell id (one query)."""
        rows = self._query(
            "SELECT items.* FROM items JOIN cells ON cells.id = items.cell_id"
            " WHERE cells.run_id = ? ORDER BY cells.position, items.position",
            (run_id,),
        )
        results: dict[int, list[ItemRecord]] = {cell.id: [] for cell in self.cells(run_id)}
        for row in rows:
            results.setdefault(row["cell_id"], []).append(_item(row))
        return results

    def answers(self, run_id: int, item_id: str) -> dict[int, ItemRecord]:
        """Every cell's answer to one item, by cell id (answers side by side)."""
        rows = self._query(
            "SELECT items.* FROM items JOIN cells ON cells.id = items.cell_id"
            " WHERE cells.run_id = ? AND items.item_id = ? ORDER BY cells.position",
            (run_id, item_id),
        )
        return {row["cell_id"]: _item(row) for row in rows}

    def summary(self, run_id: int) -> list[CellSummary]:
        """Per cell: quality with its confidence interval, speed, memory, energy, failures."""
        results = self.run_items(run_id)
        return [summarize_cell(cell, results.get(cell.id, [])) for cell in self.cells(run_id)]

    def is_orphaned(self, run: RunRecord) -> bool:
        """A run marked running whose process is gone (killed, or Podlab crashed): resumable."""
        if run.status != "running":
            return False
        return run.owner_pid is None or not psutil.pid_exists(run.owner_pid)

    # -- write side (the runner) ---------------------------------------------------------------

    def create_run(self, config: RunConfig) -> RunRecord:
        """A new pending run with one pending cell per `config.cells`."""
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (created, updated, status, set_name, set_sha256, config)"
                " VALUES (?, ?, 'pending', ?, ?, ?)",
                (
                    now,
                    now,
                    config.prompt_set.name,
                    config.prompt_set.sha256,
                    json.dumps(config.to_dict()),
                ),
            )
            run_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO cells (run_id, position, spec) VALUES (?, ?, ?)",
                [(run_id, i, json.dumps(spec.to_dict())) for i, spec in enumerate(config.cells)],
            )
        return self.get_run(run_id)

    def set_run_status(
        self, run_id: int, status: str, *, error: str = "", owner_pid: int | None = None
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, error = ?, owner_pid = ?, updated = ? WHERE id = ?",
                (status, error, owner_pid, time.time(), run_id),
            )

    def update_cell(self, cell_id: int, **fields: Any) -> None:
        """Change some of a cell's columns (status, error, memory, energy, digests, times)."""
        unknown = set(fields) - set(_CELL_FIELDS)
        if unknown:
            raise ValueError(f"unknown cell fields: {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as db:
            db.execute(f"UPDATE cells SET {assignments} WHERE id = ?", (*fields.values(), cell_id))

    def save_item(self, record: ItemRecord) -> None:
        """Store (or replace) one cell's result for one item."""
        values = [getattr(record, name) for name in _ITEM_COLUMNS]
        placeholders = ", ".join("?" for _ in (*_ITEM_COLUMNS, "created"))
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO items ({', '.join(_ITEM_COLUMNS)}, created)"
                f" VALUES ({placeholders})",
                (*values, time.time()),
            )

    def finished_item_ids(self, cell_id: int) -> set[str]:
        """Items of a cell that already have a stored result (skipped when a run resumes)."""
        rows = self._query("SELECT item_id FROM items WHERE cell_id = ?", (cell_id,))
        return {row["item_id"] for row in rows}

    def delete_run(self, run_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def _run(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        created=row["created"],
        updated=row["updated"],
        status=row["status"],
        config=RunConfig.from_dict(_loads(row["config"])),
        error=row["error"],
        owner_pid=row["owner_pid"],
    )


def _cell(row: sqlite3.Row) -> CellRecord:
    return CellRecord(
        id=row["id"],
        run_id=row["run_id"],
        position=row["position"],
        spec=CellSpec.from_dict(_loads(row["spec"])),
        **{name: row[name] for name in _CELL_FIELDS},
    )


def _item(row: sqlite3.Row) -> ItemRecord:
    return ItemRecord(**{name: row[name] for name in _ITEM_COLUMNS})


def iter_rows(records: Iterable[ItemRecord]) -> Iterator[dict[str, Any]]:
    """Item records as plain mappings (exports)."""
    for record in records:
        yield {name: getattr(record, name) for name in _ITEM_COLUMNS}
