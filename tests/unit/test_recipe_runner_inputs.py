"""The image reuse key: any change to what a build reads gives a new hash, nothing else does."""

from __future__ import annotations

import shutil
from pathlib import Path

from podlab.core.recipes.runner import RunState, _run_from_pod, build_inputs_hash, image_tag
from podlab.core.recipes.spec import load_recipe_spec
from tests.recipe_harness import RECIPES


def chatbot_copy(tmp_path: Path) -> Path:
    shutil.copytree(RECIPES / "chatbot", tmp_path / "chatbot")
    shutil.copytree(RECIPES / "model_servers", tmp_path / "model_servers")
    return tmp_path / "chatbot"


def app_hash(folder: Path, build_args: dict[str, str] | None = None) -> str:
    app = next(c for c in load_recipe_spec(folder).containers if c.name == "chatbot-app")
    return build_inputs_hash(app, build_args or {})


def test_the_hash_follows_context_files_containerfile_and_build_args(tmp_path: Path) -> None:
    folder = chatbot_copy(tmp_path)
    first = app_hash(folder)
    assert app_hash(folder) == first
    (folder / "app" / "__pycache__").mkdir()
    (folder / "app" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert app_hash(folder) == first  # caches are never sent to a build
    assert app_hash(folder, {"VERSION": "2"}) != first
    source = folder / "app" / "chatbot_ui.py"
    source.write_text(source.read_text() + "\n# changed\n")
    second = app_hash(folder)
    assert second != first
    containerfile = folder / "app" / "Containerfile"
    containerfile.write_text(containerfile.read_text() + "LABEL changed=yes\n")
    assert app_hash(folder) not in (first, second)


def test_the_tag_names_recipe_container_and_inputs(tmp_path: Path) -> None:
    spec = load_recipe_spec(chatbot_copy(tmp_path))
    app = next(c for c in spec.containers if c.name == "chatbot-app")
    assert image_tag("chatbot", app, "abc") == "localhost/podlab/recipe-chatbot-chatbot-app:abc"


def test_a_run_is_read_back_from_its_pod_labels_alone() -> None:
    labels = {
        "podlab.managed": "true",
        "podlab.recipe-run": "1a2b3c4d",
        "podlab.recipe": "chatbot",
        "podlab.recipe.app-url": "http://127.0.0.1:36001",
        "podlab.recipe.ports": '{"chatbot-app": 36001, "llamacpp-server": 36000}',
        "podlab.recipe.model": "smol",
        "podlab.recipe.created": "1700000000",
    }
    run = _run_from_pod({"Name": "pod-x", "Status": "Exited", "Labels": labels})
    assert run.state is RunState.STOPPED
    assert (run.id, run.recipe_id, run.app_url, run.model) == (
        "1a2b3c4d", "chatbot", "http://127.0.0.1:36001", "smol",
    )  # fmt: skip
    assert run.ports == {"chatbot-app": 36001, "llamacpp-server": 36000}
    assert run.created == 1700000000.0
    assert _run_from_pod({"Status": "Degraded", "Labels": labels}).state is RunState.FAILED
    assert _run_from_pod({"Status": "Running", "Labels": labels}).state is RunState.RUNNING
