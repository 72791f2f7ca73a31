"""How much does Podlab's streaming client cost over the leanest possible reader?

Both read the same stream in the same run, alternating which goes first each round:

    raw     the leanest reader there is: httpx's raw bytes (no decoding, no line iterator, no
            JSON), lines split by hand, a chunk counted when its `"content":` starts a non-empty
            string; it must count exactly the tokens Podlab counts, or the run stops
    podlab  core.chat.client.ChatClient.stream_chat, counting Token events (SSE parser, events,
            metrics, error handling and all)

Throughput is tokens / wall time of the whole request, measured the same way for both. Each
round runs both readers back to back, so they see the same load on the machine; the ratio is
the median over rounds of podlab / raw (target >= 0.97), and the tokens/s shown are the medians.
The client's own CPU time per token (median) is printed too: it does not depend on what else
the machine runs, and its ratio (raw / podlab) is the same comparison with less noise where the
client is the bottleneck (at a fixed rate it is mostly the event loop waiting, and not judged).

By default it starts tests/faultserver.py in a subprocess and runs its synthetic stream: as fast
as possible (one event per HTTP chunk, as real servers write, and 64 per chunk, which stresses
parsing; the server sends stored bytes, so the client is the bottleneck) and at a fixed rate.
`--endpoint URL` measures a real server instead.

    python bench/stream_overhead.py [--rounds 21] [--tokens 20000] [--rate 200] [--json PATH]
    python bench/stream_overhead.py --endpoint http://127.0.0.1:8080 [--model M] [--max-tokens 256]

Exits 1 below the target; the figures also go to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from podlab.core.chat.client import ChatClient, GenerationParams, Token
from results_file import add_json_option, write_results

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.97
PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


@dataclass
class Case:
    title: str
    model: str | None
    params: GenerationParams
    client_bound: bool = True  # the client's CPU is what limits the rate


CONTENT_KEY = b'"content":'


def starts_content(line: bytes) -> bool:
    """Whether an SSE data line carries a non-empty `content` string, found without JSON."""
    at = line.find(CONTENT_KEY)
    if at < 0:
        return False
    value = line[at + len(CONTENT_KEY) :].lstrip(b" ")
    return value[:1] == b'"' and value[1:2] != b'"'


async def read_raw(http: httpx.AsyncClient, body: dict[str, Any]) -> int:
    tokens = 0
    pending = b""
    async with http.stream("POST", "chat/completions", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                if line.startswith(b"data: [DONE]"):
                    return tokens
                if starts_content(line):
                    tokens += 1
    return tokens


async def read_podlab(client: ChatClient, case: Case) -> int:
    tokens = 0
    async for event in client.stream_chat(PROMPT, case.model, case.params):
        if isinstance(event, Token):
            tokens += 1
    return tokens


@dataclass
class Figures:
    rates: list[float]  # tokens/s per round
    cpu: list[float]  # client CPU microseconds per token per round

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def cpu_per_token(self) -> float:
        return statistics.median(self.cpu)


async def timed(reader: Callable[[], Awaitable[int]], figures: Figures) -> int:
    cpu_started = time.process_time()
    started = time.perf_counter()
    tokens = await reader()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if tokens == 0:
        raise SystemExit("the stream carried no tokens: is the model/endpoint right?")
    figures.rates.append(tokens / elapsed)
    figures.cpu.append(cpu / tokens * 1e6)
    return tokens


async def run_case(base_url: str, case: Case, rounds: int) -> tuple[Figures, Figures]:
    body: dict[str, Any] = {"messages": PROMPT, "stream": True}
    body["stream_options"] = {"include_usage": True}
    if case.model:
        body["model"] = case.model
    body.update(case.params.to_request())
    raw, podlab = Figures([], []), Figures([], [])
    timeout = httpx.Timeout(600.0, connect=10.0)
    async with (
        httpx.AsyncClient(base_url=base_url + "/", timeout=timeout, trust_env=False) as http,
        ChatClient(base_url, read_timeout=600.0) as client,
    ):
        # Warm up both (connections, imports, caches) before measuring.
        await read_raw(http, body)
        await read_podlab(client, case)
        for index in range(rounds):
            order = ["raw", "podlab"] if index % 2 == 0 else ["podlab", "raw"]
            counted = {}
            for name in order:
                if name == "raw":
                    counted[name] = await timed(lambda: read_raw(http, body), raw)
                else:
                    counted[name] = await timed(lambda: read_podlab(client, case), podlab)
            if counted["raw"] != counted["podlab"]:
                raise SystemExit(f"the readers disagree on the token count: {counted}")
    return raw, podlab


def start_fault_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "faultserver.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http://"):
        server.kill()
        raise SystemExit("the fault server did not start")
    return server, url


async def first_model(base_url: str) -> str | None:
    async with ChatClient(base_url) as client:
        models = await client.list_models()
    return models[0] if models else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="a real OpenAI-compatible server instead")
    parser.add_argument("--model", help="model on --endpoint (default: the first listed)")
    parser.add_argument("--max-tokens", type=int, default=256, help="answer length on --endpoint")
    parser.add_argument("--rounds", type=int, default=21, help="alternating rounds per case")
    parser.add_argument("--tokens", type=int, default=20000, help="tokens of the fast streams")
    parser.add_argument("--rate", type=float, default=200.0, help="tokens/s of the fixed stream")
    parser.add_argument("--rate-tokens", type=int, default=400, help="tokens of the fixed stream")
    add_json_option(parser)
    args = parser.parse_args()

    server = None
    if args.endpoint:
        base_url = ChatClient(args.endpoint).base_url
        model = args.model or asyncio.run(first_model(base_url))
        params = GenerationParams(max_tokens=args.max_tokens, temperature=0.0, seed=1)
        title = f"{args.endpoint} model {model}, {args.max_tokens} tokens"
        cases = [Case(title, model, params, client_bound=False)]
        source = f"server {args.endpoint}"
    else:
        server, url = start_fault_server()
        base_url = url + "/v1"
        n = args.tokens
        cases = [
            Case(
                f"fast, {n} tokens, 1 event/chunk",
                f"synthetic?tokens={n}&prebuilt=1",
                GenerationParams(),
            ),
            Case(
                f"fast, {n} tokens, 64 events/chunk",
                f"synthetic?tokens={n}&batch=64&prebuilt=1",
                GenerationParams(),
            ),
            Case(
                f"fixed {args.rate:g} tok/s, {args.rate_tokens} tokens",
                f"synthetic?tokens={args.rate_tokens}&tps={args.rate:g}",
                GenerationParams(),
                client_bound=False,
            ),
        ]
        source = f"fault server {url} (tests/faultserver.py, own process)"
    print("stream overhead: Podlab ChatClient vs the leanest reader (raw bytes, no JSON)")
    print(f"{source}; {args.rounds} alternating rounds")
    print(
        f"python {sys.version.split()[0]}, httpx {httpx.__version__}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    print()
    header = (
        f"{'case':<40} {'raw tok/s':>10} {'podlab tok/s':>12} {'ratio':>6}"
        f" {'raw cpu us/tok':>14} {'podlab cpu us/tok':>17} {'cpu ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    worst = worst_cpu = float("inf")
    results = []
    try:
        for case in cases:
            raw, podlab = asyncio.run(run_case(base_url, case, args.rounds))
            ratio = statistics.median(p / r for p, r in zip(podlab.rates, raw.rates, strict=True))
            cpu_ratio = raw.cpu_per_token / podlab.cpu_per_token
            worst = min(worst, ratio)
            results.append(
                {
                    "case": case.title,
                    "client_bound": case.client_bound,
                    "raw_tokens_per_s": raw.rates,
                    "podlab_tokens_per_s": podlab.rates,
                    "raw_cpu_us_per_token": raw.cpu,
                    "podlab_cpu_us_per_token": podlab.cpu,
                    "median_ratio": ratio,
                    "cpu_ratio": cpu_ratio,
                }
            )
            if case.client_bound:
                worst_cpu = min(worst_cpu, cpu_ratio)
            print(
                f"{case.title:<40} {raw.rate:>10.0f} {podlab.rate:>12.0f}"
                f" {ratio:>6.3f} {raw.cpu_per_token:>14.2f} {podlab.cpu_per_token:>17.2f}"
                f" {cpu_ratio:>9.3f}",
                flush=True,
            )
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    print()
    verdict = "meets" if worst >= TARGET else "BELOW"
    cpu_note = ""
    if math.isfinite(worst_cpu):
        cpu_note = f" (lowest client-bound CPU ratio {worst_cpu:.3f})"
    print(f"lowest tokens/s ratio {worst:.3f}{cpu_note}: {verdict} the target of {TARGET}")
    figures = {"source": source, "rounds": args.rounds, "target": TARGET, "cases": results}
    write_results("stream_overhead", args.json, figures, worst >= TARGET)
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
