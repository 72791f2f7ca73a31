"""Every server kind Podlab starts refuses what a web page in the user's browser could send.

Real servers with SmolLM2: the local engine (llama-cpp-python behind Podlab's guard), Podlab's
own model-server image, and llama.cpp's own llama-server (the default images' server). A request
without the service's key is refused; a preflight from a foreign origin gets no CORS grant; a
foreign Host header is refused where the server can be made to check it; Podlab's own clients
need no extra step; the key never appears in a log.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from podlab import cli
from podlab.core.chat.client import ChatClient, Done, GenerationParams
from podlab.core.logs import configure_logging
from podlab.core.paths import Locations
from podlab.core.serving.container_spec import ServiceOptions
from podlab.core.serving.inference import InferenceService
from podlab.core.serving.planning import ServeRequest
from podlab.core.serving.services import ServiceManager, auth_headers
from podlab.core.settings import Settings

pytestmark = pytest.mark.integration

EVIL = "http://evil.example"


def preflight(service: InferenceService) -> httpx.Response:
    return httpx.options(
        f"{service.api_url}/chat/completions",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
        timeout=10,
    )  # fmt: skip


async def chat_with_its_key(service: InferenceService) -> Done:
    """What the Playground does: the service's own key, found with the service."""
    params = GenerationParams(temperature=0.0, max_tokens=8)
    async with ChatClient(service.endpoint, service.api_key) as client:
        messages = [{"role": "user", "content": "Say hello."}]
        async for event in client.stream_chat(messages, service.model_ref, params):
            if isinstance(event, Done):
                return event
    raise AssertionError("the stream ended without a Done event")


def assert_guarded(service: InferenceService) -> None:
    """The checks Podlab's guard makes (local engine and Podlab's own image)."""
    models = f"{service.api_url}/models"
    key = auth_headers(service.api_key)
    assert service.api_key and len(service.api_key) >= 40
    assert httpx.get(models, timeout=10).status_code == 401
    assert httpx.get(models, headers=auth_headers("wrong"), timeout=10).status_code == 401
    assert httpx.get(models, headers=key, timeout=10).status_code == 200
    answer = preflight(service)
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers
    read = httpx.get(models, headers={**key, "Origin": EVIL}, timeout=10)
    assert read.status_code == 403 and "access-control-allow-origin" not in read.headers
    rebound = httpx.get(models, headers={**key, "Host": f"evil.example:{service.port}"})
    assert rebound.status_code == 403


def assert_kept_privately(service: InferenceService, dirs: dict[str, Path], log_file: Path) -> None:
    """Stored readable by the user alone, and never written to a log."""
    stored = list((dirs["state"] / "podlab" / "service-keys").iterdir())
    assert [p.read_text() for p in stored] == [service.api_key]
    assert all(os.stat(p).st_mode & 0o777 == 0o600 for p in stored)
    server_log = Path(str(service.log_path)).read_text()
    for text in (server_log, log_file.read_text(), json.dumps(service.to_dict())):
        assert str(service.api_key) not in text


async def test_local_engine_requires_its_key_and_refuses_other_sites(
    smollm2_model: Path, isolated_user_dirs: dict[str, Path]
) -> None:
    log_file = configure_logging("debug")
    manager = ServiceManager(settings=Settings())
    service = await manager.serve(
        ServeRequest(smollm2_model, engine="local", options=ServiceOptions(ctx_size=1024))
    )
    try:
        await asyncio.to_thread(assert_guarded, service)
        done = await chat_with_its_key(service)
        assert done.ok and done.metrics.tokens >= 1
        # A new manager (Podlab restarted) finds the service with its key.
        again = await ServiceManager(settings=Settings()).get(service.id)
        assert again.api_key == service.api_key
        # `podlab chat` needs no key option for Podlab's own service.
        chat = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "podlab", "chat", "--endpoint", service.api_url,
             "--param", "max_tokens=4", "Hi"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert chat.returncode == 0, chat.stderr
        await asyncio.to_thread(assert_kept_privately, service, isolated_user_dirs, log_file)
    finally:
        await manager.delete(service)
    assert not list((isolated_user_dirs["state"] / "podlab" / "service-keys").iterdir())


async def test_open_services_when_the_user_turns_keys_off(smollm2_model: Path) -> None:
    settings = Settings(require_api_key=False)
    manager = ServiceManager(settings=settings)
    service = await manager.serve(
        ServeRequest(smollm2_model, engine="local", options=ServiceOptions(ctx_size=1024))
    )
    try:
        assert service.api_key is None
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{service.api_url}/models")).status_code == 200
        # Open to programs, still closed to other web sites.
        assert (await asyncio.to_thread(preflight, service)).status_code == 403
    finally:
        await manager.delete(service)


async def test_podlabs_image_requires_its_key_and_refuses_other_sites(
    service_manager: ServiceManager,
    model_server_image: str,
    smollm2_model: Path,
    podman_client: Any,
) -> None:
    service = await service_manager.serve(
        ServeRequest(smollm2_model, options=ServiceOptions(image=model_server_image, ctx_size=1024))
    )
    await asyncio.to_thread(assert_guarded, service)
    assert (await chat_with_its_key(service)).ok
    # The key is in the container's environment, not in its command line or labels.
    attrs = podman_client.containers.get(service.container_id).attrs
    assert f"PODLAB_API_KEY={service.api_key}" in attrs["Config"]["Env"]
    assert service.api_key not in json.dumps(attrs["Config"]["Cmd"] or [])
    assert service.api_key not in json.dumps(attrs["Config"]["Labels"])
    logs = "\n".join([line async for line in service_manager.logs(service)])
    assert service.api_key not in logs
    await service_manager.delete(service)


async def test_llama_server_requires_its_key_and_grants_no_other_origin(
    service_manager: ServiceManager, llama_server_image: str, smollm2_model: Path
) -> None:
    """llama-server checks the key itself and answers CORS for its own origin only; it cannot
    check the Host header (the README and the Services page say so), and /health stays open."""
    service = await service_manager.serve(
        ServeRequest(smollm2_model, options=ServiceOptions(image=llama_server_image, ctx_size=1024))
    )
    models = f"{service.api_url}/models"
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(models)).status_code == 401
        assert (await http.get(models, headers=auth_headers(service.api_key))).status_code == 200
    granted = (await asyncio.to_thread(preflight, service)).headers.get(
        "access-control-allow-origin"
    )
    assert granted != EVIL and granted != "*"
    assert (await chat_with_its_key(service)).ok
    await service_manager.delete(service)


def test_a_dry_run_shows_no_key(
    podman_env: Any,
    llama_server_image: str,
    smollm2_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["serve", str(smollm2_model), "--engine", "podman", "--gpu", "none"]
    assert cli.main([*args, "--dry-run", "--json", "--image", llama_server_image]) == 0
    kwargs = json.loads(capsys.readouterr().out)
    assert kwargs["environment"]["LLAMA_ARG_CORS_ORIGINS"].startswith("http://127.0.0.1:")
    assert "LLAMA_API_KEY" not in kwargs["environment"]  # made at create time, never shown
    assert not Locations.default().state_dir.joinpath("service-keys").exists()
