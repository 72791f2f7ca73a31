"""Several downloads at once, with a cap on how many transfer together."""

from __future__ import annotations

import asyncio

import httpx

from podlab.core.models.download.attempt import make_client
from podlab.core.models.download.job import Download
from podlab.core.models.download.progress import DownloadResult, DownloadState
from podlab.core.settings import Settings

DEFAULT_MAX_PARALLEL = Settings().max_parallel_downloads


class DownloadManager:
    """Runs downloads with at most `max_parallel` at once; the rest wait in state "queued"."""

    def __init__(self, max_parallel: int = DEFAULT_MAX_PARALLEL) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.max_parallel = max_parallel
        self._semaphore = asyncio.Semaphore(max_parallel)
        self._tasks: dict[Download, asyncio.Task[DownloadResult]] = {}
        self._client: httpx.Client | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DownloadManager:
        return cls(settings.max_parallel_downloads)

    @property
    def downloads(self) -> list[Download]:
        return list(self._tasks)

    @property
    def running(self) -> list[Download]:
        return [
            d for d in self._tasks if not d.state.finished and d.state is not DownloadState.QUEUED
        ]

    def submit(self, download: Download) -> asyncio.Task[DownloadResult]:
        """Queue a download; the returned task gives its result (or raises its error)."""
        if download in self._tasks:
            return self._tasks[download]
        download.announce()  # "queued"
        task = asyncio.create_task(self._run(download))
        self._tasks[download] = task
        return task

    async def run(self, download: Download) -> DownloadResult:
        return await self.submit(download)

    async def _run(self, download: Download) -> DownloadResult:
        async with self._semaphore:
            if self._client is None:
                self._client = make_client()
            return await download.run(self._client)

    def cancel(self, download: Download) -> None:
        download.cancel()

    async def wait(self) -> list[DownloadResult | BaseException]:
        results = await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        return list(results)

    async def aclose(self) -> None:
        """Cancel what still runs (partials stay) and close the connections."""
        for download, task in self._tasks.items():
            if not task.done():
                download.cancel()
                task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._client is not None:
            self._client.close()  # the idle connections: their transfers have all ended
            self._client = None
