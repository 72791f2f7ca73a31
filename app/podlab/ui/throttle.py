"""Rate-limit a repaint: the first call runs at once, the rest collapse into one trailing call.

The idea follows qutebrowser's `misc/throttle.py`: a call that arrives when the function has
not run for `interval_ms` runs immediately (so the first token of an answer shows with no
delay); calls that arrive sooner only mark the work as pending, and one single-shot QTimer runs
it once when the interval has passed. Arguments are not kept: a throttled function reads the
current state itself (the streaming renderer reads its buffer), so nothing stale is replayed.

`adaptive` lets the interval grow with the cost of the call: when one render takes 12 ms, the
next may only come `cost_factor` times that later. A message with one enormous block then
renders less often instead of starving the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QObject, Qt, QTimer


class Throttle(QObject):
    """Call `func` at most once per `interval_ms`; never drop the last request."""

    def __init__(
        self,
        func: Callable[[], object],
        interval_ms: int = 40,
        parent: QObject | None = None,
        *,
        adaptive: bool = False,
        cost_factor: float = 3.0,
        max_interval_ms: int = 500,
    ) -> None:
        super().__init__(parent)
        self._func = func
        self._interval_ms = interval_ms
        self._adaptive = adaptive
        self._cost_factor = cost_factor
        self._max_interval_ms = max_interval_ms
        self._current_ms = float(interval_ms)
        self._last_run: float | None = None  # time.monotonic() of the last call's start
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._run)
        self.calls = 0
        """How often `func` really ran (tests and benches read it)."""

    @property
    def interval_ms(self) -> float:
        """The current minimum gap between two calls (grows with cost when adaptive)."""
        return self._current_ms

    @property
    def pending(self) -> bool:
        return self._timer.isActive()

    def __call__(self) -> None:
        if self._timer.isActive():
            return  # a trailing call is already planned: this request joins it
        now = time.monotonic()
        if self._last_run is None:
            self._run()
            return
        elapsed_ms = (now - self._last_run) * 1000.0
        if elapsed_ms >= self._current_ms:
            self._run()
        else:
            self._timer.start(max(0, round(self._current_ms - elapsed_ms)))

    def flush(self) -> None:
        """Run a planned call now (the stream ended: show the last piece without waiting)."""
        if self._timer.isActive():
            self._timer.stop()
            self._run()

    def cancel(self) -> None:
        """Forget a planned call."""
        self._timer.stop()

    def _run(self) -> None:
        started = time.monotonic()
        self._last_run = started
        self.calls += 1
        try:
            self._func()
        finally:
            if self._adaptive:
                cost_ms = (time.monotonic() - started) * 1000.0
                self._current_ms = min(
                    float(self._max_interval_ms),
                    max(float(self._interval_ms), cost_ms * self._cost_factor),
                )
