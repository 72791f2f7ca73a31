"""Exports of a run (CSV, JSON, Markdown) and the comparison of two runs.

CSV has one row per cell and item (for spreadsheets); JSON has the whole run: configuration,
cell summaries and every answer; Markdown has the summary table a person pastes into a report.
Comparing runs flags a cell whose quality fell below the earlier run's confidence interval:
a drop the bootstrap cannot explain as noise.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any, Literal

from podlab.core.evaluate.results import RunRecord
from podlab.core.evaluate.stats import CellSummary
from podlab.core.evaluate.store import EvalStore

ExportFormat = Literal["csv", "json", "md"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "json", "md")
_CSV_COLUMNS = (
    "cell",
    "item_id",
    "status",
    "scorer",
    "score",
    "score_state",
    "score_detail",
    "ttft_ms",
    "total_ms",
    "prompt_tokens",
    "prompt_ms",
    "gen_tokens",
    "gen_ms",
    "completion_tokens",
    "timing_source",
    "finish_reason",
    "error",
    "answer",
)


def export_run(store: EvalStore, run_id: int, fmt: str) -> str:
    """The run in `fmt` ("csv", "json" or "md") as text."""
    if fmt == "csv":
        return export_csv(store, run_id)
    if fmt == "json":
        return export_json(store, run_id)
    if fmt in ("md", "markdown"):
        return export_markdown(store, run_id)
    raise ValueError(f"unknown export format {fmt!r} (csv, json or md)")


def export_csv(store: EvalStore, run_id: int) -> str:
    labels = {cell.id: cell.label for cell in store.cells(run_id)}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for cell_id, items in store.run_items(run_id).items():
        for item in items:
            row = {**dataclasses.asdict(item), "cell": labels.get(cell_id, str(cell_id))}
            writer.writerow(["" if row[c] is None else row[c] for c in _CSV_COLUMNS])
    return buffer.getvalue()


def summary_dict(summary: CellSummary) -> dict[str, Any]:
    return dataclasses.asdict(summary)


def run_dict(store: EvalStore, run_id: int) -> dict[str, Any]:
    """The whole run as plain data (what `--json` and the JSON export print)."""
    run = store.get_run(run_id)
    cells = store.cells(run_id)
    items = store.run_items(run_id)
    return {
        "id": run.id,
        "status": run.status,
        "created": run.created,
        "updated": run.updated,
        "error": run.error,
        "config": run.config.to_dict(),
        "cells": [
            {
                **dataclasses.asdict(cell),
                "label": cell.label,
                "items": [dataclasses.asdict(item) for item in items.get(cell.id, [])],
            }
            for cell in cells
        ],
        "summary": [summary_dict(summary) for summary in store.summary(run_id)],
    }


def export_json(store: EvalStore, run_id: int) -> str:
    return json.dumps(run_dict(store, run_id), ensure_ascii=False, indent=2) + "\n"


def _figure(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _quality(summary: CellSummary) -> str:
    quality = summary.quality
    if quality.mean is None:
        return "–"
    return f"{quality.mean:.2f} [{_figure(quality.ci_low, 2)}, {_figure(quality.ci_high, 2)}]"


def _memory(value: int | None) -> str:
    return "–" if not value else f"{value / 1024**2:.0f} MiB"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_table(summaries: list[CellSummary]) -> list[str]:
    """The Markdown table of cell summaries (quality with its 95% CI, speed, memory, energy)."""
    lines = [
        "| Cell | Status | Quality [95% CI] | TTFT p50 / p95 ms | pp t/s | tg t/s "
        "| Peak memory | Tokens/J | Failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for summary in summaries:
        lines.append(
            f"| {_escape(summary.label)} | {summary.status} | {_quality(summary)} "
            f"| {_figure(summary.ttft_p50_ms, 0)} / {_figure(summary.ttft_p95_ms, 0)} "
            f"| {_figure(summary.pp_tokens_per_s)} | {_figure(summary.tg_tokens_per_s)} "
            f"| {_memory(summary.peak_memory_bytes)} | {_figure(summary.tokens_per_j, 2)} "
            f"| {summary.failed}/{summary.items} |"
        )
    return lines


def export_markdown(store: EvalStore, run_id: int) -> str:
    run = store.get_run(run_id)
    summaries = store.summary(run_id)
    params = ", ".join(f"{k}={v}" for k, v in sorted(run.config.params.items()))
    lines = [
        f"# Evaluation {run.id}: {run.set_name}",
        "",
        f"- Status: {run.status}",
        f"- Prompt set: {run.set_name} ({len(run.config.prompt_set.items)} items, "
        f"sha256 {run.set_sha256[:12]})",
        f"- Parameters: {params}",
        f"- Podlab {run.config.podlab_version}",
        "",
        *summary_table(summaries),
    ]
    errors = [s for s in summaries if s.error]
    if errors:
        lines += ["", "## Failed cells", ""]
        lines += [f"- {_escape(s.label)}: {_escape(s.error)}" for s in errors]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Comparing two runs


@dataclass(frozen=True)
class CellComparison:
    """One cell label in an earlier and a later run; `dropped`: the later mean is below the
    earlier run's confidence interval."""

    label: str
    before: CellSummary | None
    after: CellSummary | None

    @property
    def delta(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        if self.before.quality.mean is None or self.after.quality.mean is None:
            return None
        return self.after.quality.mean - self.before.quality.mean

    @property
    def dropped(self) -> bool:
        if self.before is None or self.after is None:
            return False
        low, mean = self.before.quality.ci_low, self.after.quality.mean
        return low is not None and mean is not None and mean < low - 1e-12


def compare_runs(store: EvalStore, before_id: int, after_id: int) -> list[CellComparison]:
    """Cells matched by label (model, quantization, image, context, backend), in the later
    run's order, then cells only the earlier run had."""
    before = {s.label: s for s in store.summary(before_id)}
    after = store.summary(after_id)
    rows = [CellComparison(s.label, before.pop(s.label, None), s) for s in after]
    rows += [CellComparison(label, summary, None) for label, summary in before.items()]
    return rows


def describe_run(run: RunRecord) -> str:
    """One line for lists: "3 · arithmetic · 2 cells · finished"."""
    cells = len(run.config.cells)
    return f"{run.id} · {run.set_name} · {cells} cell{'s' if cells != 1 else ''} · {run.status}"
