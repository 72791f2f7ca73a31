"""The recipe runner end to end on real Podman: images built FROM the local Debian base, one pod
per run, SmolLM2 behind Podlab's model server, the chatbot page driven in headless Chromium.

Each runner call uses a new Engine and RecipeRunner, so nothing is carried in memory between
calls: what a call knows about earlier runs it found through Podman's labels.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from podlab.core.errors import PodlabError
from podlab.core.recipes.catalog import load_recipe
from podlab.core.recipes.runner import (
    LABEL_RECIPE,
    LABEL_RUN,
    RecipeRun,
    RecipeRunner,
    RunEvent,
    RunRequest,
    RunState,
)
from podlab.core.serving.engine import Engine
from podlab.core.serving.gpu.host import HostProbe
from tests import harness, recipe_harness
from tests.integration.test_recipe_apps import ask_chatbot

RECIPES = recipe_harness.RECIPES
T = TypeVar("T")


class Runners:
    """Makes a fresh Engine and RecipeRunner for every call, recording the events."""

    def __init__(self, url: str, wheelhouse: Path, probe: HostProbe) -> None:
        self.url = url
        self.wheelhouse = wheelhouse
        self.probe = probe
        self.port_base = harness.free_port()
        self.events: list[RunEvent] = []
        self.run_ids: set[str] = set()
        """Runs started here: removed after the test whatever it asserted."""

    def call(self, action: Callable[[RecipeRunner], Awaitable[T]]) -> T:
        async def main() -> T:
            engine = Engine(url=self.url)
            runner = RecipeRunner(
                engine,
                gpu_probe=self.probe,
                wheelhouse=self.wheelhouse,
                use_host_ca=True,
                pull="never",
                port_base=self.port_base,
                ready_timeout=240,
            )
            runner.subscribe(self.events.append)
            try:
                return await action(runner)
            finally:
                await engine.aclose()

        # In a thread of its own: Playwright's sync API keeps a loop running on this one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, main()).result()

    def run(self, request: RunRequest) -> tuple[RecipeRun, list[RunEvent]]:
        self.events = []
        run = self.call(lambda runner: runner.run(request))
        self.run_ids.add(run.id)
        return run, list(self.events)


@pytest.fixture
def runners(
    podman_env: harness.PodmanService,
    base_image: str,
    model_server_image: str,
    wheelhouse: Path,
    gpu_less_host: HostProbe,
    podman_client: Any,
) -> Iterator[Runners]:
    made = Runners(podman_env.url, wheelhouse, gpu_less_host)
    yield made
    for run_id in made.run_ids:
        for pod in podman_client.pods.list(filters={"label": f"{LABEL_RUN}={run_id}"}):
            pod.remove(force=True)


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with recipe_harness.chromium_page() as browser_page:
        yield browser_page


def labelled(client: Any, label: str) -> tuple[list[Any], list[Any]]:
    pods = client.pods.list(filters={"label": label})
    containers = client.containers.list(all=True, filters={"label": label})
    return pods, containers


def test_chatbot_runs_in_a_pod_answers_in_the_browser_and_starts_again_without_building(
    runners: Runners, smollm2_model: Path, page: Any, podman_client: Any
) -> None:
    entry = load_recipe(RECIPES / "chatbot")
    request = RunRequest(entry, smollm2_model, gpu="none")

    first, events = runners.run(request)
    assert first.state is RunState.RUNNING
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", first.app_url), first.app_url
    states = [e.text for e in events if e.kind == "state"]
    assert states == ["building", "starting", "running"], states
    ready = {e.container for e in events if e.kind == "ready"}
    assert ready == {"llamacpp-server", "chatbot-app"}

    # The pod publishes every port on 127.0.0.1 only; the containers drop every capability.
    pod = podman_client.pods.get(first.pod)
    bindings = pod.attrs["InfraConfig"]["PortBindings"]
    assert {b["HostIp"] for values in bindings.values() for b in values} == {"127.0.0.1"}
    for container in podman_client.containers.list(filters={"label": f"{LABEL_RUN}={first.id}"}):
        config = container.inspect()
        if config.get("IsInfra"):
            continue  # the pod's pause process, which holds the published ports
        assert config["HostConfig"]["CapDrop"], config["Name"]
        assert "no-new-privileges" in " ".join(config["HostConfig"]["SecurityOpt"] or [])
        if "llamacpp" in config["Name"]:
            model_mounts = [m for m in config["Mounts"] if m["Destination"].startswith("/models")]
            assert model_mounts and not model_mounts[0]["RW"]

    # The app's page streams an answer from the model service inside the pod (key included).
    page.goto(first.app_url)
    _answer, seen = ask_chatbot(
        page, "What is the capital of France? Answer in one word.", lambda: ""
    )
    assert len(seen) >= 2, seen

    # Unchanged recipe: the second start builds nothing and reuses every image.
    second, events = runners.run(request)
    assert [e for e in events if e.kind == "build"] == []
    assert {e.container for e in events if e.kind == "reuse"} == {"llamacpp-server", "chatbot-app"}
    assert second.app_url != first.app_url

    # A new runner with nothing in memory finds both runs by their labels.
    listed = {run.id: run for run in runners.call(lambda runner: runner.runs())}
    assert {first.id, second.id} <= set(listed)
    assert listed[first.id].app_url == first.app_url
    assert listed[first.id].state is RunState.RUNNING
    assert listed[first.id].model == first.model
    # What an export of the running application needs: where its model ran, no embedding.
    assert (listed[first.id].gpu, listed[first.id].embedding_model) == ("none", "")

    stopped = runners.call(lambda runner: runner.stop(first.id))
    assert stopped.state is RunState.STOPPED
    for run in (first, second):
        runners.call(lambda runner, run_id=run.id: runner.remove(run_id))
        pods, containers = labelled(podman_client, f"{LABEL_RUN}={run.id}")
        assert pods == [] and containers == []
    remaining = {run.id for run in runners.call(lambda runner: runner.runs())}
    assert not {first.id, second.id} & remaining


def test_a_failing_build_shows_its_log_and_leaves_nothing_behind(
    runners: Runners, smollm2_model: Path, podman_client: Any, tmp_path: Path
) -> None:
    recipe_id = f"broken-{secrets.token_hex(3)}"
    root = tmp_path / "recipes"
    shutil.copytree(RECIPES / "chatbot", root / "chatbot", ignore=_no_caches)
    shutil.copytree(RECIPES / "model_servers", root / "model_servers", ignore=_no_caches)
    entry_file = root / "chatbot" / "podlab-recipe.yaml"
    entry_file.write_text(entry_file.read_text().replace("id: chatbot", f"id: {recipe_id}"))
    containerfile = root / "chatbot" / "app" / "Containerfile"
    lines = containerfile.read_text().splitlines()
    base = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    lines.insert(base + 1, "RUN echo podlab-build-marker && false")
    containerfile.write_text("\n".join(lines) + "\n")
    entry = load_recipe(root / "chatbot")
    assert entry.id == recipe_id

    with pytest.raises(PodlabError) as failure:
        runners.run(RunRequest(entry, smollm2_model, gpu="none"))
    error = failure.value
    assert "false" in error.message
    assert "podlab-build-marker" in error.hint  # the failing log's tail
    assert [e.text for e in runners.events if e.kind == "state"][-1] == "failed"
    assert any("podlab-build-marker" in e.text for e in runners.events if e.kind == "log")
    pods, containers = labelled(podman_client, f"{LABEL_RECIPE}={recipe_id}")
    assert pods == [] and containers == []
    tags = [tag for image in podman_client.images.list() for tag in image.tags]
    assert not [tag for tag in tags if f"recipe-{recipe_id}" in tag], tags


def _no_caches(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if name in ("__pycache__", "wheels")]
