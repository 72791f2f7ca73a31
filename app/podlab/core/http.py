"""TLS for Podlab's HTTP clients: one verifying context per process, none built for plain HTTP.

Building a verifying `ssl.SSLContext` reads a whole CA bundle (20-130 ms); httpx builds one for
every client unless it is handed one through `verify=`. The chat client, the Podman client and
the readiness probes make many short-lived clients, so they all pass `ssl_context_for(url)`:

* https:// (and anything that is not plain HTTP): `shared_ssl_context()`, built once. It trusts
  `SSL_CERT_FILE`, else `SSL_CERT_DIR`, else the operating system's certificate store through
  truststore (so a corporate CA installed in the system works, on Linux, macOS and Windows),
  else, where truststore cannot be used, certifi's bundle. It is built again only when one of
  those two variables changes. Verification is never turned off. On Linux truststore reloads
  the system bundle at each TLS handshake (about 50 ms on a busy 2-core machine): connections
  are kept alive, so that is paid per connection, not per request.
* http:// and unix sockets: httpx still wants a context for its transport, so they get one
  that loads no certificate at all (about 0.1 ms, also built once). It still requires a valid
  certificate and host name, so if TLS were ever attempted through it (a redirect to https,
  which these clients do not follow anyway) it would fail closed, never connect unverified.

The contexts are shared: do not change them (e.g. `load_verify_locations`) after getting one,
and do not use them with `http2=True` (httpcore sets the ALPN protocols on the context it is
given; every Podlab client speaks HTTP/1.1).
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import threading

import certifi
import truststore

log = logging.getLogger(__name__)

_lock = threading.Lock()
_verifying: dict[tuple[str | None, str | None], ssl.SSLContext] = {}
_plain: ssl.SSLContext | None = None


def _ca_source() -> tuple[str | None, str | None]:
    """(SSL_CERT_FILE, SSL_CERT_DIR) as httpx reads them (empty means unset)."""
    return os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None


def shared_ssl_context() -> ssl.SSLContext:
    """The verifying context for HTTPS, created on first use and then shared by every client.

    Trusts `SSL_CERT_FILE`, else `SSL_CERT_DIR`, else the system store, else certifi.
    """
    key = _ca_source()
    context = _verifying.get(key)
    if context is not None:
        return context
    with _lock:
        context = _verifying.get(key)
        if context is None:
            cafile, capath = key
            if cafile:
                context = ssl.create_default_context(cafile=cafile)
            elif capath:
                context = ssl.create_default_context(capath=capath)
            else:
                context = _system_store_context() or ssl.create_default_context(
                    cafile=certifi.where()
                )
            _verifying[key] = context
        return context


def _system_store_context() -> ssl.SSLContext | None:
    """truststore's context over the OS certificate store; None when it cannot be used (it
    failed, or on Linux OpenSSL knows no CA bundle, as in some bundled Pythons)."""
    try:
        context: ssl.SSLContext = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    except Exception as exc:
        log.info("the system certificate store cannot be used (%s); using certifi", exc)
        return None
    if sys.platform not in ("darwin", "win32") and not _openssl_knows_a_ca_bundle():
        log.info("OpenSSL names no CA bundle on this system; using certifi")
        return None
    return context


def _openssl_knows_a_ca_bundle() -> bool:
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        return True
    if not paths.capath:
        return False
    with os.scandir(paths.capath) as entries:
        return any(entries)


def plain_http_context() -> ssl.SSLContext:
    """The context handed to httpx for plain-HTTP clients: verifying, trusting nothing."""
    global _plain
    if _plain is None:
        with _lock:
            if _plain is None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, host names
                _plain = context
    return _plain


def ssl_context_for(url: str) -> ssl.SSLContext:
    """What to pass as httpx's `verify=` for a client of `url` (see the module doc)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("http", "unix", "http+unix"):
        return plain_http_context()
    return shared_ssl_context()


__all__ = ["plain_http_context", "shared_ssl_context", "ssl_context_for"]
