"""Podman URLs: which transport each becomes, SSH targets, and where Podman runs."""

from __future__ import annotations

import socket

import pytest

from podlab.core.errors import PodlabError
from podlab.core.serving.engine import remote_limits
from podlab.core.serving.podman_transport import PodmanTransport, SshTarget, parse_ssh_url

pytestmark = pytest.mark.unit


def test_ssh_url_parts_follow_podmans_syntax() -> None:
    url = "ssh://core@127.0.0.1:53695/run/user/501/podman/podman.sock?secure=false"
    assert parse_ssh_url(url) == SshTarget(
        host="127.0.0.1",
        user="core",
        port=53695,
        socket_path="/run/user/501/podman/podman.sock",
        verify_host_key=False,
    )
    plain = parse_ssh_url("http+ssh://build-host/run/podman/podman.sock")
    assert plain is not None
    assert (plain.destination, plain.port, plain.verify_host_key) == ("build-host", None, True)
    assert parse_ssh_url("unix:///run/podman/podman.sock") is None


@pytest.mark.parametrize("url", ["ssh://core@host", "ssh://core@host/", "ssh:///x.sock"])
def test_ssh_url_without_host_or_socket_is_refused(url: str) -> None:
    with pytest.raises(PodlabError, match="names no host or no socket path"):
        parse_ssh_url(url)


@pytest.mark.parametrize(
    ("url", "kind", "podman_py_url"),
    [
        ("unix:///run/podman/podman.sock", "unix", "unix:///run/podman/podman.sock"),
        ("http+unix://%2Ftmp%2Fp.sock", "unix", "unix:///tmp/p.sock"),
        ("tcp://10.0.0.5:8888", "tcp", "http://10.0.0.5:8888"),
    ],
)
def test_local_and_tcp_urls_need_no_tunnel(url: str, kind: str, podman_py_url: str) -> None:
    transport = PodmanTransport(url)
    transport.open()
    assert transport.kind == kind
    assert transport.podman_py_url == podman_py_url
    transport.close()


def test_unknown_scheme_says_which_work() -> None:
    with pytest.raises(PodlabError, match="not a Podman address") as caught:
        PodmanTransport("npipe:////./pipe/podman")
    assert "ssh://user@host" in caught.value.hint


@pytest.mark.parametrize(
    ("url", "remote"),
    [
        ("unix:///run/podman/podman.sock", None),
        ("ssh://core@localhost:2222/run/podman/podman.sock", None),
        ("ssh://core@[::1]:2222/run/podman/podman.sock", None),
        (f"ssh://me@{socket.gethostname()}/run/podman/podman.sock", None),
        ("tcp://127.0.0.1:8888", None),
        ("ssh://me@build-host/run/podman/podman.sock", "build-host"),
        ("tcp://10.0.0.5:8888", "10.0.0.5"),
    ],
)
def test_remote_host_is_only_another_computer(url: str, remote: str | None) -> None:
    assert PodmanTransport(url).remote_host == remote


def test_remote_limits_name_the_host_and_what_fails() -> None:
    text = remote_limits("build-host")
    assert "Podman runs on build-host" in text
    assert "cannot be served there" in text
