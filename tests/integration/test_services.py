"""Inference services on real Podman through ServiceManager: SmolLM2 in Podlab's own image and
in llama.cpp's own llama-server, the security settings Podman really applied, CDI passthrough,
failures, ports, cleanup, rediscovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podlab.cli.chat import service_key
from podlab.core.chat.client import ChatClient, Done, GenerationParams, Token
from podlab.core.errors import PodlabError
from podlab.core.serving.container_spec import LABEL_MANAGED, LABEL_SERVICE_ID, ServiceOptions
from podlab.core.serving.engine import Engine
from podlab.core.serving.gpu.cdi import read_cdi_specs
from podlab.core.serving.gpu.detect import GpuReport
from podlab.core.serving.gpu.host import GpuInfo, HostProbe
from podlab.core.serving.gpu.passthrough import plan_passthrough
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.planning import ServeRequest
from podlab.core.serving.services import (
    ServiceEvent,
    ServiceManager,
    auth_headers,
    probe_ready,
    readiness_path,
)
from podlab.core.settings import Settings
from tests import harness
from tests.integration.conftest import ServingTier, remove_services

pytestmark = pytest.mark.integration

# SmolLM2's greedy answer to the open question changes with the CPU and the build of llama.cpp
# (French nonsense from some); asked for one word, it says Paris on every one seen so far.
CHAT = {
    "messages": [
        {"role": "user", "content": "What is the capital of France? Answer in one word."},
    ],
    "temperature": 0,
    "max_tokens": 32,
    "seed": 1,
}


def cheap_options(base_image: str, *command: str) -> ServiceOptions:
    """A container from the base image through the same spec path (no model server)."""
    return ServiceOptions(image=base_image, extra_args=list(command) or ["sleep", "infinity"])


async def ask_capital(service: InferenceService) -> str:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(
            f"{service.api_url}/chat/completions",
            json={**CHAT, "model": service.model_ref},
            headers=auth_headers(service.api_key),
        )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def default_capabilities(client: Any, image: str) -> list[str]:
    """The capabilities Podman gives a root container when nothing is dropped."""
    container = client.containers.create(image, ["true"], user="0", labels={"podlab.test": "caps"})
    try:
        container.reload()
        caps = list(container.attrs["EffectiveCaps"] or [])
    finally:
        container.remove(force=True)
    assert "CAP_CHOWN" in caps and "CAP_NET_BIND_SERVICE" in caps, caps
    return caps


def fresh_manager(podman_env: harness.PodmanService) -> ServiceManager:
    """A new manager, as after an application restart (nothing in memory)."""
    return ServiceManager(Engine(url=podman_env.url), settings=Settings())


async def test_serve_smollm2_in_podlabs_image_and_chat(
    tier_manager: ServiceManager, serving_tier: ServingTier
) -> None:
    """serve -> ready -> chat -> stop -> restart -> delete, on the suite's Podman and on a
    rootless one (Podlab as its client, as on a desktop)."""
    service_manager = tier_manager
    podman_client = serving_tier.client
    events: list[ServiceEvent] = []
    service_manager.subscribe(events.append)
    started = time.monotonic()
    service = await service_manager.serve(
        ServeRequest(
            serving_tier.model, options=ServiceOptions(image=serving_tier.image, ctx_size=2048)
        )
    )
    print(f"{serving_tier.name}: serve -> ready in {time.monotonic() - started:.2f} s")
    assert service.state == ServiceState.READY
    assert service.engine == "podman" and service.server_kind == "llama-cpp-python"
    assert service.host == "127.0.0.1"
    assert service.device == "CPU"  # gpu.parse_offload on the server's log
    assert await service_manager.read_device(service) == "CPU"
    assert service.offload is not None and service.offload.offloaded_layers == 0
    states = [e.state for e in events if e.kind == "changed"]
    assert ServiceState.STARTING in states and states[-1] == ServiceState.READY
    assert "Paris" in await ask_capital(service)

    # What Podman really applied, not just what was asked for.
    container = podman_client.containers.get(service.container_id)
    attrs = container.attrs
    host_config = attrs["HostConfig"]
    assert host_config["PortBindings"]["8000/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(service.port)}
    ]
    assert "no-new-privileges" in host_config["SecurityOpt"]
    assert "label=disable" not in host_config["SecurityOpt"]
    assert not host_config.get("CapAdd")
    # The server runs as user 1001, so its effective set is empty whatever was dropped: what
    # proves cap_drop=ALL is that every capability a default container gets was dropped.
    assert set(default_capabilities(podman_client, serving_tier.image)) <= set(
        host_config["CapDrop"]
    )
    assert host_config["Init"] is True
    assert not host_config.get("Privileged")
    (mount,) = [m for m in attrs["Mounts"] if m["Destination"].startswith("/models/")]
    assert mount["RW"] is False
    assert mount["Source"] == str(serving_tier.model.resolve())
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_SERVICE_ID] == service.id
    assert labels["podlab.api-url"] == service.api_url
    assert attrs["Config"]["User"] == "1001"

    # Rediscovered after an "app restart", ready, with the device read again.
    again = fresh_manager(serving_tier.service)
    found = {s.id: s for s in await again.list_services()}
    assert found[service.id].state == ServiceState.READY
    assert found[service.id].device == "CPU"
    assert found[service.id].api_url == service.api_url

    lines = [line async for line in service_manager.logs(service, tail=50)]
    assert any("/v1/chat/completions" in line for line in lines)
    stats = await service_manager.stats(service)
    if serving_tier.measures_containers:
        assert stats["memory_bytes"] and stats["memory_bytes"] > 10 * 1024**2
    else:
        assert stats["memory_bytes"] is None  # unknown, not made up

    await service_manager.stop(service)
    assert service.state == ServiceState.STOPPED
    assert (await fresh_manager(serving_tier.service).get(service.id)).state == ServiceState.STOPPED
    await service_manager.restart(service)
    assert service.state == ServiceState.READY
    assert "Paris" in await ask_capital(service)
    await service_manager.delete(service)
    assert not podman_client.containers.exists(service.container_id)


async def test_chat_client_streams_from_a_served_container(
    tier_manager: ServiceManager, serving_tier: ServingTier
) -> None:
    """Podlab's chat client against a model served in a container, on both Podman tiers."""
    service = await tier_manager.serve(
        ServeRequest(
            serving_tier.model, options=ServiceOptions(image=serving_tier.image, ctx_size=2048)
        )
    )
    params = GenerationParams(temperature=0.0, seed=1, max_tokens=32)
    tokens: list[str] = []
    done: Done | None = None
    async with ChatClient(service.endpoint, service.api_key) as client:
        assert await client.list_models() == [service.model_ref]
        async for event in client.stream_chat(CHAT["messages"], params=params):
            if isinstance(event, Token):
                tokens.append(event.text)
            elif isinstance(event, Done):
                done = event
    assert done is not None and done.ok and not done.interrupted
    assert "".join(tokens) == done.text and "Paris" in done.text
    assert done.metrics.ttft_ms is not None and 0 < done.metrics.ttft_ms < done.metrics.total_ms
    assert 0 < done.metrics.tokens <= 32
    await tier_manager.delete(service)


async def stream_capital(service: InferenceService) -> tuple[str, Done]:
    """The question streamed through Podlab's own chat client, as the playground asks it."""
    params = GenerationParams(temperature=0.0, seed=1, max_tokens=16)
    pieces: list[str] = []
    done: Done | None = None
    async with ChatClient(service.api_url, service.api_key) as client:
        async for event in client.stream_chat(CHAT["messages"], service.model_ref, params):
            if isinstance(event, Token):
                pieces.append(event.text)
            elif isinstance(event, Done):
                done = event
    assert done is not None
    return "".join(pieces), done


# Podlab's own llama-cpp-python image (also on the rootless tier, above), and llama.cpp's own
# llama-server in an image with the RamaLama images' entrypoint contract (the "llama-cpp" kind
# users get by default).
SERVER_IMAGES = {"llama-cpp-python": "model_server_image", "llama-cpp": "llama_server_image"}


@pytest.fixture(params=list(SERVER_IMAGES))
def server_image(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(server kind, image) for each kind of server Podlab runs in a container."""
    return request.param, request.getfixturevalue(SERVER_IMAGES[request.param])


async def test_serve_smollm2_and_stream_through_each_server_kind(
    service_manager: ServiceManager,
    server_image: tuple[str, str],
    smollm2_model: Path,
    podman_client: Any,
    podman_env: harness.PodmanService,
) -> None:
    kind, image = server_image
    events: list[ServiceEvent] = []
    service_manager.subscribe(events.append)
    started = time.monotonic()
    service = await service_manager.serve(
        ServeRequest(smollm2_model, options=ServiceOptions(image=image, ctx_size=2048))
    )
    print(f"{kind}: serve -> ready in {time.monotonic() - started:.2f} s")
    assert service.state == ServiceState.READY
    assert service.engine == "podman" and service.server_kind == kind
    assert service.host == "127.0.0.1"
    assert service.device == "CPU"  # gpu.parse_offload on the server's log
    assert await service_manager.read_device(service) == "CPU"
    assert service.offload is not None and service.offload.offloaded_layers == 0
    states = [e.state for e in events if e.kind == "changed"]
    assert ServiceState.STARTING in states and states[-1] == ServiceState.READY
    # The readiness probe asks the route the server kind has: llama-server answers /health
    # (503 while loading, then 200), llama-cpp-python has no such route (its log would show a
    # 404 for every probe) and is asked /v1/models.
    log = await service_manager.log_text(service, tail=None)
    assert "GET /health" not in log or kind == "llama-cpp"
    async with httpx.AsyncClient(timeout=10) as http:
        health = await probe_ready(http, service.endpoint, "/health", service.api_key)
        ready = await probe_ready(http, service.endpoint, readiness_path(kind), service.api_key)
    assert health == (200 if kind == "llama-cpp" else 404) and ready == 200
    streamed, done = await stream_capital(service)
    assert done.ok and not done.interrupted and streamed == done.text
    assert done.metrics.tokens >= 1 and done.metrics.ttft_ms is not None
    assert "Paris" in streamed
    assert "Paris" in await ask_capital(service)

    # What Podman really applied, not just what was asked for.
    container = podman_client.containers.get(service.container_id)
    attrs = container.attrs
    host_config = attrs["HostConfig"]
    assert host_config["PortBindings"]["8000/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(service.port)}
    ]
    assert "no-new-privileges" in host_config["SecurityOpt"]
    assert "label=disable" not in host_config["SecurityOpt"]
    assert not host_config.get("CapAdd")
    assert not attrs.get("EffectiveCaps")  # cap_drop ALL: nothing left
    assert host_config["Init"] is True
    assert not host_config.get("Privileged")
    (mount,) = [m for m in attrs["Mounts"] if m["Destination"].startswith("/models/")]
    assert mount["RW"] is False
    real_model = await asyncio.to_thread(smollm2_model.resolve)  # Podman resolves symlinks
    assert Path(mount["Source"]) == real_model
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_SERVICE_ID] == service.id
    assert labels["podlab.api-url"] == service.api_url
    if kind == "llama-cpp":
        # RamaLama's contract: Podlab replaces the image's entrypoint with llama-server itself.
        # (Podman 4.3 reports the entrypoint as one string, newer Podman as a list.)
        assert attrs["Config"]["Entrypoint"] in ("llama-server", ["llama-server"])
        command = attrs["Config"]["Cmd"]
        assert command[command.index("--alias") + 1] == service.model_ref
        assert command[command.index("--port") + 1] == "8000"
    else:
        assert attrs["Config"]["User"] == "1001"

    # Rediscovered after an "app restart", ready, with the device read again.
    again = fresh_manager(podman_env)
    found = {s.id: s for s in await again.list_services()}
    assert found[service.id].state == ServiceState.READY
    assert found[service.id].device == "CPU"
    assert found[service.id].api_url == service.api_url

    lines = [line async for line in service_manager.logs(service, tail=50)]
    # llama-cpp-python logs each request; llama-server logs each task's timings instead.
    served = "/v1/chat/completions" if kind == "llama-cpp-python" else "prompt eval time"
    assert any(served in line for line in lines)
    stats = await service_manager.stats(service)
    assert stats["memory_bytes"] and stats["memory_bytes"] > 10 * 1024**2

    await service_manager.stop(service)
    assert service.state == ServiceState.STOPPED
    assert (await fresh_manager(podman_env).get(service.id)).state == ServiceState.STOPPED
    await service_manager.restart(service)
    assert service.state == ServiceState.READY
    assert "Paris" in (await stream_capital(service))[0]
    await service_manager.delete(service)
    assert not podman_client.containers.exists(service.container_id)


async def test_follow_logs_streams_new_lines(
    service_manager: ServiceManager, base_image: str, smollm2_model: Path
) -> None:
    script = "for i in 1 2 3; do echo podlab-line-$i; sleep 0.3; done"
    service = await service_manager.create(
        ServeRequest(
            smollm2_model,
            options=cheap_options(base_image, "sh", "-c", script),
            server_kind="llama-cpp-python",
        )
    )
    await service_manager.start(service, wait=False)
    lines = []
    async with asyncio.timeout(30):
        async for line in service_manager.logs(service, follow=True):
            lines.append(line)
    assert lines == ["podlab-line-1", "podlab-line-2", "podlab-line-3"]
    listed = {s.id: s for s in await service_manager.list_services()}
    assert listed[service.id] is service and service.state == ServiceState.STOPPED  # exit 0


async def test_root_in_podlabs_spec_has_no_capabilities(
    service_manager: ServiceManager, base_image: str, smollm2_model: Path, podman_client: Any
) -> None:
    """Podlab's own spec, but as user 0: the kernel's view from inside is what counts."""
    script = "id -u; grep -E '^Cap(Eff|Bnd):' /proc/self/status; grep NoNewPrivs /proc/self/status"
    service = await service_manager.create(
        ServeRequest(
            smollm2_model, options=cheap_options(base_image), server_kind="llama-cpp-python"
        )
    )
    assert service.spec is not None and service.spec.cap_drop == ["ALL"]
    as_root = dataclasses.replace(
        service.spec, name=None, user="0", ports=[], entrypoint=["sh", "-c"], command=[script]
    )
    container = podman_client.containers.create(**as_root.to_podman_kwargs())
    try:
        container.start()
        assert container.wait(timeout=30) == 0
        lines = b"".join(container.logs()).decode().split()
    finally:
        container.remove(force=True)
    assert lines == ["0", "CapEff:", "0" * 16, "CapBnd:", "0" * 16, "NoNewPrivs:", "1"]


@pytest.fixture
def test_cdi_spec() -> Iterator[str]:
    """A CDI spec of kind nvidia.com/gpu whose device "all" only sets an env var."""
    folder = Path("/etc/cdi")
    created_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"podlab-test-{uuid.uuid4().hex[:8]}.json"
    spec = {
        "cdiVersion": "0.5.0",
        "kind": "nvidia.com/gpu",
        "devices": [{"name": "all", "containerEdits": {"env": ["PODLAB_CDI_PROOF=1"]}}],
    }
    path.write_text(json.dumps(spec))
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)
        if created_folder:
            with contextlib.suppress(OSError):
                folder.rmdir()


async def test_nvidia_cdi_passthrough_reaches_the_container(
    service_manager: ServiceManager,
    base_image: str,
    smollm2_model: Path,
    test_cdi_spec: str,
    podman_client: Any,
) -> None:
    files, devices, diagnoses = read_cdi_specs(HostProbe())
    assert any(f.path == test_cdi_spec for f in files), diagnoses
    report = GpuReport(gpus=[GpuInfo("nvidia", 0, "Fake NVIDIA GPU")], cdi_devices=devices)
    plan = plan_passthrough(report, "auto")
    assert plan.diagnosis.level == "ok", plan.diagnosis.message
    assert plan.passthrough.devices == ["nvidia.com/gpu=all"]
    service = await service_manager.create(
        ServeRequest(
            smollm2_model,
            options=cheap_options(
                base_image, "sh", "-c", "echo PODLAB_CDI_PROOF=$PODLAB_CDI_PROOF"
            ),
            server_kind="llama-cpp-python",
            plan=plan,
        )
    )
    assert service.spec is not None and service.spec.devices == ["nvidia.com/gpu=all"]
    assert service.gpu_vendor == "nvidia"
    await service_manager.start(service, wait=False)
    container = podman_client.containers.get(service.container_id)
    assert container.wait(timeout=30) == 0
    lines = [line async for line in service_manager.logs(service)]
    assert lines == ["PODLAB_CDI_PROOF=1"]
    await service_manager.delete(service)


async def test_gpu_present_but_not_passable_refuses_to_fall_back_silently(
    service_manager: ServiceManager, base_image: str, smollm2_model: Path
) -> None:
    report = GpuReport(gpus=[GpuInfo("nvidia", 0, "NVIDIA H100")])  # no CDI spec
    plan = plan_passthrough(report, "auto")
    with pytest.raises(PodlabError, match="CDI") as caught:
        await service_manager.create(
            ServeRequest(smollm2_model, options=cheap_options(base_image), plan=plan)
        )
    assert "--gpu none" in caught.value.hint
    request = ServeRequest(
        smollm2_model,
        options=cheap_options(base_image),
        plan=plan,
        allow_cpu=True,
        server_kind="llama-cpp-python",
    )
    service = await service_manager.create(request)
    assert service.gpu_vendor == "none" and service.spec is not None
    assert service.spec.devices == []


async def test_a_crashing_server_shows_its_log_tail(
    service_manager: ServiceManager, model_server_image: str, corrupt_gguf: Path
) -> None:
    with pytest.raises(PodlabError, match="did not start: the server exited with code") as caught:
        await service_manager.serve(
            ServeRequest(corrupt_gguf, options=ServiceOptions(image=model_server_image))
        )
    assert "Failed to load model from file: /models/corrupt.gguf" in caught.value.hint
    (service,) = service_manager.known()
    assert service.state == ServiceState.FAILED
    assert service.error.startswith(service.name)


async def test_a_taken_port_is_avoided(
    service_manager: ServiceManager, base_image: str, smollm2_model: Path
) -> None:
    base = service_manager.port_base
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", base))
        taken.listen()
        first = await service_manager.create(
            ServeRequest(
                smollm2_model, options=cheap_options(base_image), server_kind="llama-cpp-python"
            )
        )
        assert first.port != base
        second = await service_manager.create(
            ServeRequest(
                smollm2_model, options=cheap_options(base_image), server_kind="llama-cpp-python"
            )
        )
        assert second.port not in (base, first.port)  # a stopped service keeps its port
        # The reservation survives an app restart: the next manager reads it from the labels.
        restarted = ServiceManager(service_manager.engine, settings=Settings(), port_base=base)
        third = await restarted.create(
            ServeRequest(
                smollm2_model, options=cheap_options(base_image), server_kind="llama-cpp-python"
            )
        )
        assert third.port not in (base, first.port, second.port)
        await restarted.delete(third)
        with pytest.raises(PodlabError, match=f"port {base} on 127.0.0.1 is already in use"):
            await service_manager.create(
                ServeRequest(
                    smollm2_model,
                    options=ServiceOptions(image=base_image, port=base),
                    server_kind="llama-cpp-python",
                )
            )


def _volumes(client: Any) -> set[str]:
    return {v.name for v in client.volumes.list()}


@pytest.mark.timeout(600)
async def test_fifty_cycles_leave_nothing_behind(
    service_manager: ServiceManager, base_image: str, smollm2_model: Path, podman_client: Any
) -> None:
    """50 x create/start/stop/delete through ServiceManager and the model-server spec path,
    with `sleep infinity` from the base image as the server (a model server would make this
    test take many minutes without testing anything more of Podlab's code)."""
    volumes_before = _volumes(podman_client)
    ids: set[str] = set()
    containers: set[str] = set()
    started = time.monotonic()
    for _ in range(50):
        service = await service_manager.create(
            ServeRequest(
                smollm2_model, options=cheap_options(base_image), server_kind="llama-cpp-python"
            )
        )
        ids.add(service.id)
        containers.add(str(service.container_id))
        await service_manager.start(service, wait=False)
        state = await service_manager.engine.container_state(str(service.container_id))
        assert state is not None and state["Running"]
        await service_manager.stop(service, grace=5)
        await service_manager.delete(service)
    print(f"50 cycles in {time.monotonic() - started:.1f} s")
    assert len(ids) == len(containers) == 50
    # Container storage is shared with other sessions: look for what these cycles made.
    leftovers = [c for c in containers if podman_client.containers.exists(c)]
    assert leftovers == []
    for service_id in ids:
        label = f"podlab.service.id={service_id}"
        assert podman_client.containers.list(all=True, filters={"label": label}) == []
        assert podman_client.pods.list(filters={"label": label}) == []
    assert _volumes(podman_client) <= volumes_before  # no anonymous volume left
    assert service_manager.known() == []
    assert not ids & {s.id for s in await service_manager.list_services()}


async def test_rediscovery_by_labels_and_foreign_containers_untouched(
    service_manager: ServiceManager,
    base_image: str,
    smollm2_model: Path,
    podman_client: Any,
    podman_env: harness.PodmanService,
) -> None:
    foreign = podman_client.containers.run(
        base_image, ["sleep", "infinity"], labels={"app": "not-podlab"}, detach=True, init=True
    )
    half = podman_client.containers.run(  # claims to be managed but has no service id
        base_image, ["sleep", "infinity"], labels={LABEL_MANAGED: "true"}, detach=True, init=True
    )
    try:
        ours = await service_manager.create(
            ServeRequest(
                smollm2_model, options=cheap_options(base_image), server_kind="llama-cpp-python"
            )
        )
        await service_manager.start(ours, wait=False)
        restarted = fresh_manager(podman_env)
        listed = {s.id: s for s in await restarted.list_services()}
        # Other test sessions may run Podlab containers of their own at the same time.
        assert ours.id in listed
        assert not {foreign.id, half.id} & {s.container_id for s in listed.values()}
        found = listed[ours.id]
        assert found.state == ServiceState.STARTING  # running, but sleep answers no HTTP
        assert found.port == ours.port and found.model_ref == ours.model_ref
        assert found.container_id == ours.container_id
        for ref in (foreign.id, foreign.name, half.id[:12], half.name):
            with pytest.raises(PodlabError, match="no Podlab service"):
                await restarted.get(ref)
        await restarted.delete(found.id)
        assert not podman_client.containers.exists(ours.container_id)
        for other in (foreign, half):
            other.reload()
            assert other.status == "running"
    finally:
        foreign.remove(force=True)
        half.remove(force=True)


def test_serve_dry_run_prints_the_exact_create_kwargs(
    podman_env: harness.PodmanService,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    smollm2_model: Path,
    podman_client: Any,
) -> None:
    import podlab.cli as cli

    with_serve = tuple(dict.fromkeys((*cli.COMMAND_MODULES, "serve")))
    monkeypatch.setattr(cli, "COMMAND_MODULES", with_serve)
    args = ["serve", str(smollm2_model), "--engine", "podman", "--gpu", "none", "--ctx", "2048"]
    code = cli.main([*args, "--dry-run", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    kwargs = json.loads(out)
    ((host_ip, host_port),) = kwargs["ports"].values()
    assert list(kwargs["ports"]) == ["8000/tcp"] and host_ip == "127.0.0.1" and host_port > 0
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["no_new_privileges"] is True
    assert kwargs["init"] is True
    assert kwargs["mounts"][0]["read_only"] is True
    assert kwargs["environment"]["CTX_SIZE"] == "2048"
    assert kwargs["entrypoint"] == ["llama-server"]
    assert kwargs["image"].startswith("quay.io/ramalama/ramalama-llama-server@sha256:")
    assert kwargs["labels"][LABEL_MANAGED] == "true"
    label = f"{LABEL_SERVICE_ID}={kwargs['labels'][LABEL_SERVICE_ID]}"
    assert podman_client.containers.list(all=True, filters={"label": label}) == []


def test_services_cli_round_trip(
    tier_manager: ServiceManager,
    serving_tier: ServingTier,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI through CONTAINER_HOST (set by tier_manager) on both Podman tiers; `--gpu none`
    so that it holds on a GPU host too (GPU planning has tests of its own)."""
    import podlab.cli as cli

    with_serve = tuple(dict.fromkeys((*cli.COMMAND_MODULES, "serve")))
    monkeypatch.setattr(cli, "COMMAND_MODULES", with_serve)
    served: dict[str, Any] = {}
    try:
        port = str(harness.free_port())  # not 35000: other sessions may serve there now
        args = ["serve", str(serving_tier.model), "--image", serving_tier.image, "--port", port]
        code = cli.main([*args, "--gpu", "none", "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        served = json.loads(captured.out)
        assert code == 0 and served["state"] == "ready" and served["device"] == "CPU"
        assert set(served["snippets"]) == {"curl", "python-openai", "python-httpx", "javascript"}
        # The key Podlab made for the service is found by the endpoint alone (no extra step).
        key = service_key(served["api_url"])
        assert key and "api_key" not in served  # shown in the client code only:
        assert f"Authorization: Bearer {key}" in served["snippets"]["curl"]
        response = httpx.post(
            f"{served['api_url']}/chat/completions", json={**CHAT, "model": served["model"]},
            headers=auth_headers(key), timeout=60,
        )  # fmt: skip
        assert "Paris" in response.json()["choices"][0]["message"]["content"]
        assert cli.main(["services", "list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert served["id"] in [s["id"] for s in listed]
        assert cli.main(["services", "logs", served["id"][:4], "--tail", "5"]) == 0
        assert "HTTP/1.1" in capsys.readouterr().out
        assert cli.main(["services", "stop", served["id"]]) == 0
        assert cli.main(["services", "rm", served["id"]]) == 0
        capsys.readouterr()
        assert cli.main(["services", "rm", served["id"]]) == 1
        assert "no Podlab service" in capsys.readouterr().err
    finally:
        if served:
            remove_services(serving_tier.client, {served["id"]})


async def test_services_start_without_catatonit_and_doctor_says_how_to_get_it(
    service_manager: ServiceManager, base_image: str, smollm2_model: Path, podman_client: Any
) -> None:
    """Debian installs catatonit only as a recommendation of podman: where it is missing,
    `--init` would fail every start, so services start without an init process instead."""
    engine = service_manager.engine
    assert (await engine.connect()).has_init is True  # this machine has it (setup installs it)
    engine.init_paths = ("/nonexistent/podman/catatonit",)  # as on a machine without it
    assert (await engine.connect()).has_init is False
    progress: list[str] = []
    service_manager.subscribe(lambda event: progress.append(event.detail))
    service = await service_manager.create(
        ServeRequest(
            smollm2_model,
            options=cheap_options(base_image, "sh", "-c", "echo started; sleep 30"),
            server_kind="llama-cpp-python",
        )
    )
    await service_manager.start(service, wait=False)
    attrs = podman_client.containers.get(service.container_id).attrs
    assert service.spec is not None and service.spec.init is False
    assert "Init" not in attrs["HostConfig"]  # Podman reports Init only when it is on
    assert attrs["State"]["Running"] is True
    assert any("catatonit is missing" in line and "apt-get install catatonit" in line
               for line in progress)  # fmt: skip
    await service_manager.delete(service)


async def test_a_model_only_its_owner_can_read_is_refused_with_the_fix(
    service_manager: ServiceManager,
    model_server_image: str,
    smollm2_model: Path,
    tmp_path: Path,
    podman_client: Any,
) -> None:
    """Podlab's image runs its server as user 1001, which cannot read a bind-mounted file of
    mode 0600: before, the container exited with code 2 and no word why. Now nothing is
    created and the error names the file and the chmod that mends it."""
    private = tmp_path / "private model.gguf"
    shutil.copyfile(smollm2_model, private)
    private.chmod(0o600)
    before = {c.id for c in podman_client.containers.list(all=True)}
    request = ServeRequest(private, options=ServiceOptions(image=model_server_image, ctx_size=2048))
    with pytest.raises(PodlabError) as refused:
        await service_manager.serve(request)
    assert f"{private} can be read by its owner only (mode 0600)" in refused.value.message
    assert "user (1001)" in refused.value.message
    assert refused.value.hint is not None
    assert f"chmod a+r '{private}'" in refused.value.hint
    assert {c.id for c in podman_client.containers.list(all=True)} == before
    private.chmod(0o644)  # the fix the hint gives is enough
    service = await service_manager.serve(request)
    assert service.state == ServiceState.READY
    await service_manager.delete(service)
