"""Exports run for real: the exported chatbot (SmolLM2 under a file name with spaces and quotes)
under `podman kube play` unchanged, and under `podman-compose`, each answering with the key and
refusing without it, and leaving nothing behind when taken down as its README says.

Images: the model image is built from the exported `Containerfile.model` with the README's
command; the model server image is the session's (`model_server_image`, built with a wheelhouse
so llama.cpp is not compiled); the app image is built from the exported Containerfile with the
README's command only when the runner has not built it already (same tag: its inputs' hash).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from podlab.core.export import export_recipe, write_export
from podlab.core.export.digests import image_digests
from podlab.core.export.plan import ExportPlan, recipe_plan
from podlab.core.recipes.catalog import load_recipe
from podlab.core.recipes.runner import HOST_CA_CONTEXT_PATH
from podlab.core.serving.engine import HOST_CA_BUNDLE, Engine
from podlab.core.serving.planning import resolve_model
from podlab.core.settings import Settings
from tests import harness, recipe_harness
from tests.integration.test_recipe_apps import ask_chatbot
from tests.unit.test_export import HOSTILE_FILE

pytestmark = pytest.mark.integration

PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"


@dataclass
class Exported:
    folder: Path
    plan: ExportPlan
    env: dict[str, str]
    model_port: int
    app_port: int

    def run(self, *args: str, cwd: Path, input_text: str | None = None) -> str:
        done = subprocess.run(
            args, cwd=cwd, env=self.env, input=input_text, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{shlex.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def podman_lines(self, *args: str) -> list[str]:
        return self.run("podman", *args, cwd=self.folder).split()


def local_podman_env(service: harness.PodmanService) -> dict[str, str]:
    """The podman command on the test service's storage (as a user runs it: local, no
    CONTAINER_HOST)."""
    env = harness.podman_env(service.containers_conf)
    env.pop("CONTAINER_HOST", None)
    return env


@pytest.fixture
def exported_chatbot(
    tmp_path: Path,
    smollm2_model: Path,
    podman_service: harness.PodmanService,
    base_image: str,
    model_server_image: str,
) -> Exported:
    model_file = tmp_path / "models 'dir'" / HOSTILE_FILE
    model_file.parent.mkdir()
    try:
        os.link(smollm2_model, model_file)
    except OSError:
        shutil.copyfile(smollm2_model, model_file)
    settings = Settings()
    model = resolve_model(model_file, settings)
    ports = {8001: harness.free_port(), 8501: harness.free_port()}
    entry = load_recipe(recipe_harness.RECIPES / "chatbot")
    plan = recipe_plan(entry, model, embedding=None, gpu="none", settings=settings,
                       host_ports=ports)  # fmt: skip
    folder = tmp_path / "export"
    write_export(export_recipe(entry, model, settings=settings, host_ports=ports), folder)
    made = Exported(folder, plan, local_podman_env(podman_service), ports[8001], ports[8501])

    # Build the images the README lists (the model image always; the others when missing).
    builds = folder / "containerfile"
    for line in (builds / "README.md").read_text().splitlines():
        words = shlex.split(line) if line.startswith("    podman build") else []
        if not words:
            continue
        tag = words[words.index("-t") + 1]
        is_model = "Containerfile.model" in words
        if not is_model and made.run("podman", "images", "-q", tag, cwd=folder).strip():
            continue
        if not is_model and HOST_CA_BUNDLE.is_file():
            # As the runner does behind a TLS-intercepting proxy: the CA bundle in the context.
            ca = builds / words[-1] / HOST_CA_CONTEXT_PATH
            ca.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HOST_CA_BUNDLE, ca)
        made.run(*words, cwd=builds)
    return made


def wait_for_model(url: str, key: str, timeout: float = 240) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=5)
            if response.status_code == 200:
                return response
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s ({last})")


def check_model_server(made: Exported, key: str) -> None:
    """The exported model server: the model under its own (hostile) name, with the key only."""
    base = f"http://127.0.0.1:{made.model_port}/v1"
    models = wait_for_model(f"{base}/models", key).json()
    assert [m["id"] for m in models["data"]] == [HOSTILE_FILE.removesuffix(".gguf")]
    assert httpx.get(f"{base}/models", timeout=10).status_code == 401
    wrong = httpx.get(f"{base}/models", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    chat = httpx.post(
        f"{base}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
        timeout=120,
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"].strip()


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with recipe_harness.chromium_page() as browser_page:
        yield browser_page


def test_kube_play_runs_the_exported_chatbot_unchanged_and_kube_down_leaves_nothing(
    exported_chatbot: Exported, page: Any
) -> None:
    made = exported_chatbot
    kube = made.folder / "kube"
    name = made.plan.name
    secret = made.plan.secret_name
    key = secrets.token_urlsafe(24)
    # The key as kube/README.md says: a Podman secret holding the Secret's data as JSON.
    readme = (kube / "README.md").read_text()
    assert f"podman secret create {secret} -" in readme and "podman kube play pod.yaml" in readme
    data = json.dumps({"api-key": base64.b64encode(key.encode()).decode()})
    made.run("podman", "secret", "create", secret, "-", cwd=kube, input_text=data)
    played = False
    try:
        made.run("podman", "kube", "play", "pod.yaml", cwd=kube)
        played = True
        check_model_server(made, key)
        # The app's page answers through the model server, the key coming from the Secret.
        page.goto(f"http://127.0.0.1:{made.app_port}")
        _answer, seen = ask_chatbot(page, "What is the capital of France? Answer in one word.",
                                    lambda: "")  # fmt: skip
        assert seen
        # Inside every container: user 1001, no capability, no new privileges.
        for container in ("llamacpp-server", "chatbot-app"):
            status = made.run("podman", "exec", f"{name}-{container}", "cat", "/proc/self/status",
                              cwd=kube)  # fmt: skip
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            assert fields["CapEff"].strip() == "0000000000000000", container
            assert fields["NoNewPrivs"].strip() == "1", container
            assert fields["Uid"].split()[0] == "1001", container
        # The key is nowhere in the exported files, nor in the pod's inspect output as text.
        for path in made.folder.rglob("*"):
            if path.is_file() and path.suffix in (".yaml", ".md", ".container", ".pod", ""):
                assert key not in path.read_text(errors="replace"), path
    finally:
        if played:
            made.run("podman", "kube", "down", "pod.yaml", cwd=kube)
        made.run("podman", "secret", "rm", secret, cwd=kube)
    assert name not in made.podman_lines("pod", "ps", "--format", "{{.Name}}")
    containers = made.podman_lines("ps", "-a", "--format", "{{.Names}}")
    assert not [c for c in containers if c.startswith(f"{name}-")]
    volumes = made.podman_lines("volume", "ls", "--format", "{{.Name}}")
    assert not [v for v in volumes if v.startswith(f"{name}-")]
    assert secret not in made.podman_lines("secret", "ls", "--format", "{{.Name}}")


def test_compose_up_answers_with_the_key_and_down_leaves_nothing(
    exported_chatbot: Exported,
) -> None:
    made = exported_chatbot
    compose = made.folder / "compose"
    key = secrets.token_urlsafe(24)
    env_file = compose / "podlab.env"
    # As compose/README.md says: the key in podlab.env, readable by the user alone.
    old_umask = os.umask(0o077)
    try:
        env_file.write_text(f"PODLAB_API_KEY={key}\n")
    finally:
        os.umask(old_umask)
    assert env_file.stat().st_mode & 0o777 == 0o600
    command = [str(PODMAN_COMPOSE), "--env-file", "podlab.env"]
    project = made.plan.name
    try:
        made.run(*command, "up", "-d", cwd=compose)
        check_model_server(made, key)
        app = httpx.get(f"http://127.0.0.1:{made.app_port}/", timeout=10)
        deadline = time.monotonic() + 120
        while app.status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            app = httpx.get(f"http://127.0.0.1:{made.app_port}/", timeout=10)
        assert app.status_code == 200
        for service in ("llamacpp-server", "chatbot-app"):
            inspect = json.loads(made.run("podman", "inspect", f"{project}_{service}_1",
                                          cwd=compose))[0]  # fmt: skip
            assert inspect["HostConfig"]["CapDrop"], service
            assert "no-new-privileges" in " ".join(inspect["HostConfig"]["SecurityOpt"] or [])
    finally:
        made.run(*command, "down", "-v", cwd=compose)
    label = f"label=io.podman.compose.project={project}"
    assert made.podman_lines("ps", "-a", "--filter", label, "--format", "{{.Names}}") == []
    volumes = made.podman_lines("volume", "ls", "--format", "{{.Name}}")
    assert not [v for v in volumes if v.startswith(f"{project}_")]
    networks = made.podman_lines("network", "ls", "--format", "{{.Name}}")
    assert f"{project}_default" not in networks


def test_image_digests_pin_registry_images_that_podman_holds(
    podman_service: harness.PodmanService, base_image: str, model_server_image: str
) -> None:
    async def lookup() -> dict[str, str]:
        engine = Engine(url=podman_service.url)
        await engine.connect()
        try:
            return await image_digests(
                engine, [base_image, model_server_image, "quay.io/podlab-test/absent:1"]
            )
        finally:
            await engine.aclose()

    # In a thread of its own: the module's Playwright page keeps a loop running on this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        found = pool.submit(asyncio.run, lookup()).result()
    inspected = subprocess.run(
        ["podman", "image", "inspect", base_image, "--format", "{{json .RepoDigests}}"],
        env=local_podman_env(podman_service), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert found == {base_image: json.loads(inspected.stdout)[0]}
    assert found[base_image].startswith("docker.io/library/debian@sha256:")
