"""Figures per cell: mean score with a bootstrap confidence interval, time to first token
percentiles, and prompt-processing (pp) and generation (tg) tokens/s as llama-bench reports
them, so they compare with published tables.

The bootstrap is seeded: the same answers always give the same interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from podlab.core.evaluate.results import CellRecord, ItemRecord

BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 13


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The `fraction` (0..1) percentile with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def bootstrap_ci(
    values: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float] | None:
    """A percentile bootstrap interval of the mean; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return (values[0], values[0])
    rng = random.Random(seed)
    count = len(values)
    means = sorted(sum(rng.choices(values, k=count)) / count for _ in range(resamples))
    tail = (1.0 - confidence) / 2.0
    low, high = percentile(means, tail), percentile(means, 1.0 - tail)
    assert low is not None and high is not None
    return (low, high)


@dataclass(frozen=True)
class ScoreSummary:
    """Mean score of the items one scorer judged (None when none could be judged)."""

    scorer: str
    scored: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None


def summarize_scores(scorer: str, values: Sequence[float]) -> ScoreSummary:
    interval = bootstrap_ci(values)
    return ScoreSummary(
        scorer=scorer,
        scored=len(values),
        mean=sum(values) / len(values) if values else None,
        ci_low=None if interval is None else interval[0],
        ci_high=None if interval is None else interval[1],
    )


@dataclass(frozen=True)
class CellSummary:
    """What the Evaluate page charts and the exports list for one cell."""

    cell_id: int
    label: str
    status: str
    items: int
    failed: int
    """Items that got no answer (error, timeout, crash)."""
    unparseable: int
    """Answers the judge's verdict could not be read for."""
    quality: ScoreSummary
    """All scored items together."""
    by_scorer: tuple[ScoreSummary, ...]
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    pp_tokens_per_s: float | None
    tg_tokens_per_s: float | None
    timing_source: str | None
    generated_tokens: int
    peak_memory_bytes: int | None
    memory_source: str | None
    energy_j: float | None
    tokens_per_j: float | None
    error: str = ""


def _rate(tokens: int, milliseconds: float) -> float | None:
    return tokens / (milliseconds / 1000.0) if tokens > 0 and milliseconds > 0 else None


def summarize_cell(cell: CellRecord, items: Sequence[ItemRecord]) -> CellSummary:
    """The figures of one cell from its stored items (nothing else is needed, so a summary can
    always be recomputed)."""
    answered = [item for item in items if item.status == "done"]
    scored = [item for item in answered if item.score is not None]
    by_name: dict[str, list[float]] = {}
    for item in scored:
        assert item.score is not None
        by_name.setdefault(item.scorer, []).append(item.score)
    values = [item.score for item in scored if item.score is not None]
    ttfts = [item.ttft_ms for item in answered if item.ttft_ms is not None]
    prompt_tokens = sum(item.prompt_tokens or 0 for item in answered if item.prompt_ms)
    prompt_ms = sum(item.prompt_ms or 0.0 for item in answered if item.prompt_tokens)
    gen_tokens = sum(item.gen_tokens or 0 for item in answered if item.gen_ms)
    gen_ms = sum(item.gen_ms or 0.0 for item in answered if item.gen_tokens)
    sources = {item.timing_source for item in answered if item.timing_source}
    generated = sum(item.completion_tokens or 0 for item in answered)
    tokens_per_j = None
    if cell.energy_j and cell.energy_j > 0 and generated:
        tokens_per_j = generated / cell.energy_j
    return CellSummary(
        cell_id=cell.id,
        label=cell.label,
        status=cell.status,
        items=len(items),
        failed=sum(1 for item in items if item.status == "failed"),
        unparseable=sum(1 for item in answered if item.score_state == "unparseable"),
        quality=summarize_scores("all", values),
        by_scorer=tuple(summarize_scores(name, by_name[name]) for name in sorted(by_name)),
        ttft_p50_ms=percentile(ttfts, 0.50),
        ttft_p95_ms=percentile(ttfts, 0.95),
        pp_tokens_per_s=_rate(prompt_tokens, prompt_ms),
        tg_tokens_per_s=_rate(gen_tokens, gen_ms),
        timing_source="+".join(sorted(sources)) or None,
        generated_tokens=generated,
        peak_memory_bytes=cell.peak_memory_bytes,
        memory_source=cell.memory_source,
        energy_j=cell.energy_j,
        tokens_per_j=tokens_per_j,
        error=cell.error,
    )
