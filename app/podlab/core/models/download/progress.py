"""What a download reports: its state, progress events, result and errors."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from podlab.core.errors import PodlabError


class DownloadState(StrEnum):
    QUEUED = "queued"
    CONNECTING = "connecting"
    DOWNLOADING = "downloading"
    STALLED = "stalled"
    RETRYING = "retrying"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (DownloadState.DONE, DownloadState.FAILED, DownloadState.CANCELLED)


@dataclass(frozen=True)
class DownloadProgress:
    """One progress event; `rate` is bytes/s over the last few seconds (0 while stalled)."""

    state: DownloadState
    url: str
    dest: Path
    done: int
    total: int | None
    rate: float
    eta: float | None
    attempt: int
    max_attempts: int
    message: str = ""

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "url": self.url,
            "dest": str(self.dest),
            "done": self.done,
            "total": self.total,
            "rate": round(self.rate, 1),
            "eta": None if self.eta is None else round(self.eta, 1),
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "message": self.message,
        }


@dataclass(frozen=True)
class DownloadResult:
    url: str
    path: Path
    size: int
    sha256: str
    sha256_source: str
    """"expected" (given by the caller and verified), "server" (published by the server and
    verified), or "computed" (no digest was known: recorded, not verified)."""
    resumed_from: int
    """Bytes already on disk when this download started."""
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "sha256_source": self.sha256_source,
            "resumed_from": self.resumed_from,
            "attempts": self.attempts,
        }


class DownloadError(PodlabError):
    """A download failed; `kind` says why (not_found, auth, http, network, tls, redirects,
    disk_full, io, checksum, size, busy, cancelled)."""

    def __init__(self, message: str, hint: str = "", *, kind: str) -> None:
        super().__init__(message, hint)
        self.kind = kind


class DownloadCancelled(DownloadError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, kind="cancelled")


def format_bytes(count: float | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover
