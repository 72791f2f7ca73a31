"""Conversations, comparison rounds and blind votes in one SQLite file.

The database runs in WAL mode with foreign keys on. A streaming answer is written while it
arrives (`AnswerWriter`, at most every `flush_interval` seconds), so a crash keeps the partial
answer; when a store opens, answers left in the `streaming` state by a process that no longer
runs are marked `interrupted`.

Calls are synchronous and short (a few milliseconds). The store may be used from several
threads (one connection behind a lock), so slow calls such as exports or searches over a large
history can go through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from podlab.core.errors import PodlabError
from podlab.core.sqlite_file import SqliteFile
from podlab.core.text import readable_time

__all__ = [
    "MESSAGE_STATES",
    "AnswerWriter",
    "ComparisonRecord",
    "Conversation",
    "ConversationStore",
    "SearchHit",
    "StoredMessage",
    "VoteRecord",
]

Role = Literal["system", "user", "assistant"]
MessageState = Literal["complete", "streaming", "interrupted", "error"]
MESSAGE_STATES: tuple[MessageState, ...] = ("complete", "streaming", "interrupted", "error")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    endpoint TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    system_prompt TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'complete'
        CHECK (state IN ('complete', 'streaming', 'interrupted', 'error')),
    metrics TEXT,
    error TEXT,
    model TEXT NOT NULL DEFAULT '',
    writer_pid INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX IF NOT EXISTS messages_streaming ON messages(state) WHERE state = 'streaming';
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    prompt TEXT NOT NULL,
    mode TEXT NOT NULL,
    blind INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    comparison_id INTEGER REFERENCES comparisons(id) ON DELETE SET NULL,
    created REAL NOT NULL,
    players TEXT NOT NULL,
    winner INTEGER
);
"""

_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
"""


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    endpoint: str = ""
    model: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    system_prompt: str = ""


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int
    role: Role
    content: str
    state: MessageState
    metrics: dict[str, Any] | None
    error: str | None
    created: float
    updated: float
    model: str = ""


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    title: str
    message_id: int | None  # None when only the title matched
    snippet: str
    updated: float


@dataclass(frozen=True)
class ComparisonRecord:
    id: int
    created: float
    prompt: str
    mode: str
    blind: bool
    result: dict[str, Any]


@dataclass(frozen=True)
class VoteRecord:
    """`players` are the rated names of the panes in pane order; `winner` an index or None (tie)."""

    id: int
    comparison_id: int | None
    created: float
    players: list[str]
    winner: int | None


def _pid_alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class ConversationStore(SqliteFile):
    """The SQLite store. Open with `ConversationStore(path)` (use `Locations.database_file`)."""

    unusable_hint = "move the file away to start a new history"

    def __init__(self, path: Path | str, *, use_fts: bool | None = None) -> None:
        self._use_fts = use_fts
        super().__init__(path)

    def _create(self) -> None:
        with self._transaction():
            for statement in _split_sql(_SCHEMA):
                self._db.execute(statement)
        self.fts = self._setup_fts() if self._use_fts is not False else False
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.recovered = self._recover_streaming()

    def _setup_fts(self) -> bool:
        try:
            with self._transaction() as db:
                exists = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'"
                ).fetchone()
                for statement in _split_sql(_FTS_SCHEMA):
                    db.execute(statement)
                if not exists:
                    db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
        except sqlite3.OperationalError:
            return False  # SQLite built without FTS5: search falls back to LIKE
        return True

    def _recover_streaming(self) -> int:
        """Mark answers whose writer process is gone as interrupted; return how many."""
        rows = self._query("SELECT id, writer_pid FROM messages WHERE state = 'streaming'")
        dead = [row["id"] for row in rows if not _pid_alive(row["writer_pid"])]
        if dead:
            with self._transaction() as db:
                db.executemany(
                    "UPDATE messages SET state = 'interrupted', error = ?, updated = ?"
                    " WHERE id = ? AND state = 'streaming'",
                    [
                        ("interrupted: Podlab stopped while the answer streamed", time.time(), i)
                        for i in dead
                    ],
                )
        return len(dead)

    # -- conversations -------------------------------------------------------------------------

    def create_conversation(
        self,
        title: str = "New chat",
        *,
        endpoint: str = "",
        model: str = "",
        params: Mapping[str, Any] | None = None,
        system_prompt: str = "",
    ) -> Conversation:
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO conversations (title, created, updated, endpoint, model, params,"
                " system_prompt) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (title, now, now, endpoint, model, json.dumps(dict(params or {})), system_prompt),
            )
            ident = cursor.lastrowid
        assert ident is not None
        return self.get_conversation(ident)

    def get_conversation(self, conversation_id: int) -> Conversation:
        rows = self._query("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if not rows:
            raise PodlabError(f"no conversation {conversation_id}")
        return _conversation(rows[0])

    def list_conversations(self, limit: int | None = None) -> list[Conversation]:
        """Newest activity first."""
        sql = "SELECT * FROM conversations ORDER BY updated DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_conversation(row) for row in self._query(sql)]

    def update_conversation(
        self,
        conversation_id: int,
        *,
        title: str | None = None,
        endpoint: str | None = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
    ) -> Conversation:
        changes: dict[str, Any] = {}
        if title is not None:
            changes["title"] = title
        if endpoint is not None:
            changes["endpoint"] = endpoint
        if model is not None:
            changes["model"] = model
        if params is not None:
            changes["params"] = json.dumps(dict(params))
        if system_prompt is not None:
            changes["system_prompt"] = system_prompt
        changes["updated"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in changes)
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE conversations SET {assignments} WHERE id = ?",
                (*changes.values(), conversation_id),
            )
            if cursor.rowcount == 0:
                raise PodlabError(f"no conversation {conversation_id}")
        return self.get_conversation(conversation_id)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        return self.update_conversation(conversation_id, title=title)

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation and its messages."""
        with self._transaction() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # -- messages ------------------------------------------------------------------------------

    def add_message(
        self,
        conversation_id: int,
        role: Role,
        content: str,
        *,
        state: MessageState = "complete",
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
        model: str = "",
    ) -> StoredMessage:
        now = time.time()
        try:
            with self._transaction() as db:
                cursor = db.execute(
                    "INSERT INTO messages (conversation_id, role, content, state, metrics, error,"
                    " model, writer_pid, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversation_id,
                        role,
                        content,
                        state,
                        None if metrics is None else json.dumps(dict(metrics)),
                        error,
                        model,
                        os.getpid() if state == "streaming" else None,
                        now,
                        now,
                    ),
                )
                db.execute(
                    "UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id)
                )
        except sqlite3.IntegrityError as exc:
            raise PodlabError(
                f"cannot add a message to conversation {conversation_id}: {exc}"
            ) from None
        assert cursor.lastrowid is not None
        return self.get_message(cursor.lastrowid)

    def get_message(self, message_id: int) -> StoredMessage:
        rows = self._query("SELECT * FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise PodlabError(f"no message {message_id}")
        return _message(rows[0])

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        rows = self._query(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        )
        return [_message(row) for row in rows]

    def delete_message(self, message_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def history(self, conversation_id: int) -> list[dict[str, str]]:
        """The messages to send for the next turn: the system prompt, then every message that
        has content (a partial interrupted answer is context too; empty failures are not)."""
        conversation = self.get_conversation(conversation_id)
        result: list[dict[str, str]] = []
        if conversation.system_prompt:
            result.append({"role": "system", "content": conversation.system_prompt})
        for message in self.messages(conversation_id):
            if message.content and message.state != "streaming":
                result.append({"role": message.role, "content": message.content})
        return result

    def begin_answer(
        self,
        conversation_id: int,
        *,
        model: str = "",
        flush_interval: float = 0.5,
        flush_chars: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> AnswerWriter:
        """Start an assistant message in the `streaming` state and return its writer."""
        message = self.add_message(conversation_id, "assistant", "", state="streaming", model=model)
        return AnswerWriter(self, message.id, flush_interval, flush_chars, clock)

    def _write_answer(
        self,
        message_id: int,
        content: str,
        state: MessageState,
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE messages SET content = ?, state = ?, metrics = COALESCE(?, metrics),"
                " error = ?, updated = ?, writer_pid = CASE WHEN ? = 'streaming'"
                " THEN writer_pid ELSE NULL END WHERE id = ?",
                (
                    content,
                    state,
                    None if metrics is None else json.dumps(dict(metrics)),
                    error,
                    now,
                    state,
                    message_id,
                ),
            )
            db.execute(
                "UPDATE conversations SET updated = ? WHERE id ="
                " (SELECT conversation_id FROM messages WHERE id = ?)",
                (now, message_id),
            )

    # -- search and export ---------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Conversations whose title or messages contain every word of `query`."""
        words = query.split()
        if not words:
            return []
        hits: dict[tuple[int, int | None], SearchHit] = {}
        like = [f"%{_escape_like(w)}%" for w in words]
        title_sql = " AND ".join("title LIKE ? ESCAPE '\\'" for _ in words)
        for row in self._query(
            f"SELECT id, title, updated FROM conversations WHERE {title_sql}"
            " ORDER BY updated DESC LIMIT ?",
            (*like, limit),
        ):
            hits[(row["id"], None)] = SearchHit(
                row["id"], row["title"], None, row["title"], row["updated"]
            )
        if self.fts:
            match = " ".join('"' + w.replace('"', '""') + '"' for w in words)
            rows = self._query(
                "SELECT m.id, m.conversation_id, c.title, c.updated,"
                " snippet(messages_fts, 0, '[', ']', '…', 12) AS snip"
                " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
                " JOIN conversations c ON c.id = m.conversation_id"
                " WHERE messages_fts MATCH ? ORDER BY c.updated DESC, m.id LIMIT ?",
                (match, limit),
            )
        else:
            content_sql = " AND ".join("m.content LIKE ? ESCAPE '\\'" for _ in words)
            rows = self._query(
                "SELECT m.id, m.conversation_id, c.title, c.updated, m.content AS snip"
                f" FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                f" WHERE {content_sql} ORDER BY c.updated DESC, m.id LIMIT ?",
                (*like, limit),
            )
        for row in rows:
            snippet = row["snip"] if self.fts else _snippet(row["snip"], words[0])
            hit = SearchHit(
                row["conversation_id"], row["title"], row["id"], snippet, row["updated"]
            )
            hits.setdefault((row["conversation_id"], row["id"]), hit)
        ordered = sorted(hits.values(), key=lambda h: (-h.updated, h.message_id or 0))
        return ordered[:limit]

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        """A self-contained JSON-ready dict of the conversation and its messages."""
        conversation = self.get_conversation(conversation_id)
        return {
            "format": "podlab.conversation/1",
            "id": conversation.id,
            "title": conversation.title,
            "created": _iso(conversation.created),
            "updated": _iso(conversation.updated),
            "endpoint": conversation.endpoint,
            "model": conversation.model,
            "params": conversation.params,
            "system_prompt": conversation.system_prompt,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "state": m.state,
                    "model": m.model,
                    "metrics": m.metrics,
                    "error": m.error,
                    "created": _iso(m.created),
                }
                for m in self.messages(conversation_id)
            ],
        }

    def export_markdown(self, conversation_id: int) -> str:
        conversation = self.get_conversation(conversation_id)
        lines = [f"# {conversation.title}", ""]
        facts = [f"Created {readable_time(conversation.created)}"]
        if conversation.model:
            facts.append(f"model `{conversation.model}`")
        if conversation.endpoint:
            facts.append(f"endpoint `{conversation.endpoint}`")
        if conversation.params:
            facts.append("parameters `" + json.dumps(conversation.params, sort_keys=True) + "`")
        lines += ["_" + ", ".join(facts) + "_", ""]
        if conversation.system_prompt:
            lines += ["## System", "", conversation.system_prompt, ""]
        for message in self.messages(conversation_id):
            heading = "User" if message.role == "user" else message.role.capitalize()
            if message.role == "assistant" and message.model:
                heading += f" ({message.model})"
            lines += [f"## {heading}", "", message.content or "_(no text)_", ""]
            notes = []
            if message.state != "complete":
                notes.append(f"state: {message.state}")
            if message.error:
                notes.append(f"error: {message.error}")
            notes.extend(_metric_notes(message.metrics))
            if notes:
                lines += ["_" + "; ".join(notes) + "_", ""]
        return "\n".join(lines).rstrip() + "\n"

    # -- comparisons and votes -----------------------------------------------------------------

    def save_comparison(
        self, prompt: str, mode: str, result: Mapping[str, Any], *, blind: bool = False
    ) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO comparisons (created, prompt, mode, blind, result)"
                " VALUES (?, ?, ?, ?, ?)",
                (time.time(), prompt, mode, int(blind), json.dumps(dict(result), default=str)),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def comparisons(self, limit: int | None = None) -> list[ComparisonRecord]:
        sql = "SELECT * FROM comparisons ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [
            ComparisonRecord(
                r["id"],
                r["created"],
                r["prompt"],
                r["mode"],
                bool(r["blind"]),
                json.loads(r["result"]),
            )
            for r in self._query(sql)
        ]

    def delete_comparison(self, comparison_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM comparisons WHERE id = ?", (comparison_id,))

    def add_vote(
        self, players: list[str], winner: int | None, *, comparison_id: int | None = None
    ) -> VoteRecord:
        """Record a vote between `players` (2 or more); `winner` indexes players, None = tie."""
        if len(players) < 2:
            raise PodlabError("a vote needs at least two players")
        if winner is not None and not 0 <= winner < len(players):
            raise PodlabError(f"winner {winner} is not one of the {len(players)} panes")
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO votes (comparison_id, created, players, winner) VALUES (?, ?, ?, ?)",
                (comparison_id, now, json.dumps(players), winner),
            )
        assert cursor.lastrowid is not None
        return VoteRecord(cursor.lastrowid, comparison_id, now, list(players), winner)

    def votes(self) -> list[VoteRecord]:
        """Every vote, oldest first (the order Elo ratings are computed in)."""
        return [
            VoteRecord(
                r["id"], r["comparison_id"], r["created"], json.loads(r["players"]), r["winner"]
            )
            for r in self._query("SELECT * FROM votes ORDER BY id")
        ]

    def delete_vote(self, vote_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM votes WHERE id = ?", (vote_id,))

    def delete_votes_of(self, player: str) -> int:
        """Forget every vote `player` took part in (a leaderboard row deleted: the others are
        rated again without those games); returns how many votes went."""
        doomed = [vote.id for vote in self.votes() if player in vote.players]
        with self._transaction() as db:
            db.executemany("DELETE FROM votes WHERE id = ?", [(ident,) for ident in doomed])
        return len(doomed)

    def clear_votes(self) -> int:
        """Reset the leaderboard: forget every vote; returns how many there were."""
        with self._transaction() as db:
            return db.execute("DELETE FROM votes").rowcount


class AnswerWriter:
    """Writes one streaming assistant answer into the store as it grows.

    Call `update(text_so_far)` (or `append(piece)`) on every token: the text is written at most
    every `flush_interval` seconds or `flush_chars` new characters. End with exactly one of
    `finish(metrics)`, `interrupt(reason)` or `fail(reason)`; `close_from(done)` picks the right
    one from a chat `Done` event's fields.
    """

    def __init__(
        self,
        store: ConversationStore,
        message_id: int,
        flush_interval: float,
        flush_chars: int,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.message_id = message_id
        self.flush_interval = flush_interval
        self.flush_chars = flush_chars
        self._clock = clock
        self._parts: list[str] = []
        self._length = 0
        self._written_length = 0
        self._written_at = clock()
        self.writes = 0
        self.closed = False

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def append(self, piece: str) -> None:
        if piece:
            self._parts.append(piece)
            self._length += len(piece)
            self._maybe_flush()

    def update(self, text: str) -> None:
        """Replace the whole text so far (what the UI's buffer holds)."""
        self._parts = [text]
        self._length = len(text)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self.closed:
            raise PodlabError("this answer is already finished")
        now = self._clock()
        due = now - self._written_at >= self.flush_interval
        if due or self._length - self._written_length >= self.flush_chars:
            self.flush()

    def flush(self) -> None:
        """Write the text so far now (still `streaming`)."""
        self.store._write_answer(self.message_id, self.text, "streaming")
        self._written_length = self._length
        self._written_at = self._clock()
        self.writes += 1

    def finish(self, metrics: Mapping[str, Any] | None = None) -> None:
        self._close("complete", metrics, None)

    def interrupt(self, reason: str, metrics: Mapping[str, Any] | None = None) -> None:
        self._close("interrupted", metrics, reason)

    def fail(self, reason: str, metrics: Mapping[str, Any] | None = None) -> None:
        self._close("error", metrics, reason)

    def _close(
        self, state: MessageState, metrics: Mapping[str, Any] | None, error: str | None
    ) -> None:
        if self.closed:
            return
        self.store._write_answer(self.message_id, self.text, state, metrics, error)
        self.closed = True

    def close_from(
        self,
        state: MessageState,
        text: str,
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """End with a chat `Done`: `writer.close_from(done.state, done.text,
        done.metrics.to_dict(), done.error)`."""
        self._parts = [text]
        self._length = len(text)
        self._close(state if state != "streaming" else "interrupted", metrics, error)

    def cancel(self) -> None:
        """The user stopped the answer: keep the text, mark it interrupted."""
        self._close("interrupted", None, "stopped by the user")


# ---------------------------------------------------------------------------------------------


def _split_sql(script: str) -> list[str]:
    """Split a schema script into statements (triggers contain `;` inside BEGIN ... END)."""
    statements: list[str] = []
    current: list[str] = []
    depth = 0
    for line in script.strip().splitlines():
        current.append(line)
        stripped = line.strip().upper()
        if stripped.endswith("BEGIN"):
            depth += 1
        if stripped == "END;":
            depth -= 1
        if stripped.endswith(";") and depth == 0:
            statements.append("\n".join(current))
            current = []
    if current and "".join(current).strip():
        statements.append("\n".join(current))
    return statements


def _conversation(row: sqlite3.Row) -> Conversation:
    try:
        params = json.loads(row["params"] or "{}")
    except ValueError:
        params = {}
    return Conversation(
        id=row["id"],
        title=row["title"],
        created=row["created"],
        updated=row["updated"],
        endpoint=row["endpoint"],
        model=row["model"],
        params=params if isinstance(params, dict) else {},
        system_prompt=row["system_prompt"],
    )


def _message(row: sqlite3.Row) -> StoredMessage:
    metrics = None
    if row["metrics"]:
        try:
            metrics = json.loads(row["metrics"])
        except ValueError:
            metrics = None
    return StoredMessage(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        state=row["state"],
        metrics=metrics,
        error=row["error"],
        created=row["created"],
        updated=row["updated"],
        model=row["model"],
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _snippet(content: str, word: str, width: int = 60) -> str:
    index = content.lower().find(word.lower())
    if index < 0:
        return content[:width]
    start = max(0, index - width // 2)
    end = min(len(content), index + len(word) + width // 2)
    return ("…" if start else "") + content[start:end] + ("…" if end < len(content) else "")


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _metric_notes(metrics: Mapping[str, Any] | None) -> list[str]:
    if not metrics:
        return []
    notes = []
    if metrics.get("tokens") is not None:
        notes.append(f"{metrics['tokens']} tokens")
    if metrics.get("tokens_per_s") is not None:
        notes.append(f"{metrics['tokens_per_s']:.1f} tokens/s")
    if metrics.get("ttft_ms") is not None:
        notes.append(f"first token {metrics['ttft_ms']:.0f} ms")
    if metrics.get("total_ms") is not None:
        notes.append(f"total {metrics['total_ms'] / 1000:.2f} s")
    return notes
