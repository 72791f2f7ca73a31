"""A real HTTP(S) server on 127.0.0.1 that misbehaves on purpose, for download tests and benches.

Each served path has a list of behaviours used one per request (the last one repeats), e.g.
``[cut(1000), ok()]``: the first request is cut after 1000 bytes, every later one succeeds.

    with FaultServer() as server:
        server.serve("/model.gguf", data, [stall(4096), ok()], linked_etag=True)
        url = server.url("/model.gguf")

Behaviours: ``ok`` (Range honoured), ``cut`` (connection closed after N bytes although
Content-Length promised more), ``short`` (no Content-Length, clean close after N bytes),
``stall`` (N bytes, then silence), ``ignore_range`` (always 200 with the whole body),
``wrong_content`` (same length, other bytes), ``status`` (any status code), ``slow`` (bytes per
second cap). ``redirect`` and ``redirect_loop`` add redirecting paths; ``linked_etag`` sends the
body's sha256 as ``X-Linked-Etag`` the way Hugging Face does. ``ssl_context`` serves HTTPS;
``make_self_signed_cert`` makes a certificate for it.

No third-party code: http.server in a background thread (ThreadingHTTPServer), with
``socket.sendfile`` for file bodies so that benches measure the client, not the server.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SEND_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Behaviour:
    kind: str
    after: int = 0
    """Bytes of the body sent before the fault (cut, short, stall)."""
    status: int = 200
    seconds: float = 3600.0
    """How long a stall lasts before the server closes the connection."""
    rate: float = 0.0
    """Bytes per second for `slow`."""
    headers: tuple[tuple[str, str], ...] = ()


def ok() -> Behaviour:
    return Behaviour("ok")


def cut(after: int) -> Behaviour:
    return Behaviour("cut", after=after)


def short(after: int) -> Behaviour:
    return Behaviour("short", after=after)


def stall(after: int, seconds: float = 3600.0) -> Behaviour:
    return Behaviour("stall", after=after, seconds=seconds)


def ignore_range() -> Behaviour:
    return Behaviour("ignore_range")


def wrong_content() -> Behaviour:
    return Behaviour("wrong_content")


def status(code: int, headers: dict[str, str] | None = None) -> Behaviour:
    return Behaviour("status", status=code, headers=tuple((headers or {}).items()))


def slow(rate: float) -> Behaviour:
    return Behaviour("slow", rate=rate)


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class Route:
    body: bytes | Path | None = None
    behaviours: list[Behaviour] = field(default_factory=lambda: [ok()])
    headers: dict[str, str] = field(default_factory=dict)
    location: str | None = None
    redirect_status: int = 302
    etag: str | None = None
    hits: int = 0

    @property
    def size(self) -> int:
        if isinstance(self.body, Path):
            return self.body.stat().st_size
        return len(self.body or b"")

    def next_behaviour(self) -> Behaviour:
        behaviour = self.behaviours[min(self.hits, len(self.behaviours) - 1)]
        self.hits += 1
        return behaviour


def sha256_of(body: bytes | Path) -> str:
    if isinstance(body, bytes):
        return hashlib.sha256(body).hexdigest()
    digest = hashlib.sha256()
    with body.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FaultServer

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        with self.owner.lock:
            self.owner.connections += 1
        if self.owner.ssl_context is not None:
            sock = self.owner.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up, TLS handshakes that fail: expected here, not worth a traceback.
        return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def do_GET(self) -> None:
        self._handle(send_body=True)

    # -- dispatch ------------------------------------------------------------------------------

    def _handle(self, send_body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        with owner.lock:
            owner.requests.append(
                RequestRecord(self.command, path, {k.lower(): v for k, v in self.headers.items()})
            )
            route = owner.routes.get(path)
            behaviour = route.next_behaviour() if route else None
        if route is None or behaviour is None:
            self._simple(404, b"not found\n")
            return
        if route.location is not None:
            self.send_response(route.redirect_status)
            self.send_header("Location", route.location)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if behaviour.kind == "status":
            self._simple(behaviour.status, f"status {behaviour.status}\n".encode(), behaviour)
            return
        with owner.lock:
            owner.active += 1
            owner.max_active = max(owner.max_active, owner.active)
        try:
            self._body(route, behaviour, send_body)
        except (ConnectionError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            with owner.lock:
                owner.active -= 1

    def _simple(self, code: int, body: bytes, behaviour: Behaviour | None = None) -> None:
        self.send_response(code)
        if behaviour:
            for name, value in behaviour.headers:
                self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self, route: Route, behaviour: Behaviour, send_body: bool) -> None:
        size = route.size
        start, end = 0, size - 1
        partial = False
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        range_ok = behaviour.kind != "ignore_range" and (
            if_range is None or route.etag is None or if_range == route.etag
        )
        if range_header and range_ok:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if match:
                start = int(match.group(1))
                if match.group(2):
                    end = min(int(match.group(2)), size - 1)
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                partial = True
        length = end - start + 1
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if route.etag:
            self.send_header("ETag", route.etag)
        for name, value in route.headers.items():
            self.send_header(name, value)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if behaviour.kind == "short":
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if not send_body:
            return
        limit = length
        if behaviour.kind in ("cut", "short", "stall"):
            limit = min(length, behaviour.after)
        self._send_range(route, start, limit, behaviour)
        if behaviour.kind == "stall":
            self.server.owner.stop.wait(behaviour.seconds)
        if behaviour.kind in ("cut", "short", "stall"):
            self._hang_up()

    def _send_range(self, route: Route, start: int, count: int, behaviour: Behaviour) -> None:
        body = route.body
        fast = (
            isinstance(body, Path)
            and behaviour.kind in ("ok", "ignore_range")
            and self.server.owner.ssl_context is None
        )
        if fast and isinstance(body, Path):
            with body.open("rb") as handle:
                self.connection.sendfile(handle, start, count)
            return
        sent = 0
        began = time.monotonic()
        pace = behaviour.kind == "slow" and behaviour.rate > 0
        with contextlib.ExitStack() as stack:
            handle = stack.enter_context(body.open("rb")) if isinstance(body, Path) else None
            while sent < count:
                n = min(SEND_CHUNK, count - sent)
                if pace:
                    # A schedule, not a sleep per chunk: late wake-ups are caught up, so the
                    # rate holds on a busy machine. Waiting before the write also lets the
                    # handler finish as soon as the last byte is out.
                    due = began + (sent + n) / behaviour.rate
                    if self.server.owner.stop.wait(max(0.0, due - time.monotonic())):
                        return
                if handle is not None:
                    handle.seek(start + sent)
                    chunk = handle.read(n)
                else:
                    assert isinstance(body, bytes)
                    chunk = body[start + sent : start + sent + n]
                if behaviour.kind == "wrong_content":
                    chunk = bytes(b ^ 0x5A for b in chunk)
                self.wfile.write(chunk)
                sent += len(chunk)

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class FaultServer:
    """A threaded HTTP server on 127.0.0.1 with an ephemeral port; use as a context manager."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.ssl_context = ssl_context
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.routes: dict[str, Route] = {}
        self.requests: list[RequestRecord] = []
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- routes --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def serve(
        self,
        path: str,
        body: bytes | Path,
        behaviours: Sequence[Behaviour] = (),
        *,
        headers: dict[str, str] | None = None,
        linked_etag: bool = False,
        etag: str | None = None,
    ) -> Route:
        """Serve `body` at `path`; `linked_etag` adds X-Linked-Etag: "<sha256>"."""
        extra = dict(headers or {})
        if linked_etag:
            extra["X-Linked-Etag"] = f'"{sha256_of(body)}"'
        route = Route(body=body, behaviours=list(behaviours) or [ok()], headers=extra, etag=etag)
        with self.lock:
            self.routes[path] = route
        return route

    def redirect(
        self, path: str, location: str, *, headers: dict[str, str] | None = None, code: int = 302
    ) -> Route:
        route = Route(location=location, headers=dict(headers or {}), redirect_status=code)
        with self.lock:
            self.routes[path] = route
        return route

    def redirect_loop(self, path: str) -> Route:
        return self.redirect(path, path)

    def requests_for(self, path: str) -> list[RequestRecord]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def make_self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate and key for `host`, trusted by nobody: (certfile, keyfile)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    _self_signed_with_cryptography(cert_file, key_file, host)
    return cert_file, key_file


def _self_signed_with_cryptography(cert_file: Path, key_file: Path, host: str) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll `predicate()` until true or `timeout` seconds pass (for thread-side state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


__all__ = [
    "Behaviour",
    "FaultServer",
    "RequestRecord",
    "Route",
    "cut",
    "ignore_range",
    "make_self_signed_cert",
    "ok",
    "server_ssl_context",
    "sha256_of",
    "short",
    "slow",
    "stall",
    "status",
    "wait_until",
    "wrong_content",
]
