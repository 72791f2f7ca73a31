"""Wording helpers: plurals and dates as people read them."""

from __future__ import annotations

import time

import pytest

from podlab.core.text import plural, readable_time

pytestmark = pytest.mark.unit


def test_plural() -> None:
    assert [plural(n, "model") for n in (0, 1, 2)] == ["0 models", "1 model", "2 models"]
    assert plural(3, "copy", "copies") == "3 copies"


def test_readable_time_is_local_and_relative() -> None:
    now = time.mktime((2026, 12, 6, 15, 30, 0, 0, 0, -1))
    at = lambda *parts: time.mktime((*parts, 0, 0, -1))  # noqa: E731
    assert readable_time(at(2026, 12, 6, 9, 5, 0), now) == "today 09:05"
    assert readable_time(at(2026, 12, 5, 23, 59, 0), now) == "yesterday 23:59"
    assert readable_time(at(2026, 3, 1, 14, 3, 0), now) == "1 Mar, 14:03"
    assert readable_time(at(2025, 12, 31, 8, 0, 0), now) == "31 Dec 2025, 08:00"
    assert "T" not in readable_time(now) and "Z" not in readable_time(now)
