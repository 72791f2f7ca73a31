"""`podlab models pull|list|import|rm`: the model store from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from podlab.cli.output import print_json, print_table
from podlab.core.errors import PodlabError
from podlab.core.models.download import (
    DownloadError,
    DownloadProgress,
    DownloadState,
    format_bytes,
)
from podlab.core.models.store import PARTIAL, ModelStore, PullJob, StoredModel

PLAIN_INTERVAL = 10.0
"""Seconds between progress lines when stderr is not a terminal."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models",
        help="pull, import, list and remove models",
        description="Models downloaded by Podlab, imported GGUF files, and models found in "
        "RamaLama, Ollama and Hugging Face cache folders (read-only).",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    pull = actions.add_parser(
        "pull",
        help="download a catalog model or a URL (resumes an interrupted download)",
        description="Download a catalog model (ID or ID:QUANT) or a URL (https://... or "
        "hf://org/repo/file.gguf[@revision]). Interrupted downloads resume where they stopped.",
    )
    pull.add_argument("ref", metavar="ID|URL")
    pull.add_argument("--sha256", metavar="HEX", help="expected sha256 of the file")
    pull.add_argument(
        "--json", action="store_true", help="one JSON object per progress event, then a result"
    )
    pull.set_defaults(func=cmd_pull)

    listing = actions.add_parser("list", help="list models (partial downloads are marked)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_list)

    imports = actions.add_parser(
        "import", help="register a GGUF file (in place unless --copy)", description=None
    )
    imports.add_argument("path", metavar="PATH")
    imports.add_argument("--copy", action="store_true", help="copy the file into the models folder")
    imports.add_argument("--id", dest="model_id", help="id to register it under")
    imports.add_argument(
        "--no-hash",
        action="store_true",
        help="do not hash the file now (no sha256, not linked to its catalog entry)",
    )
    imports.add_argument("--json", action="store_true", help="print JSON")
    imports.set_defaults(func=cmd_import)

    remove = actions.add_parser(
        "rm", help="remove a model (an imported file is only forgotten, never deleted)"
    )
    remove.add_argument("model_id", metavar="ID")
    remove.add_argument("--json", action="store_true", help="print JSON")
    remove.set_defaults(func=cmd_rm)


def _store() -> tuple[ModelStore, float]:
    from podlab.core.settings import load_settings

    settings = load_settings().settings
    return ModelStore.from_settings(settings), settings.download_stall_seconds


# -- pull ----------------------------------------------------------------------------------------


class Reporter:
    """Shows progress: a bar updated in place on a terminal, JSON lines, or plain lines."""

    def __init__(self, label: str, *, json_mode: bool, stream: TextIO | None = None) -> None:
        self.label = label
        self.json_mode = json_mode
        self.stream = stream or sys.stderr
        self.tty = not json_mode and self.stream.isatty()
        self.last: DownloadProgress | None = None
        self._last_line = 0.0
        self._last_state: DownloadState | None = None
        self._open_line = False

    def __call__(self, event: DownloadProgress) -> None:
        self.last = event
        if self.json_mode:
            print_json({"event": "progress", **event.to_dict()})
            return
        now = time.monotonic()
        changed = event.state != self._last_state
        self._last_state = event.state
        if self.tty:
            if changed or now - self._last_line >= 0.1 or event.state.finished:
                self._last_line = now
                self.stream.write("\r" + self.line(event)[:200] + "\x1b[K")
                self.stream.flush()
                self._open_line = True
        elif changed or now - self._last_line >= PLAIN_INTERVAL:
            if event.state in (DownloadState.DONE, DownloadState.FAILED):
                return  # the result line says it
            self._last_line = now
            print(self.line(event), file=self.stream, flush=True)

    def line(self, event: DownloadProgress) -> str:
        state = event.state.value
        amount = f"{format_bytes(event.done)} / {format_bytes(event.total)}"
        if event.state in (DownloadState.DOWNLOADING, DownloadState.STALLED):
            percent = ""
            bar = ""
            if event.total:
                fraction = min(1.0, event.done / event.total)
                percent = f"{fraction * 100:5.1f}% "
                if self.tty:
                    filled = int(fraction * 24)
                    bar = "[" + "#" * filled + "-" * (24 - filled) + "] "
            eta = f"ETA {_duration(event.eta)}" if event.eta is not None else "ETA --"
            rate = f"{format_bytes(event.rate)}/s"
            extra = "  stalled" if event.state is DownloadState.STALLED else ""
            return f"{self.label}  {percent}{bar}{amount}  {rate}  {eta}{extra}"
        message = f"  {event.message}" if event.message else ""
        return f"{self.label}  {state}{message}"

    def end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _resolve(ref: str) -> tuple[Any, Any]:
    """(ModelInfo or None, ModelVariant or URL) for a catalog reference or a URL."""
    if "://" in ref:
        return None, ref
    from podlab.core.models.catalog import load_catalog

    catalog = load_catalog().catalog
    found = catalog.find_variant(ref)
    if found is None:
        suggest = getattr(catalog, "suggest", None)
        close = suggest(ref.split(":")[0]) if callable(suggest) else []
        hint = f"did you mean: {', '.join(close)}?" if close else "see `podlab catalog list`"
        raise PodlabError(f"no model {ref!r} in the catalog", hint=hint)
    return found


def _sha_words(entry: StoredModel) -> str:
    if not entry.sha256:
        return ""
    source = {
        "expected": "verified against the catalog",
        "server": "verified against the digest the server publishes",
        "computed": "recorded (no published digest to check against)",
    }.get(entry.sha256_source or "", entry.sha256_source or "")
    return f", sha256 {entry.sha256} {source}"


def cmd_pull(args: argparse.Namespace) -> int:
    try:
        store, stall_seconds = _store()
        model, source = _resolve(args.ref)
    except PodlabError as exc:
        if args.json:
            print_json({"event": "result", "ok": False, "error": exc.message, "kind": "usage"})
        raise
    label = args.ref.split("?")[0].rstrip("/").rsplit("/", 1)[-1] if model is None else args.ref
    label = label if len(label) <= 40 else label[:39] + "…"
    reporter = Reporter(label, json_mode=args.json)
    jobs: list[PullJob] = []
    try:
        entry = asyncio.run(
            store.pull(
                source,
                sha256=args.sha256,
                model=model,
                on_progress=reporter,
                on_start=jobs.append,
                stall_seconds=stall_seconds,
            )
        )
    except KeyboardInterrupt:
        reporter.end_line()
        kept = 0
        partial_path = None
        if jobs:
            partial_path = jobs[0].download.partial_path
            kept = partial_path.stat().st_size if partial_path.exists() else 0
        if args.json:
            print_json(
                {
                    "event": "result",
                    "ok": False,
                    "state": "cancelled",
                    "kept_bytes": kept,
                    "partial": str(partial_path) if partial_path else None,
                }
            )
        print(
            f"interrupted: {format_bytes(kept)} kept"
            + (f" in {partial_path}" if partial_path else "")
            + f"; run `podlab models pull {args.ref}` again to resume",
            file=sys.stderr,
        )
        return 130
    except PodlabError as exc:
        reporter.end_line()
        if args.json:
            kind = exc.kind if isinstance(exc, DownloadError) else "usage"
            print_json({"event": "result", "ok": False, "error": exc.message, "kind": kind})
        raise
    reporter.end_line()
    if args.json:
        print_json({"event": "result", "ok": True, "model": entry.to_dict()})
    else:
        print(f"{entry.id} is ready: {entry.path} ({format_bytes(entry.size)}{_sha_words(entry)})")
    return 0


# -- list, import, rm ----------------------------------------------------------------------------


def _size_cell(entry: StoredModel) -> str:
    if entry.state == PARTIAL:
        done = format_bytes(entry.done or 0)
        if entry.size:
            return f"{done} of {format_bytes(entry.size)} ({(entry.done or 0) / entry.size:.0%})"
        return f"{done} so far"
    return format_bytes(entry.size) if entry.size is not None else ""


def cmd_list(args: argparse.Namespace) -> int:
    store, _ = _store()
    entries = store.list_models()
    if args.json:
        usage = store.disk_usage()
        print_json({"models": [e.to_dict() for e in entries], "disk": usage.to_dict()})
        return 0
    if not entries:
        print(f"no models yet in {store.models_dir}; try `podlab models pull ID`")
        return 0
    rows = [(e.id, e.state, _size_cell(e), e.source, e.quantization, str(e.path)) for e in entries]
    print_table(["id", "state", "size", "source", "quant", "path"], rows)
    usage = store.disk_usage()
    partial = f" ({format_bytes(usage.partial)} in unfinished downloads)" if usage.partial else ""
    free = f", {format_bytes(usage.free)} free" if usage.free is not None else ""
    print(f"\n{format_bytes(usage.used)} used in {usage.models_dir}{partial}{free}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    store, _ = _store()
    entry = store.import_gguf(Path(args.path), copy=args.copy, model_id=args.model_id)
    if not args.no_hash:
        from podlab.core.models.catalog import load_catalog

        # The same step as the Models page: a file that is byte for byte a catalog variant is
        # linked to it, so `serve` and the Catalog know it by its catalog name and sha256.
        entry = store.recognise(entry.id, load_catalog().catalog) or entry
    if args.json:
        print_json(entry.to_dict())
        return 0
    meta = entry.metadata
    facts = []
    if meta:
        if meta.architecture:
            facts.append(meta.architecture)
        if meta.parameters:
            facts.append(f"{meta.parameters / 1e9:.2f}B parameters")
        if meta.file_type:
            facts.append(meta.file_type)
        if meta.context_length:
            facts.append(f"context {meta.context_length}")
        if meta.chat_template:
            facts.append("chat template")
    where = "copied to" if args.copy else "used in place (not copied):"
    print(f"imported {entry.id}: {', '.join(facts) or 'GGUF'}; {where} {entry.path}")
    if entry.catalog_id:
        print(f"recognised as catalog model {entry.catalog_id} (sha256 {entry.sha256})")
    elif entry.sha256:
        print(f"sha256 {entry.sha256} (not a catalog file)")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    store, _ = _store()
    result = store.remove(args.model_id)
    if args.json:
        print_json(
            {
                "id": result.id,
                "deleted_bytes": result.deleted_bytes,
                "kept_path": str(result.kept_path) if result.kept_path else None,
            }
        )
    elif result.kept_path is not None:
        print(f"forgot {result.id}; your file {result.kept_path} was left in place")
    else:
        print(f"removed {result.id} ({format_bytes(result.deleted_bytes)} deleted)")
    return 0
