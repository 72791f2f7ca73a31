"""What does the evaluation runner cost? Two figures, each against a target:

1. Generation speed (tg tokens/s) the runner measures, against a bare httpx client on the same
   server in the same run. Each round asks one prompt both ways with the same request body
   (temperature 0, the seed, max_tokens), alternating which goes first; both count tg the same
   way (tokens after the first over the time from the first to the last: llama-bench's `tg`,
   measured at the client). The ratio is the median over rounds of runner / bare (target
   >= 0.97). By default the server is a real llama-cpp-python server with SmolLM2
   (tests/harness.py); `--endpoint URL` measures another.
2. The runner's own memory (this process's peak RSS, sampled every 50 ms) while it drives a
   1,000-item set (target < 150 MB). The answers come from tests/faultserver.py in its own
   process: a real HTTP server that answers at once, so the runner, its store and its scoring
   are what is measured, not a model.

    python bench/eval_overhead.py [--rounds 16] [--max-tokens 48] [--items 1000]
                                  [--endpoint URL] [--json PATH]

Exits 1 when a target is missed; the figures also go to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from podlab.core.chat.client import ChatClient, GenerationParams  # noqa: E402
from podlab.core.evaluate.promptset import PromptSet, load_prompt_set  # noqa: E402
from podlab.core.evaluate.results import CellSpec  # noqa: E402
from podlab.core.evaluate.runner import EvalRunner, new_run_config  # noqa: E402
from podlab.core.evaluate.store import EvalStore  # noqa: E402
from results_file import add_json_option, write_results  # noqa: E402

SPEED_TARGET = 0.97
MEMORY_TARGET_MB = 150.0
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Describe a walk through a forest in autumn.",
    "Explain how a bicycle works.",
    "Write a letter to a friend about a summer holiday.",
]
CONTENT_KEY = b'"content":'
PARAMS = GenerationParams(max_tokens=48)
"""What both clients send (new_run_config adds temperature 0 and the seed)."""


def prompt_set(folder: Path, prompts: list[str], name: str) -> PromptSet:
    path = folder / f"{name}.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for index, prompt in enumerate(prompts):
            handle.write(json.dumps({"id": f"p{index}", "input": prompt, "ideal": "x"}) + "\n")
    return load_prompt_set(path)


# ---------------------------------------------------------------------------------------------
# 1. tg tokens/s


async def bare_tg(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[int, float]:
    """Tokens after the first and the seconds from the first to the last, raw bytes only."""
    first = last = None
    tokens = 0
    pending = b""
    async with http.stream("POST", "chat/completions", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                at = line.find(CONTENT_KEY)
                if not line.startswith(b"data:") or at < 0:
                    continue
                value = line[at + len(CONTENT_KEY) :].lstrip(b" ")
                if value[:1] == b'"' and value[1:2] != b'"':
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    tokens += 1
    if first is None or last is None or tokens < 2:
        raise SystemExit("the bare client read fewer than two tokens: is the endpoint right?")
    return tokens - 1, last - first


async def speed_round(
    base_url: str, model: str | None, store: EvalStore, the_set: PromptSet, runner_first: bool
) -> tuple[float, float]:
    """(runner tg, bare tg) for one prompt asked both ways, in the given order, with the same
    request body (the run's parameters: temperature 0, the seed, max_tokens)."""
    config = new_run_config(the_set, [CellSpec(base_url, backend="endpoint")], params=PARAMS)
    figures: dict[str, float] = {}

    async def runner() -> None:
        run = store.create_run(config)
        await EvalRunner(store).run(run.id)
        (summary,) = store.summary(run.id)
        if summary.failed or summary.tg_tokens_per_s is None:
            raise SystemExit(f"the runner's run failed: {summary.error or summary}")
        figures["runner"] = summary.tg_tokens_per_s

    async def bare() -> None:
        (item,) = the_set.items
        body: dict[str, Any] = {
            "messages": item.messages(),
            "stream": True,
            **GenerationParams.from_dict(config.params).to_request(),
        }
        if model:
            body["model"] = model
        async with httpx.AsyncClient(
            base_url=base_url + "/", timeout=httpx.Timeout(600.0, connect=10.0), trust_env=False
        ) as http:
            tokens, seconds = await bare_tg(http, body)
        figures["bare"] = tokens / seconds

    for step in (runner, bare) if runner_first else (bare, runner):
        await step()
    return figures["runner"], figures["bare"]


async def first_model(base_url: str) -> str | None:
    async with ChatClient(base_url) as client:
        models = await client.list_models()
    return models[0] if models else None


@contextmanager
def smollm2_server(folder: Path) -> Iterator[str]:
    from tests import harness

    with harness.llama_server(harness.smollm2_path(), folder, n_ctx=1024) as server:
        yield server.base_url + "/v1"


# ---------------------------------------------------------------------------------------------
# 2. The runner's memory over many items


@contextmanager
def fault_server() -> Iterator[str]:
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "faultserver.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http://"):
            raise SystemExit("the fault server did not start")
        yield url + "/v1"
    finally:
        server.terminate()
        server.wait(10)


class PeakRss:
    """This process's RSS sampled in a thread; `peak` in bytes."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


async def memory_run(base_url: str, folder: Path, items: int) -> dict[str, Any]:
    prompts = [f"Question number {n}: say hello." for n in range(items)]
    the_set = prompt_set(folder, prompts, "many")
    with EvalStore(folder / "many.sqlite3") as store:
        cell = CellSpec(base_url, backend="endpoint")
        run = store.create_run(
            new_run_config(the_set, [cell], params=GenerationParams(max_tokens=16))
        )
        before = psutil.Process().memory_info().rss
        started = time.perf_counter()
        with PeakRss() as peak:
            finished = await EvalRunner(store).run(run.id)
        seconds = time.perf_counter() - started
        stored = len(store.items(store.cells(run.id)[0].id))
    if finished.status != "finished" or stored != items:
        raise SystemExit(f"the 1,000-item run did not finish: {finished.status}, {stored} items")
    return {
        "items": items,
        "seconds": round(seconds, 2),
        "rss_before_mb": round(before / 1024**2, 1),
        "peak_rss_mb": round(peak.peak / 1024**2, 1),
        "growth_mb": round((peak.peak - before) / 1024**2, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="an OpenAI-compatible server instead of SmolLM2")
    parser.add_argument("--rounds", type=int, default=16, help="alternating speed rounds")
    parser.add_argument("--max-tokens", type=int, default=48, help="answer length (speed)")
    parser.add_argument("--items", type=int, default=1000, help="items of the memory run")
    add_json_option(parser)
    args = parser.parse_args()
    print("eval overhead: the runner's tg tokens/s vs a bare httpx client, and its memory")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory(prefix="podlab-eval-bench-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("XDG_STATE_HOME", str(folder / "state"))

        # Memory first: nothing else has been allocated in this process yet but the imports.
        with fault_server() as url:
            memory = asyncio.run(memory_run(url, folder, args.items))
        print(
            f"memory over {memory['items']} items ({memory['seconds']} s, fault server): peak "
            f"RSS {memory['peak_rss_mb']} MB (before the run {memory['rss_before_mb']} MB, "
            f"growth {memory['growth_mb']} MB); target < {MEMORY_TARGET_MB:g} MB"
        )

        ratios: list[float] = []
        rows: list[dict[str, float]] = []
        server = smollm2_server(folder) if not args.endpoint else _given(ChatClient(args.endpoint))
        PARAMS.max_tokens = args.max_tokens
        sets = [prompt_set(folder, [prompt], f"speed-{n}") for n, prompt in enumerate(PROMPTS)]
        with server as base_url, EvalStore(folder / "speed.sqlite3") as store:
            model = asyncio.run(first_model(base_url))
            source = args.endpoint or f"llama-cpp-python + SmolLM2 at {base_url}"
            print(f"speed: {source}, {args.rounds} rounds, {args.max_tokens} tokens")
            for index in range(args.rounds):
                runner_tg, bare = asyncio.run(
                    speed_round(base_url, model, store, sets[index % len(sets)], index % 2 == 0)
                )
                ratios.append(runner_tg / bare)
                rows.append({"runner_tg": runner_tg, "bare_tg": bare})
                print(f"  round {index + 1}: runner {runner_tg:.1f} tg/s, bare {bare:.1f} tg/s")
    ratio = statistics.median(ratios)
    speed_ok = ratio >= SPEED_TARGET
    memory_ok = memory["peak_rss_mb"] < MEMORY_TARGET_MB
    print(
        f"median ratio runner / bare {ratio:.3f}: {'meets' if speed_ok else 'BELOW'} {SPEED_TARGET}"
    )
    print(f"peak RSS {memory['peak_rss_mb']} MB: {'meets' if memory_ok else 'ABOVE'} the target")
    figures = {
        "speed_source": source,
        "speed_rounds": rows,
        "speed_median_ratio": ratio,
        "speed_target": SPEED_TARGET,
        "memory": memory,
        "memory_target_mb": MEMORY_TARGET_MB,
    }
    passed = speed_ok and memory_ok
    write_results("eval_overhead", args.json, figures, passed)
    return 0 if passed else 1


@contextmanager
def _given(client: ChatClient) -> Iterator[str]:
    yield client.base_url


if __name__ == "__main__":
    sys.exit(main())
