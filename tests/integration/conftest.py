"""Fixtures for serving tests: the model-server image (built once per session), service managers
pointed at the test Podman service, and cleanup of everything Podlab created.

The image is built FROM the local debian:bookworm-slim with a wheelhouse of the host's own
llama-cpp-python (`pip wheel` is instant from pip's cache; host and image are both Debian 12 /
CPython 3.11) and the host CA bundle, so the build neither compiles llama.cpp nor needs PyPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from podlab.core.paths import Locations
from podlab.core.serving.backends.podman import build_model_server_image
from podlab.core.serving.container_spec import LABEL_SERVICE_ID, PODLAB_SERVER_IMAGE
from podlab.core.serving.engine import Engine
from podlab.core.serving.gpu.host import HostProbe
from podlab.core.serving.local_server import LocalEngine
from podlab.core.serving.services import ServiceManager
from podlab.core.settings import Settings
from tests import harness


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of the llama-cpp-python the host runs (and its server dependencies).

    PODLAB_WHEELHOUSE names a ready one (CI makes it while installing llama-cpp-python);
    otherwise `pip wheel` makes one, instantly when pip's cache holds the compiled wheel.
    """
    version = importlib.metadata.version("llama_cpp_python")
    ready = os.environ.get("PODLAB_WHEELHOUSE")
    if ready and list(Path(ready).glob(f"llama_cpp_python-{version}-*.whl")):
        return Path(ready)
    folder = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
            f"llama-cpp-python[server]=={version}", "-w", str(folder),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0 or not list(folder.glob("llama_cpp_python-*.whl")):
        raise harness.HarnessError(f"pip wheel llama-cpp-python failed:\n{done.stderr[-3000:]}")
    return folder


@pytest.fixture(scope="session")
def model_server_image(
    podman_service: harness.PodmanService, base_image: str, wheelhouse: Path
) -> str:
    """Podlab's own model-server image, built through Engine.build once per session."""

    async def build() -> list[str]:
        engine = Engine(url=podman_service.url)
        await engine.connect()
        lines = [
            line
            async for line in build_model_server_image(
                engine, wheelhouse=wheelhouse, use_host_ca=True, pull="never"
            )
        ]
        await engine.aclose()
        return lines

    started = time.monotonic()
    lines = asyncio.run(build())
    print(f"model server image built in {time.monotonic() - started:.1f} s ({len(lines)} lines)")
    return PODLAB_SERVER_IMAGE


@pytest.fixture(scope="session")
def llama_server_image(podman_service: harness.PodmanService, base_image: str) -> str:
    """llama.cpp's own llama-server in a local image with the RamaLama images' entrypoint
    contract, built through Engine.build from the cached binary; reused when present."""
    tag, files = harness.llama_server_image_files(harness.llama_server_build())

    async def ensure() -> str:
        engine = Engine(url=podman_service.url)
        await engine.connect()
        try:
            if await engine.image_exists(tag):
                return "reused"
            lines = engine.build(
                harness.LLAMA_SERVER_CONTEXT, tag, pull="never", extra_files=files, host_ca=False
            )
            count = sum([1 async for _ in lines])
            return f"built ({count} lines)"
        finally:
            await engine.aclose()

    started = time.monotonic()
    how = asyncio.run(ensure())
    print(f"llama-server image {tag} {how} in {time.monotonic() - started:.1f} s")
    return tag


def remove_services(client: Any, service_ids: set[str]) -> None:
    """Remove the containers of these Podlab services only."""
    for service_id in service_ids:
        label = f"{LABEL_SERVICE_ID}={service_id}"
        for container in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)


def kill_local_servers(locations: Locations) -> None:
    for record in LocalEngine(locations).records():
        if record.pid is None:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGKILL)


@contextlib.contextmanager
def managed_services(
    url: str, client: Any, gpu_probe: HostProbe | None = None
) -> Iterator[ServiceManager]:
    """A ServiceManager on the Podman service at `url`. Afterwards the containers of the
    services it created and every local server of this test are removed; nothing else is
    touched (other test sessions share the machine's container storage)."""
    locations = Locations.default()
    settings = Settings()
    manager = ServiceManager(
        Engine(settings, url=url, locations=locations),
        settings=settings,
        locations=locations,
        gpu_probe=gpu_probe,
        port_base=harness.free_port(),
        ready_timeout=120,
    )
    created: set[str] = set()
    manager.subscribe(lambda event: created.add(event.service.id))
    try:
        yield manager
    finally:
        kill_local_servers(locations)
        remove_services(client, created)


@pytest.fixture
def service_manager(
    podman_env: harness.PodmanService, podman_client: Any, gpu_less_host: HostProbe
) -> Iterator[ServiceManager]:
    """A ServiceManager on the test Podman service that sees a host without a GPU (tests that
    plan GPU passthrough pass their own plan)."""
    with managed_services(podman_env.url, podman_client, gpu_less_host) as manager:
        yield manager


@dataclass
class ServingTier:
    """A Podman that serves models for Podlab, with the image and model usable there."""

    name: str
    service: harness.PodmanService
    client: Any
    image: str
    """Podlab's model-server image in this Podman's store."""
    model: Path
    """SmolLM2, where this Podman's containers can read it."""

    @property
    def measures_containers(self) -> bool:
        """Whether this Podman has container statistics: a rootless one on cgroup v1 (these
        machines) has no cgroup of its own to read them from."""
        host = self.client.info()["host"]
        return not (host["security"]["rootless"] and host["cgroupVersion"] == "v1")


@pytest.fixture(scope="session")
def rootless_tier(
    rootless_podman: harness.RootlessPodman,
    podman_service: harness.PodmanService,
    model_server_image: str,
    smollm2_model: Path,
) -> Iterator[ServingTier]:
    """The rootless Podman with Podlab's image loaded into its user's store (once per run)."""
    import podman

    started = time.monotonic()
    image = harness.load_image_as_user(
        rootless_podman, model_server_image, podman_service.containers_conf
    )
    model = harness.share_file(smollm2_model, rootless_podman)
    print(f"rootless tier ready in {time.monotonic() - started:.1f} s")
    with podman.PodmanClient(base_url=rootless_podman.service.url) as client:
        yield ServingTier("rootless", rootless_podman.service, client, image, model)


@pytest.fixture(params=["podman", pytest.param("rootless", marks=pytest.mark.rootless)])
def serving_tier(request: pytest.FixtureRequest) -> ServingTier:
    """The suite's own Podman service (rootful when the suite runs as root), then the rootless
    one: service tests taking this run on both."""
    if request.param == "rootless":
        tier: ServingTier = request.getfixturevalue("rootless_tier")
        return tier
    return ServingTier(
        "podman",
        request.getfixturevalue("podman_service"),
        request.getfixturevalue("podman_client"),
        request.getfixturevalue("model_server_image"),
        request.getfixturevalue("smollm2_model"),
    )


@pytest.fixture
def tier_manager(
    serving_tier: ServingTier, gpu_less_host: HostProbe, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServiceManager]:
    """A ServiceManager (and CONTAINER_HOST for the CLI) on the serving tier's Podman."""
    monkeypatch.setenv("CONTAINER_HOST", serving_tier.service.url)
    monkeypatch.setenv("CONTAINERS_CONF", str(serving_tier.service.containers_conf))
    with managed_services(serving_tier.service.url, serving_tier.client, gpu_less_host) as manager:
        yield manager


@pytest.fixture
def corrupt_gguf(tmp_path: Path, smollm2_model: Path) -> Path:
    """The first megabyte of a real GGUF: a valid header, then nothing (llama.cpp refuses it)."""
    path = tmp_path / "corrupt.gguf"
    with smollm2_model.open("rb") as source:
        path.write_bytes(source.read(1_000_000))
    return path
