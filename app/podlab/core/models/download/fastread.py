"""The downloader's fast read path: larger socket reads, plugged into httpx through its internals.

httpcore reads 64 KiB per call, which costs a multi-GB body tens of thousands of trips through
h11 and httpx per GiB. `make_fast_client` returns an `httpx.Client` whose direct connections read
through `LargeReadBackend` instead. httpx offers no option for that, so this module relies on
two of its internals, named below: the client method that builds the default transport
(`_init_transport`, overridden so that proxies from the environment still get httpx's own
transports) and the transport's httpcore pool (`_pool`, rebuilt with the backend). When a later
httpx lacks either, the client is plain httpx and downloads work exactly the same, with 64 KiB
reads (tests/integration/test_download.py covers both ways).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
from typing import Any

import httpcore
import httpx

try:  # POSIX: FIONREAD tells how many bytes have arrived.
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20
"""Bytes asked of the socket per read at most; httpcore asks 64 KiB (see `LargeReadStream`)."""

TRANSPORT_HOOK = "_init_transport"
"""The httpx.Client method that builds the transport for direct (unproxied) connections."""
POOL_ATTRIBUTE = "_pool"
"""The httpx.HTTPTransport attribute that holds its httpcore connection pool."""


class LargeReadStream(httpcore.NetworkStream):
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
        return TLSRecordsStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class TLSRecordsStream(LargeReadStream):
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


class LargeReadBackend(httpcore.NetworkBackend):
    """httpcore's own blocking socket backend, its streams wrapped in `LargeReadStream`."""

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
        return LargeReadStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return LargeReadStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _Transport(httpx.HTTPTransport):
    """httpx's HTTP transport over a connection pool that reads through `LargeReadBackend`.

    `httpx.HTTPTransport` maps requests, responses and errors onto one httpcore connection pool
    but has no parameter for the network backend, so the pool is rebuilt here with the same TLS
    context and limits plus that backend. Without that pool attribute the transport stays
    wholly httpx's.
    """

    def __init__(self, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=ssl_context, trust_env=True, limits=limits)
        if not isinstance(getattr(self, POOL_ATTRIBUTE, None), httpcore.ConnectionPool):
            log.info("httpx keeps no %s on its transport: downloads read 64 KiB", POOL_ATTRIBUTE)
            return
        pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=LargeReadBackend(),
        )
        setattr(self, POOL_ATTRIBUTE, pool)


class _Client(httpx.Client):
    """An httpx.Client whose direct connections go through `_Transport`.

    Passing `transport=` would switch off the proxies from the environment (httpx reads
    HTTPS_PROXY, NO_PROXY... only when no transport is given), so the transport is swapped where
    httpx builds its default one instead; proxied URLs keep httpx's proxy transports.
    """

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        limits, verify = kwargs.get("limits"), kwargs.get("verify")
        if (
            not args
            and kwargs.get("transport") is None
            and isinstance(limits, httpx.Limits)
            and isinstance(verify, ssl.SSLContext)
        ):
            return _Transport(verify, limits)
        return super()._init_transport(*args, **kwargs)


def make_fast_client(*, verify: ssl.SSLContext, **kwargs: Any) -> httpx.Client:
    """An httpx.Client (same arguments) with large reads where this httpx allows them."""
    if not callable(getattr(httpx.Client, TRANSPORT_HOOK, None)):
        log.info("httpx has no Client.%s: downloads read 64 KiB", TRANSPORT_HOOK)
        return httpx.Client(verify=verify, **kwargs)
    return _Client(verify=verify, **kwargs)
