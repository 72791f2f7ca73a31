"""Service start: Podlab's `serve` against `podman run` + a curl loop, to the first streamed token.

Both sides run the same image (Podlab's llama-cpp-python server), the same model (SmolLM2 135M
Q4_1), the same container flags and the same request, alternating, in one run:

* Podlab: `ServiceManager.serve()` (Podman engine; model resolution, GPU plan, port choice,
  create + start through podman-py, readiness polling), then a streamed chat completion with
  httpx until the first content token.
* Baseline: a shell script a user would write: `podman run -d ...` (the same flags, printed by
  `ContainerSpec.podman_run_args()`), `until curl -sf .../v1/models; do sleep 0.05; done`, then
  `curl -N` streaming the same request until the first content token.

Prints each round, the medians and the ratio Podlab / baseline (target <= 1.1).

    python bench/service_start.py [--rounds 3]

It uses CONTAINER_HOST when set, else starts a Podman service of its own (with the tests'
containers.conf, which these sandboxed machines need); it builds the image when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
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

BASELINE_SCRIPT = r"""
set -eu
podman run "$@" >/dev/null
until curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; do sleep 0.05; done
curl -sN "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' \
  -d "$BODY" | { grep -m1 -qE '"content": ?"[^"]'; date +%s%N > "$STAMP"; }
"""


async def first_token(api_url: str, model: str) -> str:
    import httpx

    body = {**PROMPT, "model": model}
    async with (
        httpx.AsyncClient(timeout=60, verify=False) as client,  # plain HTTP: no SSL context
        client.stream("POST", f"{api_url}/chat/completions", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content"):
                return str(delta["content"])
    raise RuntimeError("the stream ended without a token")


async def podlab_round(manager: Any, model: Path, image: str) -> float:
    from podlab.core.serving.container_spec import ServiceOptions
    from podlab.core.serving.planning import ServeRequest

    start = time.perf_counter()
    service = await manager.serve(
        ServeRequest(model, engine="podman", options=ServiceOptions(image=image))
    )
    await first_token(service.api_url, service.model_ref)
    elapsed = time.perf_counter() - start
    await manager.delete(service)
    return elapsed


async def baseline_round(manager: Any, model: Path, image: str, env: dict[str, str]) -> float:
    """The same container flags as Podlab's, run by `podman run` from a shell script."""
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
    with tempfile.TemporaryDirectory() as tmp:
        stamp = Path(tmp) / "stamp"
        script_env = {
            **env,
            "PORT": str(port),
            "BODY": json.dumps({**PROMPT, "model": prepared.model.ref}),
            "STAMP": str(stamp),
        }
        start_ns = time.time_ns()
        await run_checked(
            ["bash", "-c", BASELINE_SCRIPT, "bench", *spec.podman_run_args()], script_env
        )
        elapsed = (int(stamp.read_text()) - start_ns) / 1e9
    await run_checked(["podman", "rm", "-f", spec.name], env)
    return elapsed


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


async def run(rounds: int, url: str, env: dict[str, str]) -> None:
    from tests import harness

    from podlab.core.serving.engine import Engine
    from podlab.core.serving.services import ServiceManager
    from podlab.core.settings import Settings

    model = harness.smollm2_path()
    image = await ensure_image(url)
    manager = ServiceManager(Engine(url=url), settings=Settings())
    # One untimed round each: page cache, image layers, Python imports.
    await podlab_round(manager, model, image)
    await baseline_round(manager, model, image, env)
    podlab: list[float] = []
    baseline: list[float] = []
    for number in range(1, rounds + 1):
        podlab.append(await podlab_round(manager, model, image))
        baseline.append(await baseline_round(manager, model, image, env))
        print(f"round {number}: podlab {podlab[-1]:.3f} s   podman run + curl {baseline[-1]:.3f} s")
    p, b = statistics.median(podlab), statistics.median(baseline)
    print(f"serve -> first token, {rounds} rounds (median / best):")
    print(f"  podlab ServiceManager.serve : {p:.3f} s / {min(podlab):.3f} s")
    print(f"  podman run + curl loop      : {b:.3f} s / {min(baseline):.3f} s")
    print(
        f"  ratio podlab / baseline     : {p / b:.2f} / {min(podlab) / min(baseline):.2f}"
        " (target <= 1.1)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests import harness

    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="podlab-bench-") as tmp:
        if env.get("CONTAINER_HOST"):
            asyncio.run(run(args.rounds, env["CONTAINER_HOST"], env))
            return 0
        with harness.podman_service(Path(tmp)) as service:
            env = service.env()
            os.environ["CONTAINERS_CONF"] = env["CONTAINERS_CONF"]
            harness.ensure_base_image(service.containers_conf)
            asyncio.run(run(args.rounds, service.url, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
