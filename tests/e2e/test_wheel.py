"""The built wheel carries resources/ and recipes/ and Podlab runs from it, not the checkout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from podlab import __version__
from podlab.ui.app import DEFAULT_SIZE
from tests.e2e import installed

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DATA_FOLDERS = ("resources/", "recipes/")


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
        "from podlab.core.evaluate.promptset import builtin_set_names, resolve_prompt_set\n"
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


def pip_cache() -> str:
    """pip's own cache (the tests' isolated XDG_CACHE_HOME would make every install download)."""
    return os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")


def pip_sources() -> list[str]:
    """Pinned like the test venv (pip's cache then serves every file), and the llama-cpp-python
    wheel compiled for this machine when PODLAB_WHEELHOUSE names it."""
    sources = ["-c", str(REPO / "constraints.txt")]
    if os.environ.get("PODLAB_WHEELHOUSE"):
        sources += ["--find-links", os.environ["PODLAB_WHEELHOUSE"]]
    return sources


def wheel_data(wheel: Path) -> set[str]:
    """The wheel's package data, named as in the source tree (podlab/resources/x -> resources/x)."""
    names = (name.removeprefix("podlab/") for name in zipfile.ZipFile(wheel).namelist())
    return {name for name in names if name.startswith(DATA_FOLDERS)}


def sdist_data(sdist: Path) -> set[str]:
    """The data files of the sdist, without its top folder (podlab-0.1.0/)."""
    with tarfile.open(sdist) as tar:
        files = [member.name.split("/", 1)[1] for member in tar.getmembers() if member.isfile()]
    return {name for name in files if name.startswith(DATA_FOLDERS)}


def check_installed_podlab(podlab: Path, cwd: Path) -> None:
    """--version, doctor with its local engine self-test, and a real screenshot."""
    version = installed.run([str(podlab), "--version"], cwd)
    assert version.stdout.strip() == f"podlab {__version__}", version.stderr
    installed.smollm2_imported(podlab, cwd)
    doctor = installed.run([str(podlab), "doctor"], cwd)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert re.search(r"self-test: local engine: ok \(\d+ tok/s\)", doctor.stdout), doctor.stdout
    shot = cwd / f"{podlab.resolve().parent.parent.name}.png"
    result = installed.run([str(podlab), "--screenshot", str(shot)], cwd)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    size, colours = installed.distinct_colours(shot)
    assert size == DEFAULT_SIZE and colours > 10, (size, colours)


def test_built_wheel_installs_with_pip_and_pipx_and_runs_outside_the_checkout(
    tmp_path: Path,
) -> None:
    """`python -m build` makes both archives with the same data; the wheel, installed in a clean
    venv and with pipx, runs Podlab from a folder far from the checkout."""
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PIP_CACHE_DIR=pip_cache()),
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = list(dist.glob("podlab-*.whl"))
    [sdist] = list(dist.glob("podlab-*.tar.gz"))
    shipped = wheel_data(wheel)
    assert "resources/catalog.yaml" in shipped
    assert "recipes/chatbot/app/.streamlit/config.toml" in shipped
    assert "recipes/model_servers/llamacpp_python/podlab_guarded_server.py" in shipped
    assert sdist_data(sdist) == shipped

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = installed.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", *pip_sources(), f"{wheel}[local]"],
        elsewhere, timeout=600, PIP_CACHE_DIR=pip_cache(),
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    check_installed_podlab(venv / "bin" / "podlab", elsewhere)

    pipx_bin = tmp_path / "pipx-bin"
    pipx = installed.run(
        [sys.executable, "-m", "pipx", "install", "--pip-args", " ".join(pip_sources()),
         f"{wheel}[local]"],
        elsewhere, timeout=600, PIP_CACHE_DIR=pip_cache(),
        PIPX_HOME=str(tmp_path / "pipx-home"), PIPX_BIN_DIR=str(pipx_bin),
    )  # fmt: skip
    assert pipx.returncode == 0, pipx.stdout[-3000:] + pipx.stderr[-3000:]
    check_installed_podlab(pipx_bin / "podlab", elsewhere)
