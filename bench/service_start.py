"""Service start: Podlab's `serve` against a hand-scripted start, to the first streamed token.

Both sides run the same image (Podlab's llama-cpp-python server), the same model (SmolLM2 135M
Q4_1), the same container and the same request, in one run, alternating which goes first:

* Podlab: `ServiceManager.serve()` (Podman engine; model resolution, GPU plan, port choice,
  create + start through podman-py, readiness polling), then a streamed chat completion until
  the first content token.
* Baseline: what a user would script with the same warm clients, so that only Podlab's own
  work is compared (no process start-up of `podman` or `curl` on the baseline's side): the
  container Podlab would create (`ContainerSpec.to_podman_kwargs()` with the same API key,
  computed before the clock starts) created and started with an already connected podman-py
  client, `GET /v1/models` polled every 50 ms, then the same request streamed.

Both sides stream through one httpx client that is already warm. Prints each round, the
medians and the ratio Podlab / baseline (target <= 1.1); exits 1 when the median misses it and
writes the figures to a JSON file.

    python bench/service_start.py [--rounds 3] [--json PATH]

It uses CONTAINER_HOST when set, else starts a Podman service of its own (with the tests'
containers.conf, which these sandboxed machines need); it builds the image when missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from against_hand import main, summary

TARGET = 1.1
POLL_INTERVAL = 0.05
PROMPT = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0,
    "max_tokens": 16,
    "seed": 1,
    "stream": True,
}


def key_headers(api_key: str | None) -> dict[str, str]:
    """Services require their own bearer key by default (setting require_api_key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def first_token(
    http: httpx.AsyncClient, api_url: str, model: str, api_key: str | None
) -> str:
    body = {**PROMPT, "model": model}
    headers = key_headers(api_key)
    async with http.stream(
        "POST", f"{api_url}/chat/completions", json=body, headers=headers
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content"):
                return str(delta["content"])
    raise RuntimeError("the stream ended without a token")


async def podlab_round(manager: Any, http: httpx.AsyncClient, model: Path, image: str) -> float:
    from podlab.core.serving.container_spec import ServiceOptions
    from podlab.core.serving.planning import ServeRequest

    start = time.perf_counter()
    service = await manager.serve(
        ServeRequest(model, engine="podman", options=ServiceOptions(image=image))
    )
    await first_token(http, service.api_url, service.model_ref, service.api_key)
    elapsed = time.perf_counter() - start
    await manager.delete(service)
    return elapsed


async def baseline_round(
    manager: Any, podman: Any, http: httpx.AsyncClient, model: Path, image: str
) -> float:
    """The same container as Podlab's, started by hand with the same warm clients."""
    from tests import harness

    from podlab.core.serving.container_spec import ServiceOptions
    from podlab.core.serving.planning import ServeRequest

    port = harness.free_port()
    prepared = await manager.prepare(
        ServeRequest(model, engine="podman", options=ServiceOptions(image=image, port=port))
    )
    spec = prepared.spec
    spec.name = f"podlab-bench-baseline-{port}"
    spec.labels = {"podlab.bench": "baseline"}  # not a Podlab service: Podlab never lists it
    from podlab.core.serving.container_spec import API_KEY_SECRET

    # The same key as Podlab's container gets (services require one by default).
    secrets = {API_KEY_SECRET: prepared.api_key} if prepared.api_key else {}
    kwargs = spec.to_podman_kwargs(secrets=secrets)
    api_url = f"http://127.0.0.1:{port}/v1"
    headers = key_headers(prepared.api_key)
    start = time.perf_counter()
    container = await asyncio.to_thread(podman.containers.create, **kwargs)
    try:
        await asyncio.to_thread(container.start)
        while True:
            try:
                models = await http.get(f"{api_url}/models", headers=headers)
                if models.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(POLL_INTERVAL)
        await first_token(http, api_url, prepared.model.ref, prepared.api_key)
        return time.perf_counter() - start
    finally:
        await asyncio.to_thread(container.remove, force=True)


async def run_checked(argv: list[str], env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=subprocess.DEVNULL)
    if await proc.wait() != 0:
        raise RuntimeError(f"{argv[0]} failed with {proc.returncode}")


async def ensure_image(url: str) -> str:
    from podlab.core.serving.backends.podman import build_model_server_image
    from podlab.core.serving.container_spec import PODLAB_SERVER_IMAGE
    from podlab.core.serving.engine import Engine

    engine = Engine(url=url)
    await engine.connect()
    if await engine.image_exists(PODLAB_SERVER_IMAGE):
        return PODLAB_SERVER_IMAGE
    import importlib.metadata

    version = importlib.metadata.version("llama_cpp_python")
    with tempfile.TemporaryDirectory() as wheels:
        requirement = f"llama-cpp-python[server]=={version}"
        pip = [sys.executable, "-m", "pip", "wheel", "-q", requirement, "-w", wheels]
        await run_checked(pip, dict(os.environ))
        print("building", PODLAB_SERVER_IMAGE, "...", file=sys.stderr)
        async for _ in build_model_server_image(engine, wheelhouse=Path(wheels), use_host_ca=True):
            pass
    return PODLAB_SERVER_IMAGE


async def run(rounds: int, url: str) -> dict[str, Any]:
    import podman
    from tests import harness

    from podlab.core.serving.engine import Engine
    from podlab.core.serving.services import ServiceManager
    from podlab.core.settings import Settings

    model = harness.smollm2_path()
    image = await ensure_image(url)
    manager = ServiceManager(Engine(url=url), settings=Settings())
    podlab: list[float] = []
    baseline: list[float] = []
    with podman.PodmanClient(base_url=url) as client:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=1), trust_env=False) as http:
            # One untimed round each: page cache, image layers, imports, warm connections.
            await podlab_round(manager, http, model, image)
            await baseline_round(manager, client, http, model, image)
            for number in range(1, rounds + 1):
                sides = ["podlab", "baseline"] if number % 2 else ["baseline", "podlab"]
                for side in sides:
                    if side == "podlab":
                        podlab.append(await podlab_round(manager, http, model, image))
                    else:
                        baseline.append(await baseline_round(manager, client, http, model, image))
                print(
                    f"round {number} ({sides[0]} first): podlab {podlab[-1]:.3f} s"
                    f"   by hand, same warm clients {baseline[-1]:.3f} s"
                )
    return summary(
        "serve -> first token",
        ("podlab ServiceManager.serve", "by hand (podman-py + polling)"),
        podlab,
        baseline,
        TARGET,
    )


if __name__ == "__main__":
    sys.exit(main("service_start", __doc__.splitlines()[0], run, TARGET))
