"""A real, fault-injecting OpenAI-compatible streaming server on 127.0.0.1, for tests and benches.

Plain asyncio sockets and hand-written HTTP/1.1, so that every byte on the wire is under control:
where chunks tear (inside a UTF-8 character, between CR and LF), how lines end, comments, and how
the connection ends.

The model name picks the behaviour: `"<scenario>"` or `"<scenario>?key=value&key=value"`. A model
name that is not a scenario gets the server's default scenario ("normal").

Scenarios
    normal          a short multilingual answer ("Hello, wörld! 日本語 🙂 done."), finish_reason
                    "stop", a usage chunk when the request asked for it, then [DONE]
    echo            answers "echo: <last user message> | messages=<count>" (history checks)
    synthetic       `tokens` tokens of " tok" (default 100) at `tps` tokens/s (0: at once)
    error_mid       `after` tokens, then `data: {"error": {...}}` and the end of the stream
    error_event     `after` tokens, then `event: error` with `data: {"message": ...}`
    http_error      `status` (default 500) with an OpenAI-style JSON error; `body=text` for text
    drop            `after` tokens, then the socket closes (no [DONE], no finish_reason)
    stall           `after` tokens, then silence until the client goes away
    stall_headers   the request is read and no response ever starts
    hostile         <script>, remote images, terminal escapes and a 100 kB line
    malformed       a `data: {not json` event between good ones
    finish_no_done  finish_reason "stop", then the stream ends without [DONE]
    done_no_finish  `after` tokens, then [DONE] with no finish_reason (llama-cpp-python's way of
                    ending an answer another request interrupted)
    done_no_blank   ends with "data: [DONE]" and no blank line, then closes

Options for every streaming scenario
    eol=lf|crlf|cr      line ends            nospace=1   "data:" without a space
    keepalive=1         ": keep-alive" comments between events
    multiline=1         each JSON event split over two `data:` lines
    split=N             the body goes out in N-byte HTTP chunks (tears UTF-8 characters)
    batch=N             N events per HTTP chunk (fast streams)
    chunked=0           a close-delimited body instead of chunked transfer encoding
    gzip=1              Content-Encoding: gzip, flushed after every write
    nostream=1          ignore "stream": true and answer one JSON completion
    prebuilt=1          build the whole body first and send it in one write; the same
                        request again gets the stored bytes (for client benchmarks)
    usage=0             no usage chunk even when asked; timings=1: llama.cpp `timings` too
    reasoning=1         two `reasoning_content` pieces before the answer
    strict=1            answer 400 to a request with `stream_options` (an older server);
                        strict=422: a FastAPI validation error instead
    delay=S             seconds between tokens (also `tps=R`)
    hostile=1           http_error and error_mid: the error message carries terminal escapes

Run alone: `python tests/faultserver.py [--port N]` prints its URL on the first line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

ANSWER_TOKENS = ["Hello", ",", " wörld", "!", " 日本語", " 🙂", " done."]
ANSWER_TEXT = "".join(ANSWER_TOKENS)
HOSTILE_TOKENS = [
    "<script>alert('x')</script>",
    " ![pixel](http://203.0.113.7/p.png)",
    ' <img src="http://203.0.113.7/x.png" onerror="alert(1)">',
    " \x1b]0;owned\x07\x1b[31mred\x1b[0m",
    " " + "A" * 100_000,
    " end",
]
SCENARIOS = (
    "normal",
    "echo",
    "synthetic",
    "error_mid",
    "error_event",
    "http_error",
    "drop",
    "stall",
    "stall_headers",
    "hostile",
    "malformed",
    "finish_no_done",
    "done_no_blank",
    "done_no_finish",
)
MID_STREAM_ERROR = "model crashed: out of memory while decoding"
HTTP_ERROR = "the model 'x' is not loaded on this server"
HOSTILE_ERROR = "failed \x1b]0;owned\x07\x1b[31mred\x1b[0m\x9b2J here"
"""An error message with a title-setting OSC, colours and a C1 CSI (`hostile=1`)."""


@dataclass
class RequestRecord:
    """What the server saw of one request; times are time.monotonic()."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    scenario: str = ""
    options: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    finished: float | None = None
    disconnected: float | None = None
    tokens_sent: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set when the response is over (finished, failed or the client went away)."""


class _ClientGone(Exception):
    pass


class FaultServer:
    """Start with `async with FaultServer() as server:`; `server.url` is `http://127.0.0.1:P`."""

    def __init__(
        self,
        port: int = 0,
        *,
        default_scenario: str = "normal",
        models: tuple[str, ...] = ("fault-model", "second-model"),
        api_key: str | None = None,
        one_at_a_time: bool = False,
    ) -> None:
        self.port = port
        self.one_at_a_time = one_at_a_time
        """Answer one completion at a time, the others wait (as a local llama.cpp server)."""
        self._turn: asyncio.Lock | None = None
        self.default_scenario = default_scenario
        self.models = models
        self.api_key = api_key
        self.requests: list[RequestRecord] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._prebuilt: dict[tuple[str, bool, bool], bytes] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultServer:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def chat_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == "POST"]

    # -- HTTP ----------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        try:
            while True:
                request = await self._read_request(reader, buffer)
                if request is None:
                    break
                keep_alive = await self._serve(request, reader, writer, buffer)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, _ClientGone):
            pass
        except asyncio.CancelledError:
            pass  # the server stops; returning normally keeps asyncio's stream callback quiet
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _read_request(
        self, reader: asyncio.StreamReader, buffer: bytearray
    ) -> RequestRecord | None:
        while b"\r\n\r\n" not in buffer:
            data = await reader.read(65536)
            if not data:
                return None
            buffer.extend(data)
        end = buffer.index(b"\r\n\r\n")
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[: end + 4]
        lines = head.split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(buffer) < length:
            data = await reader.read(65536)
            if not data:
                return None
            buffer.extend(data)
        raw = bytes(buffer[:length])
        del buffer[:length]
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        record = RequestRecord(method, target, headers, body, started=time.monotonic())
        self.requests.append(record)
        return record

    async def _serve(
        self,
        request: RequestRecord,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        buffer: bytearray,
    ) -> bool:
        """Answer one request while watching for the client going away. True: keep-alive."""
        respond = asyncio.ensure_future(self._respond(request, writer))
        try:
            return await self._watch(request, reader, buffer, respond)
        finally:
            respond.cancel()

    async def _watch(
        self,
        request: RequestRecord,
        reader: asyncio.StreamReader,
        buffer: bytearray,
        respond: asyncio.Future[bool],
    ) -> bool:
        while True:
            watch = asyncio.ensure_future(reader.read(65536))
            try:
                done, _ = await asyncio.wait({respond, watch}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                watch.cancel()
                raise
            if watch in done:
                try:
                    data = watch.result()
                except ConnectionError:  # a reset (RST) rather than a clean close
                    data = b""
                if data:
                    buffer.extend(data)
                    if respond not in done:
                        continue
                else:
                    if respond not in done:
                        request.disconnected = time.monotonic()
                        respond.cancel()
                        with contextlib.suppress(BaseException):
                            await respond
                        request.finished = request.finished or time.monotonic()
                        request.ended.set()
                        return False
            else:
                watch.cancel()
                with contextlib.suppress(BaseException):
                    await watch
            try:
                keep_alive = respond.result()
            except (ConnectionError, _ClientGone):
                request.disconnected = request.disconnected or time.monotonic()
                keep_alive = False
            request.finished = request.finished or time.monotonic()
            request.ended.set()
            return keep_alive

    async def _respond(self, request: RequestRecord, writer: asyncio.StreamWriter) -> bool:
        path = request.path.split("?", 1)[0]
        authorized = request.headers.get("authorization") == f"Bearer {self.api_key}"
        if self.api_key is not None and path.startswith("/v1/") and not authorized:
            error = {"error": {"message": "Invalid API key", "type": "auth", "code": 401}}
            await self._json(writer, 401, error)
            return True
        if request.method == "GET" and path in ("/health", "/v1/health"):
            await self._json(writer, 200, {"status": "ok"})
            return True
        if request.method == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "faultserver"} for m in self.models]
            await self._json(writer, 200, {"object": "list", "data": data})
            return True
        if request.method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            body = request.body if isinstance(request.body, dict) else {}
            chat = path.endswith("chat/completions")
            if not self.one_at_a_time:
                return await self._completion(request, body, chat, writer)
            if self._turn is None:
                self._turn = asyncio.Lock()
            async with self._turn:
                return await self._completion(request, body, chat, writer)
        await self._json(writer, 404, {"error": {"message": f"no route {path}", "code": 404}})
        return True

    async def _json(self, writer: asyncio.StreamWriter, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(
            status, "Error"
        )
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    # -- streaming answers ---------------------------------------------------------------------

    async def _completion(
        self, request: RequestRecord, body: dict[str, Any], chat: bool, writer: asyncio.StreamWriter
    ) -> bool:
        model = str(body.get("model") or "")
        name, _, query = model.partition("?")
        scenario = name if name in SCENARIOS else self.default_scenario
        opts = dict(parse_qsl(query)) if name in SCENARIOS else {}
        request.scenario, request.options = scenario, opts

        if opts.get("strict") == "1" and "stream_options" in body:
            message = "Unrecognized request argument supplied: stream_options"
            await self._json(writer, 400, {"error": {"message": message, "code": 400}})
            return True
        if opts.get("strict") == "422" and "stream_options" in body:  # FastAPI / pydantic
            detail = {
                "type": "extra_forbidden",
                "loc": ["body", "stream_options"],
                "msg": "Extra inputs are not permitted",
            }
            await self._json(writer, 422, {"detail": [detail]})
            return True
        if scenario == "stall_headers":
            await asyncio.Event().wait()
        if scenario == "http_error":
            status = int(opts.get("status", "500"))
            message = HOSTILE_ERROR if opts.get("hostile") == "1" else HTTP_ERROR
            if opts.get("body") == "text":
                data = f"Internal failure: {message}\n".encode()
                ctype = "text/plain"
            else:
                error = {"error": {"code": status, "message": message, "type": "server_error"}}
                data, ctype = json.dumps(error).encode(), "application/json"
            writer.write(
                f"HTTP/1.1 {status} Error\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()
            return True

        if opts.get("nostream") == "1":  # a server that ignores "stream": true
            text = "".join(self._tokens(scenario, opts, body, chat))
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
            await self._json(writer, 200, {"choices": [choice], "usage": usage})
            return True
        stream = _Writer(writer, opts, request)
        await stream.headers()
        cache_key = (model, chat, bool((body.get("stream_options") or {}).get("include_usage")))
        if stream.hold and cache_key in self._prebuilt:
            # The same prebuilt stream again: send the stored bytes (benchmarks read the
            # client's speed, not the server's).
            writer.write(self._prebuilt[cache_key])
            await writer.drain()
            request.tokens_sent = int(opts.get("tokens", "100"))
            return stream.chunked
        eol = {"crlf": "\r\n", "cr": "\r"}.get(opts.get("eol", "lf"), "\n")
        fmt = _EventFormat(eol, opts.get("nospace") == "1", opts.get("multiline") == "1")
        keepalive = opts.get("keepalive") == "1"
        delay = float(opts.get("delay", "0"))
        if "tps" in opts and float(opts["tps"]) > 0:
            delay = 1.0 / float(opts["tps"])
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        include_usage = include_usage and opts.get("usage") != "0"
        after = int(opts.get("after", "3"))
        ident, created = "chatcmpl-fault", 1_700_000_000

        def chunk(text: str | None, finish: str | None = None, **extra: Any) -> str:
            if chat:
                delta: dict[str, Any] = {} if text is None else {"content": text}
                if "reasoning" in extra:
                    delta = {"reasoning_content": extra.pop("reasoning")}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish}
                obj = "text_completion"
            payload = {"id": ident, "object": obj, "created": created, "model": model}
            payload["choices"] = [choice]
            payload.update(extra)
            return fmt.event(json.dumps(payload, ensure_ascii=False))

        tokens = self._tokens(scenario, opts, body, chat)
        start = time.monotonic()
        if keepalive:
            await stream.send(": keep-alive" + eol)
        if chat:
            role = {"role": "assistant", "content": None}
            first = {"index": 0, "delta": role, "finish_reason": None}
            head = {"id": ident, "object": "chat.completion.chunk", "created": created}
            await stream.send(fmt.event(json.dumps({**head, "model": model, "choices": [first]})))
        if opts.get("reasoning") == "1":
            for piece in ("Let me think.", " Done thinking."):
                await stream.send(chunk(None, reasoning=piece))
        batch = max(1, int(opts.get("batch", "1")))
        pending: list[str] = []
        made: dict[str, str] = {}  # identical tokens make identical events
        for index, token in enumerate(tokens):
            if scenario in ("error_mid", "error_event", "drop", "stall", "done_no_finish") and (
                index == after
            ):
                break
            if scenario == "malformed" and index == 2:
                await stream.send(fmt.event('{"choices": [{"delta": {"content": "lost'))
            if delay:
                await asyncio.sleep(max(0.0, start + index * delay - time.monotonic()))
            if token not in made:
                made[token] = chunk(token)
            pending.append(made[token])
            request.tokens_sent += 1
            if len(pending) >= batch:
                await stream.send("".join(pending))
                pending.clear()
            if keepalive:
                await stream.send(": ping" + eol)
        if pending:
            await stream.send("".join(pending))

        if scenario == "error_mid":
            message = HOSTILE_ERROR if opts.get("hostile") == "1" else MID_STREAM_ERROR
            error = {"error": {"code": 500, "message": message, "type": "server_error"}}
            await stream.send(fmt.event(json.dumps(error)))
            await stream.end()
            return True
        if scenario == "error_event":
            await stream.send(f"event: error{eol}" + fmt.event(json.dumps({"message": "boom"})))
            await stream.end()
            return True
        if scenario == "drop":
            await stream.abort()
            return False
        if scenario == "stall":
            await asyncio.Event().wait()
        if scenario == "done_no_finish":
            await stream.send(fmt.event("[DONE]"))
            await stream.end()
            return True

        timings: dict[str, Any] = {}
        if opts.get("timings") == "1":
            n = len(tokens)
            timings = {
                "timings": {
                    "prompt_n": 5,
                    "prompt_ms": 12.5,
                    "predicted_n": n,
                    "predicted_ms": 100.0,
                    "predicted_per_second": n / 0.1,
                }
            }
        await stream.send(chunk(None, "stop", **timings))
        if include_usage:
            usage = {"prompt_tokens": 5, "completion_tokens": len(tokens), "total_tokens": 0}
            usage["total_tokens"] = 5 + len(tokens)
            payload = {"id": ident, "object": "chat.completion.chunk", "created": created}
            payload.update({"model": model, "choices": [], "usage": usage})
            await stream.send(fmt.event(json.dumps(payload)))
        if scenario == "finish_no_done":
            await stream.end()
            return True
        if scenario == "done_no_blank":
            await stream.send(("data: " if not fmt.nospace else "data:") + "[DONE]" + eol)
            await stream.end()
            return stream.chunked
        await stream.send(fmt.event("[DONE]"))
        sent = await stream.end()
        if stream.hold:
            self._prebuilt[cache_key] = sent
        return stream.chunked

    def _tokens(
        self, scenario: str, opts: dict[str, str], body: dict[str, Any], chat: bool
    ) -> list[str]:
        if scenario == "synthetic":
            return [" tok"] * int(opts.get("tokens", "100"))
        if scenario == "hostile":
            return HOSTILE_TOKENS
        if scenario == "echo":
            if chat:
                messages = body.get("messages") or []
                users = [m.get("content", "") for m in messages if m.get("role") == "user"]
                text = f"echo: {users[-1] if users else ''} | messages={len(messages)}"
            else:
                text = f"echo: {body.get('prompt', '')}"
            return [text[i : i + 4] for i in range(0, len(text), 4)]
        return list(ANSWER_TOKENS)


class _EventFormat:
    def __init__(self, eol: str, nospace: bool, multiline: bool) -> None:
        self.eol, self.nospace, self.multiline = eol, nospace, multiline
        self.prefix = "data:" if nospace else "data: "

    def event(self, data: str) -> str:
        if self.multiline and data.startswith("{") and ", " in data:
            first, rest = data.split(", ", 1)
            lines = [first + ",", rest]
        else:
            lines = [data]
        return "".join(self.prefix + line + self.eol for line in lines) + self.eol


class _Writer:
    """Writes the SSE body with chunked encoding (or close-delimited), torn when asked."""

    def __init__(
        self, writer: asyncio.StreamWriter, opts: dict[str, str], record: RequestRecord
    ) -> None:
        self.writer = writer
        self.chunked = opts.get("chunked", "1") != "0"
        self.split = int(opts.get("split", "0"))
        self.record = record
        self.gzip = zlib.compressobj(wbits=31) if opts.get("gzip") == "1" else None
        self.hold = opts.get("prebuilt") == "1"  # collect the body, send it all at end()
        self.held: list[bytes] = []

    async def headers(self) -> None:
        framing = "Transfer-Encoding: chunked" if self.chunked else "Connection: close"
        encoding = "Content-Encoding: gzip\r\n" if self.gzip else ""
        self.writer.write(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            f"{encoding}{framing}\r\n\r\n".encode()
        )
        await self.writer.drain()

    def _write(self, piece: bytes) -> None:
        if self.gzip is not None:
            piece = self.gzip.compress(piece) + self.gzip.flush(zlib.Z_SYNC_FLUSH)
        framed = b"%X\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece
        if self.hold:
            self.held.append(framed)
        else:
            self.writer.write(framed)

    async def send(self, text: str) -> None:
        if self.writer.is_closing():
            raise _ClientGone
        data = text.encode("utf-8")
        pieces = (
            [data[i : i + self.split] for i in range(0, len(data), self.split)]
            if self.split
            else [data]
        )
        for piece in pieces:
            self._write(piece)
        if self.hold:
            return
        if self.split or self.writer.transport.get_write_buffer_size() > 65536:
            await self.writer.drain()
        else:
            await asyncio.sleep(0)

    async def end(self) -> bytes:
        """Finish the body; returns what was held back (prebuilt=1), now sent."""
        if self.gzip is not None:
            tail = self.gzip.flush(zlib.Z_FINISH)
            self.gzip = None
            self._write(tail)
        if self.chunked:
            self._write_end(b"0\r\n\r\n")
        body = b"".join(self.held)
        if self.hold:
            self.writer.write(body)
        await self.writer.drain()
        if not self.chunked:
            self.writer.close()
        return body

    def _write_end(self, data: bytes) -> None:
        if self.hold:
            self.held.append(data)
        else:
            self.writer.write(data)

    async def abort(self) -> None:
        """Close the socket in the middle of the body (an incomplete chunked read)."""
        await self.writer.drain()
        self.writer.close()


@contextlib.contextmanager
def serve_in_thread(**kwargs: Any) -> Iterator[FaultServer]:
    """Run a FaultServer on its own event loop in a thread (for synchronous tests)."""
    loop = asyncio.new_event_loop()
    server = FaultServer(**kwargs)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=run, name="faultserver", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


async def _main(port: int, scenario: str) -> None:
    async with FaultServer(port, default_scenario=scenario) as server:
        print(server.url, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A fault-injecting OpenAI-compatible server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", default="normal", choices=SCENARIOS)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port, args.scenario))
