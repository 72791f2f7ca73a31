"""The partial file of a download: `<dest>.partial`, always an exact prefix of the file.

One process at a time appends to it (an exclusive lock); its sidecar `<dest>.partial.json` says
which URL and ETag the bytes belong to, so only the same file is ever resumed. Its sha256 is
kept up to date as bytes are written (a resume re-hashes the prefix once, since a hash state
cannot be saved). When complete it is fsynced and renamed atomically, so `dest` exists only
whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podlab.core.models.download.progress import DownloadError, format_bytes
from podlab.core.models.download.threads import in_thread
from podlab.core.paths import atomic_write_text

try:  # POSIX: one process per partial file.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes gathered from the socket before one write (writev) to the partial and hash update."""

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_writev = getattr(os, "writev", None)
_IOV_MAX = 512


class PartialFile:
    """`<dest>.partial` of the file at `url`: open and lock, resume or truncate, append, commit.

    `offset` is the bytes in the file and `hasher` their sha256. Appends run in a worker thread;
    everything else on the event loop's, while no append runs.
    """

    def __init__(self, dest: Path, url: str) -> None:
        self.dest = dest
        self.url = url
        self.path = dest.with_name(dest.name + ".partial")
        self.state_path = dest.with_name(dest.name + ".partial.json")
        self.offset = 0
        self.hasher = hashlib.sha256()
        self.etag: str | None = None
        """The server's strong ETag for the bytes in the file (sent back as If-Range)."""
        self._fd: int | None = None
        self._closed = threading.Event()
        """Set on close: a prefix still being re-hashed in a thread stops there."""
        self._write_error: DownloadError | None = None

    def open(self) -> None:
        """Create (or reopen) the file and lock it against other Podlab processes."""
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self.os_error(exc, "cannot create") from exc
        try:
            self._lock()
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        if fcntl is None or self._fd is None:  # pragma: no cover - Windows
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DownloadError(
                f"{self.path} is being downloaded by another Podlab process",
                hint="wait for that download to finish or cancel it there",
                kind="busy",
            ) from None

    def close(self) -> None:
        self._closed.set()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # -- resuming ----------------------------------------------------------------------------

    def reusable_size(self, expected_size: int | None) -> int:
        """Bytes on disk that belong to this URL (0 when they belong to another or overflow);
        the saved ETag is taken over."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        saved = self._read_state()
        if size and saved.get("url") not in (None, self.url):
            log.info("partial %s belongs to another URL; starting over", self.path)
            size = 0
        if expected_size is not None and size > expected_size:
            size = 0
        etag = saved.get("etag")
        self.etag = etag if isinstance(etag, str) else None
        return size

    async def resume(self, size: int) -> None:
        """Keep the first `size` bytes (their sha256 computed in a thread) and append after."""
        assert self._fd is not None
        self.hasher = await asyncio.wrap_future(in_thread(self._hash_prefix, size))
        self.offset = size
        os.lseek(self._fd, size, os.SEEK_SET)

    def _hash_prefix(self, size: int) -> Any:
        hasher = hashlib.sha256()
        with self.path.open("rb") as handle:
            remaining = size
            while remaining and not self._closed.is_set():
                chunk = handle.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                hasher.update(chunk)
                remaining -= len(chunk)
        return hasher

    def truncate(self) -> None:
        """Start the file over, empty."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.hasher = hashlib.sha256()
        self.offset = 0

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_state(self) -> None:
        state = {"url": self.url, "etag": self.etag}
        with contextlib.suppress(OSError):
            atomic_write_text(self.state_path, json.dumps(state))

    # -- writing -----------------------------------------------------------------------------

    def append(self, chunks: list[bytes], hash_update: Callable[[memoryview], None]) -> None:
        """Append chunks to the partial, then give what was written to `hash_update` (runs in
        the worker thread).

        The chunks go to the kernel as they came off the socket (writev), without first
        being joined into one buffer: one copy of each byte less.
        """
        assert self._fd is not None
        if self._write_error is not None:
            raise self._write_error  # never write after a gap: the partial must stay a prefix
        views = [memoryview(chunk) for chunk in chunks]
        written = 0
        try:
            while views:
                if _writev is not None:
                    count = _writev(self._fd, views[:_IOV_MAX])
                else:  # pragma: no cover - Windows
                    count = os.write(self._fd, views[0])
                written += count
                while views and count >= len(views[0]):
                    count -= len(views[0])
                    views.pop(0)
                if count:
                    views[0] = views[0][count:]
        except OSError as exc:
            self.offset += written
            for chunk in chunks:  # hash exactly the bytes that reached the file
                if written <= 0:
                    break
                hash_update(memoryview(chunk)[:written])
                written -= len(chunk)
            self._write_error = self.os_error(exc, "cannot write")
            raise self._write_error from exc
        for chunk in chunks:
            hash_update(memoryview(chunk))
        self.offset += written

    def os_error(self, exc: OSError, doing: str) -> DownloadError:
        if exc.errno in _DISK_FULL_ERRNOS:
            what = "file size limit reached" if exc.errno == errno.EFBIG else "disk full"
            return DownloadError(
                f"{what}: cannot write {self.path} ({format_bytes(self.offset)} kept for resume)",
                hint=f"free some space on {self.dest.parent} (or choose another models folder) "
                "and try again; the download resumes where it stopped",
                kind="disk_full",
            )
        return DownloadError(f"{doing} {self.path}: {exc.strerror or exc}", kind="io")

    # -- the end -----------------------------------------------------------------------------

    def commit(self) -> None:
        """Make the complete file durable under `dest`; the partial and its sidecar are gone."""
        assert self._fd is not None
        try:
            os.fsync(self._fd)
            self.close()
            os.replace(self.path, self.dest)
            _fsync_dir(self.dest.parent)
        except OSError as exc:
            raise self.os_error(exc, "cannot finish") from exc
        self.state_path.unlink(missing_ok=True)

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        self.offset = 0

    def discard_if_empty(self) -> None:
        """After a failure with not a byte on disk there is nothing to resume: leave no trace."""
        with contextlib.suppress(OSError):
            if self._fd is not None and os.fstat(self._fd).st_size == 0:
                self.discard()


class HashFeed:
    """sha256 of the bytes written, computed in a thread of its own while the next ones arrive.

    The worker copies each written batch into one of a few buffers made once (a cheap copy: the
    bytes are still in the CPU cache) and reads on; a buffer comes back once hashed, so memory
    stays bounded and no fresh memory is touched per batch. One thread and one queue keep the
    order. `close()` returns when all given bytes are hashed: the digest then covers exactly
    what is in the partial file.
    """

    SLOTS = 4

    def __init__(self, hasher: Any, slot_size: int = CHUNK_SIZE) -> None:
        self._hasher = hasher
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        for _ in range(self.SLOTS):
            self._free.put(bytearray(slot_size))
        self._slot = self._free.get()
        self._used = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="podlab-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._full.get()) is not None:
            slot, used = item
            if self._error is None:
                try:
                    self._hasher.update(memoryview(slot)[:used])
                except BaseException as exc:  # raised by close(); the slots keep coming back
                    self._error = exc
            self._free.put(slot)

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            count = min(len(self._slot) - self._used, len(view))
            self._slot[self._used : self._used + count] = view[:count]
            self._used += count
            view = view[count:]
            if self._used == len(self._slot):
                self._full.put((self._slot, self._used))
                self._slot, self._used = self._free.get(), 0

    def close(self) -> None:
        if self._used:
            self._full.put((self._slot, self._used))
            self._used = 0
        self._full.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
