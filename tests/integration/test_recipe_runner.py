"""The recipe runner end to end on real Podman: images built FROM the local Debian base, one pod
per run, SmolLM2 behind Podlab's model server, the chatbot page driven in headless Chromium.

Each runner call uses a new Engine and RecipeRunner, so nothing is carried in memory between
calls: what a call knows about earlier runs it found through Podman's labels.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from podlab.core.errors import PodlabError
from podlab.core.recipes.catalog import RecipeEntry, load_recipe
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
from podlab.core.settings import Settings
from tests import harness, recipe_harness
from tests.integration.test_recipe_apps import (
    FACT,
    FILLER,
    ask_chatbot,
    long_text,
    send_chat,
    wait_until,
)

RECIPES = recipe_harness.RECIPES
REPO = recipe_harness.REPO
T = TypeVar("T")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


class Runners:
    """Makes a fresh Engine and RecipeRunner for every call, recording the events."""

    def __init__(self, url: str, wheelhouse: Path, probe: HostProbe) -> None:
        self.url = url
        self.settings: Settings | None = None
        """None: the defaults; a test may set its own (a small context, say)."""
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
                self.settings,
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


def copied_chatbot(tmp_path: Path, recipe_id: str, steps: list[str]) -> RecipeEntry:
    """The chatbot recipe under another id, with these steps right after its app's FROM."""
    root = tmp_path / "recipes"
    shutil.copytree(RECIPES / "chatbot", root / "chatbot", ignore=_no_caches)
    shutil.copytree(RECIPES / "model_servers", root / "model_servers", ignore=_no_caches)
    entry_file = root / "chatbot" / "podlab-recipe.yaml"
    entry_file.write_text(entry_file.read_text().replace("id: chatbot", f"id: {recipe_id}"))
    containerfile = root / "chatbot" / "app" / "Containerfile"
    lines = containerfile.read_text().splitlines()
    base = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    lines[base + 1 : base + 1] = steps
    containerfile.write_text("\n".join(lines) + "\n")
    entry = load_recipe(root / "chatbot")
    assert entry.id == recipe_id
    return entry


def images_with_step(client: Any, marker: str) -> list[str]:
    """Every image, tagged or a bare layer, whose history has a step that mentions marker."""
    found = []
    for image in client.images.list(all=True):
        steps = " ".join(str(layer.get("CreatedBy", "")) for layer in image.history())
        if marker in steps:
            found.append(f"{image.id[:12]} {image.tags}")
    return found


def test_a_failing_build_shows_its_log_and_leaves_nothing_behind(
    runners: Runners, smollm2_model: Path, podman_client: Any, tmp_path: Path
) -> None:
    recipe_id = f"broken-{secrets.token_hex(3)}"
    layer = f"podlab-layer-{recipe_id}"
    entry = copied_chatbot(
        tmp_path,
        recipe_id,
        [f"RUN echo {layer} > /podlab-layer", "RUN echo podlab-build-marker && false"],
    )

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
    # Nor the layer committed before the failing step.
    assert images_with_step(podman_client, layer) == []


def test_cancel_during_a_build_leaves_no_pod_container_or_image(
    runners: Runners, smollm2_model: Path, podman_client: Any, tmp_path: Path
) -> None:
    recipe_id = f"slow-{secrets.token_hex(3)}"
    layer = f"podlab-layer-{recipe_id}"
    entry = copied_chatbot(
        tmp_path,
        recipe_id,
        [f"RUN echo {layer} > /podlab-layer", "RUN echo podlab-slow-step && sleep 300"],
    )

    async def cancel_in_the_slow_step(runner: RecipeRunner) -> None:
        task = asyncio.create_task(runner.run(RunRequest(entry, smollm2_model, gpu="none")))
        while not any(e.kind == "log" and "podlab-slow-step" in e.text for e in runners.events):
            assert not task.done(), task  # the run must still be building
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    runners.events = []
    started = time.monotonic()
    runners.call(cancel_in_the_slow_step)
    assert time.monotonic() - started < 240  # the cancel did not wait for the sleep
    assert [e.text for e in runners.events if e.kind == "state"] == ["building", "failed"]
    pods, containers = labelled(podman_client, f"{LABEL_RECIPE}={recipe_id}")
    assert pods == [] and containers == []
    tags = [tag for image in podman_client.images.list() for tag in image.tags]
    assert not [tag for tag in tags if f"recipe-{recipe_id}" in tag], tags
    assert images_with_step(podman_client, layer) == []


def test_rag_in_a_pod_answers_from_an_uploaded_document_in_the_browser(
    runners: Runners, smollm2_model: Path, page: Any, podman_client: Any, tmp_path: Path
) -> None:
    entry = load_recipe(RECIPES / "rag")
    embedding = recipe_harness.embedding_model()
    run, events = runners.run(
        RunRequest(entry, smollm2_model, embedding_model=embedding, gpu="none")
    )
    assert run.state is RunState.RUNNING
    ready = {e.container for e in events if e.kind == "ready"}
    assert ready == {"llamacpp-server", "embedding-server", "chromadb-server", "rag-app"}
    # A fact found nowhere else, among unrelated sentences.
    document = tmp_path / "greenhouse-notes.txt"
    document.write_text(" ".join([*FILLER[:4], FACT, *FILLER[4:8]]) + "\n")

    page.goto(run.app_url)
    upload = page.locator("input[type=file]")
    upload.wait_for(state="attached", timeout=60_000)
    upload.set_input_files(str(document))
    indexed = page.get_by_text(re.compile(r"greenhouse-notes\.txt: \d+ passages indexed"))
    indexed.wait_for(timeout=180_000)
    send_chat(page, "What is the access code of the Zephyr-42 greenhouse?")

    def app_log() -> str:
        return runners.call(lambda runner: _log_text(runner, run.id, "rag-app"))

    wait_until(
        lambda: (
            page.get_by_test_id("stChatMessage").count() >= 2
            and "Sources" in page.get_by_test_id("stChatMessage").nth(1).inner_text()
        ),
        300,
        "no answer with sources",
        app_log,
    )
    answer = page.get_by_test_id("stChatMessage").nth(1).inner_text()
    assert "MAGENTA-OTTER-7781" in answer, answer
    assert re.search(r"greenhouse-notes\.txt.{0,5}, passage \d+", answer), answer
    runners.call(lambda runner: runner.remove(run.id))
    pods, containers = labelled(podman_client, f"{LABEL_RUN}={run.id}")
    assert pods == [] and containers == []


# Small, so a text several times the context stays quick to process; not smaller, since every
# chunk costs a summary of up to 256 tokens (the app's default) and fewer chunks cost less.
SUMMARIZER_CONTEXT = 1536


def test_summarizer_in_a_pod_summarizes_a_text_several_times_the_context(
    runners: Runners, smollm2_model: Path, page: Any, tmp_path: Path
) -> None:
    runners.settings = Settings(default_context_size=SUMMARIZER_CONTEXT)
    entry = load_recipe(RECIPES / "summarizer")
    run, _events = runners.run(RunRequest(entry, smollm2_model, gpu="none"))
    model_url = f"http://127.0.0.1:{run.ports['llamacpp-server']}"
    text = long_text(64)
    key = runners.call(lambda runner: _app_env(runner, run, "summarizer-app"))[
        "MODEL_ENDPOINT_BEARER"
    ]
    tokens = httpx.post(
        f"{model_url}/extras/tokenize",
        json={"input": text},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ).json()["tokens"]
    assert len(tokens) > 3 * SUMMARIZER_CONTEXT
    document = tmp_path / "alder-history.txt"
    document.write_text(text)

    def app_log() -> str:
        return runners.call(lambda runner: _log_text(runner, run.id, "summarizer-app"))

    page.goto(run.app_url)
    upload = page.locator("input[type=file]")
    upload.wait_for(state="attached", timeout=60_000)
    upload.set_input_files(str(document))
    page.get_by_text("alder-history.txt").wait_for(timeout=30_000)
    page.get_by_role("button", name="Summarize").click()
    planned = page.get_by_text(re.compile(r"\d+ characters in \d+ chunks"))
    planned.wait_for(timeout=120_000)
    chunks = int(re.search(r"in (\d+) chunks", planned.inner_text()).group(1))  # type: ignore[union-attr]
    assert chunks >= len(tokens) // SUMMARIZER_CONTEXT
    # The app learnt the server's context from the runner: its chunks fit in it (its default
    # of 2048 would make chunks the server refuses).
    budget = int(re.search(r"at most (\d+) tokens", planned.inner_text()).group(1))  # type: ignore[union-attr]
    assert budget < SUMMARIZER_CONTEXT
    processed_counts: set[int] = set()
    summary_box = page.locator(".st-key-summary")
    failed = page.get_by_text("No summary")

    def finished() -> bool:
        time.sleep(0.9)  # a reading a second: Chromium's reads would slow the model on 2 cores
        body = page.locator("body").inner_text()
        processed_counts.add(len(re.findall(r"Chunk \d+ of \d+ processed\.", body)))
        return summary_box.count() > 0 or failed.count() > 0

    wait_until(finished, 900, "no summary", app_log)
    body = page.locator("body").inner_text()
    assert failed.count() == 0, body
    for number in range(1, chunks + 1):
        assert f"Chunk {number} of {chunks} processed." in body
    # Progress showed chunk by chunk while it worked, not only at the end.
    assert any(0 < count < chunks for count in processed_counts), processed_counts
    summary = summary_box.inner_text()
    assert summary.strip()
    assert len(summary) < len(text) / 4


async def _log_text(runner: RecipeRunner, run_id: str, container: str) -> str:
    return "".join([line async for line in runner.logs(run_id, container, tail=60)])


async def _app_env(runner: RecipeRunner, run: RecipeRun, container: str) -> dict[str, str]:
    """The environment Podman gave one container of the run (secrets included)."""
    name = f"{run.pod}-{container}"
    await runner.engine.connect()
    client = runner.engine.client()
    found = await runner.engine.call(client.containers.get, name)
    exec_result = await runner.engine.call(found.exec_run, ["/usr/bin/env"])
    output = exec_result[1].decode()
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def _no_caches(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if name in ("__pycache__", "wheels")]


def test_recipe_start_bench_measures_both_sides(
    runners: Runners, podman_env: harness.PodmanService, podman_client: Any, tmp_path: Path
) -> None:
    """The bench's figures are real measurements of this run, and its exit status says whether
    the median ratio met the target (a busy machine may miss it: then it says so with 1)."""
    results = tmp_path / "recipe_start.json"
    done = subprocess.run(
        [
            sys.executable, str(REPO / "bench" / "recipe_start.py"),
            "--rounds", "1", "--json", str(results),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "CONTAINER_HOST": podman_env.url},
    )  # fmt: skip
    assert results.is_file(), done.stdout + done.stderr
    record = json.loads(results.read_text())
    assert done.returncode == (0 if record["passed"] else 1), done.stderr
    figures = record["figures"]
    assert len(figures["podlab_s"]) == len(figures["baseline_s"]) == 1
    assert all(seconds > 0 for seconds in figures["podlab_s"] + figures["baseline_s"])
    ratio = figures["podlab_s"][0] / figures["baseline_s"][0]
    assert figures["median_ratio"] == pytest.approx(ratio)
    assert f"ratio podlab / baseline     : {ratio:.2f}" in done.stdout, done.stdout
    # Neither side leaves a pod behind.
    assert podman_client.pods.list(filters={"label": "podlab.bench"}) == []
