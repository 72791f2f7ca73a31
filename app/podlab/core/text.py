"""Small wording helpers shared by the GUI, the CLI and core messages."""

from __future__ import annotations

import datetime
import time


def plural(count: int, noun: str, many: str | None = None) -> str:
    """ "1 model", "2 models", "0 models" (`many` for irregular nouns)."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def readable_time(timestamp: float, now: float | None = None) -> str:
    """A local date as people say it: "today 14:03", "yesterday 09:12", "3 Dec, 14:03",
    "3 Dec 2025, 14:03" (not an ISO timestamp in UTC)."""
    when = time.localtime(timestamp)
    today = time.localtime(time.time() if now is None else now)
    clock = f"{when.tm_hour:02d}:{when.tm_min:02d}"
    days = _day_number(today) - _day_number(when)
    if days == 0:
        return f"today {clock}"
    if days == 1:
        return f"yesterday {clock}"
    day = f"{when.tm_mday} {_MONTHS[when.tm_mon - 1]}"
    if when.tm_year != today.tm_year:
        day += f" {when.tm_year}"
    return f"{day}, {clock}"


def _day_number(moment: time.struct_time) -> int:
    """A day count of a local date (its calendar day, whatever the time zone)."""
    return datetime.date(moment.tm_year, moment.tm_mon, moment.tm_mday).toordinal()
