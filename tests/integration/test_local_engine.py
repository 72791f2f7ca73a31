"""The local engine: llama-cpp-python's server as a detached subprocess, through ServiceManager."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from podlab.cli.chat import service_key
from podlab.core.errors import PodlabError
from podlab.core.paths import Locations
from podlab.core.serving.container_spec import ServiceOptions
from podlab.core.serving.engine import Engine
from podlab.core.serving.inference import ServiceState
from podlab.core.serving.local_server import PYTHON_ENV, LocalEngine
from podlab.core.serving.planning import ServeRequest
from podlab.core.serving.services import ServiceManager, auth_headers
from podlab.core.settings import Settings
from tests import harness
from tests.integration.conftest import kill_local_servers

pytestmark = pytest.mark.integration

CHAT = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France? Answer in one word."},
    ],
    "temperature": 0,
    "max_tokens": 32,
    "seed": 1,
}


def pid_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return bool(cmdline)  # a zombie has an empty command line


def restarted_manager() -> ServiceManager:
    """A new manager with nothing in memory, as after an application restart; no Podman."""
    return ServiceManager(Engine(url="unix:///nonexistent/podman.sock"), settings=Settings())


async def test_local_serve_chat_stop_and_rediscovery(
    service_manager: ServiceManager, smollm2_model: Path
) -> None:
    service = await service_manager.serve(
        ServeRequest(
            smollm2_model, engine="local", options=ServiceOptions(ctx_size=2048, threads=2)
        )
    )
    assert service.state == ServiceState.READY
    assert service.engine == "local" and service.host == "127.0.0.1"
    assert await service_manager.read_device(service) == "CPU"
    assert service.pid is not None and pid_alive(service.pid)
    async with httpx.AsyncClient(timeout=60, headers=auth_headers(service.api_key)) as client:
        response = await client.post(
            f"{service.api_url}/chat/completions", json={**CHAT, "model": service.model_ref}
        )
        assert "Paris" in response.json()["choices"][0]["message"]["content"]
        models = (await client.get(f"{service.api_url}/models")).json()
        assert models["data"][0]["id"] == service.model_ref

    # The record says where it is; a new manager finds it alive and ready.
    records = LocalEngine(Locations.default()).records()
    assert [(r.id, r.pid, r.port) for r in records] == [(service.id, service.pid, service.port)]
    again = restarted_manager()
    (found,) = await again.list_services()
    assert found.id == service.id and found.state == ServiceState.READY
    assert found.pid == service.pid and found.device == "CPU"
    assert again.engine_problem  # Podman is absent here: said, not fatal
    lines = [line async for line in again.logs(found.id, tail=20)]
    assert any("/v1/chat/completions" in line for line in lines)
    # Readiness (new manager) and refresh (known READY) probes ask routes this server has.
    await service_manager.list_services()
    log = await again.log_text(found, tail=None)
    assert '"GET /v1/models HTTP/1.1" 200' in log and '"GET /docs HTTP/1.1" 200' in log
    assert "/health" not in log and " 404 " not in log
    stats = await again.stats(found)
    assert stats["memory_bytes"] and stats["memory_bytes"] > 10 * 1024**2

    # Stop from the new manager kills the process; the service is stopped, not exited.
    pid = service.pid
    await again.stop(found.id)
    assert not pid_alive(pid)
    (stopped,) = await restarted_manager().list_services()
    assert stopped.state == ServiceState.STOPPED

    await again.restart(found.id)
    assert found.state == ServiceState.READY and found.pid != pid
    await again.delete(found.id)
    assert found.pid is not None and not pid_alive(found.pid)
    assert LocalEngine(Locations.default()).records() == []
    assert await restarted_manager().list_services() == []


async def test_a_second_request_waits_instead_of_cutting_the_first_answer(
    service_manager: ServiceManager, smollm2_model: Path
) -> None:
    """llama-cpp-python interrupts a streaming answer when another request arrives, unless
    told not to; Podlab's servers queue it, so parallel panes each get a whole answer."""
    from podlab.core.chat.client import ChatClient, Done, GenerationParams

    service = await service_manager.serve(
        ServeRequest(
            smollm2_model, engine="local", options=ServiceOptions(ctx_size=2048, threads=2)
        )
    )
    params = GenerationParams(temperature=0.0, seed=1, max_tokens=48)

    async def answer(question: str) -> Done:
        async with ChatClient(service.endpoint, service.api_key) as client:
            messages = [{"role": "user", "content": question}]
            async for event in client.stream_chat(messages, service.model_ref, params):
                if isinstance(event, Done):
                    return event
        raise AssertionError("no Done event")

    try:
        first, second = await asyncio.gather(
            answer("Tell me a long story about a lighthouse."),
            answer("List five colours."),
        )
        for done in (first, second):
            assert done.ok and not done.interrupted, done.error
            assert done.finish_reason in ("stop", "length") and done.text.strip()
    finally:
        await service_manager.delete(service)


async def test_local_server_crash_shows_its_log_and_reads_as_exited(
    service_manager: ServiceManager, corrupt_gguf: Path
) -> None:
    with pytest.raises(PodlabError, match="did not start: the server exited with code 1") as caught:
        await service_manager.serve(ServeRequest(corrupt_gguf, engine="local"))
    assert "Failed to load model from file" in caught.value.hint
    (service,) = await restarted_manager().list_services()
    assert service.state == ServiceState.EXITED  # died on its own, not stopped by Podlab


async def test_a_local_engine_killed_by_a_signal_reads_as_crashed_with_its_log(
    tmp_path: Path, smollm2_model: Path
) -> None:
    """A server process that dies by SIGSEGV (as llama.cpp built for another CPU does) is
    "crashed (signal 11, SIGSEGV)" while starting and, found again by a new manager that has
    no exit status, from the crash report Python's faulthandler left in its log."""
    broken = harness.crashing_python(tmp_path / "bin", signal.SIGSEGV)
    manager = ServiceManager(
        Engine(url="unix:///nonexistent/podman.sock"),
        settings=Settings(),
        local=LocalEngine(python=str(broken)),
        ready_timeout=60,
    )
    with pytest.raises(PodlabError) as caught:
        await manager.serve(ServeRequest(smollm2_model, engine="local"))
    assert "did not start: the server crashed (signal 11, SIGSEGV)" in caught.value.message
    assert "test engine that crashes" in caught.value.hint  # the log tail
    (found,) = await restarted_manager().list_services()
    assert found.state == ServiceState.EXITED
    assert found.error == "crashed (signal 11, SIGSEGV)"
    log = [line async for line in restarted_manager().logs(found.id)]
    assert "Fatal Python error: Segmentation fault" in log


def test_cli_names_the_signal_in_serve_list_and_logs(
    tmp_path: Path, smollm2_model: Path, isolated_user_dirs: dict[str, Path]
) -> None:
    broken = harness.crashing_python(tmp_path / "bin", signal.SIGILL)
    env = {
        **os.environ,
        "CONTAINER_HOST": "unix:///nonexistent/podman.sock",
        PYTHON_ENV: str(broken),
    }

    def podlab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "podlab", *args],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    served = podlab("serve", str(smollm2_model), "--engine", "local", "--timeout", "60")
    assert served.returncode == 1
    assert "the server crashed (signal 4, SIGILL)" in served.stderr, served.stderr
    assert "test engine that crashes" in served.stderr
    assert "Traceback" not in served.stderr
    listed = podlab("services", "list")
    assert listed.returncode == 0, listed.stderr
    assert "exited" in listed.stdout and "crashed (signal 4, SIGILL)" in listed.stdout
    assert "Fatal Python error: Illegal instruction" in listed.stdout  # its log tail
    as_json = json.loads(podlab("services", "list", "--json").stdout)
    assert [s["error"] for s in as_json] == ["crashed (signal 4, SIGILL)"]
    logs = podlab("services", "logs", as_json[0]["id"])
    assert "test engine that crashes" in logs.stdout
    assert "crashed (signal 4, SIGILL)" in logs.stderr


async def test_killed_outside_podlab_reads_as_exited(
    service_manager: ServiceManager, smollm2_model: Path
) -> None:
    service = await service_manager.serve(ServeRequest(smollm2_model, engine="local"))
    assert service.pid is not None
    os.kill(service.pid, 9)
    # Until reaped it is a zombie of this process: no command line, so not alive either.
    for _ in range(100):
        if not pid_alive(service.pid):
            break
        await asyncio.sleep(0.05)
    (found,) = await restarted_manager().list_services()
    assert found.state == ServiceState.EXITED


def test_local_serve_from_the_cli_outlives_the_cli(
    smollm2_model: Path, isolated_user_dirs: dict[str, Path]
) -> None:
    """`podlab serve --engine local` returns once ready; the server keeps running."""
    script = (
        "import sys, podlab.cli as c; "
        "c.COMMAND_MODULES = tuple(dict.fromkeys((*c.COMMAND_MODULES, 'serve'))); "
        "sys.exit(c.main(sys.argv[1:]))"
    )
    env = dict(os.environ)
    env["CONTAINER_HOST"] = "unix:///nonexistent/podman.sock"
    port = str(harness.free_port())
    done = subprocess.run(
        [sys.executable, "-c", script, "serve", str(smollm2_model), "--engine", "local",
         "--port", port, "--json"],
        capture_output=True, text=True, env=env, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout)
    pid = served["pid"]
    try:
        assert served["state"] == "ready" and served["port"] == int(port)
        response = httpx.post(
            f"{served['api_url']}/chat/completions", json={**CHAT, "model": served["model"]},
            headers=auth_headers(service_key(served["api_url"])), timeout=60,
        )  # fmt: skip
        assert "Paris" in response.json()["choices"][0]["message"]["content"]
        stopped = subprocess.run(
            [sys.executable, "-c", script, "services", "stop", served["id"]],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert stopped.returncode == 0, stopped.stderr
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.killpg(pid, 9)


async def test_a_busy_or_briefly_stuck_ready_service_stays_ready(smollm2_model: Path) -> None:
    """Refreshes of a READY llama-cpp-python service while it answers: the state does not
    flicker to STARTING (it answers /v1/models only between generations) and a streamed
    answer is not cut short (a request waiting for its model interrupts the stream). Only
    `ready_misses` consecutive unanswered checks (a stopped process) leave READY; a process
    that is gone does at once."""
    locations = Locations.default()
    manager = ServiceManager(
        Engine(url="unix:///nonexistent/podman.sock"),
        settings=Settings(),
        locations=locations,
        port_base=harness.free_port(),
        probe_timeout=0.5,
        ready_misses=3,
    )
    events: list[tuple[ServiceState, str]] = []
    # End-of-text tokens banned: every answer runs to max_tokens (about 80 tokens/s here).
    long_answer = {"prompt": "Once upon a time", "logit_bias": {"0": -100, "2": -100}}
    try:
        service = await manager.serve(
            ServeRequest(
                smollm2_model, engine="local", options=ServiceOptions(ctx_size=2048, threads=2)
            )
        )
        assert service.state == ServiceState.READY
        manager.subscribe(lambda event: events.append((event.state, event.detail)))
        url = f"{service.api_url}/completions"

        async with httpx.AsyncClient(timeout=120, headers=auth_headers(service.api_key)) as client:
            # A plain (not streamed) answer of several seconds: refreshes meanwhile.
            answer = asyncio.ensure_future(
                client.post(url, json={**long_answer, "max_tokens": 400})
            )
            await asyncio.sleep(0.5)
            for _ in range(3):
                assert await manager.list_services() == [service]
                assert service.state == ServiceState.READY
            assert not answer.done()  # the checks really ran while it was busy
            assert (await answer).status_code == 200
            assert events == []

            # A streamed answer: refreshes meanwhile do not cut it short.
            body = {**long_answer, "max_tokens": 120, "stream": True}
            async with client.stream("POST", url, json=body) as stream:
                chunks = 0
                finish = None
                async for line in stream.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunks += 1
                    finish = json.loads(line[6:])["choices"][0].get("finish_reason") or finish
                    if chunks in (5, 40):
                        await manager.list_services()
                        assert service.state == ServiceState.READY
            assert finish == "length" and chunks >= 100
            assert events == []

        # A process that answers nothing (stopped): READY until the third check in a row.
        assert service.pid is not None
        os.kill(service.pid, signal.SIGSTOP)
        try:
            for _ in range(2):
                await manager.list_services()
                assert service.state == ServiceState.READY
            await manager.list_services()
            assert service.state == ServiceState.STARTING
            assert events == [(ServiceState.STARTING, "not answering (3 readiness checks missed)")]
        finally:
            os.kill(service.pid, signal.SIGCONT)
        await manager.list_services()
        assert service.state == ServiceState.READY
        assert events[-1] == (ServiceState.READY, "ready")

        # Gone: the state changes at the first listing, no misses needed.
        os.killpg(service.pid, signal.SIGKILL)
        for _ in range(100):
            if not pid_alive(service.pid):
                break
            await asyncio.sleep(0.05)
        await manager.list_services()
        assert service.state == ServiceState.EXITED
    finally:
        kill_local_servers(locations)


async def test_a_service_takes_the_name_the_user_gives(
    service_manager: ServiceManager, smollm2_model: Path
) -> None:
    named = await service_manager.prepare(
        ServeRequest(smollm2_model, engine="local", name="my-smol.v2")
    )
    assert named.name == "my-smol.v2"
    automatic = await service_manager.prepare(ServeRequest(smollm2_model, engine="local"))
    assert automatic.name.startswith("podlab-") and automatic.service_id in automatic.name
    for bad in ("-starts-with-dash", "has space", "semi;colon", ""):
        with pytest.raises(PodlabError, match="cannot name a service"):
            await service_manager.prepare(ServeRequest(smollm2_model, engine="local", name=bad))
