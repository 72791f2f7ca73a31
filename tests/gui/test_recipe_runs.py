"""Running recipes from the Recipes page on real Podman: the model picker over a real model
store (SmolLM2 imported), a run whose build fails (its log on the page and in the task), the
Running applications list over a real labelled pod, and the page without Podman."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podlab.core.lab import Lab
from podlab.core.recipes.catalog import load_recipe
from podlab.core.recipes.runner import (
    LABEL_RECIPE,
    LABEL_RUN,
)
from podlab.core.serving.gpu.host import HostProbe
from podlab.core.tasks import TaskState
from podlab.ui.download_bridge import bridge_for
from podlab.ui.main_window import MainWindow
from podlab.ui.pages.recipes import RecipesPage
from tests import harness, recipe_harness
from tests.gui.test_services_page import server_image  # noqa: F401 (a fixture)
from tests.integration.conftest import wheelhouse  # noqa: F401 (a fixture server_image uses)

pytestmark = pytest.mark.gui

RECIPES = recipe_harness.RECIPES
BUILD_TIMEOUT_MS = 300_000


def open_page(lab: Lab, qtbot: Any) -> tuple[MainWindow, RecipesPage]:
    window = MainWindow(lab)
    qtbot.addWidget(window)
    window.resize(1280, 800)
    page = window.show_page("recipes")
    window.show()
    assert isinstance(page, RecipesPage)
    settle = asyncio.ensure_future(page.settle())
    qtbot.waitUntil(settle.done, timeout=60000)
    settle.result()
    return window, page


@pytest.fixture
def lab_with_smollm2(smollm2_model: Path) -> Lab:
    lab = Lab.open()
    bridge_for(lab).store.import_gguf(smollm2_model)
    return lab


def test_without_podman_the_page_says_how_to_get_it_and_run_is_disabled(
    qtbot: Any, qloop: Any, lab_with_smollm2: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
    _window, page = open_page(lab_with_smollm2, qtbot)
    assert page.select_recipe("chatbot")
    assert page.model_combo.count() == 1  # the imported model is offered
    assert page.no_model_box.isHidden()
    assert not page.podman_label.isHidden()
    status = lab_with_smollm2.engine.status
    assert page.podman_label.text().startswith("Recipes need Podman: ")
    assert status.hint and status.hint in page.podman_label.text()
    assert not page.run_button.isEnabled()
    assert page.runs == [] and not page.runs_empty.isHidden()


def test_no_downloaded_model_offers_the_catalog(qtbot: Any, qloop: Any) -> None:
    window, page = open_page(Lab.open(), qtbot)
    assert page.select_recipe("summarizer")
    assert not page.no_model_box.isHidden()
    assert "No model is downloaded" in page.no_model_label.text()
    assert not page.run_button.isEnabled()
    page.open_catalog_button.click()
    assert window.current_page_key() == "catalog"


@pytest.mark.usefixtures("server_image")
def test_a_run_whose_build_fails_shows_its_log_on_the_page_and_in_its_task(
    qtbot: Any,
    qloop: Any,
    lab_with_smollm2: Lab,
    podman_env: harness.PodmanService,
    base_image: str,
    podman_client: Any,
    gpu_less_host: HostProbe,
    tmp_path: Path,
) -> None:
    _window, page = open_page(lab_with_smollm2, qtbot)
    page.gpu_probe = gpu_less_host
    assert page.podman_label.isHidden()
    assert page.select_recipe("chatbot")
    assert page.model_combo.count() == 1  # the imported SmolLM2, and Run is possible
    assert page.run_button.isEnabled()

    recipe_id = f"broken-{secrets.token_hex(3)}"
    root = tmp_path / "recipes"
    ignore = shutil.ignore_patterns("__pycache__", "wheels")
    shutil.copytree(RECIPES / "chatbot", root / "chatbot", ignore=ignore)
    shutil.copytree(RECIPES / "model_servers", root / "model_servers", ignore=ignore)
    entry_file = root / "chatbot" / "podlab-recipe.yaml"
    entry_file.write_text(entry_file.read_text().replace("id: chatbot", f"id: {recipe_id}"))
    containerfile = root / "chatbot" / "app" / "Containerfile"
    lines = containerfile.read_text().splitlines()
    base = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    lines.insert(base + 1, "RUN echo podlab-build-marker && false")
    containerfile.write_text("\n".join(lines) + "\n")
    entry = load_recipe(root / "chatbot")

    task = page.start_run(entry, str(page.model_combo.currentData()), None)
    assert not page.run_button.isEnabled()  # one run at a time
    assert task in lab_with_smollm2.tasks.tasks  # listed on the Tasks page
    qtbot.waitUntil(lambda: task.state.finished, timeout=BUILD_TIMEOUT_MS)
    assert task.state is TaskState.FAILED
    assert any("podlab-build-marker" in line for line in task.log)
    assert "building" in "\n".join(task.log)
    status = page.run_status.text()
    assert status.startswith(f"{entry.name} failed: ")
    assert "podlab-build-marker" in status  # the log tail
    qtbot.waitUntil(page.run_button.isEnabled, timeout=10000)
    assert podman_client.pods.list(filters={"label": f"{LABEL_RECIPE}={recipe_id}"}) == []


@pytest.fixture
def labelled_pod(
    podman_env: harness.PodmanService, base_image: str, podman_client: Any
) -> Iterator[str]:
    """A pod labelled as the runner labels a chatbot run, with one sleeping container: what a
    run started by an earlier Podlab process looks like to this one."""
    with recipe_harness.labelled_recipe_pod(
        podman_client, base_image, "smollm2-test", 36999
    ) as run_id:
        yield run_id


def test_running_applications_are_found_stopped_and_deleted(
    qtbot: Any, qloop: Any, labelled_pod: str, podman_client: Any
) -> None:
    _window, page = open_page(Lab.open(), qtbot)
    assert page.select_run(labelled_pod)
    run = page.selected_run()
    assert run is not None and run.state.value == "running"
    row = [run.id for run in page.runs].index(labelled_pod)
    assert page.runs_table.item(row, 0).text() == "Chatbot"
    assert page.runs_table.item(row, 3).text() == "http://127.0.0.1:36999"
    assert page.open_button.isEnabled() and page.stop_button.isEnabled()

    # The page also reads the list on a timer: wait for the state, not for the next reading.
    page.stop_button.click()
    qtbot.waitUntil(lambda: run_state(page, labelled_pod) == "stopped", timeout=60000)
    assert page.select_run(labelled_pod)
    assert not page.stop_button.isEnabled() and page.delete_button.isEnabled()

    page.delete_button.click()
    qtbot.waitUntil(lambda: run_state(page, labelled_pod) is None, timeout=60000)
    assert podman_client.pods.list(filters={"label": f"{LABEL_RUN}={labelled_pod}"}) == []


def run_state(page: RecipesPage, run_id: str) -> str | None:
    """The state the Running applications table shows for a run (None: not listed)."""
    for row, run in enumerate(page.runs):
        if run.id == run_id:
            return page.runs_table.item(row, 1).text()
    return None


def test_running_applications_follow_changes_made_outside_the_page(
    qtbot: Any, qloop: Any, labelled_pod: str, podman_client: Any
) -> None:
    _window, page = open_page(Lab.open(), qtbot)
    assert run_state(page, labelled_pod) == "running"
    assert page.select_run(labelled_pod)

    # Stopped from the command line, by another process: the shown page notices by itself.
    done = subprocess.run(
        [sys.executable, "-m", "podlab", "recipe", "stop", labelled_pod],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stopped_at = time.monotonic()
    qtbot.waitUntil(lambda: run_state(page, labelled_pod) == "stopped", timeout=20_000)
    assert time.monotonic() - stopped_at < page.RUNS_REFRESH_MS / 1000 + 3
    selected = page.selected_run()  # the selection stays on the run across readings
    assert selected is not None and selected.id == labelled_pod
    assert not page.stop_button.isEnabled() and page.delete_button.isEnabled()

    # Removed outside Podlab: it leaves the list, and the actions go with it.
    for pod in podman_client.pods.list(filters={"label": f"{LABEL_RUN}={labelled_pod}"}):
        pod.remove(force=True)
    qtbot.waitUntil(lambda: run_state(page, labelled_pod) is None, timeout=20_000)
    assert page.selected_run() is None
    assert not page.delete_button.isEnabled() and not page.open_button.isEnabled()


@pytest.mark.usefixtures("server_image")
def test_the_chatbot_runs_from_the_page_answers_and_delete_leaves_no_pod(
    qtbot: Any,
    qloop: Any,
    lab_with_smollm2: Lab,
    podman_env: harness.PodmanService,
    base_image: str,
    podman_client: Any,
    gpu_less_host: HostProbe,
) -> None:
    _window, page = open_page(lab_with_smollm2, qtbot)
    page.gpu_probe = gpu_less_host
    assert page.select_recipe("chatbot")
    before = {run.id for run in page.runs}  # other test runs may share this Podman
    page.run_button.click()
    task = page.run_task
    assert task is not None
    started: list[str] = []  # removed afterwards whatever the test asserted
    try:
        qtbot.waitUntil(lambda: task.state.finished, timeout=BUILD_TIMEOUT_MS)
        assert task.state is TaskState.DONE, f"{task.error}\n" + "\n".join(task.log[-20:])
        (run,) = [run for run in page.runs if run.id not in before]
        started.append(run.id)
        assert run.recipe_id == "chatbot"
        assert run.state.value == "running" and run.app_url.startswith("http://127.0.0.1:")
        assert page.run_status.text() == f"Chatbot runs at {run.app_url}"
        assert httpx.get(run.app_url, timeout=30).status_code == 200
        assert page.select_run(run.id)
        assert page.open_button.isEnabled()
        page.delete_button.click()
        qtbot.waitUntil(lambda: run_state(page, run.id) is None, timeout=60000)
        assert podman_client.pods.list(filters={"label": f"{LABEL_RUN}={run.id}"}) == []
    finally:
        for run_id in started:
            for pod in podman_client.pods.list(filters={"label": f"{LABEL_RUN}={run_id}"}):
                pod.remove(force=True)
