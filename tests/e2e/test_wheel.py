"""The built wheel carries resources/ and recipes/ and Podlab runs from it, not the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_resources_and_runs_from_an_unpacked_copy(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         str(REPO), "-w", str(tmp_path / "dist")],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    [wheel] = list((tmp_path / "dist").glob("podlab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "podlab/resources/catalog.yaml" in names
    assert "podlab/resources/icons/podlab.svg" in names
    assert {  # the desktop files, for a package that installs them from the wheel
        "podlab/resources/io.github.podlab.Podlab.desktop",
        "podlab/resources/io.github.podlab.Podlab.metainfo.xml",
        "podlab/resources/mime/io.github.podlab.Podlab.xml",
        "podlab/resources/icons/hicolor/512x512/apps/io.github.podlab.Podlab.png",
    } <= names
    assert "podlab/recipes/model_servers/llamacpp_python/Containerfile" in names
    assert "podlab/resources/promptsets/arithmetic.yaml" in names  # Evaluate's built-in sets
    for recipe in ("chatbot", "rag", "summarizer"):
        # The app's Streamlit settings (XSRF protection on) travel with it, hidden folder and all.
        assert f"podlab/recipes/{recipe}/app/.streamlit/config.toml" in names
    assert not any(name.startswith(("tests/", "app/")) for name in names)
    # Package discovery: every package of the source tree is in the wheel, new ones included.
    source = REPO / "app"
    for init in source.glob("podlab/**/__init__.py"):
        assert init.relative_to(source).as_posix() in names
    assert {"podlab/core/models/__init__.py", "podlab/core/serving/__init__.py",
            "podlab/core/chat/__init__.py"} <= names  # fmt: skip

    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    code = (
        "import json, podlab\n"
        "from podlab.core.models.catalog import load_catalog\n"
        "from podlab.core.resources import recipe_file\n"
        "from podlab.core.recipes.catalog import load_recipe_catalog\n"
        "load = load_catalog(include_user_dir=False)\n"
        "cf = recipe_file('model_servers/llamacpp_python/Containerfile')\n"
        "recipes = load_recipe_catalog()\n"
        "from podlab.core.eval.promptset import builtin_set_names, resolve_prompt_set\n"
        "sets = {n: len(resolve_prompt_set(n).items) for n in builtin_set_names()}\n"
        "print(json.dumps({'file': podlab.__file__, 'models': len(load.catalog.models),\n"
        "  'errors': len(load.errors),\n"
        "  'containerfile': cf.is_file(), 'recipes': [r.id for r in recipes],\n"
        "  'recipe_errors': [e.message for e in recipes.errors], 'sets': sets}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(unpacked))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["file"].startswith(str(unpacked))
    assert facts["models"] >= 25 and facts["errors"] == 0
    assert facts["containerfile"] is True
    assert facts["recipes"] == ["chatbot", "rag", "summarizer"]
    assert facts["recipe_errors"] == []
    assert {"arithmetic", "extract-json", "facts", "format"} <= set(facts["sets"])
    assert all(count >= 5 for count in facts["sets"].values())
