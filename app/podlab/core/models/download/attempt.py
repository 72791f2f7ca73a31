"""The HTTP side of a download: attempts to fetch the rest of the file into its partial.

Each attempt asks for the bytes after the partial's offset (Range, with If-Range on the ETag the
bytes came with). A server that ignores Range (200 instead of 206) restarts the file from zero.
Connection errors, 5xx, timeouts and stalls (no byte for `stall_seconds`) reconnect with
exponential backoff; an attempt that brought bytes resets the count. What no retry can mend
fails at once: a host name that does not resolve (no network, or a wrong name) and TLS. When
no sha256 is given, the digest the server publishes (Hugging Face's `X-Linked-Etag`, on the
redirect of /resolve/ URLs) is recorded for the check at the end.

The body moves in a worker thread, through httpx's synchronous client: blocking reads, each
batch appended to the partial in order while a second thread hashes what was written
(`HashFeed`); the event loop only reads the meter. Cancelling shuts the attempt's socket down,
which wakes the worker at once; the attempt waits for the worker to let go of the partial, so
the partial stays an exact prefix and the hash covers exactly the partial.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import re
import shutil
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpcore
import httpx

from podlab import __version__
from podlab.core.http import shared_ssl_context
from podlab.core.models.download.fastread import make_fast_client
from podlab.core.models.download.meter import TransferMeter
from podlab.core.models.download.partial import HashFeed, PartialFile
from podlab.core.models.download.progress import DownloadError, DownloadState, format_bytes
from podlab.core.models.download.threads import in_thread
from podlab.core.models.download.urls import auth_headers, hf_token, server_sha256

if TYPE_CHECKING:
    from podlab.core.models.download.job import Download

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
USER_AGENT = f"podlab/{__version__}"

_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE_RE = re.compile(r"^bytes\s+\*/(\d+)$")
_GATED_HINT = (
    "If this is a gated model, accept its license on huggingface.co and set HF_TOKEN to an "
    "access token (https://huggingface.co/settings/tokens)."
)


class Retry(Exception):
    """A failure worth another attempt (network, 5xx, stall, truncated body)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def make_client(max_connections: int | None = None) -> httpx.Client:
    """The HTTP client downloads use: TLS always verified with the shared context
    (core/http.py), proxies from the environment, large reads where httpx allows (fastread).

    Synchronous: downloads run their transfers in worker threads (see the module doc); an
    `httpx.Client` may be shared between threads.
    """
    return make_fast_client(
        verify=shared_ssl_context(),
        trust_env=True,
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=4),
        timeout=httpx.Timeout(30.0),
        headers={"User-Agent": USER_AGENT},
    )


class AttemptLoop:
    """Attempts for one `Download` until its partial holds the whole file (or it fails).

    Reads the download's target and tuning (URL, expected digest and size, timeouts, backoff);
    writes the partial, the meter and, through `set_state`, the download's state.
    """

    def __init__(
        self,
        download: Download,
        partial: PartialFile,
        meter: TransferMeter,
        set_state: Callable[..., None],
    ) -> None:
        self.download = download
        self.partial = partial
        self.meter = meter
        self.set_state = set_state
        self.count = 0
        """Attempts made so far."""
        self.server_sha256: str | None = None
        """The digest the server published for the file, if it did."""
        self._waking = False

    async def run(self, client: httpx.Client) -> None:
        download = self.download
        failures = 0
        while True:
            self.count += 1
            before = self.partial.offset
            try:
                await self._attempt_once(client)
                return
            except Retry as retry:
                failures = 1 if self.partial.offset > before else failures + 1
                if failures >= download.max_attempts:
                    raise DownloadError(
                        f"download of {download.dest.name} failed after {failures} attempts: "
                        f"{retry}",
                        hint="check the network connection and try again; "
                        "it resumes from the bytes already downloaded",
                        kind="network",
                    ) from None
                delay = min(download.backoff_max, download.backoff_base * 2 ** (failures - 1))
                delay *= random.uniform(0.75, 1.0)
                if retry.retry_after is not None:
                    delay = min(download.backoff_max, max(delay, retry.retry_after))
                self.set_state(
                    DownloadState.RETRYING,
                    f"{retry}; retry {failures + 1}/{download.max_attempts} in {delay:.1f} s",
                )
                await asyncio.sleep(delay)

    def _restart(self) -> None:
        """The partial starts over from zero (the server will send the whole file)."""
        self.partial.truncate()
        self.meter.restart(0)

    def _wake(self) -> None:
        """Bytes flow again after a stall (scheduled on the loop by the worker thread)."""
        self._waking = False
        if self.download.state is DownloadState.STALLED:
            self.set_state(DownloadState.DOWNLOADING)

    def _request_headers(self) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity", **auth_headers(self.download.resolved_url)}
        if self.partial.offset > 0:
            headers["Range"] = f"bytes={self.partial.offset}-"
            if self.partial.etag:
                headers["If-Range"] = self.partial.etag
        return headers

    async def _attempt_once(self, client: httpx.Client) -> None:
        self.set_state(DownloadState.CONNECTING, f"connecting (attempt {self.count})")
        timeout = httpx.Timeout(
            connect=self.download.connect_timeout,
            read=self.download.stall_seconds,
            write=self.download.stall_seconds,
            pool=None,
        )
        connection = _Connection()
        try:
            request = client.build_request(
                "GET",
                self.download.resolved_url,
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
                f"too many redirects (more than {MAX_REDIRECTS}) for {self.download.url}: "
                "the server sends the download round in a loop",
                hint="the link is broken on the server side; try again later or another source",
                kind="redirects",
            ) from None
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise Retry(f"connection to {self._host} timed out") from None
            stall = self.download.stall_seconds
            raise Retry(f"stalled: no data for {stall:g} s, reconnecting") from None
        except httpx.ConnectError as exc:
            failure = _ssl_failure(exc)
            if failure is not None:
                raise self._tls_error(failure) from None
            if _cause(exc, socket.gaierror) is not None:
                raise DownloadError(
                    f"No connection to {self._host}: its name could not be looked up",
                    hint="Check that this computer is online, then retry; "
                    "the download resumes from the bytes already downloaded.",
                    kind="network",
                ) from None
            raise Retry(f"cannot connect to {self._host}: {_plain_reason(exc)}") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            url = self.download.url
            raise DownloadError(f"cannot download {url}: {exc}", kind="http") from None
        except httpx.TransportError as exc:
            raise Retry(f"connection lost: {exc or type(exc).__name__}") from None

    @property
    def _host(self) -> str:
        return urlsplit(self.download.resolved_url).hostname or self.download.resolved_url

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
        url, expected_size = self.download.url, self.download.expected_size
        if self.download.resolved_url.startswith("https://") and response.url.scheme != "https":
            raise DownloadError(
                f"{url} redirected to insecure {response.url.scheme}://{response.url.host}",
                hint="Podlab does not follow redirects from https to plain http",
                kind="tls",
            )
        if code == 416 and self.partial.offset > 0:
            match = _UNSATISFIED_RANGE_RE.match(response.headers.get("content-range", ""))
            if match and int(match.group(1)) == self.partial.offset:
                self.meter.total = self.partial.offset
                return False  # the partial is already complete
            self._restart()
            raise Retry("the server refused to resume; starting over")
        if code in (401, 403):
            raise DownloadError(
                f"access denied (HTTP {code}) for {url}",
                hint=_GATED_HINT
                if hf_token() is None
                else "HF_TOKEN is set but was refused: "
                "check that it is valid and that you accepted the model's license on the hub.",
                kind="auth",
            )
        if code in (404, 410):
            raise DownloadError(
                f"not found (HTTP {code}): {url}",
                hint="the file was moved or removed; check the URL or update the catalog",
                kind="not_found",
            )
        if code in (408, 425, 429) or code >= 500:
            raise Retry(f"server error HTTP {code}", retry_after=_retry_after(response))
        if code not in (200, 206):
            raise DownloadError(
                f"unexpected HTTP {code} {response.reason_phrase} for {url}", kind="http"
            )
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise DownloadError(
                f"the server sent {url} compressed ({encoding}) although asked not to",
                kind="http",
            )

        total: int | None = None
        if code == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
            if not match or int(match.group(1)) != self.partial.offset:
                self._restart()
                raise Retry("the server answered another range than asked; starting over")
            total = None if match.group(3) == "*" else int(match.group(3))
        else:
            if self.partial.offset > 0:
                log.info("%s ignored the Range request; restarting from zero", self._host)
                self._restart()
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None

        published = server_sha256(response)
        if published:
            self.server_sha256 = published
            if self.download.expected_sha256 and published != self.download.expected_sha256:
                self._restart()
                raise DownloadError(
                    f"the server publishes sha256 {published} for {url}, "
                    f"but {self.download.expected_sha256} was expected",
                    hint="the file changed upstream, or the catalog entry is wrong",
                    kind="checksum",
                )
        if total is not None:
            if expected_size is not None and total != expected_size:
                raise DownloadError(
                    f"the server's file is {total} bytes, {expected_size} were expected: {url}",
                    hint="the file changed upstream, or the catalog entry is wrong",
                    kind="size",
                )
            self.meter.total = total
        elif expected_size is not None:
            self.meter.total = expected_size
        etag = response.headers.get("etag")
        etag = etag if etag and not etag.startswith("W/") else None
        if etag != self.partial.etag:
            self.partial.etag = etag
            self.partial.write_state()
        self._check_space()
        return True

    def _check_space(self) -> None:
        if not self.download.check_free_space or self.meter.total is None:
            return
        needed = self.meter.total - self.partial.offset
        try:
            free = shutil.disk_usage(self.partial.path.parent).free
        except OSError:
            return
        if needed > free:
            raise DownloadError(
                f"disk full: {self.download.dest.name} needs {format_bytes(needed)} more, "
                f"only {format_bytes(free)} free on {self.download.dest.parent}",
                hint="free some space (or choose another models folder) and try again; "
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

        future = in_thread(send)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # A connection already made is shut down now; a connect() in progress cannot be
            # interrupted, so the thread is left to finish and its response closed then.
            connection.abort()
            future.add_done_callback(_close_response)
            raise

    async def _stream_body(self, response: httpx.Response, connection: _Connection) -> None:
        self.meter.start_body()
        self.set_state(DownloadState.DOWNLOADING)
        worker = asyncio.wrap_future(in_thread(self._receive, response, asyncio.get_running_loop()))
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
            self.meter.done = self.partial.offset  # what is in the partial (the worker has ended)
        if self.meter.total is not None and self.partial.offset < self.meter.total:
            raise Retry(
                f"the connection ended early at {format_bytes(self.partial.offset)} "
                f"of {format_bytes(self.meter.total)}"
            )

    def _receive(self, response: httpx.Response, loop: asyncio.AbstractEventLoop) -> None:
        """Read the body and append it to the partial, in order (the worker thread); what is
        written is hashed alongside (`HashFeed`).

        Progress reaches the event loop through the meter, read by its ticker;
        only the end of a stall is sent over, once, since it changes the state.
        """
        buffer: list[bytes] = []
        buffered = 0
        feed = HashFeed(self.partial.hasher)
        try:
            try:
                for chunk in response.iter_raw():
                    buffer.append(chunk)
                    buffered += len(chunk)
                    self.meter.received(len(chunk))
                    if self.download.state is DownloadState.STALLED and not self._waking:
                        self._waking = True
                        loop.call_soon_threadsafe(self._wake)
                    if buffered >= self.download.chunk_size:
                        batch, buffer, buffered = buffer, [], 0
                        self.partial.append(batch, feed.update)
            finally:
                # Keep every byte received: the partial stays a correct prefix for a resume.
                if buffer:
                    self.partial.append(buffer, feed.update)
        finally:
            with contextlib.suppress(Exception):  # best effort: the bytes are handled
                response.close()
            feed.close()  # returns once all that was written is hashed


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


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first `kind` in the chain of causes of `exc` (httpx wraps httpcore wraps OSError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        current = current.__cause__ or current.__context__
    return None


def _plain_reason(exc: BaseException) -> str:
    """Why a connection failed, in words: "connection refused", not "[Errno 111] ..."."""
    failure = _cause(exc, OSError)
    if isinstance(failure, OSError) and failure.strerror:
        return failure.strerror[0].lower() + failure.strerror[1:]
    return str(exc) or type(exc).__name__


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


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
