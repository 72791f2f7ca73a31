"""The local engine's self-test: one tiny real inference in a child process.

A llama.cpp compiled for another CPU loads fine and dies at the first token (SIGILL, or a
general protection fault that shows as SIGSEGV); every chat then fails with "Server
disconnected". Running a few tokens in a throwaway process names that failure up front, with the
signal, the log tail and the fix, instead of letting the first chat find it. The child is a
separate process so that its crash can never take Podlab down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, Literal

from podlab.core.models.store import ModelStore
from podlab.core.serving.crash import (
    CPU_FAULT_SIGNALS,
    crash_fix,
    describe_exit,
    portable_rebuild_command,
    signal_meaning,
    signal_name,
    signal_of,
)
from podlab.core.text import plural

SELFTEST_TOKENS = 16
SELFTEST_TIMEOUT = 120.0
LOG_TAIL_LINES = 15
RESULT_MARK = "PODLAB-SELFTEST "

CHILD_SCRIPT = """\
import json, sys, time
from llama_cpp import Llama
model, tokens, mark = sys.argv[1], int(sys.argv[2]), sys.argv[3]
llm = Llama(model_path=model, n_ctx=256, verbose=True)
stamps = []
for chunk in llm.create_completion("1, 2, 3,", max_tokens=tokens, temperature=0.0, stream=True):
    if chunk["choices"][0]["finish_reason"] is None:
        stamps.append(time.perf_counter())
seconds = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
print(mark + json.dumps({"tokens": len(stamps), "seconds": seconds}), flush=True)
"""
"""Runs in the child: load the model, stream a few tokens greedily, print one JSON line with the
generation speed (from the first token to the last, so that loading is not counted)."""

Status = Literal["ok", "crashed", "failed", "timeout", "no_model", "unavailable"]


@dataclass(frozen=True)
class SelfTestResult:
    """What the self-test found; `summary` is the one line people read."""

    status: Status
    summary: str
    model: str | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    signal_name: str | None = None
    log_tail: str = ""
    fix: str = ""
    """What to do, in words (with the command in it)."""
    fix_command: str = ""
    """The command alone, for a "Copy" button."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def broken(self) -> bool:
        """The engine cannot serve: it crashed, failed or hung (not: nothing to test)."""
        return self.status in ("crashed", "failed", "timeout")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "summary": self.summary,
            "model": self.model,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "signal_name": self.signal_name,
            "log_tail": self.log_tail,
            "fix": self.fix,
            "fix_command": self.fix_command,
            "seconds": round(self.seconds, 3),
        }


def smallest_model(candidates: Iterable[tuple[Path, int | None]]) -> Path | None:
    """The smallest existing GGUF file among (path, size) pairs: the quickest to load."""
    best: tuple[int, Path] | None = None
    for path, size in candidates:
        if not path.is_file() or path.suffix.lower() != ".gguf":
            continue
        bytes_ = size if size is not None else path.stat().st_size
        if best is None or bytes_ < best[0]:
            best = (bytes_, path)
    return None if best is None else best[1]


def selftest_model(store: ModelStore) -> Path | None:
    """The smallest model downloaded to or imported into the store, or None."""
    models = store.list_models(discovered=False)
    return smallest_model((m.path, m.size) for m in models if m.usable)


def _llama_version() -> str | None:
    with contextlib.suppress(PackageNotFoundError):
        return dist_version("llama_cpp_python")
    return None


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    kept = [line for line in text.splitlines() if line.strip() and RESULT_MARK not in line]
    return "\n".join(kept[-lines:])


async def run_selftest(
    model: Path | None,
    *,
    python: str | None = None,
    tokens: int = SELFTEST_TOKENS,
    within: float = SELFTEST_TIMEOUT,
) -> SelfTestResult:
    """Generate `tokens` tokens of `model` with llama-cpp-python in a child `python`.

    Never raises for a broken engine: a crash, an error exit or a timeout is the result.
    """
    python = python or sys.executable
    if model is None:
        return SelfTestResult(
            "no_model",
            "no model to test with (download or import a GGUF model first)",
        )
    argv = [python, "-X", "faulthandler", "-c", CHILD_SCRIPT, str(model), str(tokens), RESULT_MARK]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        return SelfTestResult(
            "unavailable", f"cannot run {python}: {exc.strerror or exc}", model=str(model)
        )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return SelfTestResult(
            "timeout",
            f"timed out: no answer within {within:g} s (the engine hangs or this machine is slow)",
            model=str(model),
            seconds=time.monotonic() - started,
        )
    finally:
        if process.returncode is None:  # cancelled: never leave the child behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    seconds = time.monotonic() - started
    text = output.decode(errors="replace")
    code = process.returncode
    tail = _tail(text)
    report = _report_line(text)
    if code == 0 and report is not None:
        count = int(report["tokens"])
        rate = (count - 1) / report["seconds"] if report["seconds"] > 0 else None
        rate_text = f"{rate:.0f} tok/s" if rate is not None else plural(count, "token")
        return SelfTestResult(
            "ok",
            f"ok ({rate_text})",
            model=str(model),
            tokens=count,
            tokens_per_s=None if rate is None else round(rate, 1),
            exit_code=code,
            seconds=seconds,
        )
    number = signal_of(code)
    version = _llama_version()
    summary = describe_exit(code)
    meaning = signal_meaning(number)
    if meaning:
        summary += f": {meaning}"
    return SelfTestResult(
        "crashed" if number is not None else "failed",
        summary,
        model=str(model),
        exit_code=code,
        signal=number,
        signal_name=None if number is None else signal_name(number),
        log_tail=tail,
        fix=crash_fix(number, python, version),
        fix_command=portable_rebuild_command(python, version)
        if number in CPU_FAULT_SIGNALS
        else "",
        seconds=seconds,
    )


def _report_line(text: str) -> dict[str, float] | None:
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARK):
            with contextlib.suppress(ValueError, TypeError):
                data = json.loads(line.removeprefix(RESULT_MARK))
                return {"tokens": float(data["tokens"]), "seconds": float(data["seconds"])}
    return None


__all__ = ["SelfTestResult", "run_selftest", "selftest_model", "smallest_model"]
