"""How Podlab reaches a Podman API service: a unix socket, TCP, or SSH.

Every Engine call goes over one `PodmanTransport`, both podman-py's (blocking, in a worker
thread) and the streams Engine reads with httpx (pulls, builds, logs). For `ssh://` the transport
starts one `ssh -N -L` that forwards a private local unix socket (in a 0700 folder) to the remote
Podman socket, and both clients talk to that local socket, so no call behaves differently over
SSH. podman-py's own SSH adapter is not used: it starts one ssh per HTTP connection, turns host
key checking off (writing to known_hosts), and waits 300 s for a socket that never comes when
ssh fails.

SSH URLs follow Podman's: `ssh://[user@]host[:port]/path/to/podman.sock[?secure=false]`.
`secure=false` skips the host key check (what Podman does for its machines); otherwise the
user's known_hosts decides. ssh never prompts (BatchMode): keys come from `identity`, the
agent or ~/.ssh/config.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from podlab.core.errors import PodlabError
from podlab.core.http import plain_http_context, ssl_context_for

TransportKind = Literal["unix", "tcp", "ssh"]
SSH_CONNECT_TIMEOUT_S = 10
TUNNEL_READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class SshTarget:
    """The parts of an ssh:// Podman URL."""

    host: str
    user: str | None
    port: int | None
    socket_path: str
    verify_host_key: bool

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse_ssh_url(url: str) -> SshTarget | None:
    """The SSH target of an `ssh://` or `http+ssh://` URL, None for other schemes."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("ssh", "http+ssh"):
        return None
    if not parsed.hostname or not parsed.path or parsed.path == "/":
        raise PodlabError(
            f"{url} names no host or no socket path",
            hint="write it as ssh://user@host:port/run/user/1000/podman/podman.sock",
        )
    secure = urllib.parse.parse_qs(parsed.query).get("secure", ["true"])[-1]
    return SshTarget(
        host=parsed.hostname,
        user=urllib.parse.unquote(parsed.username) if parsed.username else None,
        port=parsed.port,
        socket_path=urllib.parse.unquote(parsed.path),
        verify_host_key=secure.strip().lower() not in ("false", "0", "no"),
    )


def unix_socket_path(url: str) -> str | None:
    """The socket path of a `unix://` or `http+unix://` (percent-encoded) URL."""
    if url.startswith("unix://"):
        return url[len("unix://") :] or None
    if url.startswith("http+unix://"):
        return urllib.parse.unquote(url[len("http+unix://") :]) or None
    return None


def tcp_base_url(url: str) -> str | None:
    if url.startswith("tcp://"):
        return "http://" + url[len("tcp://") :].rstrip("/")
    if url.startswith(("http://", "https://")):
        return url.rstrip("/")
    return None


def is_this_computer(host: str) -> bool:
    """localhost, a loopback address, or this computer's own host name (no DNS lookup)."""
    if host.lower() in ("localhost", socket.gethostname().lower()):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class PodmanTransport:
    """One way to reach one Podman service; `open()` before use, `close()` after."""

    def __init__(self, url: str, *, identity: str | None = None) -> None:
        self.url = url
        self.identity = identity
        self.ssh = parse_ssh_url(url)
        self._local_socket = unix_socket_path(url)
        self._tcp_base = tcp_base_url(url)
        if self.ssh is None and self._local_socket is None and self._tcp_base is None:
            raise PodlabError(
                f"{url} is not a Podman address Podlab understands",
                hint="use unix:///path/podman.sock, ssh://user@host/path/podman.sock "
                "or tcp://host:port",
            )
        self._tunnel: subprocess.Popen[bytes] | None = None
        self._tunnel_dir: Path | None = None
        self._finalizer: weakref.finalize[..., PodmanTransport] | None = None

    @property
    def kind(self) -> TransportKind:
        if self.ssh is not None:
            return "ssh"
        return "unix" if self._local_socket is not None else "tcp"

    @property
    def remote_host(self) -> str | None:
        """The host Podman runs on when that is not this computer (None: this computer)."""
        if self.ssh is not None:
            host = self.ssh.host
        elif self._tcp_base is not None:
            host = urllib.parse.urlsplit(self._tcp_base).hostname or ""
        else:
            return None
        return None if is_this_computer(host) else host

    @property
    def podman_py_url(self) -> str:
        """The base_url for podman-py: the (forwarded) unix socket, or the TCP address."""
        if self._local_socket is not None:
            return f"unix://{self._local_socket}"
        assert self._tcp_base is not None
        return self._tcp_base

    def open(self) -> None:
        """Blocking: for SSH, start the tunnel and wait until its local socket listens."""
        if self.ssh is not None and self._tunnel is None:
            self._start_tunnel(self.ssh)

    def close(self) -> None:
        """Blocking: stop the SSH tunnel (nothing to do for unix and TCP)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._tunnel = None
        self._tunnel_dir = None
        if self.ssh is not None:
            self._local_socket = None

    def http_client(self, timeout: float | None) -> httpx.AsyncClient:
        """An httpx client on this transport (base URL http://d for sockets)."""
        if self._local_socket is not None:
            plain = plain_http_context()
            return httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=self._local_socket, verify=plain),
                base_url="http://d",
                timeout=timeout,
                verify=plain,
            )
        if self._tcp_base is not None:
            return httpx.AsyncClient(
                base_url=self._tcp_base, timeout=timeout, verify=ssl_context_for(self._tcp_base)
            )
        raise PodlabError(f"the SSH tunnel to {self.url} is not open", hint="run podlab doctor")

    # ----------------------------------------------------------------- ssh

    def _start_tunnel(self, target: SshTarget) -> None:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise PodlabError(
                f"ssh is needed for {self.url} but is not installed",
                hint="install the OpenSSH client (sudo apt install openssh-client)",
            )
        folder = Path(tempfile.mkdtemp(prefix="podlab-ssh-"))  # mode 0700: only we connect
        local = folder / "podman.sock"
        command = [
            ssh, "-N", "-T",
            "-o", "BatchMode=yes",
            "-o", "ExitOnForwardFailure=yes",
            "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
            "-o", "ServerAliveInterval=15",
            "-L", f"{local}:{target.socket_path}",
        ]  # fmt: skip
        if not target.verify_host_key:
            command += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
            command += ["-o", "LogLevel=ERROR"]
        if self.identity:
            command += ["-i", str(Path(self.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if target.port is not None:
            command += ["-p", str(target.port)]
        command += ["--", target.destination]
        errors_path = folder / "ssh-errors.log"
        with errors_path.open("wb") as errors:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
            )
        self._tunnel, self._tunnel_dir = proc, folder
        self._finalizer = weakref.finalize(self, _stop_tunnel, proc, folder)
        deadline = time.monotonic() + TUNNEL_READY_TIMEOUT_S
        while not _listens(local):
            if proc.poll() is not None or time.monotonic() > deadline:
                said = errors_path.read_text(errors="replace").strip()
                self.close()
                raise _ssh_failure(self.url, target, said)
            time.sleep(0.05)
        self._local_socket = str(local)


def _listens(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def _stop_tunnel(proc: subprocess.Popen[bytes], folder: Path) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)


def _ssh_failure(url: str, target: SshTarget, said: str) -> PodlabError:
    """ssh's own words, with the fix for the usual causes."""
    last = said.splitlines()[-1] if said else "no answer"
    port = f" -p {target.port}" if target.port else ""
    if "Host key verification failed" in said:
        hint = (
            f"check and accept the host key once with: ssh{port} {target.destination} "
            "(or add ?secure=false to the URL for a Podman machine on this computer)"
        )
    elif "Permission denied" in said:
        hint = (
            "Podlab logs in with SSH keys only, never a password: load the key into ssh-agent "
            "(ssh-add), name it in ~/.ssh/config, or set CONTAINER_SSHKEY to its file"
        )
    else:
        hint = f"try: ssh{port} {target.destination} true"
    return PodlabError(f"cannot open an SSH connection for {url}: {last}", hint=hint)
