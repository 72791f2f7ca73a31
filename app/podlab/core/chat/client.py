"""The one streaming client for OpenAI-compatible servers (llama.cpp, llama-cpp-python, vLLM, ...).

`ChatClient.stream_chat()` and `stream_completion()` are async iterators of events:

    Token(text)            a piece of the answer, in order
    Reasoning(text)        a piece of a "thinking" channel (`delta.reasoning_content`), if any
    Usage(...)             the server's token counts (sent at the end when the server supports
                           `stream_options.include_usage`)
    Timings(...)           llama.cpp's own `timings` object, when the server sends one
    Error(message, ...)    something went wrong; the text so far stays valid
    Done(...)              always the last event: finish reason, metrics, the whole text, and
                           whether the answer is complete, interrupted or failed

Network and server failures never raise out of the iterator: they become an `Error` event
followed by `Done`. Closing the iterator (`aclose()`, `break` out of `async for`, or cancelling
the task that iterates) closes the HTTP connection at once, which stops generation on servers
that notice a closed client (llama.cpp does).

The API key is sent as `Authorization: Bearer ...` and never logged, printed or put in a repr.
TLS certificates are always verified.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import re
import time
import types
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from podlab.core.chat.sse import RawEvent, SSEParser
from podlab.core.errors import PodlabError
from podlab.core.http import ssl_context_for

__all__ = [
    "ChatClient",
    "ChatEvent",
    "Done",
    "Error",
    "GenerationParams",
    "Metrics",
    "Reasoning",
    "Timings",
    "Token",
    "Usage",
    "normalize_base_url",
    "server_key",
]

log = logging.getLogger(__name__)
perf_counter = time.perf_counter
_raw_decode = json.JSONDecoder().raw_decode
_MALFORMED = object()

ErrorKind = Literal[
    "http", "server", "malformed", "connection", "interrupted", "timeout", "internal"
]
AnswerState = Literal["complete", "interrupted", "error"]

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 300.0  # no byte for this long is a stall; prompt processing can be slow
MAX_ERROR_CHARS = 600
DRAIN_SECONDS = 0.25


# ---------------------------------------------------------------------------------------------
# Events


# Token and Reasoning are made once per token, so they are plain slotted classes (a frozen
# dataclass costs twice as much to create). Treat every event as read-only.


@dataclass(slots=True)
class Token:
    """A piece of the answer text."""

    text: str


@dataclass(slots=True)
class Reasoning:
    """A piece of a model's separate reasoning channel (`reasoning_content`), not the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the server reported them."""

    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Timings:
    """llama.cpp's `timings` (prompt_n, prompt_ms, predicted_n, predicted_per_second, ...)."""

    values: Mapping[str, float]

    @property
    def predicted_per_second(self) -> float | None:
        return self.values.get("predicted_per_second")

    @property
    def prompt_per_second(self) -> float | None:
        return self.values.get("prompt_per_second")


@dataclass(frozen=True, slots=True)
class Error:
    """A failure. `status` is the HTTP status for `kind == "http"`, else None.

    kind: "http" (non-2xx answer), "server" (an error event inside the stream), "malformed"
    (an event that is not valid JSON; the stream goes on), "connection" (cannot connect or the
    connection broke before any answer), "interrupted" (the connection ended before the answer
    finished), "timeout" (no data for the read timeout: a stalled server), "internal" (a bug
    in Podlab, not a problem of the server; it is also raised to the caller).
    """

    message: str
    status: int | None = None
    kind: ErrorKind = "server"


@dataclass(frozen=True, slots=True)
class Metrics:
    """Measured from the stream itself; `tokens` is the server's count when it sent usage."""

    ttft_ms: float | None
    tokens: int
    tokens_per_s: float | None
    total_ms: float
    finish_reason: str | None = None
    tokens_source: Literal["server", "counted"] = "counted"
    prompt_tokens: int | None = None
    server_tokens_per_s: float | None = None  # llama.cpp timings.predicted_per_second

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class Done:
    """The last event of every stream (unless the consumer stopped reading first).

    `interrupted`: the connection ended or stalled before the server said the answer was
    finished (no `[DONE]` and no `finish_reason`). `error`: the first error message, if any.
    `text` is the whole answer received, also when interrupted or failed.
    """

    finish_reason: str | None
    metrics: Metrics
    interrupted: bool = False
    text: str = ""
    error: str | None = None
    status: int | None = None
    usage: Usage | None = None
    timings: Timings | None = None

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.error is None

    @property
    def state(self) -> AnswerState:
        """The conversation-store state for this answer."""
        if self.interrupted:
            return "interrupted"
        return "error" if self.error is not None else "complete"


ChatEvent = Token | Reasoning | Usage | Timings | Error | Done


# ---------------------------------------------------------------------------------------------
# Parameters


def _float_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


@dataclass
class GenerationParams:
    """Sampling parameters; None means "the server's default" and is not sent.

    `top_k`, `repeat_penalty` and `min_p` are not in OpenAI's API but llama.cpp, llama-cpp-python
    and vLLM accept them. `n_ctx` is a hint for the service (context size), never sent.
    `extra` passes any other field through unchanged.
    """

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n_ctx: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _FLOATS = (
        "temperature",
        "top_p",
        "min_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    )
    _INTS = ("top_k", "max_tokens", "seed", "n_ctx")
    _NOT_SENT = ("n_ctx",)

    def to_request(self) -> dict[str, Any]:
        """The fields to merge into a request body."""
        body: dict[str, Any] = {}
        for name in (*self._FLOATS, *self._INTS):
            value = getattr(self, name)
            if value is not None and name not in self._NOT_SENT:
                body[name] = value
        if self.stop:
            body["stop"] = list(self.stop)
        body.update(self.extra)
        return body

    def to_dict(self) -> dict[str, Any]:
        """Every set field (for storage); `from_dict` reads it back."""
        data: dict[str, Any] = {}
        for name in (*self._FLOATS, *self._INTS):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.stop:
            data["stop"] = list(self.stop)
        if self.extra:
            data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GenerationParams:
        params = cls()
        for key, value in (data or {}).items():
            if key == "extra" and isinstance(value, Mapping):
                params.extra.update(value)
            else:
                params.set(key, value)
        return params

    def set(self, key: str, value: Any) -> None:
        """Set one field from a Python value or a command-line string, checking it.

        Unknown keys go to `extra` (a string value that is valid JSON is decoded first).
        """
        key = key.strip().replace("-", "_")
        if key in self._FLOATS:
            number = self._number(key, value, float)
            self._check_range(key, number)
            setattr(self, key, number)
        elif key in self._INTS:
            number = self._number(key, value, int)
            if key in ("top_k", "max_tokens", "n_ctx") and number < 0:
                raise PodlabError(f"parameter {key} must not be negative, not {number}")
            setattr(self, key, number)
        elif key == "stop":
            if isinstance(value, str):
                decoded = _maybe_json(value)
                value = decoded if isinstance(decoded, list) else [value]
            self.stop = _float_list(value) if value is not None else []
        elif key and key.isidentifier():
            self.extra[key] = _maybe_json(value) if isinstance(value, str) else value
        else:
            raise PodlabError(f"not a parameter name: {key!r}")

    def apply_assignments(self, assignments: Iterable[str]) -> None:
        """Apply `KEY=VALUE` strings, as given to `--param` on the command line."""
        for item in assignments:
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise PodlabError(
                    f"--param {item!r} is not KEY=VALUE", "for example --param temperature=0.2"
                )
            self.set(key, value)

    @staticmethod
    def _number(key: str, value: Any, kind: type[int] | type[float]) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            raise PodlabError(f"parameter {key} must be a number, not {value!r}")
        try:
            return kind(value) if kind is float else int(str(value), 10)
        except (TypeError, ValueError):
            raise PodlabError(
                f"parameter {key} must be {'a whole number' if kind is int else 'a number'},"
                f" not {value!r}"
            ) from None

    @staticmethod
    def _check_range(key: str, value: float | None) -> None:
        if value is None:
            return
        if value != value:  # NaN
            raise PodlabError(f"parameter {key} must be a number, not NaN")
        if key == "temperature" and value < 0:
            raise PodlabError(f"temperature must be 0 or more, not {value}")
        if key in ("top_p", "min_p") and not 0 <= value <= 1:
            raise PodlabError(f"{key} must be between 0 and 1, not {value}")


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


# ---------------------------------------------------------------------------------------------
# Endpoints


def normalize_base_url(url: str) -> str:
    """`http://host:8080` → `http://host:8080/v1`; a URL with a path is kept as given.

    So `https://example.com/openai/v1` works, and `http://127.0.0.1:8080/v1/` drops its slash.
    """
    text = url.strip()
    if not text:
        raise PodlabError("no endpoint URL given", "for example http://127.0.0.1:8080")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PodlabError(
            f"not an http(s) endpoint URL: {url!r}", "for example http://127.0.0.1:8080"
        )
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and error messages: refuse them.
        raise PodlabError(
            "the endpoint URL must not contain a user name or password",
            "give an API key through the keyring or an environment variable instead",
        )
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, "", ""))


def server_key(url: str) -> str:
    """What identifies one server for turn-taking: the normalized base URL."""
    return normalize_base_url(url)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def error_message_from_body(body: bytes | str, status: int | None = None) -> str:
    """The human message inside an error body (`{"error": {"message": ...}}`, `{"detail": ...}`,
    `{"message": ...}`, or plain text), shortened to one readable paragraph."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message = ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if data is not None:
        message = _message_from_json(data)
    if not message:
        message = " ".join(text.split())
    if not message:
        message = f"HTTP {status}" if status else "unknown error"
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return message


def _message_from_json(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, list):
        return "; ".join(m for m in (_message_from_json(item) for item in data[:5]) if m)
    if not isinstance(data, dict):
        return ""
    msg, loc = data.get("msg"), data.get("loc")
    if isinstance(msg, str) and isinstance(loc, list):
        # FastAPI / pydantic validation: {"loc": ["body", "top_k"], "msg": "..."}
        return ".".join(str(part) for part in loc) + ": " + msg
    for key in ("error", "detail", "message", "msg"):
        if data.get(key):
            inner = _message_from_json(data[key])
            if inner:
                return inner
    return ""


# ---------------------------------------------------------------------------------------------
# The client


_PLAIN_TEXT = r'[^"\\\x00-\x1f]+'
"""Text that JSON writes as it is inside a string: no quote, backslash or control character."""


def _plain(text: str) -> bool:
    """`_PLAIN_TEXT` in three C calls (a regex call costs more on this hot path); also false
    for the few printable-looking characters str.isprintable refuses, which then simply go
    through the parser."""
    return bool(text) and '"' not in text and "\\" not in text and text.isprintable()


class _TokenTemplate:
    """Token events recognised without JSON, many per network read in one regex pass.

    Servers send every token as the same event with only the text changed (id, model and
    created stay put). Once `_handle` turned such an event into one Token, `learn` keeps the
    text around the token and checks it by parsing it again with another token in place; the
    events that follow, when they are that text around a token that JSON would not escape,
    are the same event with another token, so `take` gives their texts straight from the
    stream text. Everything else (another prefix, an escape, a finish reason, usage, a torn
    event) still goes through the SSE parser and `_handle`.
    """

    __slots__ = (
        "_event",
        "_key",
        "_prefix",
        "_run",
        "_sep",
        "_suffix",
        "head",
        "learned",
        "ready",
        "tail",
    )

    MAX_LEARNED = 3
    """Templates learned in a row without a match: a server whose events all differ (a counter
    in each, say) is left to the parser."""

    def __init__(self, kind: Literal["chat", "completion"]) -> None:
        self._key = "content" if kind == "chat" else "text"
        self._prefix = ""
        self._suffix = ""
        self.head = self.tail = self._sep = ""
        """The text of a template event before and after its token (its SSE line and end)."""
        self._event: re.Pattern[str] | None = None
        self._run: re.Pattern[str] | None = None
        self.learned = 0
        """Templates learned since the last match."""
        self.ready = False
        """Whether a template was learned (`take` may be called)."""

    def take(self, text: str) -> tuple[list[str], int]:
        """The token texts of the template events `text` starts with, and where they end."""
        head, tail = self.head, self.tail
        if text.startswith(head) and text.endswith(tail):
            token = text[len(head) : -len(tail)]
            if _plain(token):  # one event (several would have quotes)
                self.learned = 0
                return [token], len(text)
            # Usually the whole read is template events. Cut each event's token out of its
            # line, then check that `head`, the tokens joined by `sep` and `tail` give the
            # read back: all in C but one slice per token (a regex costs twice as much).
            start, end = len(head), -len(self._suffix)
            pieces = [line[start:end] for line in text.split("\n")[:-1:2]]
            if (
                "" not in pieces
                and _plain("".join(pieces))
                and head + self._sep.join(pieces) + tail == text
            ):
                self.learned = 0
                return pieces, len(text)
        if self._run is None or self._event is None:
            # Compiled only when a read mixes template events with others: compiling costs
            # milliseconds, which a fresh stream's first tokens would otherwise wait for.
            line = re.escape(head), re.escape(tail)
            self._event = re.compile(f"{line[0]}({_PLAIN_TEXT}){line[1]}")
            self._run = re.compile(f"(?:{line[0]}{_PLAIN_TEXT}{line[1]})+")
        run = self._run.match(text)
        if run is None:
            return [], 0
        self.learned = 0
        end = run.end()
        return self._event.findall(text, 0, end), end

    def learn(self, data: str, event_name: str, token: str) -> None:
        """Keep `data`, an event that `_handle` turned into exactly `Token(token)`, as the
        template, if it is one: nothing but the token would change the events like it."""
        if (
            self.learned >= self.MAX_LEARNED
            or event_name != "message"
            or (self.ready and data.startswith(self._prefix) and data.endswith(self._suffix))
            or "\n" in data
            or not _plain(token)
        ):
            return
        key = f'"{self._key}":'
        starts = []
        at = data.find(key)
        while at >= 0:
            start = at + len(key) + (data[at + len(key) : at + len(key) + 1] == " ")
            if data.startswith(f'"{token}"', start):
                starts.append(start + 1)
            at = data.find(key, at + 1)
        if len(starts) != 1:
            return
        prefix, suffix = data[: starts[0]], data[starts[0] + len(token) :]
        try:
            payload = json.loads(data)
            probe = json.loads(prefix + "probe" + suffix)
            choice, probe_choice = payload["choices"][0], probe["choices"][0]
            if self._key == "content":
                choice, probe_choice = choice["delta"], probe_choice["delta"]
            probe_choice[self._key] = token
        except (ValueError, LookupError, TypeError):
            return
        if probe != payload or any(payload.get(name) for name in ("error", "usage", "timings")):
            return
        if payload["choices"][0].get("finish_reason"):
            return
        self.head, self.tail = "data: " + prefix, suffix + "\n\n"
        self._sep = self.tail + self.head
        self._event = self._run = None  # see take()
        self._prefix, self._suffix = prefix, suffix
        self.learned += 1
        self.ready = True


class _Stream:
    """State of one streamed answer, turned into events."""

    __slots__ = (
        "chat",
        "chunks",
        "error",
        "finish_reason",
        "first_at",
        "kind",
        "last_at",
        "parts",
        "saw_done",
        "started",
        "status",
        "timings",
        "usage",
    )

    def __init__(self, kind: Literal["chat", "completion"]) -> None:
        self.kind = kind
        self.chat = kind == "chat"
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.chunks = 0
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.saw_done = False
        self.usage: Usage | None = None
        self.timings: Timings | None = None
        self.error: Error | None = None
        self.status: int | None = None

    def fail(self, error: Error) -> Error:
        if self.error is None:
            self.error = error
        return error

    def metrics(self) -> Metrics:
        end = time.perf_counter()
        tokens = self.chunks
        source: Literal["server", "counted"] = "counted"
        if self.usage is not None and self.usage.completion_tokens is not None:
            tokens = self.usage.completion_tokens
            source = "server"
        ttft = None if self.first_at is None else (self.first_at - self.started) * 1000.0
        rate = None
        if self.first_at is not None and self.last_at is not None and tokens > 1:
            span = self.last_at - self.first_at
            if span > 0:
                rate = (tokens - 1) / span
        return Metrics(
            ttft_ms=None if ttft is None else round(ttft, 3),
            tokens=tokens,
            tokens_per_s=None if rate is None else round(rate, 3),
            total_ms=round((end - self.started) * 1000.0, 3),
            finish_reason=self.finish_reason,
            tokens_source=source,
            prompt_tokens=None if self.usage is None else self.usage.prompt_tokens,
            server_tokens_per_s=None if self.timings is None else self.timings.predicted_per_second,
        )

    def done(self, interrupted: bool) -> Done:
        return Done(
            finish_reason=self.finish_reason,
            metrics=self.metrics(),
            interrupted=interrupted,
            text="".join(self.parts),
            error=None if self.error is None else self.error.message,
            status=self.status,
            usage=self.usage,
            timings=self.timings,
        )


class ChatClient:
    """A client for one OpenAI-compatible server. Use `async with` or call `aclose()`.

    `base_url` may be given with or without `/v1` (see `normalize_base_url`). Requests to a
    loopback address ignore proxy variables in the environment; others honour them.
    `read_timeout` is how long a stream may stay silent before it counts as stalled.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        # str.__str__ reads the raw value also from a secrets.Secret (whose str() is "***").
        self._api_key = str.__str__(api_key) if api_key else None
        self.read_timeout = read_timeout
        host = urlsplit(self.base_url).hostname
        request_headers = {"Accept": "application/json", "User-Agent": "podlab"}
        request_headers.update(headers or {})
        if self._api_key:
            request_headers["Authorization"] = f"Bearer {self._api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=request_headers,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=None
            ),
            # Always verified; the context is shared (building one costs 20-130 ms), and a
            # plain http:// server gets one that loads no certificates (see core.http).
            verify=ssl_context_for(self.base_url),
            trust_env=not _is_loopback(host),
            follow_redirects=False,
        )
        # Servers that reject stream_options (rare) get requests without it after one refusal.
        self._stream_options = True

    def __repr__(self) -> str:
        key = ", api_key=<set>" if self._api_key else ""
        return f"ChatClient({self.base_url!r}{key})"

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- simple requests -----------------------------------------------------------------------

    async def list_models(self) -> list[str]:
        """Model ids from `GET /v1/models`, in the server's order.

        Raises PodlabError with a readable message when the server cannot be reached or
        answers with an error.
        """
        try:
            response = await self._http.get("models")
        except httpx.HTTPError as exc:
            raise self._connection_error(exc) from None
        if response.status_code >= 400:
            raise PodlabError(
                f"{self.base_url}/models answered {response.status_code}: "
                + error_message_from_body(response.content, response.status_code)
            )
        try:
            data = response.json()
        except ValueError:
            raise PodlabError(f"{self.base_url}/models did not answer JSON") from None
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            items = data.get("models", []) if isinstance(data, dict) else []
        models: list[str] = []
        for item in items:
            if isinstance(item, dict):
                ident = item.get("id") or item.get("name") or item.get("model")
                if isinstance(ident, str):
                    models.append(ident)
            elif isinstance(item, str):
                models.append(item)
        return models

    def _connection_error(self, exc: BaseException) -> PodlabError:
        return PodlabError(
            f"cannot reach {self.base_url}: {_describe(exc)}",
            "is the server running and is the URL right?",
        )

    # -- streaming -----------------------------------------------------------------------------

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        params: GenerationParams | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Stream an answer from `POST /v1/chat/completions`.

        `messages` are OpenAI messages ({"role": "user", "content": "..."}), system first.
        """
        body: dict[str, Any] = {"messages": [dict(m) for m in messages]}
        return self._stream("chat/completions", "chat", body, model, params)

    def stream_completion(
        self,
        prompt: str,
        model: str | None = None,
        params: GenerationParams | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Stream a raw text completion from `POST /v1/completions`."""
        return self._stream("completions", "completion", {"prompt": prompt}, model, params)

    async def _stream(
        self,
        path: str,
        kind: Literal["chat", "completion"],
        body: dict[str, Any],
        model: str | None,
        params: GenerationParams | None,
    ) -> AsyncGenerator[ChatEvent, None]:
        request: dict[str, Any] = {}
        if model:
            request["model"] = model
        request.update(body)
        request.update((params or GenerationParams()).to_request())
        request["stream"] = True
        state = _Stream(kind)
        while True:  # runs again only when a server refuses stream_options
            if self._stream_options:
                request["stream_options"] = {"include_usage": True}
            else:
                request.pop("stream_options", None)
            log.debug("POST %s%s (model %s)", self.base_url, path, request.get("model"))
            try:
                async with self._http.stream(
                    "POST", path, json=request, headers={"Accept": "text/event-stream"}
                ) as response:
                    state.status = response.status_code
                    if response.status_code >= 400:
                        raw = await response.aread()
                        message = error_message_from_body(raw, response.status_code)
                        if (
                            response.status_code in (400, 422)
                            and b"stream_options" in raw
                            and "stream_options" in request
                        ):
                            # An older server refuses stream_options: ask again without it.
                            self._stream_options = False
                            state = _Stream(kind)
                            continue
                        yield state.fail(Error(message, response.status_code, "http"))
                        yield state.done(interrupted=False)
                        return
                    content_type = response.headers.get("content-type", "")
                    if "json" in content_type and "event-stream" not in content_type:
                        # A server that ignored "stream": true and sent the whole answer.
                        raw = await response.aread()
                        text = raw.decode("utf-8", "replace")
                        for event in self._handle(text, "message", state, perf_counter()):
                            yield event
                        if state.error is None:
                            state.saw_done = True
                        for event in self._final(state, interrupted=False):
                            yield event
                        return
                    parser = SSEParser()
                    # Without a content encoding the raw bytes are the body: skip httpx's
                    # decoder layer (one async generator less per chunk on the hot path).
                    encoding = response.headers.get("content-encoding", "identity").lower()
                    chunks = (
                        response.aiter_raw() if encoding == "identity" else response.aiter_bytes()
                    )
                    template = _TokenTemplate(kind)
                    chunk_events = self._chunk_events
                    async for chunk in chunks:
                        # One clock reading per network read: its events arrived together.
                        now = perf_counter()
                        decoded: str | None = None
                        if template.ready and parser.idle():
                            # The commonest read, inline (calls cost here): exactly one token
                            # event like the template, its token plain (see `_plain`).
                            try:
                                decoded = chunk.decode()
                            except UnicodeDecodeError:
                                decoded = None
                            head, tail = template.head, template.tail
                            if (
                                decoded is not None
                                and len(decoded) < 2 * (len(head) + len(tail))  # one event at most
                                and decoded.startswith(head)
                                and decoded.endswith(tail)
                            ):
                                token = decoded[len(head) : -len(tail)]
                                if (
                                    token
                                    and '"' not in token
                                    and "\\" not in token
                                    and token.isprintable()
                                ):
                                    template.learned = 0
                                    if state.first_at is None:
                                        state.first_at = now
                                    state.last_at = now
                                    state.chunks += 1
                                    state.parts.append(token)
                                    yield Token(token)
                                    continue
                        for event in chunk_events(chunk, decoded, parser, template, state, now):
                            yield event
                        if state.saw_done:
                            break
                    if state.saw_done:
                        # [DONE] after text but with no finish_reason: the server cut the answer
                        # short (llama-cpp-python does this when another request interrupts it).
                        cut = state.finish_reason is None and state.error is None and state.parts
                        if cut:
                            yield state.fail(
                                Error(
                                    "interrupted: the server ended the answer without a finish "
                                    "reason (another request may have cut it short)",
                                    None,
                                    "interrupted",
                                )
                            )
                        for event in self._final(state, interrupted=bool(cut)):
                            yield event
                        await _drain(chunks)
                        return
                    for data, name, _id, _retry in parser.flush_raw():
                        for event in self._handle(data, name, state, perf_counter()):
                            yield event
                        if state.saw_done:
                            break
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                    yield state.fail(
                        Error(f"cannot reach {self.base_url}: {_describe(exc)}", None, "connection")
                    )
                    yield state.done(interrupted=False)
                    return
                message = (
                    f"interrupted: the server sent nothing for {self.read_timeout:g} s"
                    if state.status is not None
                    else f"the server did not answer within {self.read_timeout:g} s"
                )
                yield state.fail(Error(message, None, "timeout"))
                for event in self._final(state, interrupted=True):
                    yield event
                return
            except httpx.HTTPError as exc:
                if state.status is None:
                    yield state.fail(
                        Error(f"cannot reach {self.base_url}: {_describe(exc)}", None, "connection")
                    )
                    yield state.done(interrupted=False)
                    return
                if state.saw_done or state.finish_reason is not None:
                    for event in self._final(state, interrupted=False):
                        yield event
                    return
                yield state.fail(
                    Error(
                        f"interrupted: the connection broke before the answer finished"
                        f" ({_describe(exc)})",
                        None,
                        "interrupted",
                    )
                )
                for event in self._final(state, interrupted=True):
                    yield event
                return
            interrupted = not state.saw_done and state.finish_reason is None
            if interrupted and state.error is not None and state.error.kind == "server":
                # The server reported an error and stopped: that is the reason, not a dropped line.
                interrupted = False
            if interrupted:
                yield state.fail(
                    Error(
                        "interrupted: the server closed the stream before the answer finished",
                        None,
                        "interrupted",
                    )
                )
            for event in self._final(state, interrupted):
                yield event
            return

    @classmethod
    def _chunk_events(
        cls,
        chunk: bytes,
        text: str | None,
        parser: SSEParser,
        template: _TokenTemplate,
        state: _Stream,
        now: float,
    ) -> list[ChatEvent]:
        """The events of one network read, in order: token events that match the template
        straight from the text (see `_TokenTemplate`), the rest through the parser. `text` is
        the read decoded, when the parser was idle before it and it decoded."""
        events: list[ChatEvent] = []
        if not template.ready:
            cls._parse(parser.feed_raw(chunk), template, state, now, events)
            return events
        idle = text is not None or parser.idle()
        if not idle:
            # The previous read tore an event: finish it, so that the rest can match.
            cut = chunk.find(b"\n\n") + 2
            if cut > 1:
                cls._parse(parser.feed_raw(chunk[:cut]), template, state, now, events)
                chunk = chunk[cut:]
                idle = parser.idle()
            if not chunk or state.saw_done:
                return events
        if text is None and idle:
            try:
                text = chunk.decode()
            except UnicodeDecodeError:  # a torn character: the parser's incremental decoder
                text = None
        if text is None:
            cls._parse(parser.feed_raw(chunk), template, state, now, events)
            return events
        pieces, end = template.take(text)
        if pieces:
            if state.first_at is None:
                state.first_at = now
            state.last_at = now
            state.chunks += len(pieces)
            state.parts += pieces
            events += map(Token, pieces)
            text = text[end:]
        if text:
            cls._parse(parser.feed_text_raw(text), template, state, now, events)
        return events

    @staticmethod
    def _parse(
        raw_events: list[RawEvent],
        template: _TokenTemplate,
        state: _Stream,
        now: float,
        events: list[ChatEvent],
    ) -> None:
        """`_handle` each parsed event into `events` (until [DONE]); a plain token event
        may become the template."""
        handle = ChatClient._handle
        for data, name, _id, _retry in raw_events:
            made = handle(data, name, state, now)
            events += made
            if len(made) == 1 and type(made[0]) is Token:
                template.learn(data, name, made[0].text)
            if state.saw_done:
                return

    @staticmethod
    def _final(state: _Stream, interrupted: bool) -> list[ChatEvent]:
        """Usage and Timings (once each, when the server sent them), then Done."""
        events: list[ChatEvent] = []
        if state.usage is not None:
            events.append(state.usage)
        if state.timings is not None:
            events.append(state.timings)
        events.append(state.done(interrupted))
        return events

    @staticmethod
    def _handle(data: str, event_name: str, state: _Stream, now: float) -> list[ChatEvent]:
        """Turn one SSE event into chat events (usually one Token). This is the hot path: one
        call per token, so it trades a little elegance for fewer calls and lookups."""
        if data == "[DONE]":
            state.saw_done = True
            return []
        if not data:
            return []
        try:
            # raw_decode skips json.loads' two whitespace regex matches (a third of its time)
            payload, end = _raw_decode(data)
            if end != len(data) and data[end:].strip():
                raise ValueError("extra data")
        except ValueError:
            try:
                payload = json.loads(data)  # leading whitespace is fine; really broken is not
            except ValueError:
                payload = _MALFORMED
        if payload is _MALFORMED:
            shown = data if len(data) <= 120 else data[:117] + "..."
            return [
                state.fail(Error(f"malformed event from the server: {shown!r}", None, "malformed"))
            ]
        if type(payload) is not dict:
            shown = data if len(data) <= 120 else data[:117] + "..."
            return [
                state.fail(Error(f"unexpected event from the server: {shown!r}", None, "malformed"))
            ]
        if event_name == "error" or payload.get("error"):
            message = _message_from_json(payload) or data
            return [state.fail(Error(message, _error_status(payload), "server"))]
        events: list[ChatEvent] = []
        choices = payload.get("choices")
        if choices and type(choices) is list:
            choice = choices[0]
            if type(choice) is dict:
                if state.chat:
                    delta = choice.get("delta") or choice.get("message")
                    if type(delta) is dict:
                        text = delta.get("content")
                        if text is None or len(delta) > 1:
                            thought = delta.get("reasoning_content") or delta.get("reasoning")
                            if thought and type(thought) is str:
                                if state.first_at is None:
                                    state.first_at = now
                                state.last_at = now
                                state.chunks += 1
                                events.append(Reasoning(thought))
                    else:
                        text = None
                else:
                    text = choice.get("text")
                if text and type(text) is str:
                    if state.first_at is None:
                        state.first_at = now
                    state.last_at = now
                    state.chunks += 1
                    state.parts.append(text)
                    events.append(Token(text))
                reason = choice.get("finish_reason")
                if reason:
                    state.finish_reason = str(reason)
        usage = payload.get("usage")
        if usage and type(usage) is dict:
            state.usage = Usage(
                _int_or_none(usage.get("prompt_tokens")),
                _int_or_none(usage.get("completion_tokens")),
                _int_or_none(usage.get("total_tokens")),
            )
        timings = payload.get("timings")
        if timings and type(timings) is dict:
            state.timings = Timings(
                {
                    k: float(v)
                    for k, v in timings.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
            )
        return events


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows [DONE] (normally only the end of the body) so that the connection can
    serve the next request; give up quickly on a server that keeps the stream open."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _chunk in chunks:
                pass
    except (TimeoutError, httpx.HTTPError, httpx.StreamError):
        pass  # closing the response drops the connection instead


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _error_status(payload: Mapping[str, Any]) -> int | None:
    error = payload.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and 100 <= code < 600:
            return code
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if not text:
        return name
    return text if len(text) <= 200 else text[:199] + "…"
