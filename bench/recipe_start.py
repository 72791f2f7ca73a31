"""Recipe start: Podlab's RecipeRunner against the same podman calls scripted by hand, from the
start to every container of the chatbot recipe answering HTTP, with its images cached.

Both sides create the very same pod and containers, in one run, alternating which goes first:

* Podlab: `RecipeRunner.run()` of the chatbot recipe with SmolLM2 135M (model resolution, GPU
  plan, image reuse checks, free loopback ports, pod and containers through podman-py, then
  readiness: the model service's `/v1/models` and the app's page).
* Baseline: what a user would script with an already connected podman-py client and a warm
  httpx client: the pod create (its ports on 127.0.0.1), the two container creates and the pod
  start that Podlab made in its untimed first round, replayed with their exact arguments (new
  names, new host ports, a label of the bench's own so Podlab never lists them), then the model
  service's `/v1/models` and the app's page polled every 50 ms.

Prints each round, the medians and the ratio Podlab / baseline (target <= 1.15); exits 1 when
the median misses it and writes the figures to a JSON file.

    python bench/recipe_start.py [--rounds 3] [--json PATH]

It uses CONTAINER_HOST when set, else starts a Podman service of its own (with the tests'
containers.conf, which these sandboxed machines need). The first round builds the images when
they are missing (the app's build needs PyPI, with the host's CA bundle).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from typing import Any

import httpx

from against_hand import ROOT, main, summary
from service_start import ensure_image

TARGET = 1.15
POLL_INTERVAL = 0.05
READY_TIMEOUT = 120
BENCH_LABEL = "podlab.bench"


Create = tuple[str, tuple[Any, ...], dict[str, Any]]


def recording_engine(url: str, creates: list[Create]) -> Any:
    """An Engine that keeps the arguments of every pod and container Podlab creates."""
    from podlab.core.serving.engine import Engine

    class RecordingEngine(Engine):
        async def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            if getattr(fn, "__name__", "") == "create":
                creates.append((fn.__qualname__, args, dict(kwargs)))
            return await super().call(fn, *args, **kwargs)

    return RecordingEngine(url=url)


async def podlab_round(runner: Any, request: Any, http: httpx.AsyncClient) -> float:
    start = time.perf_counter()
    run = await runner.run(request)
    elapsed = time.perf_counter() - start
    if (await http.get(run.app_url)).status_code != 200:
        raise RuntimeError(f"the app at {run.app_url} does not answer")
    await runner.remove(run.id)
    return elapsed


class HandScript:
    """Podlab's pod and containers of one run, to be created again by hand."""

    def __init__(self, creates: list[Create]) -> None:
        pods = [(args, kwargs) for name, args, kwargs in creates if name.startswith("Pods")]
        self.pod_name: str = pods[-1][0][0]
        self.pod_kwargs = pods[-1][1]
        self.containers = [
            kwargs for _name, _args, kwargs in creates if kwargs.get("pod") == self.pod_name
        ]
        # Which published port is the model service's: the one whose container runs the model.
        model_ports = {
            int(kwargs["environment"]["PORT"])
            for kwargs in self.containers
            if "MODEL_PATH" in kwargs.get("environment", {})
        }
        self.ready_paths = {
            mapping["container_port"]: "/v1/models"
            if mapping["container_port"] in model_ports
            else "/"
            for mapping in self.pod_kwargs["portmappings"]
        }

    async def round(self, podman: Any, http: httpx.AsyncClient) -> float:
        from tests import harness

        name = f"podlab-bench-recipe-{secrets.token_hex(4)}"
        labels = {BENCH_LABEL: "recipe-start"}
        ports = {inside: harness.free_port() for inside in self.ready_paths}
        portmappings = [
            {**mapping, "host_port": ports[mapping["container_port"]]}
            for mapping in self.pod_kwargs["portmappings"]
        ]
        containers = [
            {**kwargs, "name": f"{name}-{index}", "pod": name, "labels": labels}
            for index, kwargs in enumerate(self.containers)
        ]
        start = time.perf_counter()
        pod = await asyncio.to_thread(
            podman.pods.create, name, labels=labels, portmappings=portmappings
        )
        try:
            for kwargs in containers:
                await asyncio.to_thread(podman.containers.create, **kwargs)
            await asyncio.to_thread(pod.start)
            for inside, path in self.ready_paths.items():
                url = f"http://127.0.0.1:{ports[inside]}{path}"
                await poll_until_it_answers(http, url)
            return time.perf_counter() - start
        finally:
            await asyncio.to_thread(pod.remove, force=True)


async def poll_until_it_answers(http: httpx.AsyncClient, url: str) -> None:
    """Any HTTP answer but a server error (the model service's 401 says it is up, too)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if (await http.get(url)).status_code < 500:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(POLL_INTERVAL)
    raise RuntimeError(f"{url} did not answer within {READY_TIMEOUT} s")


async def run(rounds: int, url: str) -> dict[str, Any]:
    import podman
    from tests import harness

    from podlab.core.recipes.catalog import load_recipe
    from podlab.core.recipes.runner import RecipeRunner, RunRequest

    await ensure_image(url)
    creates: list[Create] = []
    engine = recording_engine(url, creates)
    runner = RecipeRunner(engine, use_host_ca=True, port_base=harness.free_port())
    request = RunRequest(load_recipe(ROOT / "recipes" / "chatbot"), harness.smollm2_path())
    podlab: list[float] = []
    baseline: list[float] = []
    with podman.PodmanClient(base_url=url) as client:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, connect=1), trust_env=False) as http:
            # One untimed round each: images built or found, page cache, imports, connections;
            # Podlab's round also records the calls the baseline replays.
            print("first round (untimed; builds the images when missing) ...", file=sys.stderr)
            await podlab_round(runner, request, http)
            script = HandScript(creates)
            await script.round(client, http)
            for number in range(1, rounds + 1):
                sides = ["podlab", "baseline"] if number % 2 else ["baseline", "podlab"]
                for side in sides:
                    if side == "podlab":
                        podlab.append(await podlab_round(runner, request, http))
                    else:
                        baseline.append(await script.round(client, http))
                print(
                    f"round {number} ({sides[0]} first): podlab {podlab[-1]:.3f} s"
                    f"   by hand, same podman calls {baseline[-1]:.3f} s"
                )
    await engine.aclose()
    return summary(
        "chatbot recipe start -> every container answers",
        ("podlab RecipeRunner.run", "by hand (podman-py, polling)"),
        podlab,
        baseline,
        TARGET,
    )


if __name__ == "__main__":
    sys.exit(main("recipe_start", __doc__.splitlines()[0], run, TARGET))
