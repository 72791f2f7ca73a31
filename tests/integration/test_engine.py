"""Engine against real Podman: discovery, a dead socket, the user service, builds with live logs."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from podlab.core.errors import PodlabError
from podlab.core.serving.container_spec import PODLAB_SERVER_IMAGE
from podlab.core.serving.engine import Engine
from podlab.core.serving.planning import ServeRequest
from podlab.core.serving.services import ServiceManager
from tests import harness

pytestmark = pytest.mark.integration


async def test_discovers_podman_from_container_host(
    podman_env: harness.PodmanService, base_image: str
) -> None:
    engine = Engine()
    status = await engine.connect()
    assert status.available, status.problem
    assert status.url == podman_env.url
    assert status.source == "CONTAINER_HOST"
    assert status.version == harness.podman_server_version(podman_env)
    assert await engine.image_exists(base_image) is True
    assert await engine.image_exists(f"localhost/podlab-no-such-image:{uuid.uuid4().hex}") is False
    await engine.aclose()


async def test_settings_url_is_used_when_no_container_host(
    podman_service: harness.PodmanService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from podlab.core.settings import Settings

    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    status = await Engine(Settings(podman_url=podman_service.url)).connect()
    assert status.available and status.source == "settings"


async def test_dead_socket_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2_model: Path
) -> None:
    dead = f"unix://{tmp_path}/dead.sock"
    monkeypatch.setenv("CONTAINER_HOST", dead)
    engine = Engine()
    status = await engine.connect()
    assert not status.available
    assert status.problem == f"Podman does not answer at {dead} (from CONTAINER_HOST)"
    assert "CONTAINER_HOST" in status.hint
    with pytest.raises(PodlabError, match="does not answer"):
        await engine.ensure()
    manager = ServiceManager(engine)
    with pytest.raises(PodlabError, match="does not answer") as caught:
        await manager.serve(ServeRequest(smollm2_model, engine="podman"))
    assert caught.value.hint
    assert manager.known() == []


def test_dead_socket_through_the_cli(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    smollm2_model: Path,
) -> None:
    import podlab.cli as cli

    with_serve = tuple(dict.fromkeys((*cli.COMMAND_MODULES, "serve")))
    monkeypatch.setattr(cli, "COMMAND_MODULES", with_serve)
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{tmp_path}/dead.sock")
    code = cli.main(["serve", str(smollm2_model), "--engine", "podman"])
    err = capsys.readouterr().err
    assert code == 1
    assert "podlab: error: Podman does not answer at unix://" in err
    assert "hint: " in err
    assert "Traceback" not in err


async def test_no_podman_at_all_says_how_to_install(tmp_path: Path) -> None:
    engine = Engine(
        podman_cli=None,
        env={"XDG_RUNTIME_DIR": str(tmp_path)},
        system_socket=str(tmp_path / "root.sock"),
    )
    status = await engine.connect()
    assert not status.available
    assert status.problem == "Podman not found"
    assert "sudo apt install podman" in status.hint
    assert "sudo dnf install podman" in status.hint
    assert "brew install podman" in status.hint
    assert not status.can_start_service


async def test_installed_but_not_running_then_started_on_consent(
    podman_env: harness.PodmanService, tmp_path_factory: pytest.TempPathFactory
) -> None:
    runtime = tmp_path_factory.mktemp("run")  # a short path: unix sockets allow ~107 bytes
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    engine = Engine(env=env, system_socket=str(runtime / "none" / "podman.sock"))
    status = await engine.connect()
    assert not status.available
    assert status.problem == "Podman is installed but its service is not running"
    assert "podman.socket" in status.hint
    assert status.can_start_service
    try:
        started = await engine.start_user_service()
        assert started.available, started.problem
        assert started.url == f"unix://{runtime}/podman/podman.sock"
        assert started.source == "started by Podlab"
        again = await Engine(env=env, system_socket="/nonexistent").connect()
        assert again.available and again.source == "rootless socket"
    finally:
        engine.stop_started_service()


async def test_build_streams_log_lines_as_they_come(
    podman_env: harness.PodmanService, base_image: str, tmp_path: Path, podman_client: Any
) -> None:
    (tmp_path / "Containerfile").write_text(
        f"FROM {base_image}\nRUN echo podlab-first-step\nRUN sleep 2 && echo podlab-after-sleep\n"
    )
    engine = Engine()
    await engine.connect()
    tag = "localhost/podlab-test/stream:1"
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    try:
        async for line in engine.build(tmp_path, tag, pull="never", nocache=True):
            seen.append((time.monotonic() - start, line))
        texts = [text for _, text in seen]
        assert texts[0].startswith("STEP 1/3: FROM")
        first = next(t for t, text in seen if text == "podlab-first-step")
        last = next(t for t, text in seen if text == "podlab-after-sleep")
        assert last - first > 1.5, "lines must arrive while the build runs, not at the end"
        assert await engine.image_exists(tag)
    finally:
        podman_client.images.remove(tag, force=True)


async def test_build_failure_raises_with_the_log_tail(
    podman_env: harness.PodmanService, base_image: str, tmp_path: Path
) -> None:
    (tmp_path / "Containerfile").write_text(
        f"FROM {base_image}\nRUN echo podlab-about-to-fail && exit 3\n"
    )
    engine = Engine()
    await engine.connect()
    with pytest.raises(PodlabError, match="image build of localhost/podlab-test/fail:1 failed"):
        async for _ in engine.build(tmp_path, "localhost/podlab-test/fail:1", pull="never"):
            pass
    assert "podlab-about-to-fail" in str(engine.last_build_log)


async def test_model_server_image(
    podman_env: harness.PodmanService, model_server_image: str
) -> None:
    engine = Engine()
    await engine.connect()
    assert model_server_image == PODLAB_SERVER_IMAGE
    labels = await engine.image_labels(model_server_image)
    assert labels["podlab.server-kind"] == "llama-cpp-python"
    client = engine.client()
    image = await engine.call(client.images.get, model_server_image)
    config = image.attrs.get("Config") or {}
    assert config.get("User") == "1001"  # non-root
    assert image.attrs["Size"] < 700 * 1024**2
