"""One download: a `Download` ties a partial file, a meter and an attempt loop together and
reports progress (see the package doc)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

from podlab.core.models.download.attempt import AttemptLoop, make_client
from podlab.core.models.download.meter import TransferMeter
from podlab.core.models.download.partial import CHUNK_SIZE, PartialFile
from podlab.core.models.download.progress import (
    DownloadCancelled,
    DownloadError,
    DownloadProgress,
    DownloadResult,
    DownloadState,
    format_bytes,
)
from podlab.core.models.download.urls import normalize_sha256, resolve_url
from podlab.core.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_STALL_SECONDS = Settings().download_stall_seconds

Listener = Callable[[DownloadProgress], None]


class Download:
    """Fetch `url` into `dest` (see the package doc). Run once with `await download.run()`."""

    def __init__(
        self,
        url: str,
        dest: Path | str,
        *,
        sha256: str | None = None,
        size: int | None = None,
        max_attempts: int = 6,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        connect_timeout: float = 30.0,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        chunk_size: int = CHUNK_SIZE,
        progress_interval: float = 0.25,
        check_free_space: bool = True,
    ) -> None:
        if max_attempts < 1 or stall_seconds <= 0 or chunk_size < 1:
            raise ValueError("max_attempts, stall_seconds and chunk_size must be positive")
        self.url = url
        self.resolved_url = resolve_url(url)
        self.dest = Path(dest)
        self.expected_sha256 = normalize_sha256(sha256)
        self.expected_size = size
        self.max_attempts = max_attempts
        self.stall_seconds = stall_seconds
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.chunk_size = chunk_size
        self.progress_interval = progress_interval
        self.check_free_space = check_free_space
        self.rate_window = min(3.0, stall_seconds / 2)
        """Seconds the rate is averaged over; also how long without bytes shows "stalled"."""

        self.result: DownloadResult | None = None
        self.error: DownloadError | None = None

        self._state = DownloadState.QUEUED
        self._message = ""
        self._partial = PartialFile(self.dest, self.resolved_url)
        self._meter = TransferMeter(self.rate_window, size)
        self._attempts = AttemptLoop(self, self._partial, self._meter, self._set_state)
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[DownloadResult] | None = None
        self._cancel_requested = False
        self._resumed_from = 0

    def __repr__(self) -> str:
        return f"Download({self.url!r} -> {str(self.dest)!r}, {self._state.value})"

    @property
    def partial_path(self) -> Path:
        return self._partial.path

    @property
    def state_path(self) -> Path:
        """The partial's sidecar: the URL and ETag its bytes belong to."""
        return self._partial.state_path

    @property
    def server_sha256(self) -> str | None:
        """The sha256 the server published for the file (Hugging Face), once known."""
        return self._attempts.server_sha256

    # -- observing -----------------------------------------------------------------------------

    @property
    def state(self) -> DownloadState:
        return self._state

    @property
    def progress(self) -> DownloadProgress:
        meter = self._meter
        return DownloadProgress(
            state=self._state,
            url=self.url,
            dest=self.dest,
            done=meter.done,
            total=meter.total,
            rate=meter.rate,
            eta=meter.eta,
            attempt=self._attempts.count,
            max_attempts=self.max_attempts,
            message=self._message,
        )

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(progress)` on each event; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    async def events(self) -> AsyncIterator[DownloadProgress]:
        """The current progress, then every event until the download finishes."""
        queue: asyncio.Queue[DownloadProgress] = asyncio.Queue()
        remove = self.add_listener(queue.put_nowait)
        try:
            current = self.progress
            yield current
            if current.state.finished:
                return
            while True:
                event = await queue.get()
                yield event
                if event.state.finished:
                    return
        finally:
            remove()

    def announce(self) -> None:
        """Tell the listeners the current state now (a queue calls it when it takes the
        download in, so a queued download shows before its turn comes)."""
        self._emit()

    def _emit(self) -> None:
        event = self.progress
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken observer must not break the download
                log.exception("download progress listener failed")

    def _set_state(self, state: DownloadState, message: str = "") -> None:
        self._state = state
        self._message = message
        self._emit()

    def _update_rate(self) -> None:
        self._meter.sample()
        if self._state is DownloadState.DOWNLOADING and self._meter.silence() >= self.rate_window:
            self._state = DownloadState.STALLED
        if self._state is DownloadState.STALLED:
            self._message = f"no data for {self._meter.silence():.0f} s"

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            self._update_rate()
            self._emit()

    # -- control -------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop now: the connection closes at once, the partial file stays for a resume."""
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()
        elif not self._state.finished:
            self._set_state(DownloadState.CANCELLED, "cancelled before it started")

    async def run(self, client: httpx.Client | None = None) -> DownloadResult:
        """Download; returns the result or raises DownloadError (DownloadCancelled on cancel).

        `client` (from `make_client`, shared by a DownloadManager) is used from worker threads.
        """
        if self._task is not None:
            raise RuntimeError("a Download runs only once; create a new one to resume")
        if self._cancel_requested:
            self._set_state(DownloadState.CANCELLED, "cancelled before it started")
            raise DownloadCancelled(f"download of {self.dest.name} was cancelled")
        self._task = asyncio.create_task(self._main(client))
        try:
            return await self._task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling() > 0:
                raise
            raise DownloadCancelled(
                f"download of {self.dest.name} was cancelled; "
                f"{format_bytes(self._partial.offset)} kept in {self.partial_path}",
                hint="pull it again to resume where it stopped",
            ) from None

    async def _main(self, client: httpx.Client | None) -> DownloadResult:
        ticker: asyncio.Task[None] | None = None
        try:
            with contextlib.ExitStack() as stack:
                if client is None:
                    client = stack.enter_context(make_client())
                ticker = asyncio.create_task(self._tick())
                result = await self._download(client)
            self.result = result
            self._set_state(DownloadState.DONE, f"saved {self.dest}")
            return result
        except asyncio.CancelledError:
            self._meter.rate = 0.0
            kept = format_bytes(self._partial.offset)
            self._set_state(DownloadState.CANCELLED, f"cancelled; {kept} kept for resume")
            raise
        except DownloadError as exc:
            self.error = exc
            self._meter.rate = 0.0
            self._set_state(DownloadState.FAILED, exc.message)
            raise
        except Exception as exc:
            log.exception("download of %s failed unexpectedly", self.url)
            self.error = DownloadError(f"download failed: {exc}", kind="io")
            self._meter.rate = 0.0
            self._set_state(DownloadState.FAILED, self.error.message)
            raise self.error from exc
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker

    # -- the work ------------------------------------------------------------------------------

    async def _download(self, client: httpx.Client) -> DownloadResult:
        self._set_state(DownloadState.CONNECTING)
        partial = self._partial
        partial.open()
        try:
            await self._prepare_partial()
            await self._attempts.run(client)
            return await self._finish()
        except BaseException:
            partial.discard_if_empty()
            raise
        finally:
            partial.close()

    async def _prepare_partial(self) -> None:
        """Keep a partial of the same URL and re-hash it once; drop anything else."""
        partial = self._partial
        size = partial.reusable_size(self.expected_size)
        if size == 0:
            partial.truncate()
        else:
            self._set_state(
                DownloadState.CONNECTING,
                f"checking the {format_bytes(size)} already downloaded",
            )
            await partial.resume(size)
        self._meter.restart(size)
        self._resumed_from = size
        partial.write_state()

    async def _finish(self) -> DownloadResult:
        partial = self._partial
        self._meter.rate = 0.0
        self._set_state(DownloadState.VERIFYING)
        size = partial.offset
        digest = partial.hasher.hexdigest()
        expected, source = self.expected_sha256, "expected"
        if expected is None and self.server_sha256 is not None:
            expected, source = self.server_sha256, "server"
        if expected is not None and digest != expected:
            self._discard()
            whose = "expected" if source == "expected" else "published by the server"
            raise DownloadError(
                f"checksum mismatch for {self.dest.name}: sha256 {whose} {expected}, "
                f"got {digest}; the corrupt download was deleted",
                hint="try again; if it fails the same way, the file or its catalog entry is wrong",
                kind="checksum",
            )
        if self.expected_size is not None and size != self.expected_size:
            self._discard()
            raise DownloadError(
                f"{self.dest.name} is {size} bytes, {self.expected_size} were expected; "
                "the download was deleted",
                kind="size",
            )
        partial.commit()
        return DownloadResult(
            url=self.url,
            path=self.dest,
            size=size,
            sha256=digest,
            sha256_source=source if expected is not None else "computed",
            resumed_from=self._resumed_from,
            attempts=self._attempts.count,
        )

    def _discard(self) -> None:
        self._partial.discard()
        self._meter.done = 0
