"""The chat client and the chat/compare CLI against real llama.cpp servers with real models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from podlab.core.chat.client import ChatClient, Done, GenerationParams, Token
from tests import harness

pytestmark = pytest.mark.integration

# "Answer in one word." makes SmolLM2's greedy answer Paris across CPUs and builds; without it
# one build answered in French nonsense.
CAPITAL_ONE_WORD = "What is the capital of France? Answer in one word."
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": CAPITAL_ONE_WORD},
]


async def collect(events):  # type: ignore[no-untyped-def]
    tokens: list[str] = []
    done: Done | None = None
    async for event in events:
        if isinstance(event, Token):
            tokens.append(event.text)
        elif isinstance(event, Done):
            done = event
    assert done is not None
    return "".join(tokens), done


async def test_streamed_text_equals_the_non_streamed_answer(
    smollm2_model: Path, tmp_path: Path
) -> None:
    """Equality is the point here, so both requests start from the same server state: each goes
    to a fresh server. llama-cpp-python reuses the cached prefix of the previous request, and a
    prompt evaluated partly from that cache can change the greedy answer (seen on one machine:
    "The capital of France is Paris." streamed, then "La femme de France..." whole). The seed is
    fixed, the temperature 0 and the thread count the same for both."""
    params = GenerationParams(temperature=0.0, seed=42, max_tokens=48)
    with harness.llama_server(smollm2_model, tmp_path) as server:
        async with ChatClient(server.base_url) as client:
            [model] = await client.list_models()
            streamed, done = await collect(client.stream_chat(QUESTION, model=model, params=params))
    with harness.llama_server(smollm2_model, tmp_path) as server:
        async with httpx.AsyncClient(timeout=120) as raw:
            response = await raw.post(
                f"{server.base_url}/v1/chat/completions",
                json={"messages": QUESTION, "model": model, **params.to_request()},
            )
    whole = response.json()["choices"][0]["message"]["content"]
    assert done.ok and not done.interrupted
    assert streamed == whole == done.text
    assert "Paris" in streamed
    metrics = done.metrics
    assert metrics.ttft_ms is not None and 0 < metrics.ttft_ms < metrics.total_ms
    assert metrics.tokens >= 3
    assert metrics.tokens_per_s is not None and metrics.tokens_per_s > 0
    assert done.finish_reason in ("stop", "length")


async def test_gemma_base_model_streams_completions(gemma3_server: harness.LlamaServer) -> None:
    params = GenerationParams(temperature=0.0, seed=1, max_tokens=24)
    async with ChatClient(gemma3_server.base_url) as client:
        text, done = await collect(
            client.stream_completion("The three primary colours are", params=params)
        )
    assert done.ok
    assert text.strip() != ""
    assert done.metrics.tokens > 1
    assert done.finish_reason in ("stop", "length")


async def test_a_model_that_answers_nothing_is_reported_not_crashed(
    gemma3_server: harness.LlamaServer,
) -> None:
    """Gemma 270M (a base model) often ends a chat at once with empty content."""
    params = GenerationParams(temperature=0.0, seed=1, max_tokens=16)
    async with ChatClient(gemma3_server.base_url) as client:
        text, done = await collect(client.stream_chat(QUESTION, params=params))
    assert done.ok and not done.interrupted
    assert text == done.text
    assert done.metrics.total_ms > 0
    if text == "":
        assert done.metrics.tokens == 0 and done.metrics.ttft_ms is None


def run_podlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podlab", *args], capture_output=True, text=True, timeout=180
    )


def test_cli_chat_prints_exactly_the_answer(smollm2_model: Path, tmp_path: Path) -> None:
    """Plain and --json output of the same question must hold the same text: each run asks a
    fresh server, for the reason given in test_streamed_text_equals_the_non_streamed_answer."""
    args = ["--system", "You are a helpful assistant.", "--param", "temperature=0"]
    args += ["--param", "seed=42", "--param", "max_tokens=48"]
    with harness.llama_server(smollm2_model, tmp_path) as server:
        plain = run_podlab("chat", "--endpoint", server.base_url, *args, CAPITAL_ONE_WORD)
    assert plain.returncode == 0, plain.stderr
    with harness.llama_server(smollm2_model, tmp_path) as server:
        as_json = run_podlab(
            "chat", "--endpoint", server.base_url, *args, "--json", CAPITAL_ONE_WORD
        )
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    done = events[-1]
    assert done["type"] == "done"
    assert set(done["metrics"]) >= {"ttft_ms", "tokens", "tokens_per_s", "total_ms"}
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    assert plain.stdout == streamed + "\n"
    assert "Paris" in streamed


def test_cli_compare_two_settings_of_one_real_model(smollm2_server: harness.LlamaServer) -> None:
    result = run_podlab(
        "compare",
        "--endpoint",
        smollm2_server.base_url,
        "--endpoint",
        smollm2_server.base_url,
        "--mode",
        "per-server",
        "--json",
        "Name one planet of the solar system.",
    )
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout.splitlines()[-1])
    assert len(final["panes"]) == 2
    for pane in final["panes"]:
        assert pane["endpoint"].startswith(smollm2_server.base_url)
        assert pane["text"].strip() != ""
        assert pane["metrics"]["tokens"] > 0 and pane["metrics"]["total_ms"] > 0
