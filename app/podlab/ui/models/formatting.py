"""Short human texts for numbers the tables show (sizes, parameter counts, contexts, ETAs)."""

from __future__ import annotations

from podlab.core.models.download import format_bytes


def size_text(count: int | float | None) -> str:
    """Bytes as "2.3 GiB"; "" when unknown (an empty cell, not a made-up value)."""
    return "" if count is None else format_bytes(count)


def short_size_text(count: int | float | None) -> str:
    """Bytes for a narrow column: "4.6 GiB", "584 MiB", "12 KiB"; "" when unknown."""
    if count is None:
        return ""
    if count >= 1000 * 1024**2:  # "1.0 GiB" rather than a four-digit "1013 MiB"
        return f"{count / 1024**3:.1f} GiB"
    if count >= 1024**2:
        return f"{count / 1024**2:.0f} MiB"
    if count >= 1024:
        return f"{count / 1024:.0f} KiB"
    return f"{count:.0f} B"


def params_text(count: int | None) -> str:
    """Parameter count as "135M", "1.5B", "70B"; "" when unknown."""
    if not count:
        return ""
    for factor, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= factor:
            value = count / factor
            text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
            return text.removesuffix(".0") + unit
    return str(count)


def context_text(tokens: int | None) -> str:
    """Context length as "4K", "128K" (1K = 1024 tokens); "" when unknown."""
    if not tokens:
        return ""
    if tokens >= 1024:
        return f"{round(tokens / 1024)}K"
    return str(tokens)


def duration_text(seconds: float | None) -> str:
    """An ETA as "12 s", "3 min 5 s", "1 h 02 min"; "" when unknown."""
    if seconds is None or seconds < 0:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
