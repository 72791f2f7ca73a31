"""ChatClient and the chat/compare CLI against a real fault-injecting server on 127.0.0.1.

Every fault of tests/faultserver.py: torn chunks (inside UTF-8 characters), CR / CRLF line ends,
keep-alive comments, `data:` without a space, multi-line data, [DONE], usage and timings chunks,
error events, non-2xx JSON and text errors, dropped connections, stalls, hostile output, fast
streams; cancellation closes the connection in under 200 ms.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podlab.cli.output import terminal_safe
from podlab.core.chat.client import (
    ChatClient,
    ChatEvent,
    Done,
    Error,
    GenerationParams,
    Reasoning,
    Timings,
    Token,
    Usage,
)
from podlab.core.errors import PodlabError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faultserver import (
    ANSWER_TEXT,
    HOSTILE_ERROR,
    HOSTILE_TOKENS,
    HTTP_ERROR,
    MID_STREAM_ERROR,
    FaultServer,
    RequestRecord,
)

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def server() -> AsyncIterator[FaultServer]:
    async with FaultServer() as running:
        yield running


@pytest.fixture
async def client(server: FaultServer) -> AsyncIterator[ChatClient]:
    async with ChatClient(server.url, read_timeout=5) as opened:
        yield opened


async def chat(client: ChatClient, model: str, **kwargs: Any) -> list[ChatEvent]:
    return [event async for event in client.stream_chat(HELLO, model, **kwargs)]


def done_of(events: list[ChatEvent]) -> Done:
    assert isinstance(events[-1], Done), events[-1]
    assert sum(isinstance(e, Done) for e in events) == 1
    return events[-1]


def text_of(events: list[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Token))


def errors_of(events: list[ChatEvent]) -> list[Error]:
    return [e for e in events if isinstance(e, Error)]


# -- the normal path and every framing variant ---------------------------------------------------


async def test_normal_stream(server: FaultServer, client: ChatClient) -> None:
    events = await chat(client, "normal", params=GenerationParams(temperature=0.2, max_tokens=9))
    done = done_of(events)
    assert text_of(events) == ANSWER_TEXT == done.text
    assert done.ok and done.state == "complete" and done.finish_reason == "stop"
    assert not errors_of(events)
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage == [Usage(5, 7, 12)]
    metrics = done.metrics
    assert metrics.tokens == 7 and metrics.tokens_source == "server"
    assert metrics.prompt_tokens == 5
    assert metrics.ttft_ms is not None and 0 < metrics.ttft_ms < metrics.total_ms
    assert metrics.tokens_per_s is not None and metrics.tokens_per_s > 0
    body = server.chat_requests()[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "normal" and body["messages"] == HELLO
    assert body["temperature"] == 0.2 and body["max_tokens"] == 9
    assert "authorization" not in server.chat_requests()[0].headers


@pytest.mark.parametrize(
    "options",
    [
        "split=1",
        "split=2",
        "split=3",
        "split=5",
        "eol=crlf",
        "eol=cr",
        "eol=crlf&split=1",
        "eol=cr&split=1",
        "keepalive=1",
        "nospace=1",
        "multiline=1",
        "multiline=1&eol=crlf&split=1&nospace=1&keepalive=1",
        "chunked=0",
        "chunked=0&split=1&eol=cr",
        "batch=4",
        "gzip=1",
        "gzip=1&split=3&chunked=0",
    ],
)
async def test_framing_variants_give_the_same_answer(client: ChatClient, options: str) -> None:
    events = await chat(client, f"normal?{options}")
    done = done_of(events)
    assert text_of(events) == ANSWER_TEXT
    assert done.ok, done
    assert done.metrics.tokens == 7


async def test_usage_absent_counts_chunks(client: ChatClient) -> None:
    # llama-cpp-python does not send usage in a stream: count the chunks that carry text.
    events = await chat(client, "normal?usage=0")
    done = done_of(events)
    assert not any(isinstance(e, Usage) for e in events)
    assert done.metrics.tokens == 7 and done.metrics.tokens_source == "counted"
    assert done.ok


async def test_llama_cpp_timings(client: ChatClient) -> None:
    events = await chat(client, "normal?timings=1")
    timings = [e for e in events if isinstance(e, Timings)]
    assert len(timings) == 1
    assert timings[0].values["predicted_n"] == 7
    assert timings[0].predicted_per_second == pytest.approx(70.0)
    assert done_of(events).metrics.server_tokens_per_s == pytest.approx(70.0)
    # Order at the end: Usage, Timings, Done.
    assert [type(e) for e in events[-3:]] == [Usage, Timings, Done]


async def test_done_without_blank_line_and_finish_without_done(client: ChatClient) -> None:
    for model in ("done_no_blank", "done_no_blank?chunked=0", "finish_no_done"):
        done = done_of(await chat(client, model))
        assert done.ok and done.text == ANSWER_TEXT, model


async def test_server_that_does_not_stream(client: ChatClient) -> None:
    events = await chat(client, "normal?nostream=1")
    done = done_of(events)
    assert text_of(events) == ANSWER_TEXT == done.text
    assert done.ok and done.finish_reason == "stop" and done.metrics.tokens == 7
    completion = [e async for e in client.stream_completion("x", "echo?nostream=1")]
    assert done_of(completion).text == "echo: x"


async def test_reasoning_is_separate_from_the_answer(client: ChatClient) -> None:
    events = await chat(client, "normal?reasoning=1")
    thoughts = "".join(e.text for e in events if isinstance(e, Reasoning))
    assert thoughts == "Let me think. Done thinking."
    assert done_of(events).text == ANSWER_TEXT


async def test_completion_endpoint(server: FaultServer, client: ChatClient) -> None:
    events = [e async for e in client.stream_completion("Once upon", "echo")]
    assert done_of(events).text == "echo: Once upon"
    record = server.chat_requests()[0]
    assert record.path == "/v1/completions" and record.body["prompt"] == "Once upon"


async def test_hostile_output_passes_through_unchanged(client: ChatClient) -> None:
    events = await chat(client, "hostile?split=4096")
    done = done_of(events)
    assert done.text == "".join(HOSTILE_TOKENS)
    assert "<script>alert('x')</script>" in done.text and "\x1b]0;owned\x07" in done.text
    assert max(len(e.text) for e in events if isinstance(e, Token)) == 100_001
    assert done.ok


@pytest.mark.parametrize("model", ["synthetic?tokens=20000", "synthetic?tokens=20000&batch=64"])
async def test_fast_synthetic_stream(client: ChatClient, model: str) -> None:
    done = done_of(await chat(client, model))
    assert done.ok and done.metrics.tokens == 20000 and len(done.text) == 4 * 20000
    for _ in range(2):  # built once, then sent from the server's store
        done = done_of(await chat(client, model + "&prebuilt=1"))
        assert done.ok and done.metrics.tokens == 20000 and len(done.text) == 4 * 20000


# Tokens that JSON escapes ("\\", quotes, control characters), that str.isprintable refuses
# (no-break space, zero-width space), that look like the event's own syntax, and multi-byte
# characters that a small split tears: the template path (`_TokenTemplate`) must hand over to
# the parser for each and give exactly the tokens the parser alone gives.
TRICKY = (
    'plain text, then "quoted", back\\slash, tab\there, nbsp\u00a0 zwsp\u200b,'
    ' "}]}\n\ndata: {, é中😀 done'
)


@pytest.mark.parametrize(
    "options",
    [
        "",
        "batch=3",
        "batch=64",
        "split=7",
        "split=1",
        "batch=8&split=300",
        "batch=64&split=1000",
        "gzip=1",
    ],
)
async def test_token_events_read_without_json_are_the_parsers_tokens(
    client: ChatClient, options: str
) -> None:
    message = [{"role": "user", "content": TRICKY}]
    events = [e async for e in client.stream_chat(message, f"echo?{options}")]
    done = done_of(events)
    expected = f"echo: {TRICKY} | messages=1"
    tokens = [e.text for e in events if isinstance(e, Token)]
    assert tokens == [expected[i : i + 4] for i in range(0, len(expected), 4)]
    assert done.ok and done.text == expected and done.metrics.tokens == len(tokens)


async def test_fixed_rate_stream_measures_the_rate(client: ChatClient) -> None:
    done = done_of(await chat(client, "synthetic?tokens=21&tps=100&usage=0"))
    assert done.metrics.tokens == 21
    assert done.metrics.tokens_per_s == pytest.approx(100, rel=0.4)  # a loaded CI box jitters
    assert done.metrics.total_ms >= 190


async def test_connection_is_reused_after_a_complete_stream(
    server: FaultServer, client: ChatClient
) -> None:
    await chat(client, "normal")
    await chat(client, "normal")
    await client.list_models()
    assert server.connections == 1


# -- errors ----------------------------------------------------------------------------------------


async def test_error_event_mid_stream(client: ChatClient) -> None:
    events = await chat(client, "error_mid")
    done = done_of(events)
    [error] = errors_of(events)
    assert error.kind == "server" and error.message == MID_STREAM_ERROR and error.status == 500
    assert done.text == "Hello, wörld" and done.error == MID_STREAM_ERROR
    assert not done.interrupted and done.state == "error"


async def test_named_error_event(client: ChatClient) -> None:
    events = await chat(client, "error_event?after=1")
    [error] = errors_of(events)
    assert error.message == "boom" and error.kind == "server"
    assert done_of(events).text == "Hello"


@pytest.mark.parametrize("status", [400, 401, 404, 500, 503])
async def test_non_2xx_json_error(client: ChatClient, status: int) -> None:
    events = await chat(client, f"http_error?status={status}")
    [error] = errors_of(events)
    assert (error.kind, error.status, error.message) == ("http", status, HTTP_ERROR)
    done = done_of(events)
    assert done.status == status and done.error == HTTP_ERROR and done.text == ""
    assert not any(isinstance(e, Token) for e in events)


async def test_non_2xx_text_error(client: ChatClient) -> None:
    [error] = errors_of(await chat(client, "http_error?status=502&body=text"))
    assert error.status == 502 and error.message == f"Internal failure: {HTTP_ERROR}"


@pytest.mark.parametrize("model", ["drop", "drop?chunked=0", "drop?after=0"])
async def test_dropped_connection_is_interrupted_and_keeps_the_text(
    client: ChatClient, model: str
) -> None:
    events = await chat(client, model)
    done = done_of(events)
    [error] = errors_of(events)
    assert error.kind == "interrupted" and "interrupted" in error.message
    assert done.interrupted and done.state == "interrupted"
    assert done.finish_reason is None
    expected = "" if "after=0" in model else "Hello, wörld"
    assert done.text == expected == text_of(events)


async def test_done_without_a_finish_reason_after_text_is_an_interrupted_answer(
    client: ChatClient,
) -> None:
    events = await chat(client, "done_no_finish")
    done = done_of(events)
    [error] = errors_of(events)
    assert error.kind == "interrupted" and "without a finish reason" in error.message
    assert done.interrupted and done.state == "interrupted"
    assert done.text == "Hello, wörld" == text_of(events)


async def test_done_without_a_finish_reason_and_no_text_is_an_empty_answer(
    client: ChatClient,
) -> None:
    events = await chat(client, "done_no_finish?after=0")
    done = done_of(events)
    assert errors_of(events) == []
    assert done.ok and done.text == ""


async def test_stall_mid_stream_times_out_as_interrupted(server: FaultServer) -> None:
    async with ChatClient(server.url, read_timeout=0.3) as client:
        started = time.monotonic()
        events = await chat(client, "stall?after=2")
        elapsed = time.monotonic() - started
    done = done_of(events)
    [error] = errors_of(events)
    assert error.kind == "timeout" and "interrupted" in error.message and "0.3 s" in error.message
    assert done.interrupted and done.text == "Hello,"
    assert 0.25 < elapsed < 2
    record = server.chat_requests()[0]
    await asyncio.wait_for(record.ended.wait(), 1)
    assert record.disconnected is not None  # the client hung up


async def test_stall_before_headers(server: FaultServer) -> None:
    async with ChatClient(server.url, read_timeout=0.3) as client:
        events = await chat(client, "stall_headers")
    [error] = errors_of(events)
    assert error.kind == "timeout" and "did not answer" in error.message
    assert done_of(events).text == ""


async def test_malformed_event_is_reported_and_the_stream_goes_on(client: ChatClient) -> None:
    events = await chat(client, "malformed")
    [error] = errors_of(events)
    assert error.kind == "malformed"
    assert '{"choices": [{"delta": {"content": "lost' in error.message
    done = done_of(events)
    assert done.text == ANSWER_TEXT and done.error == error.message
    assert done.state == "error" and not done.interrupted


async def test_unreachable_server() -> None:
    async with ChatClient("http://127.0.0.1:1", read_timeout=1) as client:
        events = await chat(client, "normal")
        [error] = errors_of(events)
        assert error.kind == "connection" and "cannot reach" in error.message
        assert not done_of(events).interrupted
        with pytest.raises(PodlabError, match="cannot reach"):
            await client.list_models()


@pytest.mark.parametrize("strict", ["1", "422"])
async def test_server_without_stream_options_gets_a_retry(server: FaultServer, strict: str) -> None:
    async with ChatClient(server.url) as client:
        events = await chat(client, f"normal?strict={strict}")
        assert done_of(events).ok and text_of(events) == ANSWER_TEXT
        assert not errors_of(events)
        await chat(client, f"normal?strict={strict}")  # remembered: one request this time
    bodies = [r.body for r in server.chat_requests()]
    assert ["stream_options" in b for b in bodies] == [True, False, False]


async def test_validation_error_names_the_field(server: FaultServer) -> None:
    from podlab.core.chat.client import error_message_from_body

    body = b'{"detail": [{"loc": ["body", "top_k"], "msg": "Input should be an integer"}]}'
    assert error_message_from_body(body, 422) == "body.top_k: Input should be an integer"


# -- models and keys -----------------------------------------------------------------------------


async def test_list_models(client: ChatClient) -> None:
    assert await client.list_models() == ["fault-model", "second-model"]


async def test_api_key_is_sent_as_bearer_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "sk-very-secret-0123456789"
    caplog.set_level(logging.DEBUG)
    async with FaultServer(api_key=key) as server:
        async with ChatClient(server.url, key) as client:
            assert await client.list_models() == ["fault-model", "second-model"]
            done = done_of(await chat(client, "normal"))
            assert done.ok
            assert key not in repr(client)
        assert server.chat_requests()[0].headers["authorization"] == f"Bearer {key}"
        async with ChatClient(server.url, "wrong") as bad:
            [error] = errors_of(await chat(bad, "normal"))
            assert error.status == 401 and error.message == "Invalid API key"
            with pytest.raises(PodlabError, match="401"):
                await bad.list_models()
    assert caplog.records  # httpx and podlab did log at debug level
    assert key not in caplog.text


def test_base_url_normalization() -> None:
    from podlab.core.chat.client import normalize_base_url

    assert normalize_base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/v1"
    assert normalize_base_url("http://127.0.0.1:8080/v1/") == "http://127.0.0.1:8080/v1"
    assert normalize_base_url("127.0.0.1:8080") == "http://127.0.0.1:8080/v1"
    assert normalize_base_url("https://Example.com/openai/v1") == "https://example.com/openai/v1"
    with pytest.raises(PodlabError):
        normalize_base_url("ftp://x")
    with pytest.raises(PodlabError, match="user name or password"):
        normalize_base_url("https://user:sk-secret@example.com/v1")
    with pytest.raises(PodlabError):
        normalize_base_url("  ")


# -- cancellation ----------------------------------------------------------------------------------


async def wait_ended(record: RequestRecord) -> None:
    await asyncio.wait_for(record.ended.wait(), 2)


async def test_aclose_closes_the_connection_at_once(
    server: FaultServer, client: ChatClient
) -> None:
    stream = client.stream_chat(HELLO, "stall?after=3")
    seen = 0
    async for event in stream:
        if isinstance(event, Token):
            seen += 1
            if seen == 3:
                break
    closed_at = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - closed_at < 0.2
    record = server.chat_requests()[0]
    await wait_ended(record)
    assert record.disconnected is not None and record.disconnected - closed_at < 0.2


async def test_task_cancel_closes_the_connection_at_once(
    server: FaultServer, client: ChatClient
) -> None:
    first_token = asyncio.Event()

    async def consume() -> None:
        async for event in client.stream_chat(HELLO, "synthetic?tokens=1000&tps=50"):
            if isinstance(event, Token):
                first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 2)
    await asyncio.sleep(0.1)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at < 0.2
    record = server.chat_requests()[0]
    await wait_ended(record)
    assert record.disconnected is not None and record.disconnected - cancelled_at < 0.2
    assert record.tokens_sent < 30  # generation stopped
    # The client still works afterwards, on a new connection.
    assert done_of(await chat(client, "normal")).ok


async def test_cancel_while_waiting_for_headers(server: FaultServer, client: ChatClient) -> None:
    task = asyncio.create_task(chat(client, "stall_headers"))
    await asyncio.sleep(0.15)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = server.chat_requests()[0]
    await wait_ended(record)
    assert record.disconnected is not None and record.disconnected - cancelled_at < 0.2


# -- the command line ------------------------------------------------------------------------------


def podlab_command() -> list[str]:
    """`python -m podlab`, registering the chat module when cli/__init__ does not list it yet."""
    import podlab.cli

    if "chat" in podlab.cli.COMMAND_MODULES:
        return [sys.executable, "-m", "podlab"]
    code = (
        "import sys, podlab.cli as c; c.COMMAND_MODULES = (*c.COMMAND_MODULES, 'chat');"
        " sys.exit(c.main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", code]


async def podlab(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *podlab_command(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_chat_prints_exactly_the_answer(server: FaultServer) -> None:
    code, out, err = await podlab("chat", "--endpoint", server.url, "--model", "normal", "hi")
    assert (code, out, err) == (0, ANSWER_TEXT + "\n", "")


async def test_cli_chat_uses_the_first_model_and_params(server: FaultServer) -> None:
    code, out, _ = await podlab(
        "chat",
        "--endpoint",
        server.url,
        "--system",
        "Be brief.",
        "--param",
        "temperature=0.3",
        "--param",
        'stop=["\\n\\n"]',
        "--param",
        "top_k=40",
        "hello",
    )
    assert code == 0 and out == ANSWER_TEXT + "\n"
    body = server.chat_requests()[0].body
    assert body["model"] == "fault-model"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert (body["temperature"], body["stop"], body["top_k"]) == (0.3, ["\n\n"], 40)


async def test_cli_chat_json_lines(server: FaultServer) -> None:
    code, out, _ = await podlab(
        "chat", "--endpoint", server.url, "--model", "normal", "--json", "hi"
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    assert "".join(x["text"] for x in lines if x["type"] == "token") == ANSWER_TEXT
    assert lines[-2]["type"] == "usage" and lines[-2]["completion_tokens"] == 7
    last = lines[-1]
    assert last["type"] == "done" and last["finish_reason"] == "stop"
    assert set(last["metrics"]) >= {"ttft_ms", "tokens", "tokens_per_s", "total_ms"}
    assert last["metrics"]["tokens"] == 7


async def test_cli_chat_completion_and_api_key(server: FaultServer) -> None:
    server.api_key = "sk-cli"
    code, out, err = await podlab(
        "chat",
        "--endpoint",
        server.url,
        "--model",
        "echo",
        "--completion",
        "--api-key-env",
        "PODLAB_TEST_KEY",
        "The start",
        env={"PODLAB_TEST_KEY": "sk-cli"},
    )
    assert (code, out) == (0, "echo: The start\n"), err
    assert server.chat_requests()[0].headers["authorization"] == "Bearer sk-cli"
    code, _, err = await podlab(
        "chat", "--endpoint", server.url, "--api-key-env", "PODLAB_UNSET_VARIABLE", "x"
    )
    assert code == 1 and "PODLAB_UNSET_VARIABLE" in err


@pytest.mark.parametrize(
    "model", ["http_error?hostile=1", "http_error?hostile=1&body=text", "error_mid?hostile=1"]
)
async def test_cli_server_error_text_cannot_drive_the_terminal(
    server: FaultServer, model: str
) -> None:
    """A server's error message with escape sequences reaches stderr (and compare's stdout)
    with its control characters shown as \\x1b etc., never as raw bytes."""
    raw = ("\x1b", "\x07", "\x9b")
    shown = terminal_safe(HOSTILE_ERROR)
    assert shown != HOSTILE_ERROR
    code, out, err = await podlab("chat", "--endpoint", server.url, "--model", model, "hi")
    assert code == 1 and shown in err, err
    assert not any(c in err or c in out for c in raw)
    code, out, err = await podlab(
        "compare", "--endpoint", server.url, "--endpoint", server.url, "--model", model, "hi"
    )
    assert code == 1
    for stream in (out, err):
        assert shown in stream, stream
        assert not any(c in stream for c in raw)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("http_error?status=404", f"the server answered 404: {HTTP_ERROR}"),
        ("error_mid", MID_STREAM_ERROR),
        ("drop", "interrupted"),
    ],
)
async def test_cli_chat_failures_exit_non_zero(
    server: FaultServer, model: str, message: str
) -> None:
    code, out, err = await podlab("chat", "--endpoint", server.url, "--model", model, "hi")
    assert code == 1
    assert message in err and err.startswith("podlab: error: ")
    assert "Traceback" not in err
    assert out == ("" if model.startswith("http_error") else "Hello, wörld\n")
    code, out, err = await podlab(
        "chat", "--endpoint", server.url, "--model", model, "--json", "hi"
    )
    assert code == 1 and message in err
    assert json.loads(out.splitlines()[-1])["type"] == "done"


async def test_cli_chat_unreachable_and_bad_param() -> None:
    code, _, err = await podlab("chat", "--endpoint", "http://127.0.0.1:1", "hi")
    assert code == 1 and "cannot reach" in err and "hint:" in err
    code, _, err = await podlab(
        "chat", "--endpoint", "http://127.0.0.1:1", "--param", "temperature=hot", "hi"
    )
    assert code == 1 and "temperature must be a number" in err.replace("parameter ", "")


async def test_cli_compare_json(server: FaultServer) -> None:
    async with FaultServer() as other:
        code, out, err = await podlab(
            "compare",
            "--endpoint",
            server.url,
            "--endpoint",
            other.url,
            "--model",
            "normal",
            "--model",
            "echo",
            "--mode",
            "per-server",
            "--json",
            "hi",
        )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    final = lines[-1]
    assert [p["endpoint"] for p in final["panes"]] == [server.url, other.url]
    assert [p["model"] for p in final["panes"]] == ["normal", "echo"]
    assert [p["text"] for p in final["panes"]] == [ANSWER_TEXT, "echo: hi | messages=1"]
    assert all(p["metrics"]["tokens"] > 0 for p in final["panes"])
    assert sum(p["fastest"] for p in final["panes"]) == 1
    assert {line["type"] for line in lines[:-1]} >= {"started", "token", "done"}
    # No --energy: nothing measured, so no efficiency either (never a made-up figure).
    assert [(p["energy_j"], p["tokens_per_j"]) for p in final["panes"]] == [(None, None)] * 2
    assert final["tokens_per_j"] is None


async def test_cli_compare_readable_and_failing_pane(server: FaultServer, tmp_path: Path) -> None:
    export = tmp_path / "result.md"
    code, out, err = await podlab(
        "compare",
        "--endpoint",
        server.url,
        "--endpoint",
        server.url,
        "--model",
        "normal",
        "--model",
        "http_error",
        "--export",
        str(export),
        "hi",
    )
    assert code == 1
    assert f"[1] normal @ {server.url}" in out and ANSWER_TEXT in out
    assert "TTFT_MS" in out and "complete" in out and "error" in out
    assert "pane 2 http_error" in err and HTTP_ERROR in err
    assert "**Prompt:** hi" in export.read_text(encoding="utf-8")


async def test_cli_compare_prompt_file(server: FaultServer, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\n", encoding="utf-8")
    export = tmp_path / "set.json"
    code, out, err = await podlab(
        "compare",
        "--endpoint",
        server.url,
        "--endpoint",
        server.url,
        "--model",
        "echo",
        "--prompts",
        str(prompts),
        "--json",
        "--export",
        str(export),
    )
    assert code == 0, err
    final = json.loads(out.splitlines()[-1])
    assert [r["prompt"] for r in final["rounds"]] == ["one", "two"]
    assert [p["complete"] for p in final["panes"]] == [2, 2]
    assert json.loads(export.read_text(encoding="utf-8"))["rounds"][1]["panes"][0]["text"] == (
        "echo: two | messages=1"
    )


async def test_cli_compare_argument_checks(server: FaultServer) -> None:
    code, _, err = await podlab("compare", "--endpoint", server.url, "hi")
    assert code == 1 and "2 to 4" in err
    code, _, err = await podlab(
        "compare",
        "--endpoint",
        server.url,
        "--endpoint",
        server.url,
        "--model",
        "a",
        "--model",
        "b",
        "--model",
        "c",
        "hi",
    )
    assert code == 1 and "--model" in err


def test_terminal_safe_escapes_control_characters() -> None:
    assert terminal_safe("a\x1b]0;x\x07b\tc\nd\re\x9b") == "a\\x1b]0;x\\x07b\tc\nd\\x0de\\x9b"
    assert terminal_safe("日本語 🙂") == "日本語 🙂"


async def test_https_is_always_verified_against_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared TLS context (core.http) trusts what SSL_CERT_FILE names, like httpx, and
    refuses a certificate nobody vouches for; there is no unverified fallback."""
    from tests.httpfaults import FaultServer as HttpsServer
    from tests.httpfaults import make_self_signed_cert, server_ssl_context

    cert, key = make_self_signed_cert(tmp_path / "tls")
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with HttpsServer(ssl_context=server_ssl_context(cert, key)) as https:
        https.serve("/v1/models", json.dumps({"data": [{"id": "tls-model"}]}).encode())
        assert https.url("/v1").startswith("https://127.0.0.1:")

        monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the system store knows it not
        async with ChatClient(https.url("/v1")) as client:
            with pytest.raises(PodlabError, match=r"(?i)certificate"):
                await client.list_models()

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        async with ChatClient(https.url("/v1")) as client:
            assert await client.list_models() == ["tls-model"]
