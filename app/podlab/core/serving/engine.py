"""The Podman connection: discovery, version check, image builds with live logs, container logs.

Discovery order (the first that answers wins):
1. `CONTAINER_HOST` (what podman-remote and podman-py honour),
2. the `podman_url` setting,
3. the rootless socket `$XDG_RUNTIME_DIR/podman/podman.sock`,
4. the rootful socket `/run/podman/podman.sock`,
5. `podman machine inspect` (the machine's forwarded unix socket, macOS/Windows) and
   `podman system connection list` (the default connection).
An explicit address (1 or 2) that does not answer is reported as such: Podlab never silently
talks to another Podman than the one the user named.

When only the CLI exists and no socket answers, `start_user_service()` starts
`podman system service --time=0 unix://$XDG_RUNTIME_DIR/podman/podman.sock` detached; the UI
calls it only after the user agreed.

Every call goes over one `PodmanTransport` (unix socket, TCP, or an SSH tunnel to a unix
socket; see podman_transport): podman-py (blocking, `requests`) is always called through
`asyncio.to_thread`; streams (pulls, image builds, followed logs) and small JSON reads go over
httpx's async client on the same socket, so a consumer can stop reading at any time.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import io
import json
import os
import platform
import shutil
import struct
import subprocess
import tarfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from podlab.core.errors import PodlabError
from podlab.core.paths import Locations, open_private_log
from podlab.core.serving.podman_transport import PodmanTransport, unix_socket_path
from podlab.core.settings import Settings

T = TypeVar("T")

MIN_VERSION = (4, 0)
API_PREFIX = "/v4.0.0/libpod"
ROOTFUL_SOCKET = "/run/podman/podman.sock"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PullPolicy = Literal["never", "missing", "always", "newer"]
OUTPUT_FORMATS = {
    "oci": "application/vnd.oci.image.manifest.v1+json",
    "docker": "application/vnd.docker.distribution.manifest.v2+json",
}


INIT_PATHS = (
    "/usr/libexec/podman/catatonit",
    "/usr/lib/podman/catatonit",
    "/usr/local/libexec/podman/catatonit",
    "/usr/libexec/catatonit/catatonit",
)
"""Where Podman finds catatonit for `--init` (its helper_binaries_dir and init_path defaults on
Debian, Fedora and source installs)."""
INIT_MISSING_FIX = "sudo apt-get install catatonit (dnf install catatonit on Fedora)"


@dataclass
class EngineStatus:
    """What the Podman page and `podlab doctor` show."""

    available: bool
    url: str | None = None
    version: str | None = None
    api_version: str | None = None
    problem: str = ""
    hint: str = ""
    source: str = ""
    """Where the URL came from: CONTAINER_HOST, settings, rootless socket, rootful socket,
    podman machine, podman system connection, started by Podlab."""
    cli: str | None = None
    """Path of the podman command, when installed."""
    can_start_service: bool = False
    """True when `start_user_service()` may help (CLI present, no service answering)."""
    rootless: bool | None = None
    transport: str = ""
    """How Podlab reaches it: unix, tcp or ssh."""
    limits: str = ""
    """What cannot work over this connection (Podman on another host), said before it fails."""
    has_init: bool | None = None
    """Whether Podman's init binary (catatonit) is installed on this computer; None when Podman
    runs elsewhere. Debian and Ubuntu install it only as a recommendation of podman."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("-")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def install_hint(system: str | None = None) -> str:
    system = system or platform.system()
    if system == "Darwin":
        return "install it: brew install podman && podman machine init && podman machine start"
    if system == "Windows":
        return (
            "install it: winget install RedHat.Podman, then podman machine init && "
            "podman machine start"
        )
    return (
        "install it: sudo apt install podman (Debian, Ubuntu) or sudo dnf install podman "
        "(Fedora, RHEL); on macOS: brew install podman && podman machine init && "
        "podman machine start"
    )


def _service_hint(system: str, rootless: bool) -> str:
    if system in ("Darwin", "Windows"):
        return "start the Podman machine: podman machine start"
    if rootless:
        return (
            "let Podlab start it now, or enable it for good: "
            "systemctl --user enable --now podman.socket"
        )
    return "let Podlab start it now, or enable it for good: systemctl enable --now podman.socket"


def remote_limits(host: str) -> str:
    """What does not work when Podman runs on another host than Podlab."""
    return (
        f"Podman runs on {host}, not on this computer: serving a model mounts its file by path "
        f"and publishes the port on {host}'s loopback, so models from this computer's store "
        "cannot be served there; images, builds, pulls, logs and containers work."
    )


def default_rootless_socket(env: Mapping[str, str]) -> str:
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"{runtime}/podman/podman.sock"


class Engine:
    """One Podman connection for the whole app; `connect()` discovers and checks it."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        podman_cli: str | None = "",
        system_socket: str = ROOTFUL_SOCKET,
        locations: Locations | None = None,
        ssh_identity: str | None = None,
        init_paths: tuple[str, ...] = INIT_PATHS,
    ) -> None:
        """ssh_identity: the key file for ssh:// URLs (else a `podman system connection`'s,
        else CONTAINER_SSHKEY, else ssh's own defaults and agent). init_paths: where Podman
        looks for its init binary (see `INIT_PATHS`)."""
        self.init_paths = init_paths
        self.settings = settings or Settings()
        self._explicit_url = url
        self._env = env
        self._cli = shutil.which("podman") if podman_cli == "" else podman_cli
        self.system_socket = system_socket
        self.locations = locations or Locations.default()
        self._status = EngineStatus(available=False, problem="not checked yet")
        self._client: Any = None
        self._transport: PodmanTransport | None = None
        self._ssh_identity = ssh_identity
        self._transport_error: PodlabError | None = None
        self._lock = asyncio.Lock()
        self.started_service: subprocess.Popen[bytes] | None = None
        self.last_build_log: list[str] = []
        self._identities: dict[str, str] = {}
        """SSH identity files of `podman system connection` URLs."""

    # ----------------------------------------------------------------- discovery

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    @property
    def status(self) -> EngineStatus:
        return self._status

    @property
    def url(self) -> str | None:
        return self._status.url if self._status.available else None

    @property
    def rootless(self) -> bool:
        return os.geteuid() != 0 if hasattr(os, "geteuid") else True

    async def connect(self) -> EngineStatus:
        """Find Podman and check its version; never raises (the status says what is wrong)."""
        async with self._lock:
            await self._close_connection()
            status = await self._discover()
            if status.available and status.transport == "unix" and not status.limits:
                status.has_init = await asyncio.to_thread(
                    lambda: any(Path(p).exists() for p in self.init_paths)
                )
            self._status = status
            return self._status

    async def ensure(self) -> EngineStatus:
        """The status when Podman is usable, else PodlabError with the hint."""
        if not self._status.available:
            await self.connect()
        if not self._status.available:
            raise PodlabError(self._status.problem, self._status.hint)
        return self._status

    async def _discover(self) -> EngineStatus:
        system = platform.system()
        explicit: list[tuple[str, str]] = []
        if self._explicit_url:
            explicit.append(("Engine(url=...)", self._explicit_url))
        elif self.env.get("CONTAINER_HOST"):
            explicit.append(("CONTAINER_HOST", self.env["CONTAINER_HOST"]))
        elif self.settings.podman_url:
            explicit.append(("settings", self.settings.podman_url))
        for source, url in explicit:
            status = await self._probe(url, source)
            if status is not None:
                return status
            failure = self._transport_error
            return EngineStatus(
                available=False,
                url=url,
                source=source,
                cli=self._cli,
                problem=failure.message
                if failure
                else f"Podman does not answer at {url} (from {source})",
                hint=failure.hint
                if failure
                else (
                    "start the Podman service there, or unset CONTAINER_HOST / clear the "
                    "podman_url setting to let Podlab find Podman itself"
                ),
                rootless=self.rootless,
            )

        candidates: list[tuple[str, str]] = [
            ("rootless socket", "unix://" + default_rootless_socket(self.env)),
            ("rootful socket", "unix://" + self.system_socket),
        ]
        for source, url in candidates:
            if not await asyncio.to_thread(os.path.exists, unix_socket_path(url) or ""):
                continue
            status = await self._probe(url, source)
            if status is not None:
                return status
        if self._cli:
            for source, url in await asyncio.to_thread(self._cli_connections):
                status = await self._probe(url, source)
                if status is not None:
                    return status
        if not self._cli:
            return EngineStatus(
                available=False,
                problem="Podman not found",
                hint=install_hint(system),
                rootless=self.rootless,
            )
        return EngineStatus(
            available=False,
            cli=self._cli,
            problem="Podman is installed but its service is not running",
            hint=_service_hint(system, self.rootless),
            can_start_service=system == "Linux",
            rootless=self.rootless,
        )

    def _cli_connections(self) -> list[tuple[str, str]]:
        """The podman machine's forwarded socket, then the default system connection."""
        assert self._cli is not None
        found: list[tuple[str, str]] = []
        if platform.system() != "Linux":
            with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
                done = subprocess.run(
                    [self._cli, "machine", "inspect"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
                if done.returncode == 0:
                    for machine in json.loads(done.stdout or "[]"):
                        info = machine.get("ConnectionInfo") or {}
                        path = (info.get("PodmanSocket") or {}).get("Path")
                        if path:
                            found.append(("podman machine", f"unix://{path}"))
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            done = subprocess.run(
                [self._cli, "system", "connection", "list", "--format", "json"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if done.returncode == 0:
                connections = json.loads(done.stdout or "[]") or []
                connections.sort(key=lambda c: not c.get("Default", False))
                for conn in connections:
                    uri = conn.get("URI") or conn.get("Uri")
                    if uri:
                        if conn.get("Identity"):
                            self._identities[uri] = str(conn["Identity"])
                        found.append(("podman system connection", uri))
        return found

    async def _probe(self, url: str, source: str) -> EngineStatus | None:
        """The status of a Podman at url, or None when nothing answers there.

        A usable Podman's transport becomes this engine's; an SSH failure is kept in
        `_transport_error` so that the status can quote ssh.
        """
        self._transport_error = None
        try:
            transport = PodmanTransport(url, identity=self._identity_for(url))
            await asyncio.to_thread(transport.open)
        except PodlabError as exc:
            self._transport_error = exc
            return None
        try:
            info = await self._version_info(transport)
        except (TimeoutError, httpx.HTTPError, OSError, ValueError):
            info = None
        status = None if info is None else self._status_from_version(info, url, source)
        if status is not None and status.available:
            status.transport = transport.kind
            host = transport.remote_host
            status.limits = remote_limits(host) if host else ""
            self._transport = transport
        else:
            await asyncio.to_thread(transport.close)
        return status

    def _identity_for(self, url: str) -> str | None:
        return (
            self._ssh_identity
            or self._identities.get(url)
            or self.env.get("CONTAINER_SSHKEY")
            or None
        )

    def _status_from_version(self, info: dict[str, Any], url: str, source: str) -> EngineStatus:
        version = str(info.get("Version") or "")
        api_version = ""
        for component in info.get("Components") or []:
            details = component.get("Details") or {}
            if component.get("Name") == "Podman Engine":
                api_version = str(details.get("APIVersion") or "")
        if not version:
            return EngineStatus(
                available=False,
                url=url,
                source=source,
                cli=self._cli,
                problem=f"the service at {url} is not Podman (it reports no Podman version)",
                hint="point Podlab at a Podman socket (settings: podman_url)",
            )
        if parse_version(version) < MIN_VERSION:
            return EngineStatus(
                available=False,
                url=url,
                version=version,
                api_version=api_version,
                source=source,
                cli=self._cli,
                problem=f"Podman {version} is older than 4.0, which Podlab needs",
                hint="upgrade Podman to 4.0 or newer (your distribution's backports, or "
                "podman.io/docs/installation)",
                rootless=self.rootless,
            )
        return EngineStatus(
            available=True,
            url=url,
            version=version,
            api_version=api_version or version,
            source=source,
            cli=self._cli,
            rootless=self.rootless,
        )

    async def _version_info(self, transport: PodmanTransport) -> dict[str, Any] | None:
        async with transport.http_client(timeout=3.0) as client:
            ping = await client.get("/_ping")
            if ping.status_code != 200:
                return None
            # The ping's headers name Podman's version; /version costs ~0.4 s (it asks conmon
            # and the OCI runtime for theirs), so it is only the fallback.
            server = ping.headers.get("Server", "")
            libpod = ping.headers.get("Libpod-Api-Version", "")
            if libpod and server.startswith("Libpod/"):
                version = server.split("/", 1)[1].split(" ", 1)[0]
                return {
                    "Version": version,
                    "Components": [{"Name": "Podman Engine", "Details": {"APIVersion": libpod}}],
                }
            response = await client.get(f"{API_PREFIX}/version")
            response.raise_for_status()
            data = response.json()
            return data if isinstance(data, dict) else None

    def _http(self, timeout: float | None = 30.0) -> httpx.AsyncClient:
        """An async client on the connected transport (streams and small JSON reads)."""
        if self._transport is None:
            raise PodlabError(self._status.problem or "Podman is not connected", self._status.hint)
        return self._transport.http_client(timeout)

    # ----------------------------------------------------------------- the user service

    async def start_user_service(self, wait_s: float = 20.0) -> EngineStatus:
        """Start `podman system service` on the user's socket (only after the user agreed)."""
        if not self._cli:
            raise PodlabError("Podman not found", install_hint())
        if platform.system() != "Linux":
            raise PodlabError(
                "Podlab starts the Podman service only on Linux",
                hint="start the Podman machine: podman machine start",
            )
        if self.env.get("XDG_RUNTIME_DIR") or self.rootless:
            sock = Path(default_rootless_socket(self.env))
        else:
            sock = Path(self.system_socket)
        sock.parent.mkdir(parents=True, exist_ok=True)
        log_dir = self.locations.log_dir
        url = f"unix://{sock}"
        self.started_service = await asyncio.to_thread(
            self._spawn_service, url, log_dir / "podman-service.log"
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.started_service.poll() is not None:
                text = (log_dir / "podman-service.log").read_text(errors="replace")
                raise PodlabError(
                    f"podman system service exited with {self.started_service.returncode}",
                    hint=text.strip().splitlines()[-1] if text.strip() else "",
                )
            if await asyncio.to_thread(sock.exists):
                async with self._lock:
                    await self._close_connection()
                    status = await self._probe(url, "started by Podlab")
                    if status is not None:
                        self._status = status
                        return status
            await asyncio.sleep(0.1)
        raise PodlabError(
            f"podman system service did not answer on {sock} within {wait_s:.0f} s",
            hint=f"see {log_dir / 'podman-service.log'}",
        )

    def _spawn_service(self, url: str, log_path: Path) -> subprocess.Popen[bytes]:
        assert self._cli is not None
        with open_private_log(log_path) as log:
            return subprocess.Popen(
                [self._cli, "system", "service", "--time=0", url],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(self.env),
            )

    def stop_started_service(self) -> None:
        """Stop the service `start_user_service` started (tests and explicit user action)."""
        proc = self.started_service
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.started_service = None

    # ----------------------------------------------------------------- podman-py

    def client(self) -> Any:
        """The podman-py client (blocking: call it through `call`)."""
        if not self._status.available or not self._status.url:
            raise PodlabError(self._status.problem or "Podman is not connected", self._status.hint)
        if self._transport is None:
            raise PodlabError("Podman is not connected", "run podlab doctor")
        if self._client is None:
            import podman

            self._client = podman.PodmanClient(base_url=self._transport.podman_py_url)
        return self._client

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking podman-py call in a worker thread, mapping its errors."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except PodlabError:
            raise
        except Exception as exc:
            raise _map_error(exc, self._status.url) from exc

    def _detach(self) -> PodmanTransport | None:
        """Drop the podman-py client; returns the transport for the caller to close."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        transport, self._transport = self._transport, None
        return transport

    async def _close_connection(self) -> None:
        """Drop the podman-py client and the transport (an SSH tunnel stops)."""
        transport = self._detach()
        if transport is not None:
            await asyncio.to_thread(transport.close)

    async def aclose(self) -> None:
        await self._close_connection()

    def close(self) -> None:
        """As `aclose`, for a process that is ending outside the event loop (an SSH tunnel
        must not outlive Podlab)."""
        transport = self._detach()
        if transport is not None:
            transport.close()

    async def image_exists(self, ref: str) -> bool:
        client = self.client()
        return bool(await self.call(client.images.exists, ref))

    async def _image_inspect(self, ref: str) -> dict[str, Any] | None:
        """Podman's description of a local image, or None when it is not there."""
        async with self._http() as http:
            response = await http.get(
                f"{API_PREFIX}/images/{urllib.parse.quote(ref, safe='')}/json"
            )
            if response.status_code != 200:
                return None
            data = response.json()
        return data if isinstance(data, dict) else None

    async def image_labels(self, ref: str) -> dict[str, str]:
        """Labels of a local image ({} when the image is not there)."""
        data = await self._image_inspect(ref) or {}
        labels = data.get("Labels") or (data.get("Config") or {}).get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    async def image_digest(self, ref: str) -> str | None:
        """The digest of a local image (its manifest digest when pulled, else its id), so a
        result can say exactly which server build produced it; None when it is not there."""
        data = await self._image_inspect(ref) or {}
        digest = data.get("Digest") or data.get("Id")
        return str(digest) if digest else None

    async def image_user(self, ref: str) -> str | None:
        """The user a local image runs as ("" for root by default); None when it is not there."""
        data = await self._image_inspect(ref)
        if data is None:
            return None
        return str((data.get("Config") or {}).get("User") or data.get("User") or "")

    async def pull(self, ref: str) -> AsyncIterator[str]:
        """Pull an image, yielding Podman's progress lines; PodlabError when it fails."""
        await self.ensure()
        error: str | None = None
        params = {"reference": ref, "quiet": "false"}
        async with (
            self._http(timeout=None) as http,
            http.stream("POST", f"{API_PREFIX}/images/pull", params=params) as response,
        ):
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                error = _api_message(body)
            else:
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                    if item.get("error"):
                        error = str(item["error"]).strip()
                    elif item.get("stream"):
                        yield str(item["stream"]).rstrip("\n")
        if error is not None:
            raise PodlabError(
                f"cannot pull {ref}: {error}",
                hint="check the network and the image name, or set another image "
                "(settings: server_images, or --image)",
            )

    async def container_stats(self, container: str) -> dict[str, Any]:
        """CPU percent and memory of a running container (one sample)."""
        async with self._http() as http:
            response = await http.get(
                f"{API_PREFIX}/containers/stats",
                params={"containers": container, "stream": "false"},
            )
        if response.status_code != 200:
            return {"memory_bytes": None, "cpu_percent": None}
        stats = (response.json().get("Stats") or [{}])[0] or {}
        cpu = stats.get("CPU")
        return {
            "memory_bytes": stats.get("MemUsage"),
            "cpu_percent": round(float(cpu), 1) if cpu is not None else None,
        }

    async def container_state(self, container: str) -> dict[str, Any] | None:
        """The inspect "State" of a container, None when it does not exist."""
        async with self._http(timeout=10.0) as http:
            response = await http.get(f"{API_PREFIX}/containers/{container}/json")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        state = response.json().get("State") or {}
        return state if isinstance(state, dict) else {}

    # ----------------------------------------------------------------- builds

    async def build(
        self,
        context_dir: Path | None,
        tag: str,
        *,
        containerfile: str = "Containerfile",
        pull: PullPolicy = "missing",
        build_args: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        extra_files: Mapping[str, Path | bytes] | None = None,
        volumes: Sequence[str] = (),
        nocache: bool = False,
        image_format: Literal["oci", "docker"] = "oci",
        host_ca: bool | None = None,
    ) -> AsyncIterator[str]:
        """Build an image, yielding its log line by line as Podman writes it.

        The context is `context_dir` plus `extra_files` (name in the context -> a host file, a
        host folder, or bytes). `volumes` ("HOST:CONTAINER[:ro]") are sent as the API's
        `volume` parameters: Podman 4.3.1 ignores them (checked), newer Podman applies them to
        RUN steps; for a mount that must work everywhere, put the file in the context and use
        `RUN --mount=type=bind,source=...` as recipes/model_servers does.
        host_ca (None: the use_host_ca_certificates setting) adds the host CA bundle, read-only,
        to `volumes`. Raises PodlabError with the log's tail when the build fails.
        """
        await self.ensure()
        if host_ca is None:
            host_ca = self.settings.use_host_ca_certificates
        if host_ca and await asyncio.to_thread(HOST_CA_BUNDLE.is_file):
            volumes = [*volumes, f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        tar_bytes = await asyncio.to_thread(_make_tar, context_dir, dict(extra_files or {}))
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("t", tag),
            ("dockerfile", containerfile),
            ("pullpolicy", pull),
            ("pull", "true" if pull == "always" else "false"),
            ("rm", "true"),
            # A failed build leaves no build container behind either.
            ("forcerm", "true"),
            ("nocache", "true" if nocache else "false"),
            # Podman 4.3's libpod /build never reuses cached layers unless the output format
            # is named explicitly (checked: same context, new layers every time without it).
            ("layers", "true"),
            ("outputformat", OUTPUT_FORMATS[image_format]),
        ]
        if build_args:
            params.append(("buildargs", json.dumps(dict(build_args))))
        if labels:
            params.append(("labels", json.dumps(dict(labels))))
        params += [("volume", v) for v in volumes]
        self.last_build_log = []
        log = self.last_build_log
        error: str | None = None
        async with self._http(timeout=None) as http:
            request = http.build_request(
                "POST",
                f"{API_PREFIX}/build",
                params=params,
                content=tar_bytes,
                headers={"Content-Type": "application/x-tar"},
            )
            response = await http.send(request, stream=True)
            try:
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    raise PodlabError(
                        f"image build of {tag} was refused: HTTP {response.status_code}",
                        hint=_api_message(body),
                    )
                decoder = json.JSONDecoder()
                buffer = ""
                pending = ""
                async for chunk in response.aiter_text():
                    buffer += chunk
                    while True:
                        buffer = buffer.lstrip()
                        if not buffer:
                            break
                        try:
                            item, end = decoder.raw_decode(buffer)
                        except ValueError:
                            break
                        buffer = buffer[end:]
                        if not isinstance(item, dict):
                            continue
                        if item.get("error"):
                            error = str(item["error"]).strip()
                            continue
                        text = item.get("stream")
                        if not isinstance(text, str):
                            continue
                        pending += text
                        *lines, pending = pending.split("\n")
                        for line in lines:
                            log.append(line)
                            yield line
                if pending:
                    log.append(pending)
                    yield pending
            finally:
                await response.aclose()
        if error is None and not await self.image_exists(tag):
            error = "Podman finished without producing the image"
        if error is not None:
            tail = "\n".join(log[-15:])
            raise PodlabError(f"image build of {tag} failed: {error}", hint=tail)

    # ----------------------------------------------------------------- logs

    async def container_logs(
        self, container: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        """Lines of a container's stdout and stderr; with follow, until it stops."""
        params = {
            "stdout": "true",
            "stderr": "true",
            "follow": "true" if follow else "false",
        }
        if tail is not None:
            params["tail"] = str(tail)
        path = f"{API_PREFIX}/containers/{container}/logs"
        async with (
            self._http(timeout=None) as http,
            http.stream("GET", path, params=params) as response,
        ):
            if response.status_code == 404:
                raise PodlabError(f"no container {container}")
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                raise PodlabError(f"cannot read the logs of {container}: {_api_message(body)}")
            async for line in _demux_lines(response.aiter_bytes()):
                yield line

    async def container_log_text(self, container: str, tail: int | None = None) -> str:
        return "\n".join([line async for line in self.container_logs(container, tail=tail)])


async def _demux_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Split Docker's multiplexed log stream (8-byte frame headers) into text lines.

    A TTY container sends raw text without headers; that is detected on the first byte.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    raw = b""
    text = ""
    framed: bool | None = None
    async for chunk in chunks:
        raw += chunk
        if framed is None:
            if len(raw) < 8:
                continue
            framed = raw[0] in (0, 1, 2) and raw[1:4] == b"\x00\x00\x00"
        payload = b""
        if framed:
            while len(raw) >= 8:
                (size,) = struct.unpack(">I", raw[4:8])
                if len(raw) < 8 + size:
                    break
                payload += raw[8 : 8 + size]
                raw = raw[8 + size :]
        else:
            payload, raw = raw, b""
        text += decoder.decode(payload)
        *lines, text = text.split("\n")
        for line in lines:
            yield line.rstrip("\r")
    text += decoder.decode(raw if not framed else b"", final=True)
    if text:
        yield text.rstrip("\r")


def _make_tar(context_dir: Path | None, extra: dict[str, Path | bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        if context_dir is not None:
            if not context_dir.is_dir():
                raise PodlabError(f"the build context {context_dir} is not a folder")
            for item in sorted(context_dir.iterdir()):
                if item.name in extra:
                    continue
                tar.add(str(item), arcname=item.name, filter=_tar_filter)
        for name, value in extra.items():
            if isinstance(value, bytes):
                info = tarfile.TarInfo(name)
                info.size = len(value)
                info.mode = 0o644
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(value))
            else:
                tar.add(str(value), arcname=name, filter=_tar_filter)
    return buffer.getvalue()


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "__pycache__" in info.name.split("/"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _api_message(body: str) -> str:
    with contextlib.suppress(ValueError):
        data = json.loads(body)
        if isinstance(data, dict):
            return str(data.get("message") or data.get("cause") or body).strip()
    return body.strip()[-500:]


def _map_error(exc: Exception, url: str | None) -> PodlabError:
    """podman-py / requests errors as one clear line for people."""
    from podman import errors as perrors

    if isinstance(exc, perrors.ImageNotFound):
        return PodlabError(
            f"image not found: {exc}",
            hint="pull it (podman pull IMAGE) or build it; check settings.server_images",
        )
    if isinstance(exc, perrors.NotFound):
        return PodlabError(f"not found: {getattr(exc, 'explanation', None) or exc}")
    if isinstance(exc, perrors.APIError):
        message = getattr(exc, "explanation", None) or str(exc)
        return PodlabError(f"Podman refused: {message}")
    name = type(exc).__name__
    if "Connection" in name or isinstance(exc, ConnectionError | OSError):
        return PodlabError(
            f"lost the connection to Podman at {url}: {exc}",
            hint="is the Podman service still running? run podlab doctor",
        )
    return PodlabError(f"Podman call failed: {name}: {exc}")
