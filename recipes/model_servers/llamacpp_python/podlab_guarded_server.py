"""llama-cpp-python's server behind a guard: a bearer key, a loopback Host, its own Origin only.

Binding to 127.0.0.1 keeps other machines out, not other web pages: a page the user opens can send
requests to 127.0.0.1, and llama-cpp-python answers every Origin with a CORS grant. Podlab runs the
same server (same arguments as `python -m llama_cpp.server`) with its CORS middleware removed and
this guard in front of it:

- `Authorization: Bearer <key>` must match PODLAB_API_KEY (when it is set);
- the Host header must name a loopback address or localhost, or a name in PODLAB_ALLOWED_HOSTS
  (a DNS-rebinding page sends its own name);
- a request carrying an Origin is refused unless that origin is the server's own or listed in
  PODLAB_ALLOWED_ORIGINS, and no response ever carries Access-Control-Allow-* headers.

Self-contained (standard library plus what llama-cpp-python[server] installs), because it runs both
in the local engine's venv and inside Podlab's model-server image.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def split_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def host_name(host_header: str) -> str:
    """`127.0.0.1:8080` -> `127.0.0.1`, `[::1]:8080` -> `::1`, `Example.COM` -> `example.com`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """Pure ASGI middleware: refuses what a foreign web page could send before the app sees it."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.api_key = api_key or None
        self.allowed_hosts = {name.lower() for name in allowed_hosts}
        self.allowed_origins = {origin.rstrip("/").lower() for origin in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1")
                   for key, value in scope.get("headers", [])}  # fmt: skip
        problem = self.refusal(headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        body = json.dumps({"error": {"message": message, "code": status}}).encode()
        response_headers = [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]  # fmt: skip
        if status == 401:
            response_headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, reason) when the request must be refused, None when it may pass."""
        host = headers.get("host", "")
        name = host_name(host)
        if not (is_loopback(name) or name in self.allowed_hosts):
            return 403, "this server answers only requests addressed to localhost"
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, host):
            return 403, "cross-origin requests are not allowed"
        if self.api_key is not None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), self.api_key.encode()
            ):
                return 401, "a valid API key is required (Authorization: Bearer <key>)"
        return None

    def origin_allowed(self, origin: str, host: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        # The server's own pages (same scheme-less host:port) are not cross-origin.
        return parts.scheme in ("http", "https") and parts.netloc == host.lower()


def guard_app(app: Any) -> Guard:
    """Remove the app's CORS middleware (FastAPI builds its stack lazily) and put the guard on."""
    from starlette.middleware.cors import CORSMiddleware

    app.user_middleware = [m for m in app.user_middleware if m.cls is not CORSMiddleware]
    app.middleware_stack = None
    return Guard(
        app,
        api_key=os.environ.get("PODLAB_API_KEY"),
        allowed_hosts=split_list(os.environ.get("PODLAB_ALLOWED_HOSTS")),
        allowed_origins=split_list(os.environ.get("PODLAB_ALLOWED_ORIGINS")),
    )


def main() -> None:
    """Run llama-cpp-python's own command line; only the app that uvicorn serves is wrapped."""
    import uvicorn
    from llama_cpp.server import __main__ as server_main

    serve = uvicorn.run

    def guarded_run(app: Any, **options: Any) -> None:
        serve(guard_app(app), **options)

    server_main.uvicorn.run = guarded_run
    server_main.main()


if __name__ == "__main__":
    main()
