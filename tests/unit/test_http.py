"""Shared TLS contexts (core.http): built once, honour SSL_CERT_FILE / SSL_CERT_DIR, else the
system store (truststore), never unverified, and none with certificates for plain-HTTP clients
(chat, Podman, probes)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
import truststore

from podlab.core import http
from podlab.core.chat.client import ChatClient
from podlab.core.serving.podman_transport import PodmanTransport
from tests.httpfaults import FaultServer, make_self_signed_cert, server_ssl_context

pytestmark = pytest.mark.unit


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every verifying context built from now on (ssl.create_default_context calls)."""
    calls: list[dict[str, Any]] = []
    real: Callable[..., ssl.SSLContext] = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return calls


@pytest.fixture
def own_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SSL_CERT_FILE names a CA nobody else uses (so no context for it is cached yet)."""
    cert, _key = make_self_signed_cert(tmp_path / "tls")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return cert


def test_the_shared_context_verifies_and_is_built_once(
    own_ca: Path, built: list[dict[str, Any]]
) -> None:
    first = http.shared_ssl_context()
    assert http.shared_ssl_context() is first
    assert built == [{"cafile": str(own_ca)}]
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    assert first.cert_store_stats()["x509"] == 1  # exactly the certificate of SSL_CERT_FILE


def test_a_changed_ca_variable_gets_its_own_context(
    own_ca: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mine = http.shared_ssl_context()
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "tls"))
    by_dir = http.shared_ssl_context()
    monkeypatch.delenv("SSL_CERT_DIR")
    default = http.shared_ssl_context()  # the system's store
    assert len({id(mine), id(by_dir), id(default)}) == 3
    assert isinstance(default, truststore.SSLContext)
    monkeypatch.setenv("SSL_CERT_FILE", str(own_ca))
    assert http.shared_ssl_context() is mine


def test_plain_http_gets_a_verifying_context_that_trusts_nothing(
    built: list[dict[str, Any]],
) -> None:
    plain = http.ssl_context_for("http://127.0.0.1:8080/v1")
    assert plain is http.plain_http_context()
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname
    assert plain.cert_store_stats()["x509"] == 0
    assert http.ssl_context_for("unix:///run/podman/podman.sock") is plain
    assert http.ssl_context_for("https://example.org/v1") is http.shared_ssl_context()
    assert http.ssl_context_for("example.org") is http.shared_ssl_context()


async def test_clients_build_no_context_per_client(
    own_ca: Path, built: list[dict[str, Any]]
) -> None:
    for _ in range(20):
        async with ChatClient("http://127.0.0.1:1/v1"):
            pass
    assert built == []  # plain HTTP: no certificates loaded at all
    for _ in range(20):
        async with ChatClient("https://127.0.0.1:1/v1"):
            pass
    assert built == [{"cafile": str(own_ca)}]  # once, shared by the 20 clients

    for url in ("unix:///nonexistent/podman.sock", "tcp://127.0.0.1:1", "https://127.0.0.1:1"):
        async with PodmanTransport(url).http_client(timeout=3.0):  # what Engine's calls use
            pass
    assert built == [{"cafile": str(own_ca)}]


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[tuple[FaultServer, Path]]:
    """A real HTTPS server on 127.0.0.1 whose certificate nobody vouches for."""
    cert, key = make_self_signed_cert(tmp_path / "server")
    with FaultServer(ssl_context=server_ssl_context(cert, key)) as server:
        yield server, cert


def handshake(context: ssl.SSLContext, port: int) -> str | None:
    """A real TLS handshake with 127.0.0.1:port; returns the protocol version agreed."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


def test_the_system_store_context_refuses_a_self_signed_server(
    self_signed_server: tuple[FaultServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cert = self_signed_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    context = http.shared_ssl_context()
    assert isinstance(context, truststore.SSLContext)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, server.port)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted the documented way, it connects
    assert handshake(http.shared_ssl_context(), server.port) is not None


def test_without_a_usable_system_store_certifi_verifies(
    self_signed_server: tuple[FaultServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where truststore cannot be used, certifi's bundle stands in, still verifying."""

    system_store = truststore.SSLContext

    def unusable(*args: Any) -> ssl.SSLContext:
        raise OSError("no certificate store on this system")

    monkeypatch.setattr(truststore, "SSLContext", unusable)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setattr(http, "_verifying", {})  # nothing cached: the context is built now
    server, _cert = self_signed_server
    context = http.shared_ssl_context()
    assert not isinstance(context, system_store)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == certifi_ca_count()
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, server.port)


def certifi_ca_count() -> int:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=certifi.where())
    return int(context.cert_store_stats()["x509_ca"])
