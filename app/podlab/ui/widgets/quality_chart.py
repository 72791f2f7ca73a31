"""Speed against quality for the cells of an evaluation run: one point per cell at its
generation tokens/s (x) and mean score (y), with the score's 95% confidence interval as an
error bar, so a faster cell whose interval overlaps a slower one's is seen as no worse.

pyqtgraph draws it (PySide6-Essentials has no QtCharts). Labels are plain text: cell names
come from model names and URLs, never rendered as HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from podlab.core.evaluate.stats import CellSummary

POINT_COLOUR = "#2a6fb0"
BEST_COLOUR = "#1e7b34"


@dataclass(frozen=True)
class ChartPoint:
    """One charted cell."""

    label: str
    tokens_per_s: float
    quality: float
    ci_low: float
    ci_high: float


def chart_points(summaries: Sequence[CellSummary]) -> tuple[list[ChartPoint], list[str]]:
    """The cells that have both a generation speed and a score, and the labels of the others
    (a failed cell, or one whose answers could not be scored, has no place on the chart)."""
    points: list[ChartPoint] = []
    left_out: list[str] = []
    for summary in summaries:
        quality = summary.quality
        if summary.tg_tokens_per_s is None or quality.mean is None:
            left_out.append(summary.label)
            continue
        low = quality.ci_low if quality.ci_low is not None else quality.mean
        high = quality.ci_high if quality.ci_high is not None else quality.mean
        points.append(ChartPoint(summary.label, summary.tg_tokens_per_s, quality.mean, low, high))
    return points, left_out


class QualityChart(QWidget):
    """The chart and a line naming the cells it could not place."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setAccessibleName("Speed against quality chart")
        self.plot.setAccessibleDescription(
            "One point per cell: generation tokens per second across, mean score up, "
            "with the 95% confidence interval as a vertical bar"
        )
        item = self.plot.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setLabel("bottom", "Generation speed (tokens/s)")
        item.setLabel("left", "Quality (mean score, 95% CI)")
        for side in ("bottom", "left"):  # "tokens/s (x0.001)" reads worse than 0.45
            item.getAxis(side).enableAutoSIPrefix(False)
        item.setMenuEnabled(False)
        item.hideButtons()
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setObjectName("chart-note")
        self.note.hide()
        self.points: list[ChartPoint] = []
        """What is drawn now (tests read it)."""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.note)

    def show_cells(self, summaries: Sequence[CellSummary]) -> None:
        points, left_out = chart_points(summaries)
        self.points = points
        item = self.plot.getPlotItem()
        item.clear()
        if left_out:
            self.note.setText("Not on the chart (no speed or no score): " + ", ".join(left_out))
        self.note.setVisible(bool(left_out))
        if not points:
            return
        xs = np.array([p.tokens_per_s for p in points])
        ys = np.array([p.quality for p in points])
        below = np.array([p.quality - p.ci_low for p in points])
        above = np.array([p.ci_high - p.quality for p in points])
        best = max(range(len(points)), key=lambda i: (points[i].quality, points[i].tokens_per_s))
        bars = pg.ErrorBarItem(
            x=xs, y=ys, top=above, bottom=below, beam=0.0, pen=pg.mkPen("#888", width=1.5)
        )
        item.addItem(bars)
        brushes = [pg.mkBrush(BEST_COLOUR if i == best else POINT_COLOUR) for i in range(len(xs))]
        scatter = pg.ScatterPlotItem(x=xs, y=ys, size=11, brush=brushes, pen=pg.mkPen("w"))
        item.addItem(scatter)
        for point in points:
            text = pg.TextItem(text=point.label, color="#222", anchor=(0, 1))
            text.setPos(point.tokens_per_s, point.quality)
            item.addItem(text)
        span = float(xs.max() - xs.min()) or float(xs.max()) or 1.0
        item.setXRange(max(0.0, float(xs.min()) - span * 0.15), float(xs.max()) + span * 0.6)
        low = min(0.0, float(min(p.ci_low for p in points)))
        high = max(1.0, float(max(p.ci_high for p in points)))
        item.setYRange(low - 0.05, high + 0.1)
