"""Streaming render benchmark: is the cost of showing an answer linear in its length?

Mixed Markdown (paragraphs, lists, tables, code fences, quotes, headings) is cut into
LLM-sized tokens and fed as fast as the event loop allows into one assistant message of the
real chat view, through the same path a network stream uses: `MessageWidget.append()` on every
token (the Throttle renders at most ~25 times a second), one event-loop turn per token, then
`finish()`. Offscreen, under qasync, the window shown so layout is paid for too.

Measured in the same run: the time for 5,000 tokens and for 20,000 tokens (each in a fresh
message), and the longest gap of a 5 ms QTimer heartbeat while they stream (an event-loop
stall: what a user feels as a frozen window).

    python bench/render.py [--small 5000] [--large 20000]

Targets, met in every repeat (not only the quietest): time(20,000) / time(5,000) <= 4.5
(linear: 4.0), longest stall <= 30 ms. Exits 1 when any repeat misses; figures go to JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import re
import sys
import time
from dataclasses import dataclass

from results_file import add_json_option, write_results

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

RATIO_TARGET = 4.5
STALL_TARGET_MS = 30.0
HEARTBEAT_MS = 5


# ---------------------------------------------------------------------------------------------
# Input


WORDS = (
    "the",
    "model",
    "answers",
    "each",
    "question",
    "with",
    "care",
    "and",
    "a",
    "short",
    "example",
    "so",
    "that",
    "the",
    "reader",
    "can",
    "follow",
    "along",
    "while",
    "tokens",
    "stream",
    "from",
    "a",
    "local",
    "server",
    "into",
    "the",
    "playground",
    "window",
    "quickly",
)


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
    if rng.random() < 0.3:
        i = rng.randrange(len(words))
        words[i] = f"**{words[i]}**"
    if rng.random() < 0.3:
        i = rng.randrange(len(words))
        words[i] = f"`{words[i]}()`"
    if rng.random() < 0.1:
        i = rng.randrange(len(words))
        words[i] = f"[{words[i]}](https://example.org/{words[i]})"
    return " ".join(words).capitalize() + "."


def mixed_markdown(rng: random.Random, target_tokens: int) -> str:
    """Markdown with every kind of block, at least `target_tokens` tokens long."""
    parts: list[str] = []
    count = 0
    while count < target_tokens:
        kind = rng.choice(("p", "p", "p", "list", "olist", "table", "code", "quote", "heading"))
        if kind == "p":
            block = " ".join(_sentence(rng) for _ in range(rng.randint(1, 4)))
        elif kind == "list":
            block = "\n".join(f"- {_sentence(rng)}" for _ in range(rng.randint(2, 5)))
        elif kind == "olist":
            block = "\n".join(f"{i + 1}. {_sentence(rng)}" for i in range(rng.randint(2, 5)))
        elif kind == "table":
            rows = ["| Name | Value | Note |", "|:-----|------:|------|"]
            rows += [
                f"| {rng.choice(WORDS)} | {rng.randint(1, 999)} | {rng.choice(WORDS)} |"
                for _ in range(rng.randint(2, 6))
            ]
            block = "\n".join(rows)
        elif kind == "code":
            lines = [
                f"def {rng.choice(WORDS)}_{i}(x: int) -> int:\n"
                f"    return x * {i}  # {rng.choice(WORDS)}"
                for i in range(rng.randint(1, 4))
            ]
            block = "```python\n" + "\n\n".join(lines) + "\n```"
        elif kind == "quote":
            block = "> " + _sentence(rng)
        else:
            block = f"## {_sentence(rng)[:40]}"
        parts.append(block)
        count += len(tokenize(block + "\n\n"))
    return "\n\n".join(parts) + "\n"


def tokenize(text: str) -> list[str]:
    """Roughly how a model's tokens look: words with their leading space, newlines, symbols."""
    return re.findall(r"\n| ?[A-Za-z]+| ?\d+| ?[^\sA-Za-z\d]+| +", text)


# ---------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Run:
    tokens: int
    chars: int
    seconds: float
    max_stall_ms: float
    max_stall_cpu_ms: float
    renders: int
    max_render_ms: float
    parsed_chars: int
    exact: bool


class Heartbeat:
    """A QTimer every few milliseconds; the longest gap between two ticks is the stall.

    Each gap is measured twice: on the wall clock (what a user sees) and in CPU time of the
    GUI thread (the part that is Podlab's own work; on a busy machine the wall-clock gap also
    holds time the system gave to other processes).
    """

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(self._tick)
        self.start()
        self.timer.stop()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.max_gap = max(self.max_gap, now - self.last)
        self.max_cpu_gap = max(self.max_cpu_gap, cpu - self.last_cpu)
        self.last, self.last_cpu = now, cpu

    def start(self) -> None:
        self.last, self.last_cpu = time.perf_counter(), time.thread_time()
        self.max_gap = self.max_cpu_gap = 0.0
        self.timer.start()

    def stop(self) -> tuple[float, float]:
        self._tick()
        self.timer.stop()
        return self.max_gap * 1000.0, self.max_cpu_gap * 1000.0


async def stream_into_chat(chat: object, tokens: list[str], heartbeat: Heartbeat) -> Run:
    from podlab.ui.widgets.chat_view import ChatView

    assert isinstance(chat, ChatView)
    chat.clear()
    chat.add_message("user", "Write a long answer with every kind of Markdown block.")
    message = chat.add_message("assistant", streaming=True)
    await asyncio.sleep(0.05)  # let the new bubbles lay out before timing
    heartbeat.start()
    started = time.perf_counter()
    for token in tokens:
        message.append(token)
        await asyncio.sleep(0)  # one event-loop turn per token, as a network stream has
    finished = asyncio.Event()
    message.view.sig_finished.connect(finished.set)
    message.finish()  # a backlog is written in slices, one per loop turn
    await finished.wait()
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.02)  # paint and layout after the last render count as stalls too
    stall, stall_cpu = heartbeat.stop()
    stats = message.view.renderer.stats
    text = "".join(tokens)
    return Run(
        tokens=len(tokens),
        chars=len(text),
        seconds=seconds,
        max_stall_ms=stall,
        max_stall_cpu_ms=stall_cpu,
        renders=stats.renders,
        max_render_ms=stats.max_render_ms,
        parsed_chars=stats.parsed_chars,
        exact=message.text() == text,
    )


async def measure(small: int, large: int, repeats: int) -> tuple[list[Run], list[Run]]:
    from podlab.ui.widgets.chat_view import ChatView

    rng = random.Random(20_000)
    all_tokens = tokenize(mixed_markdown(rng, large))[:large]
    chat = ChatView()
    chat.resize(1000, 800)
    chat.show()
    heartbeat = Heartbeat()
    await stream_into_chat(chat, all_tokens[:500], heartbeat)  # imports, lexers, caches
    gc.freeze()  # as podlab.ui.app does once it has started
    small_runs, large_runs = [], []
    for _ in range(repeats):  # alternating, so a busy moment of the machine hits both
        small_runs.append(await stream_into_chat(chat, all_tokens[:small], heartbeat))
        large_runs.append(await stream_into_chat(chat, all_tokens, heartbeat))
    chat.close()
    return small_runs, large_runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--large", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_option(parser)
    args = parser.parse_args()

    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        small_runs, large_runs = loop.run_until_complete(
            measure(args.small, args.large, args.repeats)
        )

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for run in (*small_runs, *large_runs):
        print(
            f"{run.tokens:>6} tokens ({run.chars:>6} chars): {run.seconds:5.2f} s,"
            f" {run.tokens / run.seconds:6.0f} tokens/s, {run.renders:3} renders"
            f" (longest {run.max_render_ms:4.1f} ms), parsed {run.parsed_chars / run.chars:.2f}x,"
            f" longest stall {run.max_stall_ms:5.1f} ms wall / {run.max_stall_cpu_ms:4.1f} ms CPU,"
            f" text exact: {run.exact}"
        )
    # Every repeat is judged on its own: a quiet repeat must not hide a slow or stalling one.
    repeats = []
    for number, (small, large) in enumerate(zip(small_runs, large_runs, strict=True), start=1):
        ratio = large.seconds / small.seconds
        stall = max(small.max_stall_ms, large.max_stall_ms)
        stall_cpu = max(small.max_stall_cpu_ms, large.max_stall_cpu_ms)
        exact = small.exact and large.exact
        ok = (
            ratio <= RATIO_TARGET
            and stall <= STALL_TARGET_MS
            and stall_cpu <= STALL_TARGET_MS
            and exact
        )
        print(
            f"repeat {number}: time ratio {ratio:.2f}, longest stall {stall:.1f} ms wall /"
            f" {stall_cpu:.1f} ms CPU, text exact: {exact}  {'OK' if ok else 'MISS'}"
        )
        repeats.append(
            {
                "small_s": small.seconds,
                "large_s": large.seconds,
                "time_ratio": ratio,
                "max_stall_ms": stall,
                "max_stall_cpu_ms": stall_cpu,
                "renders": [small.renders, large.renders],
                "max_render_ms": max(small.max_render_ms, large.max_render_ms),
                "text_exact": exact,
                "passed": ok,
            }
        )
    passed = all(repeat["passed"] for repeat in repeats)
    print(
        f"targets, in every repeat: time({args.large})/time({args.small}) <= {RATIO_TARGET}"
        f" (linear = {args.large / args.small:.2f}), longest stall <= {STALL_TARGET_MS:.0f} ms"
        " wall and GUI-thread CPU, the text exact"
    )
    print(f"{sum(not r['passed'] for r in repeats)} of {len(repeats)} repeats missed")
    print("PASS" if passed else "FAIL")
    figures = {"small_tokens": args.small, "large_tokens": args.large, "repeats": repeats}
    write_results("render", args.json, figures, passed)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
