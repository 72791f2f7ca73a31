"""`podlab chat` and `podlab compare`: talk to any OpenAI-compatible server from a terminal.

`chat` writes the answer to stdout as it streams, then one newline (none when the answer is
empty). On a terminal, control
characters in the model's output (escape sequences) are shown as `\\x1b` instead of being
interpreted; through a pipe the text is passed exactly. With `--json` every event is one JSON
object per line and the last is `{"type": "done", ...}`. A server error, a stall or a dropped
stream exits with status 1 and the server's message on stderr.

`compare` sends one prompt (or a prompt file) to 2-4 endpoints/models and prints each answer
with its metrics; `--json` ends with one line `{"panes": [...]}`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any, TextIO

from podlab.cli.output import print_json, print_table, terminal_safe
from podlab.core.chat.client import (
    DEFAULT_READ_TIMEOUT,
    ChatClient,
    ChatEvent,
    Done,
    Error,
    GenerationParams,
    Metrics,
    Reasoning,
    Timings,
    Token,
    Usage,
)
from podlab.core.chat.compare import (
    MODES,
    CompareEvent,
    Comparison,
    Pane,
    PaneEvent,
    PaneStarted,
    PromptSetResult,
    RoundDone,
    RoundResult,
    load_prompts,
)
from podlab.core.chat.energy import EnergyMeter
from podlab.core.errors import PodlabError
from podlab.core.paths import Locations, atomic_write_text
from podlab.core.serving.keys import ServiceKeys

EXIT_OK = 0
EXIT_FAILED = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = subparsers.add_parser(
        "chat",
        help="stream an answer from an OpenAI-compatible server",
        description="Send one prompt to an OpenAI-compatible server and stream the answer to"
        " stdout (followed by one newline when it is not empty). Exit status 1 when the server"
        " fails or the stream is interrupted; the server's message goes to stderr.",
    )
    chat.add_argument("prompt", help="the prompt; '-' reads it from standard input")
    _common(chat)
    chat.add_argument("--model", help="model id (default: the first one in /v1/models)")
    chat.add_argument(
        "--completion",
        action="store_true",
        help="raw text completion (/v1/completions) instead of chat",
    )
    chat.set_defaults(func=run_chat)

    compare = subparsers.add_parser(
        "compare",
        help="send one prompt to 2-4 endpoints or models side by side",
        description="Send a prompt to 2-4 panes (one per --endpoint) and print each answer with"
        " time to first token, tokens, tokens/s and total time. Exit status 1 when a pane"
        " failed (the others still run).",
    )
    compare.add_argument("prompt", nargs="?", help="the prompt; '-' reads standard input")
    _common(compare, endpoint_action="append")
    compare.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="M",
        help="one for all panes or one per --endpoint, in order (default: the first model"
        " each server lists)",
    )
    compare.add_argument(
        "--mode",
        choices=MODES,
        default="parallel",
        help="parallel (default), per-server (panes on one server take turns) or sequential",
    )
    compare.add_argument(
        "--prompts",
        metavar="FILE",
        help="run every prompt of a file (one per line, or a JSON/YAML list) instead of PROMPT",
    )
    compare.add_argument(
        "--export", metavar="FILE", help="also write the results to FILE (.md or .json)"
    )
    compare.set_defaults(func=run_compare)


def _common(parser: argparse.ArgumentParser, endpoint_action: str = "store") -> None:
    parser.add_argument(
        "--endpoint",
        required=True,
        action=endpoint_action,
        metavar="URL",
        help="server URL, e.g. http://127.0.0.1:8080 (/v1 is added when there is no path)",
    )
    parser.add_argument("--system", metavar="S", help="system prompt")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sampling parameter: temperature, top_p, top_k, min_p, max_tokens, seed, stop"
        " (JSON list or one string), repeat_penalty, presence_penalty, frequency_penalty;"
        " other keys are passed through",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="read the API key from this environment variable (sent as a Bearer token); "
        "a Podlab service's own key is used without it",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT,
        metavar="S",
        help=f"seconds without data before a stream counts as stalled (default"
        f" {DEFAULT_READ_TIMEOUT:g})",
    )
    parser.add_argument(
        "--energy", action="store_true", help="measure energy (RAPL, nvidia-smi) when possible"
    )
    parser.add_argument("--json", action="store_true", help="JSON lines for machines")


# ---------------------------------------------------------------------------------------------
# shared helpers


def _read_prompt(value: str | None) -> str:
    if value is None:
        raise PodlabError("no prompt given", "pass PROMPT, '-' for standard input, or --prompts")
    text = sys.stdin.read() if value == "-" else value
    if not text.strip():
        raise PodlabError("the prompt is empty")
    return text


def _api_key(variable: str | None) -> str | None:
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise PodlabError(
            f"the environment variable {variable} is not set or empty",
            f"export {variable}=... before running, or leave out --api-key-env",
        )
    return value


def service_key(endpoint: str) -> str | None:
    """The key Podlab made for its own service at `endpoint` (None for any other server)."""
    return ServiceKeys(Locations.default()).get(endpoint)


def _params(assignments: list[str]) -> GenerationParams:
    params = GenerationParams()
    params.apply_assignments(assignments)
    return params


def _err(message: str) -> None:
    """An error line on stderr; the server's text in it never reaches the terminal raw."""
    print(f"podlab: error: {terminal_safe(message)}", file=sys.stderr, flush=True)


def metrics_json(metrics: Metrics, energy_j: float | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ttft_ms": metrics.ttft_ms,
        "tokens": metrics.tokens,
        "tokens_per_s": metrics.tokens_per_s,
        "total_ms": metrics.total_ms,
        "tokens_source": metrics.tokens_source,
        "prompt_tokens": metrics.prompt_tokens,
        "server_tokens_per_s": metrics.server_tokens_per_s,
    }
    if energy_j is not None:
        data["energy_j"] = round(energy_j, 3)
    return data


def event_json(event: ChatEvent, energy_j: float | None = None) -> dict[str, Any]:
    if isinstance(event, Token):
        return {"type": "token", "text": event.text}
    if isinstance(event, Reasoning):
        return {"type": "reasoning", "text": event.text}
    if isinstance(event, Usage):
        return {
            "type": "usage",
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
            "total_tokens": event.total_tokens,
        }
    if isinstance(event, Timings):
        return {"type": "timings", "timings": dict(event.values)}
    if isinstance(event, Error):
        return {
            "type": "error",
            "message": event.message,
            "status": event.status,
            "kind": event.kind,
        }
    return {
        "type": "done",
        "finish_reason": event.finish_reason,
        "interrupted": event.interrupted,
        "error": event.error,
        "metrics": metrics_json(event.metrics, energy_j),
    }


def _error_line(error: Error) -> str:
    if error.kind == "http" and error.status is not None:
        return f"the server answered {error.status}: {error.message}"
    return error.message


def _run(coro: Any) -> int:
    try:
        result: int = asyncio.run(coro)
        return result
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# podlab chat


def run_chat(args: argparse.Namespace) -> int:
    if args.completion and args.system:
        raise PodlabError("--system has no meaning with --completion")
    prompt = _read_prompt(args.prompt)
    params = _params(args.param)
    api_key = _api_key(args.api_key_env) or service_key(args.endpoint)
    return _run(_chat(args, prompt, params, api_key))


async def _chat(
    args: argparse.Namespace, prompt: str, params: GenerationParams, api_key: str | None
) -> int:
    out: TextIO = sys.stdout
    safe = not args.json and out.isatty()
    meter = EnergyMeter() if args.energy else None
    async with ChatClient(args.endpoint, api_key, read_timeout=args.timeout) as client:
        model = args.model or await _first_model(client)
        if args.completion:
            stream = client.stream_completion(prompt, model, params)
        else:
            messages = []
            if args.system:
                messages.append({"role": "system", "content": args.system})
            messages.append({"role": "user", "content": prompt})
            stream = client.stream_chat(messages, model, params)
        if meter is not None:
            await meter.astart()
        done: Done | None = None
        errors: list[Error] = []
        wrote = False
        async with aclosing(stream):
            async for event in stream:
                if isinstance(event, Error):
                    errors.append(event)
                if isinstance(event, Done):
                    done = event
                    energy = await meter.astop() if meter is not None else None
                    if args.json:
                        print_json(event_json(event, energy))
                    continue
                if args.json:
                    print_json(event_json(event))
                elif isinstance(event, Token):
                    out.write(terminal_safe(event.text) if safe else event.text)
                    out.flush()
                    wrote = True
        if wrote:
            out.write("\n")
            out.flush()
    if meter is not None and not meter.available:
        print(f"podlab: energy {meter.reason}", file=sys.stderr)
    for error in errors:
        _err(_error_line(error))
    if done is None or not done.ok:
        if not errors:
            _err("the answer did not finish")
        return EXIT_FAILED
    return EXIT_OK


async def _first_model(client: ChatClient) -> str:
    models = await client.list_models()
    if not models:
        raise PodlabError(f"{client.base_url}/models lists no models", "pass --model")
    return models[0]


# ---------------------------------------------------------------------------------------------
# podlab compare


def run_compare(args: argparse.Namespace) -> int:
    endpoints: list[str] = args.endpoint
    if not 2 <= len(endpoints) <= 4:
        raise PodlabError(
            f"compare needs 2 to 4 --endpoint options, not {len(endpoints)}",
            "repeat --endpoint for the same server to compare two models on it",
        )
    models: list[str] = args.model
    if len(models) not in (0, 1, len(endpoints)):
        raise PodlabError(
            f"{len(models)} --model options for {len(endpoints)} endpoints",
            "give one --model for all, or one per --endpoint in the same order",
        )
    if args.prompts and args.prompt:
        raise PodlabError("give either PROMPT or --prompts, not both")
    prompts = load_prompts(args.prompts) if args.prompts else [_read_prompt(args.prompt)]
    params = _params(args.param)
    api_key = _api_key(args.api_key_env)
    if args.export and Path(args.export).suffix.lower() not in (".md", ".json"):
        raise PodlabError(f"--export {args.export}: the file name must end in .md or .json")
    per_pane = (
        models
        if len(models) == len(endpoints)
        else [models[0] if models else None] * len(endpoints)
    )
    panes = [
        Pane(
            endpoint,
            model,
            GenerationParams.from_dict(params.to_dict()),
            args.system or "",
            api_key=api_key or service_key(endpoint),
        )
        for endpoint, model in zip(endpoints, per_pane, strict=True)
    ]
    return _run(_compare(args, panes, prompts))


async def _compare(args: argparse.Namespace, panes: list[Pane], prompts: list[str]) -> int:
    await _fill_models(panes, args.timeout)
    meter = EnergyMeter() if args.energy else None
    comparison = Comparison(panes, energy=meter, read_timeout=args.timeout)
    progress = not args.json and sys.stderr.isatty()

    def on_event(index: int, event: CompareEvent) -> None:
        if args.json:
            line = _compare_event_json(event)
            if line is not None:
                if len(prompts) > 1:
                    line["prompt_index"] = index
                print_json(line)
        elif progress and isinstance(event, PaneEvent) and isinstance(event.event, Done):
            state = "done" if event.event.ok else "failed"
            print(f"pane {event.pane + 1} {state}", file=sys.stderr, flush=True)

    outcome = await comparison.run_prompt_set(prompts, args.mode, on_event, remember=False)
    if meter is not None and not meter.available:
        print(f"podlab: energy {meter.reason}", file=sys.stderr)
    single = outcome.rounds[0] if len(outcome.rounds) == 1 else None
    if args.json:
        print_json(single.to_dict() if single is not None else outcome.to_dict())
    elif single is not None:
        _print_round(single)
    else:
        _print_prompt_set(outcome)
    if args.export:
        _export(Path(args.export), single, outcome)
    failed = 0
    for result in outcome.rounds:
        for pane in result.panes:
            if not pane.ok:
                failed += 1
                where = f" (prompt {outcome.rounds.index(result) + 1})" if single is None else ""
                _err(f"pane {pane.pane + 1} {pane.label}{where}: {pane.error or pane.state}")
    return EXIT_FAILED if failed else EXIT_OK


async def _fill_models(panes: list[Pane], read_timeout: float) -> None:
    """Panes without --model get the first model their server lists (None if it cannot say)."""
    cache: dict[str, str | None] = {}
    for pane in panes:
        if pane.model:
            continue
        if pane.endpoint not in cache:
            try:
                async with ChatClient(pane.endpoint, pane.api_key, read_timeout=read_timeout) as c:
                    models = await c.list_models()
                cache[pane.endpoint] = models[0] if models else None
            except PodlabError:
                cache[pane.endpoint] = None  # the pane reports the problem when it runs
        pane.model = cache[pane.endpoint]


def _compare_event_json(event: CompareEvent) -> dict[str, Any] | None:
    if isinstance(event, PaneStarted):
        return {"type": "started", "pane": event.pane, "at_s": round(event.at, 3)}
    if isinstance(event, PaneEvent):
        return {**event_json(event.event), "pane": event.pane}
    if isinstance(event, RoundDone):
        return None  # the summary line follows
    return None


def _print_round(result: RoundResult) -> None:
    out = sys.stdout
    safe = out.isatty()
    for pane in result.panes:
        star = "  * fastest" if pane.fastest else ""
        print(f"[{pane.pane + 1}] {pane.label} @ {pane.endpoint}{star}")
        text = terminal_safe(pane.text) if safe else pane.text
        if text:
            print(text)
        if pane.error:
            print(f"error: {terminal_safe(pane.error)}")
        print()
    rows = []
    for pane in result.panes:
        m = pane.metrics
        rows.append(
            [
                f"{pane.pane + 1}{'*' if pane.fastest else ''}",
                pane.label,
                pane.state,
                None if m is None or m.ttft_ms is None else f"{m.ttft_ms:.0f}",
                None if m is None else m.tokens,
                None if m is None or m.tokens_per_s is None else f"{m.tokens_per_s:.1f}",
                None if m is None else f"{m.total_ms / 1000:.2f}",
                None if pane.energy_j is None else f"{pane.energy_j:.1f}",
                None if pane.tokens_per_j is None else f"{pane.tokens_per_j:.2f}",
            ]
        )
    print_table(
        ["pane", "model", "state", "ttft_ms", "tokens", "tok/s", "total_s", "energy_j", "tok/J"],
        rows,
    )


def _print_prompt_set(outcome: PromptSetResult) -> None:
    rows = []
    for row in outcome.table():
        rows.append(
            [
                row["prompt_index"] + 1,
                row["label"],
                row["state"],
                None if row["ttft_ms"] is None else f"{row['ttft_ms']:.0f}",
                row["tokens"],
                None if row["tokens_per_s"] is None else f"{row['tokens_per_s']:.1f}",
                "*" if row["fastest"] else "",
            ]
        )
    print_table(["prompt", "model", "state", "ttft_ms", "tokens", "tok/s", "fastest"], rows)
    print()
    summary = [
        [
            s["label"],
            s["complete"],
            s["failed"],
            s["mean_tokens_per_s"],
            s["mean_ttft_ms"],
            s["fastest"],
        ]
        for s in outcome.summary()
    ]
    print_table(["model", "complete", "failed", "mean_tok/s", "mean_ttft_ms", "fastest"], summary)


def _export(path: Path, single: RoundResult | None, outcome: PromptSetResult) -> None:
    import json

    if path.suffix.lower() == ".json":
        data = single.to_dict() if single is not None else outcome.to_dict()
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    else:
        text = single.to_markdown() if single is not None else outcome.to_markdown()
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise PodlabError(f"cannot write {path}: {exc.strerror or exc}") from None
