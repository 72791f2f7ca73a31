"""`podlab eval`: run a prompt set over models unattended, list and show runs, export them."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from podlab.cli.output import print_json, print_table, terminal_safe
from podlab.core.chat.client import GenerationParams
from podlab.core.errors import PodlabError
from podlab.core.evaluate.promptset import builtin_set_names, resolve_prompt_set
from podlab.core.evaluate.report import FORMATS, export_run, run_dict, summary_table
from podlab.core.evaluate.results import Backend, CellSpec, RunRecord
from podlab.core.evaluate.runner import EvalRunner, RunProgress, new_run_config
from podlab.core.evaluate.scorers import JudgeConfig
from podlab.core.evaluate.store import EvalStore
from podlab.core.paths import atomic_write_text
from podlab.core.serving.engine import Engine
from podlab.core.serving.services import ServiceManager
from podlab.core.settings import load_settings

BACKENDS: tuple[Backend, ...] = ("local", "podman", "endpoint")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate models on a prompt set: quality, speed, memory and energy",
        description="Run a prompt set with references over a matrix of models, quantizations, "
        "server images and context sizes, one cell after another, and keep the results.",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    commands = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")

    sets = commands.add_parser("sets", help="list the built-in prompt sets")
    sets.add_argument("--json", action="store_true", help="print JSON for scripts")
    sets.set_defaults(func=cmd_sets)

    run = commands.add_parser(
        "run",
        help="run a prompt set over models (one cell per model x quant x image x ctx)",
        description="Each cell's server is started, asked every item at temperature 0 with a "
        "seed, and stopped before the next. A progress bar goes to stderr.",
    )
    run.add_argument("set", metavar="SET", help="a built-in set (podlab eval sets) or a file")
    run.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="M",
        help="a GGUF file, downloaded model id or catalog id (an URL with --backend endpoint); "
        "repeat for several",
    )
    run.add_argument("--quant", action="append", metavar="Q", help="catalog quantizations")
    run.add_argument("--image", action="append", metavar="I", help="server images (podman)")
    run.add_argument("--ctx", action="append", type=int, metavar="N", help="context sizes")
    run.add_argument("--backend", choices=BACKENDS, default="local", help="default: local")
    run.add_argument("--judge", metavar="URL", help="the judge model's OpenAI-compatible URL")
    run.add_argument("--judge-model", metavar="NAME", help="the model name the judge serves")
    run.add_argument(
        "--judge-template",
        type=Path,
        metavar="FILE",
        help="the judge's pairwise prompt ({question}, {first}, {second})",
    )
    run.add_argument("--max-tokens", type=int, metavar="N", help="default 256")
    run.add_argument("--seed", type=int, metavar="N", help="default 42")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another generation parameter (top_p=0.9, stop=...)",
    )
    run.add_argument("--item-timeout", type=float, default=120.0, metavar="S")
    run.add_argument("--json", action="store_true", help="print the run as JSON at the end")
    run.set_defaults(func=cmd_run)

    resume = commands.add_parser(
        "resume", help="go on with a paused, cancelled or killed run (finished items are kept)"
    )
    resume.add_argument("run", type=int, metavar="RUN")
    resume.add_argument("--json", action="store_true", help="print the run as JSON at the end")
    resume.set_defaults(func=cmd_resume)

    listing = commands.add_parser("list", help="list the stored runs")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(func=cmd_list)

    show = commands.add_parser("show", help="show a run's cells: quality, speed, memory")
    show.add_argument("run", type=int, metavar="RUN")
    show.add_argument("--json", action="store_true", help="the whole run as JSON")
    show.set_defaults(func=cmd_show)

    export = commands.add_parser("export", help="export a run as CSV, JSON or Markdown")
    export.add_argument("run", type=int, metavar="RUN")
    export.add_argument("--format", choices=FORMATS, required=True)
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    export.set_defaults(func=cmd_export)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _store() -> EvalStore:
    return EvalStore.open_default()


# --------------------------------------------------------------------------- sets / list / show


def cmd_sets(args: argparse.Namespace) -> int:
    sets = [resolve_prompt_set(name) for name in builtin_set_names()]
    if args.json:
        print_json(
            [{"name": s.name, "items": len(s.items), "description": s.description} for s in sets]
        )
        return 0
    print_table(
        ["name", "items", "scorers", "description"],
        [
            [s.name, len(s.items), ",".join(sorted({i.scorer.name for i in s.items})), _short(s)]
            for s in sets
        ],
    )
    return 0


def _short(prompt_set: Any) -> str:
    text = str(prompt_set.description).split(". ")[0]
    return text if len(text) <= 70 else text[:69] + "…"


def cmd_list(args: argparse.Namespace) -> int:
    with _store() as store:
        runs = store.list_runs()
        if args.json:
            print_json([_run_line(store, run) for run in runs])
            return 0
        print_table(
            ["id", "set", "cells", "status", "created"],
            [
                [
                    run.id,
                    run.set_name,
                    len(run.config.cells),
                    _status(store, run),
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created)),
                ]
                for run in runs
            ],
        )
    return 0


def _status(store: EvalStore, run: RunRecord) -> str:
    return "killed (resumable)" if store.is_orphaned(run) else run.status


def _run_line(store: EvalStore, run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "set": run.set_name,
        "set_sha256": run.set_sha256,
        "cells": [cell.to_dict() for cell in run.config.cells],
        "status": _status(store, run),
        "created": run.created,
    }


def cmd_show(args: argparse.Namespace) -> int:
    with _store() as store:
        if args.json:
            print_json(run_dict(store, args.run))
            return 0
        _print_summary(store, store.get_run(args.run))
    return 0


def _print_summary(store: EvalStore, run: RunRecord) -> None:
    print(f"run {run.id}: {run.set_name} ({len(run.config.prompt_set.items)} items), {run.status}")
    for line in summary_table(store.summary(run.id)):
        print(terminal_safe(line))
    for cell in store.cells(run.id):
        if cell.error:
            print(terminal_safe(f"{cell.label}: {cell.error.splitlines()[0]}"))


def cmd_export(args: argparse.Namespace) -> int:
    with _store() as store:
        text = export_run(store, args.run, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.output, text)  # results are private: 0600 like Podlab's files
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- run / resume


def _cells(args: argparse.Namespace) -> list[CellSpec]:
    """Every combination of the given models, quantizations, images and context sizes."""
    combos = itertools.product(
        args.model, args.quant or [None], args.image or [None], args.ctx or [None]
    )
    return [
        CellSpec(model=model, backend=args.backend, quant=quant, image=image, ctx=ctx)
        for model, quant, image, ctx in combos
    ]


def _judge(args: argparse.Namespace) -> JudgeConfig | None:
    if not args.judge:
        return None
    judge = JudgeConfig(endpoint=args.judge, model=args.judge_model)
    if args.judge_template is not None:
        try:
            judge.pairwise_template = args.judge_template.read_text(encoding="utf-8")
        except OSError as exc:
            raise PodlabError(f"cannot read {args.judge_template}: {exc.strerror}") from None
    return judge


def cmd_run(args: argparse.Namespace) -> int:
    prompt_set = resolve_prompt_set(args.set)
    params = GenerationParams(max_tokens=args.max_tokens, seed=args.seed)
    params.apply_assignments(args.param)
    config = new_run_config(
        prompt_set,
        _cells(args),
        params=params,
        judge=_judge(args),
        item_timeout_s=args.item_timeout,
    )
    with _store() as store:
        run = store.create_run(config)
        print(f"run {run.id}: {prompt_set.name}, {len(config.cells)} cell(s)", file=sys.stderr)
        return _drive(store, run.id, args.json)


def cmd_resume(args: argparse.Namespace) -> int:
    with _store() as store:
        return _drive(store, args.run, args.json)


def _drive(store: EvalStore, run_id: int, json_mode: bool) -> int:
    settings = load_settings()
    for error in settings.errors:
        print(f"podlab: warning: {error}", file=sys.stderr)
    manager = ServiceManager(Engine(settings.settings), settings=settings.settings)
    runner = EvalRunner(store, manager)
    bar = ProgressBar(sys.stderr)
    try:
        run = asyncio.run(runner.run(run_id, bar))
    finally:
        bar.close()
    if json_mode:
        print_json(run_dict(store, run_id))
    else:
        _print_summary(store, run)
    return 0 if run.status == "finished" else 1


class ProgressBar:
    """A bar redrawn in place on a terminal; one line per item otherwise (logs, pipes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._open = False

    def __call__(self, progress: RunProgress) -> None:
        where = f"cell {min(progress.cell_index + 1, progress.cells)}/{progress.cells}"
        text = f"{where} {progress.cell_label}: {progress.items_done}/{progress.items}"
        if progress.state in ("finished", "paused", "cancelled"):
            text = f"run {progress.run_id} {progress.state}"
        elif progress.state != "running":
            text += f" {progress.state}"
        if progress.message:
            text += f" · {progress.message.splitlines()[0]}"
        text = terminal_safe(text)
        if self.tty:
            filled = int(progress.fraction * 24)
            bar = "[" + "#" * filled + "-" * (24 - filled) + "]"
            self.stream.write(f"\r{bar} {progress.fraction * 100:5.1f}% {text}"[:200] + "\x1b[K")
            self._open = True
        else:
            self.stream.write(f"{progress.fraction * 100:5.1f}% {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
