"""How a download is going: bytes received, the total, a sliding-window rate and silence."""

from __future__ import annotations

import time
from collections import deque


class TransferMeter:
    """Counters that the worker thread advances (`received`) and the event loop reads.

    `done` counts bytes received, a little ahead of what the partial holds while a batch is
    gathered; `rate` is bytes/s over the last `window` seconds, updated by `sample` (0 when
    nothing arrives); `silence` is how long since the last byte (how a stall is seen).
    """

    def __init__(self, window: float, total: int | None) -> None:
        self.window = window
        self.total = total
        self.done = 0
        self.rate = 0.0
        self.last_byte = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque()

    @property
    def eta(self) -> float | None:
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def received(self, count: int) -> None:
        self.done += count
        self.last_byte = time.monotonic()

    def restart(self, done: int) -> None:
        """The count starts again from `done` (a resume, or the partial truncated)."""
        self.done = done
        self._samples.clear()
        self.rate = 0.0

    def start_body(self) -> None:
        """A response body begins: the rate is measured from now, the silence too."""
        self.last_byte = time.monotonic()
        self.restart(self.done)
        self._samples.append((self.last_byte, self.done))

    def sample(self) -> None:
        now = time.monotonic()
        samples = self._samples
        samples.append((now, self.done))
        while samples and samples[0][0] < now - self.window:
            samples.popleft()
        first_time, first_done = samples[0]
        span = now - first_time
        if span >= min(0.2, self.window / 2):
            self.rate = max(0.0, (self.done - first_done) / span)

    def silence(self) -> float:
        """Seconds since the last byte arrived."""
        return time.monotonic() - self.last_byte
