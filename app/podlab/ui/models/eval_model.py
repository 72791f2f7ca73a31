"""The cells of an evaluation run as a table: quality with its confidence interval, time to
first token, prompt and generation speed, peak memory, energy and failures per cell."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt

from podlab.core.evaluate.stats import CellSummary
from podlab.ui.models.formatting import short_size_text
from podlab.ui.models.table import ModelIndex, RowTableModel

COLUMNS = (
    "Cell",
    "Status",
    "Quality",
    "95% CI",
    "TTFT p50",
    "TTFT p95",
    "pp tok/s",
    "tg tok/s",
    "Peak memory",
    "Tokens/J",
    "Failed",
)
NUMERIC_FROM = 2
"""Columns from this one on are figures, aligned right."""


def figure(value: float | None, digits: int = 1, unit: str = "") -> str:
    """A number for a cell of the table; "–" when it is unknown (never a made-up 0)."""
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def quality_text(summary: CellSummary) -> str:
    mean = summary.quality.mean
    return "–" if mean is None else f"{mean:.2f}"


def interval_text(summary: CellSummary) -> str:
    quality = summary.quality
    if quality.ci_low is None or quality.ci_high is None:
        return "–"
    return f"{quality.ci_low:.2f} – {quality.ci_high:.2f}"


class CellSummaryModel(RowTableModel[CellSummary]):
    """One row per cell of the run shown."""

    columns = COLUMNS

    def set_summaries(self, summaries: Sequence[CellSummary]) -> None:
        self.beginResetModel()
        self._rows = list(summaries)
        self.endResetModel()

    def summaries(self) -> list[CellSummary]:
        return list(self._rows)

    def row_key(self, item: CellSummary) -> str:
        return str(item.cell_id)

    def text(self, summary: CellSummary, column: int) -> str:
        """What column `column` shows for `summary`."""
        failed = f"{summary.failed}/{summary.items}"
        if summary.unparseable:
            failed += f" ({summary.unparseable} unparseable)"
        values = (
            summary.label,
            summary.status,
            quality_text(summary),
            interval_text(summary),
            figure(summary.ttft_p50_ms, 0, " ms"),
            figure(summary.ttft_p95_ms, 0, " ms"),
            figure(summary.pp_tokens_per_s),
            figure(summary.tg_tokens_per_s),
            short_size_text(summary.peak_memory_bytes) or "–",
            figure(summary.tokens_per_j, 2),
            failed,
        )
        return values[column]

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        summary = self.item_at(index.row()) if index.isValid() else None
        if summary is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self.text(summary, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 1 and summary.error:
                return summary.error
            if column in (4, 5, 6, 7) and summary.timing_source:
                return f"Timings measured by the {summary.timing_source}"
            if column == 8 and summary.memory_source:
                return f"Read from {summary.memory_source}"
            if column == 9 and summary.energy_j is not None:
                return f"{summary.energy_j:.1f} J for {summary.generated_tokens} tokens"
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= NUMERIC_FROM:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None
