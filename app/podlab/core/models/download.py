"""The one downloader: resumable, retrying, stall-aware, sha256-checked while streaming.

A `Download` fetches one URL into `dest`. Bytes go to `<dest>.partial`; a later `Download` of
the same URL (in this process or after a restart) resumes from the partial's size with an HTTP
Range request, re-hashing the existing prefix once since a hash state cannot be saved. A server
that ignores Range (200 instead of 206) restarts the file from zero. Connection errors, 5xx,
timeouts and stalls (no byte for `stall_seconds`) reconnect with exponential backoff. The sha256
is computed while streaming; on success the partial is fsynced and renamed atomically, so `dest`
exists only when complete and verified. When no sha256 is given, the digest the server publishes
(Hugging Face's `X-Linked-Etag`, on the redirect of /resolve/ URLs) is checked instead.

TLS is always verified (proxies and CA bundles come from the environment: HTTPS_PROXY, NO_PROXY,
SSL_CERT_FILE); there is no insecure fallback. `HF_TOKEN` is sent to Hugging Face hosts only.

Progress: `add_listener(callback)` or `async for event in download.events()`; each event is a
`DownloadProgress` with state, bytes, total, rate (sliding window, 0 B/s while stalled) and ETA.
`DownloadManager` runs several downloads with a concurrency cap.

The bytes move in a worker thread, through httpx's synchronous client: blocking reads of up to
`READ_SIZE` bytes, each batch appended to the partial in order, while a second thread hashes
what was written. That costs far less per byte than the asyncio read path (64 KiB reads, each
through the event loop), and the event loop (the GUI's) only reads counters for progress.
Cancelling shuts the connection's socket down, which wakes the worker at once; the download
waits for the worker to let go of the partial file, so the partial stays an exact prefix of the
file and the hash covers exactly the partial.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import random
import re
import shutil
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpcore
import httpx

from podlab import __version__
from podlab.core.errors import PodlabError
from podlab.core.http import shared_ssl_context
from podlab.core.paths import atomic_write_text
from podlab.core.settings import Settings

try:  # POSIX: one process per partial file.
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes gathered from the socket before one write (writev) to the partial and hash update."""
READ_SIZE = 1 << 20
"""Bytes asked of the socket per read; httpcore asks 64 KiB (see `_LargeReadStream`)."""
MAX_REDIRECTS = 10
USER_AGENT = f"podlab/{__version__}"
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_STALL_SECONDS = Settings().download_stall_seconds
DEFAULT_MAX_PARALLEL = Settings().max_parallel_downloads

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ETAG_SHA256_RE = re.compile(r'^(W/)?"?([0-9a-fA-F]{64})"?$')
_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE_RE = re.compile(r"^bytes\s+\*/(\d+)$")
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_writev = getattr(os, "writev", None)
_IOV_MAX = 512
_GATED_HINT = (
    "If this is a gated model, accept its license on huggingface.co and set HF_TOKEN to an "
    "access token (https://huggingface.co/settings/tokens)."
)


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


class _Retry(Exception):
    """A failure worth another attempt (network, 5xx, stall, truncated body)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- URLs, tokens, digests ---------------------------------------------------------------------


def hf_endpoint() -> str:
    """The Hugging Face endpoint: HF_ENDPOINT (a mirror) or https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def resolve_url(url: str) -> str:
    """Turn `hf://org/repo/path/file[@revision]` into an https URL; check other URLs."""
    for prefix in ("hf://", "huggingface://"):
        if url.startswith(prefix):
            rest, revision = url[len(prefix) :], "main"
            if "@" in rest:
                rest, revision = rest.rsplit("@", 1)
            parts = rest.split("/")
            if len(parts) < 3 or any(p in ("", ".", "..") for p in parts) or not revision:
                raise PodlabError(
                    f"not a valid Hugging Face file reference: {url}",
                    hint="write it as hf://org/repo/file.gguf or hf://org/repo/file.gguf@revision",
                )
            org, repo, path = parts[0], parts[1], "/".join(parts[2:])
            return (
                f"{hf_endpoint()}/{quote(org)}/{quote(repo)}/resolve/"
                f"{quote(revision, safe='')}/{quote(path)}"
            )
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise PodlabError(
            f"cannot download {url!r}: only http(s):// and hf:// URLs are supported",
            hint="use https://host/path/file.gguf or hf://org/repo/file.gguf",
        )
    return url


def is_hf_host(host: str | None) -> bool:
    """Hosts that may receive HF_TOKEN: huggingface.co, its subdomains and HF_ENDPOINT."""
    if not host:
        return False
    host = host.lower()
    if host == "huggingface.co" or host.endswith(".huggingface.co"):
        return True
    endpoint_host = urlsplit(hf_endpoint()).hostname
    return bool(endpoint_host) and host == endpoint_host


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def auth_headers(url: str) -> dict[str, str]:
    """Authorization for Hugging Face hosts when HF_TOKEN is set; nothing for anyone else."""
    token = hf_token()
    if token and is_hf_host(urlsplit(url).hostname):
        return {"Authorization": f"Bearer {token}"}
    return {}


def normalize_sha256(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    digest = value.strip().lower()
    digest = digest.removeprefix("sha256:")
    if not _SHA256_RE.fullmatch(digest):
        raise PodlabError(
            f"not a sha256 digest: {value!r}", hint="a sha256 is 64 hexadecimal characters"
        )
    return digest


def server_sha256(response: httpx.Response) -> str | None:
    """The sha256 a server publishes for a file: X-Linked-Etag on any response of the redirect
    chain (Hugging Face), else a strong 64-hex ETag from a Hugging Face host."""
    chain = [*response.history, response]
    for item in chain:
        value = item.headers.get("x-linked-etag")
        match = _ETAG_SHA256_RE.match(value.strip()) if value else None
        if match and not match.group(1):
            return match.group(2).lower()
    for item in chain:
        value = item.headers.get("etag")
        match = _ETAG_SHA256_RE.match(value.strip()) if value else None
        if match and not match.group(1) and is_hf_host(item.url.host):
            return match.group(2).lower()
    return None


class _LargeReadStream(httpcore.NetworkStream):
    """An httpcore network stream that reads all that has arrived, up to READ_SIZE bytes.

    httpcore's HTTP/1.1 connection asks for `READ_NUM_BYTES` (64 KiB, a class attribute with no
    option to change it); a multi-GB body then costs tens of thousands of trips through h11 and
    httpx per GiB. A network backend is httpcore's documented way to customise the socket layer,
    so instead of patching the class for every user of httpx in the process, this stream asks
    the socket for more when more is there (FIONREAD): exactly that much, since Python allocates
    the whole size asked for each read (a 1 MiB buffer shrunk to the 60 KiB a slow link brought
    costs more than the read). The read itself is httpcore's, timeout and errors included, so
    stall detection and slow links behave exactly as before.
    """

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max(max_bytes, min(self._available(), READ_SIZE)), timeout)

    def _available(self) -> int:
        """Bytes received and not read yet (0 when unknown)."""
        if fcntl is None:  # pragma: no cover - Windows has no FIONREAD here: read big
            return READ_SIZE
        sock = self._stream.get_extra_info("socket")
        if not isinstance(sock, socket.socket):
            return 0
        try:
            (count,) = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))
        except (OSError, ValueError):
            return 0
        return int(count)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _TLSRecordsStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _TLSRecordsStream(_LargeReadStream):
    """A TLS stream whose reads return the records already received, up to READ_SIZE bytes.

    An SSL socket returns one TLS record (at most 16 KiB) per read, whatever the size asked,
    and asking more only makes Python allocate (mmap) and shrink a buffer that size for each
    record. So: one read as httpcore asks it (waiting, with its timeout), then further records
    only while they are already complete in the socket (non-blocking; a partial record stays
    buffered in OpenSSL for the next read). An error there is left for that next read to raise.
    """

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._stream.read(max_bytes, timeout)
        sock = self._stream.get_extra_info("socket")
        if not data or not isinstance(sock, ssl.SSLSocket):
            return data
        parts, size = [data], len(data)
        previous = sock.gettimeout()
        try:
            sock.settimeout(0.0)
            while size < READ_SIZE:
                more = sock.recv(max_bytes)
                if not more:
                    break
                parts.append(more)
                size += len(more)
        except OSError:  # SSLWantReadError: no complete record yet (anything else: see above)
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(previous)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _LargeReadBackend(httpcore.NetworkBackend):
    """httpcore's own blocking socket backend, its streams wrapped in `_LargeReadStream`."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _LargeReadStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return _LargeReadStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _Transport(httpx.HTTPTransport):
    """httpx's HTTP transport over a connection pool that reads through `_LargeReadBackend`.

    `httpx.HTTPTransport` maps requests, responses and errors onto one httpcore connection pool
    (`_pool`) but has no parameter for the network backend, so the pool is rebuilt here with the
    same TLS context and limits plus that backend. Should a later httpx keep its pool elsewhere,
    the transport stays fully httpx's and only the reads go back to 64 KiB.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        # TLS is always verified, with the process's one shared context (core/http.py).
        ssl_context = shared_ssl_context()
        super().__init__(verify=ssl_context, trust_env=True, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_LargeReadBackend(),
        )


class _Client(httpx.Client):
    """An httpx.Client whose direct connections go through `_Transport`.

    Passing `transport=` would switch off the proxies from the environment (httpx reads
    HTTPS_PROXY, NO_PROXY... only when no transport is given), so the transport is swapped where
    httpx builds its default one instead; proxied URLs keep httpx's proxy transports. Should a
    later httpx build it elsewhere, the client is simply httpx's own.
    """

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        limits = kwargs.get("limits")
        if not args and kwargs.get("transport") is None and isinstance(limits, httpx.Limits):
            return _Transport(limits)
        return super()._init_transport(*args, **kwargs)


def make_client(max_connections: int | None = None) -> httpx.Client:
    """The HTTP client downloads use: TLS always verified, proxies and CAs from the env.

    Synchronous: downloads run their transfers in worker threads (see the module doc); an
    `httpx.Client` may be shared between threads.
    """
    return _Client(
        verify=True,
        trust_env=True,
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=4),
        timeout=httpx.Timeout(30.0),
        headers={"User-Agent": USER_AGENT},
    )


def format_bytes(count: float | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _ssl_failure(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        for arg in current.args:
            if isinstance(arg, ssl.SSLError):
                return arg
        current = current.__cause__ or current.__context__
    return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _in_thread(function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
    """Run `function(*args)` in a new daemon thread; its outcome lands in the returned future.

    Daemon, not a pool's thread: a thread abandoned while it connects (cancel, Ctrl-C) must not
    hold the process open at exit until the connect timeout.
    """
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = function(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=work, name="podlab-download", daemon=True).start()
    return future


class _Connection:
    """The socket of one attempt, as known to its worker thread, so that cancel can close it.

    The worker learns it from httpcore's "trace" extension as soon as a new connection is made
    (before TLS and the request), and from the response for a reused keep-alive connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: httpcore.NetworkStream | None = None
        self.aborted = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            self.attach(info.get("return_value"))

    def attach(self, stream: Any) -> None:
        """Remember the stream in use; shut it down at once if the attempt is aborted."""
        if not isinstance(stream, httpcore.NetworkStream):
            return
        with self._lock:
            self._stream = stream
            aborted = self.aborted
        if aborted:
            _shut_down(stream)

    def abort(self) -> None:
        """Close the connection now (from any thread): a blocked read returns at once."""
        with self._lock:
            self.aborted = True
            stream = self._stream
        if stream is not None:
            _shut_down(stream)


class _HashFeed:
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


def _close_response(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        with contextlib.suppress(Exception):
            future.result().close()


def _shut_down(stream: httpcore.NetworkStream) -> None:
    sock = stream.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        # The plain socket call, also for an SSLSocket: its own shutdown() would drop the TLS
        # state under the worker thread reading it. shutdown(2) wakes a blocked read (close
        # would not); the worker then closes the connection itself.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


# -- one download ------------------------------------------------------------------------------


Listener = Callable[[DownloadProgress], None]


class Download:
    """Fetch `url` into `dest` (see the module doc). Run once with `await download.run()`."""

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
        self.partial_path = self.dest.with_name(self.dest.name + ".partial")
        self.state_path = self.dest.with_name(self.dest.name + ".partial.json")
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
        self.server_sha256: str | None = None

        self._state = DownloadState.QUEUED
        self._message = ""
        self._done = 0
        self._offset = 0
        self._total: int | None = size
        self._attempt = 0
        self._rate = 0.0
        self._samples: deque[tuple[float, int]] = deque()
        self._last_byte = time.monotonic()
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[DownloadResult] | None = None
        self._cancel_requested = False
        self._fd: int | None = None
        self._hasher = hashlib.sha256()
        self._ended = threading.Event()
        """Set when run() ends: a prefix still being re-hashed in a thread stops there."""
        self._waking = False
        self._etag: str | None = None
        self._write_error: DownloadError | None = None
        self._resumed_from = 0

    def __repr__(self) -> str:
        return f"Download({self.url!r} -> {str(self.dest)!r}, {self._state.value})"

    # -- observing -----------------------------------------------------------------------------

    @property
    def state(self) -> DownloadState:
        return self._state

    @property
    def progress(self) -> DownloadProgress:
        total = self._total
        eta = None
        if total is not None and self._rate > 0:
            eta = max(0.0, (total - self._done) / self._rate)
        return DownloadProgress(
            state=self._state,
            url=self.url,
            dest=self.dest,
            done=self._done,
            total=total,
            rate=self._rate,
            eta=eta,
            attempt=self._attempt,
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
        now = time.monotonic()
        samples = self._samples
        samples.append((now, self._done))
        while samples and samples[0][0] < now - self.rate_window:
            samples.popleft()
        first_time, first_done = samples[0]
        span = now - first_time
        if span >= min(0.2, self.rate_window / 2):
            self._rate = max(0.0, (self._done - first_done) / span)
        if self._state is DownloadState.DOWNLOADING and now - self._last_byte >= self.rate_window:
            self._state = DownloadState.STALLED
            self._message = f"no data for {now - self._last_byte:.0f} s"
        elif self._state is DownloadState.STALLED:
            self._message = f"no data for {now - self._last_byte:.0f} s"

    def _reset_rate(self) -> None:
        self._samples.clear()
        self._rate = 0.0

    def _wake(self) -> None:
        """Bytes flow again after a stall (scheduled on the loop by the worker thread)."""
        self._waking = False
        if self._state is DownloadState.STALLED:
            self._set_state(DownloadState.DOWNLOADING)

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
                f"{format_bytes(self._offset)} kept in {self.partial_path}",
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
            self._rate = 0.0
            self._set_state(
                DownloadState.CANCELLED, f"cancelled; {format_bytes(self._offset)} kept for resume"
            )
            raise
        except DownloadError as exc:
            self.error = exc
            self._rate = 0.0
            self._set_state(DownloadState.FAILED, exc.message)
            raise
        except Exception as exc:
            log.exception("download of %s failed unexpectedly", self.url)
            self.error = DownloadError(f"download failed: {exc}", kind="io")
            self._rate = 0.0
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
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.partial_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._os_error(exc, "cannot create") from exc
        try:
            self._lock_partial()
        except BaseException:
            self._close_partial()
            raise
        try:
            await self._prepare_partial()
            failures = 0
            while True:
                self._attempt += 1
                before = self._offset
                try:
                    await self._attempt_once(client)
                    break
                except _Retry as retry:
                    failures = 1 if self._offset > before else failures + 1
                    if failures >= self.max_attempts:
                        raise DownloadError(
                            f"download of {self.dest.name} failed after {failures} attempts: "
                            f"{retry}",
                            hint="check the network connection and pull again; "
                            "it resumes from the bytes already downloaded",
                            kind="network",
                        ) from None
                    delay = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
                    delay *= random.uniform(0.75, 1.0)
                    if retry.retry_after is not None:
                        delay = min(self.backoff_max, max(delay, retry.retry_after))
                    self._set_state(
                        DownloadState.RETRYING,
                        f"{retry}; retry {failures + 1}/{self.max_attempts} in {delay:.1f} s",
                    )
                    await asyncio.sleep(delay)
            return await self._finish()
        except BaseException:
            self._discard_if_empty()
            raise
        finally:
            self._ended.set()
            self._close_partial()

    def _lock_partial(self) -> None:
        if fcntl is None or self._fd is None:  # pragma: no cover - Windows
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DownloadError(
                f"{self.partial_path} is being downloaded by another Podlab process",
                hint="wait for that download to finish or cancel it there",
                kind="busy",
            ) from None

    def _close_partial(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self) -> None:
        state = {"url": self.resolved_url, "etag": self._etag}
        with contextlib.suppress(OSError):
            atomic_write_text(self.state_path, json.dumps(state))

    async def _prepare_partial(self) -> None:
        """Keep a partial of the same URL and re-hash it once; drop anything else."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        saved = self._read_state()
        if size and saved.get("url") not in (None, self.resolved_url):
            log.info("partial %s belongs to another URL; starting over", self.partial_path)
            size = 0
        if self.expected_size is not None and size > self.expected_size:
            size = 0
        etag = saved.get("etag")
        self._etag = etag if isinstance(etag, str) else None
        if size == 0:
            self._truncate()
        else:
            self._set_state(
                DownloadState.CONNECTING,
                f"checking the {format_bytes(size)} already downloaded",
            )
            self._hasher = await asyncio.wrap_future(_in_thread(self._hash_prefix, size))
            self._offset = self._done = self._resumed_from = size
            os.lseek(self._fd, size, os.SEEK_SET)
        self._write_state()

    def _hash_prefix(self, size: int) -> Any:
        hasher = hashlib.sha256()
        with self.partial_path.open("rb") as handle:
            remaining = size
            while remaining and not self._ended.is_set():
                chunk = handle.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                hasher.update(chunk)
                remaining -= len(chunk)
        return hasher

    def _truncate(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hasher = hashlib.sha256()
        self._offset = self._done = 0
        self._reset_rate()

    def _write(self, chunks: list[bytes], hash_update: Callable[[memoryview], None]) -> None:
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
            self._offset += written
            for chunk in chunks:  # hash exactly the bytes that reached the file
                if written <= 0:
                    break
                hash_update(memoryview(chunk)[:written])
                written -= len(chunk)
            self._write_error = self._os_error(exc, "cannot write")
            raise self._write_error from exc
        for chunk in chunks:
            hash_update(memoryview(chunk))
        self._offset += written

    def _os_error(self, exc: OSError, doing: str) -> DownloadError:
        if exc.errno in _DISK_FULL_ERRNOS:
            what = "file size limit reached" if exc.errno == errno.EFBIG else "disk full"
            return DownloadError(
                f"{what}: cannot write {self.partial_path} "
                f"({format_bytes(self._offset)} kept for resume)",
                hint=f"free some space on {self.dest.parent} (or choose another models folder) "
                "and pull again; the download resumes where it stopped",
                kind="disk_full",
            )
        return DownloadError(f"{doing} {self.partial_path}: {exc.strerror or exc}", kind="io")

    def _request_headers(self) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity", **auth_headers(self.resolved_url)}
        if self._offset > 0:
            headers["Range"] = f"bytes={self._offset}-"
            if self._etag:
                headers["If-Range"] = self._etag
        return headers

    async def _attempt_once(self, client: httpx.Client) -> None:
        self._set_state(DownloadState.CONNECTING, f"connecting (attempt {self._attempt})")
        timeout = httpx.Timeout(
            connect=self.connect_timeout,
            read=self.stall_seconds,
            write=self.stall_seconds,
            pool=None,
        )
        connection = _Connection()
        try:
            request = client.build_request(
                "GET",
                self.resolved_url,
                headers=self._request_headers(),
                timeout=timeout,
                extensions={"trace": connection.trace},
            )
            response = await self._send(client, request, connection)
            try:
                body = await self._start_body(response)
            except BaseException:
                response.close()
                raise
            if body:
                await self._stream_body(response, connection)  # closes the response
            else:
                response.close()
        except httpx.TooManyRedirects:
            raise DownloadError(
                f"too many redirects (more than {MAX_REDIRECTS}) for {self.url}: "
                "the server sends the download round in a loop",
                hint="the link is broken on the server side; try again later or another source",
                kind="redirects",
            ) from None
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise _Retry(f"connection to {self._host} timed out") from None
            raise _Retry(f"stalled: no data for {self.stall_seconds:g} s, reconnecting") from None
        except httpx.ConnectError as exc:
            failure = _ssl_failure(exc)
            if failure is not None:
                raise self._tls_error(failure) from None
            raise _Retry(f"cannot connect to {self._host}: {exc}") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise DownloadError(f"cannot download {self.url}: {exc}", kind="http") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection lost: {exc or type(exc).__name__}") from None

    @property
    def _host(self) -> str:
        return urlsplit(self.resolved_url).hostname or self.resolved_url

    def _tls_error(self, failure: ssl.SSLError) -> DownloadError:
        reason = getattr(failure, "verify_message", None) or failure.reason or str(failure)
        return DownloadError(
            f"TLS verification failed for {self._host}: {reason}; nothing was downloaded",
            hint="Podlab never downloads without verifying TLS. Behind a TLS-intercepting proxy, "
            "point SSL_CERT_FILE at a bundle that includes its CA certificate.",
            kind="tls",
        )

    async def _start_body(self, response: httpx.Response) -> bool:
        """Check the response; True when there is a body to append to the partial."""
        code = response.status_code
        if self.resolved_url.startswith("https://") and response.url.scheme != "https":
            raise DownloadError(
                f"{self.url} redirected to insecure {response.url.scheme}://{response.url.host}",
                hint="Podlab does not follow redirects from https to plain http",
                kind="tls",
            )
        if code == 416 and self._offset > 0:
            match = _UNSATISFIED_RANGE_RE.match(response.headers.get("content-range", ""))
            if match and int(match.group(1)) == self._offset:
                self._total = self._offset
                return False  # the partial is already complete
            self._truncate()
            raise _Retry("the server refused to resume; starting over")
        if code in (401, 403):
            raise DownloadError(
                f"access denied (HTTP {code}) for {self.url}",
                hint=_GATED_HINT
                if hf_token() is None
                else "HF_TOKEN is set but was refused: "
                "check that it is valid and that you accepted the model's license on the hub.",
                kind="auth",
            )
        if code in (404, 410):
            raise DownloadError(
                f"not found (HTTP {code}): {self.url}",
                hint="the file was moved or removed; check the URL or update the catalog",
                kind="not_found",
            )
        if code in (408, 425, 429) or code >= 500:
            raise _Retry(f"server error HTTP {code}", retry_after=_retry_after(response))
        if code not in (200, 206):
            raise DownloadError(
                f"unexpected HTTP {code} {response.reason_phrase} for {self.url}", kind="http"
            )
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise DownloadError(
                f"the server sent {self.url} compressed ({encoding}) although asked not to",
                kind="http",
            )

        total: int | None = None
        if code == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
            if not match or int(match.group(1)) != self._offset:
                self._truncate()
                raise _Retry("the server answered another range than asked; starting over")
            total = None if match.group(3) == "*" else int(match.group(3))
        else:
            if self._offset > 0:
                log.info("%s ignored the Range request; restarting from zero", self._host)
                self._truncate()
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None

        published = server_sha256(response)
        if published:
            self.server_sha256 = published
            if self.expected_sha256 and published != self.expected_sha256:
                self._truncate()
                raise DownloadError(
                    f"the server publishes sha256 {published} for {self.url}, "
                    f"but {self.expected_sha256} was expected",
                    hint="the file changed upstream, or the catalog entry is wrong",
                    kind="checksum",
                )
        if total is not None:
            if self.expected_size is not None and total != self.expected_size:
                raise DownloadError(
                    f"the server's file is {total} bytes, {self.expected_size} were expected: "
                    f"{self.url}",
                    hint="the file changed upstream, or the catalog entry is wrong",
                    kind="size",
                )
            self._total = total
        elif self.expected_size is not None:
            self._total = self.expected_size
        etag = response.headers.get("etag")
        etag = etag if etag and not etag.startswith("W/") else None
        if etag != self._etag:
            self._etag = etag
            self._write_state()
        self._check_space()
        return True

    def _check_space(self) -> None:
        if not self.check_free_space or self._total is None:
            return
        needed = self._total - self._offset
        try:
            free = shutil.disk_usage(self.partial_path.parent).free
        except OSError:
            return
        if needed > free:
            raise DownloadError(
                f"disk full: {self.dest.name} needs {format_bytes(needed)} more, "
                f"only {format_bytes(free)} free on {self.dest.parent}",
                hint="free some space (or choose another models folder) and pull again; "
                "it resumes where it stopped",
                kind="disk_full",
            )

    @staticmethod
    async def _send(
        client: httpx.Client, request: httpx.Request, connection: _Connection
    ) -> httpx.Response:
        """Send the request and wait for the response head (redirects followed), in a thread."""

        def send() -> httpx.Response:
            response = client.send(request, stream=True)
            connection.attach(response.extensions.get("network_stream"))
            return response

        future = _in_thread(send)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # A connection already made is shut down now; a connect() in progress cannot be
            # interrupted, so the thread is left to finish and its response closed then.
            connection.abort()
            future.add_done_callback(_close_response)
            raise

    async def _stream_body(self, response: httpx.Response, connection: _Connection) -> None:
        self._last_byte = time.monotonic()
        self._reset_rate()
        self._samples.append((self._last_byte, self._done))
        self._set_state(DownloadState.DOWNLOADING)
        worker = asyncio.wrap_future(
            _in_thread(self._receive, response, asyncio.get_running_loop())
        )
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            connection.abort()
            # The worker owns the partial file until it returns, which it does at once now that
            # its socket is shut down (after writing what it had received).
            while not worker.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([worker])
            if not worker.cancelled():
                worker.exception()  # the connection error the abort caused: nothing to report
            raise
        finally:
            self._done = self._offset  # what is in the partial (the worker has ended)
        if self._total is not None and self._offset < self._total:
            raise _Retry(
                f"the connection ended early at {format_bytes(self._offset)} "
                f"of {format_bytes(self._total)}"
            )

    def _receive(self, response: httpx.Response, loop: asyncio.AbstractEventLoop) -> None:
        """Read the body and append it to the partial, in order (the worker thread); what is
        written is hashed alongside (`_HashFeed`).

        Progress reaches the event loop through `_done` and `_last_byte`, read by its ticker;
        only the end of a stall is sent over, once, since it changes the state.
        """
        buffer: list[bytes] = []
        buffered = 0
        feed = _HashFeed(self._hasher)
        try:
            try:
                for chunk in response.iter_raw():
                    buffer.append(chunk)
                    buffered += len(chunk)
                    self._done += len(chunk)
                    self._last_byte = time.monotonic()
                    if self._state is DownloadState.STALLED and not self._waking:
                        self._waking = True
                        loop.call_soon_threadsafe(self._wake)
                    if buffered >= self.chunk_size:
                        batch, buffer, buffered = buffer, [], 0
                        self._write(batch, feed.update)
            finally:
                # Keep every byte received: the partial stays a correct prefix for a resume.
                if buffer:
                    self._write(buffer, feed.update)
        finally:
            with contextlib.suppress(Exception):  # best effort: the bytes are handled
                response.close()
            feed.close()  # returns once all that was written is hashed

    async def _finish(self) -> DownloadResult:
        assert self._fd is not None
        self._rate = 0.0
        self._set_state(DownloadState.VERIFYING)
        size = self._offset
        digest = self._hasher.hexdigest()
        expected, source = self.expected_sha256, "expected"
        if expected is None and self.server_sha256 is not None:
            expected, source = self.server_sha256, "server"
        if expected is not None and digest != expected:
            self._discard()
            whose = "expected" if source == "expected" else "published by the server"
            raise DownloadError(
                f"checksum mismatch for {self.dest.name}: sha256 {whose} {expected}, "
                f"got {digest}; the corrupt download was deleted",
                hint="pull again; if it fails the same way, the file or its catalog entry is wrong",
                kind="checksum",
            )
        if self.expected_size is not None and size != self.expected_size:
            self._discard()
            raise DownloadError(
                f"{self.dest.name} is {size} bytes, {self.expected_size} were expected; "
                "the download was deleted",
                kind="size",
            )
        try:
            os.fsync(self._fd)
            self._close_partial()
            os.replace(self.partial_path, self.dest)
            _fsync_dir(self.dest.parent)
        except OSError as exc:
            raise self._os_error(exc, "cannot finish") from exc
        self.state_path.unlink(missing_ok=True)
        return DownloadResult(
            url=self.url,
            path=self.dest,
            size=size,
            sha256=digest,
            sha256_source=source if expected is not None else "computed",
            resumed_from=self._resumed_from,
            attempts=self._attempt,
        )

    def _discard_if_empty(self) -> None:
        """After a failure with not a byte on disk there is nothing to resume: leave no trace."""
        with contextlib.suppress(OSError):
            if self._fd is not None and os.fstat(self._fd).st_size == 0:
                self._discard()

    def _discard(self) -> None:
        self._close_partial()
        self.partial_path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        self._offset = self._done = 0


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


# -- several at once -----------------------------------------------------------------------------


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
        download._emit()  # announce "queued"
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
