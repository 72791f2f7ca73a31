"""An incremental parser for `text/event-stream` (server-sent events), fed raw bytes.

It follows the WHATWG event-stream rules that matter for OpenAI-compatible servers: lines end
with CR, LF or CRLF (a CRLF torn between two chunks counts once); lines starting with `:` are
comments (keep-alives); `field:value` with one optional space after the colon; several `data`
lines join with "\\n"; a blank line dispatches the event. Bytes are decoded incrementally, so a
chunk may end inside a UTF-8 character. Invalid UTF-8 becomes U+FFFD rather than an exception.

One difference from browsers, on purpose: `flush()` at the end of the stream dispatches an event
that was not followed by a blank line (some servers end with `data: [DONE]` and close).

The parser is on the hot path of every token, so it works on whole lines with `str.split`, never
byte by byte.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["RawEvent", "SSEEvent", "SSEParser"]

RawEvent = tuple[str, str, str | None, int | None]
"""(data, event, id, retry): what `feed_raw()` returns, the fields of an SSEEvent."""


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event. `event` is "message" unless the stream named it.

    Not frozen: a frozen dataclass costs twice as much to create, and this is made per token.
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Feed bytes with `feed()`, get complete events back; call `flush()` at end of stream."""

    __slots__ = (
        "_data",
        "_decoder",
        "_event",
        "_id",
        "_parts",
        "_retry",
        "_skip_lf",
        "_special",
        "_started",
    )

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._parts: list[str] = []  # the unfinished last line, in pieces (no CR or LF inside)
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF belongs to it
        self._started = False  # a byte-order mark is dropped only at the very start
        # One of the two above, or a character the decoder may hold torn: look at the next chunk.
        self._special = True
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None  # last event id persists across events, as in the spec
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse a chunk of bytes; return the events completed by it (often none or one)."""
        return [SSEEvent(*raw) for raw in self.feed_raw(chunk)]

    def flush(self) -> list[SSEEvent]:
        """End of stream: finish a torn character, the last line and a pending event."""
        return [SSEEvent(*raw) for raw in self.flush_raw()]

    def feed_raw(self, chunk: bytes) -> list[RawEvent]:
        """`feed()` for the hot path: (data, event, id, retry) tuples, no objects."""
        events = self._feed_text(self._decoder.decode(chunk))
        if chunk[-1:] >= b"\x80":  # maybe a torn character in the decoder: not idle()
            self._special = True
        return events

    def idle(self) -> bool:
        """Whether the bytes fed so far ended exactly after an event: no torn character, line
        or event is pending (the client's fast path for token events needs that)."""
        return not (self._parts or self._data or self._event or self._special)

    def feed_text_raw(self, text: str) -> list[RawEvent]:
        """`feed_raw()` for text the caller decoded itself; only while `idle()`."""
        return self._feed_text(text)

    def flush_raw(self) -> list[RawEvent]:
        events = self._feed_text(self._decoder.decode(b"", final=True))
        if self._parts:
            line = "".join(self._parts)
            self._parts.clear()
            self._line(line, events)
        if self._data:
            self._dispatch(events)
        return events

    def _feed_text(self, text: str) -> list[RawEvent]:
        events: list[RawEvent] = []
        if not text:
            return events
        if self._special:  # rare: the first chunk (BOM), or the last one ended with CR
            if not self._started:
                self._started = True
                if text[0] == "\ufeff":
                    text = text[1:]
            if self._skip_lf:
                self._skip_lf = False
                if text[:1] == "\n":
                    text = text[1:]
            self._special = False
        if "\r" in text:
            self._skip_lf = self._special = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            if text:
                self._parts.append(text)
            return events
        lines = text.split("\n")
        if self._parts:
            self._parts.append(lines[0])
            lines[0] = "".join(self._parts)
            self._parts.clear()
        tail = lines.pop()
        if tail:
            self._parts.append(tail)
        data = self._data
        for line in lines:
            # The two common lines of an OpenAI-compatible stream, inline: "data: {...}" and
            # the blank line after it. Everything else goes through _line().
            if line.startswith("data:"):
                data.append(line[6:] if line[5:6] == " " else line[5:])
            elif not line and data:
                events.append(
                    (
                        data[0] if len(data) == 1 else "\n".join(data),
                        self._event or "message",
                        self._id,
                        self._retry,
                    )
                )
                data = self._data = []
                self._event = ""
            else:
                self._line(line, events)
        return events

    def _line(self, line: str, events: list[RawEvent]) -> None:
        if not line:
            if self._data:
                self._dispatch(events)
            else:
                self._event = ""
            return
        # The common case first: "data: {...}" from an OpenAI-compatible server.
        if line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value[:1] == " " else value)
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":  # "data" with no colon: an empty data line
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        # Other field names are ignored, as the spec says.

    def _dispatch(self, events: list[RawEvent]) -> None:
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        events.append((data, self._event or "message", self._id, self._retry))
        self._data = []
        self._event = ""
