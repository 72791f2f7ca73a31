"""Shared fixtures: real Podman, real models, real llama.cpp servers, Qt offscreen with qasync."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from podlab.core.serving.gpu.host import CommandResult, HostProbe
from tests import harness

# Qt renders offscreen everywhere: tests, CI and screenshots need no display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Every test gets its own XDG folders, so a user's real settings and models are never read."""
    dirs = {}
    for name in ("CONFIG", "DATA", "CACHE", "STATE"):
        path = tmp_path / f"xdg-{name.lower()}"
        path.mkdir()
        monkeypatch.setenv(f"XDG_{name}_HOME", str(path))
        dirs[name.lower()] = path
    return dirs


@pytest.fixture(scope="session")
def podman_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.PodmanService]:
    """A real `podman system service` on a temporary socket with the test containers.conf."""
    with harness.podman_service(tmp_path_factory.mktemp("podman")) as service:
        yield service


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.SshServer]:
    """A private sshd on 127.0.0.1 with a key made for this session (for ssh:// Podman)."""
    with harness.ssh_server(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def podman_client(podman_service: harness.PodmanService) -> Iterator[Any]:
    import podman

    with podman.PodmanClient(base_url=podman_service.url) as client:
        yield client


@pytest.fixture
def podman_env(
    podman_service: harness.PodmanService, monkeypatch: pytest.MonkeyPatch
) -> harness.PodmanService:
    """Point this test's process (and Podlab's engine discovery) at the test Podman service."""
    monkeypatch.setenv("CONTAINER_HOST", podman_service.url)
    monkeypatch.setenv("CONTAINERS_CONF", str(podman_service.containers_conf))
    return podman_service


@pytest.fixture(scope="session")
def rootless_podman(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[harness.RootlessPodman]:
    """A rootless Podman service (the test user's as root, else the suite user's own)."""
    with harness.rootless_podman_service(tmp_path_factory.mktemp("podman-rootless")) as rootless:
        yield rootless


@pytest.fixture
def gpu_less_host(tmp_path: Path) -> HostProbe:
    """Host facts of a machine without any GPU, whatever this machine has: tests that are not
    about GPUs give it to detection, so that they hold on a GPU host as well."""
    root = tmp_path / "gpu-less-host"
    root.mkdir()

    def no_commands(argv: Sequence[str]) -> CommandResult:
        return CommandResult(127, "", f"{argv[0]}: command not found")

    return HostProbe(root=root, run=no_commands, env={"PATH": "/usr/bin"}, system="Linux")


@pytest.fixture(scope="session")
def base_image(podman_service: harness.PodmanService) -> str:
    return harness.ensure_base_image(podman_service.containers_conf)


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    return harness.smollm2_path()


@pytest.fixture(scope="session")
def gemma3_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harness.gemma3_path(tmp_path_factory.mktemp("gemma3"))


@pytest.fixture(scope="session")
def smollm2_server(
    smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.LlamaServer]:
    with harness.llama_server(smollm2_model, tmp_path_factory.mktemp("llama-smollm2")) as server:
        yield server


@pytest.fixture(scope="session")
def gemma3_server(
    gemma3_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.LlamaServer]:
    with harness.llama_server(gemma3_model, tmp_path_factory.mktemp("llama-gemma3")) as server:
        yield server


@pytest.fixture
def qloop(qapp: Any) -> Iterator[asyncio.AbstractEventLoop]:
    """One asyncio loop on the Qt loop, as the app runs it (qasync).

    qtbot waits drive its tasks. The loop is never stopped here: stopping calls
    QApplication.exit() and every later Qt wait would return at once.
    """
    import qasync

    loop = qasync.QEventLoop(qapp, already_running=True)
    executor = qasync.QThreadExecutor(4)
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    yield loop
    for task in asyncio.all_tasks(loop):
        task.cancel()
    executor.shutdown(wait=True)
    # already_running=True told asyncio this loop runs on this thread; take that back, or every
    # later asyncio test (pytest-asyncio's runner) refuses to start "from a running event loop".
    asyncio.events._set_running_loop(None)
    asyncio.set_event_loop(None)
