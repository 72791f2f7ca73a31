"""The PyInstaller bundle runs on a machine path without the project's venv and shows the Catalog.

scripts/build-bundle builds it once per change of its inputs (cached under ~/.cache/podlab/bundle),
so a warm run of these tests costs the checks only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podlab.ui.app import DEFAULT_SIZE
from tests import harness
from tests.e2e import installed

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle() -> Iterator[Path]:
    """The bundle's folder (holding the `podlab` executable), built or taken from the cache."""
    # The cache is the user's, not the test's isolated XDG_CACHE_HOME: it must outlive the run.
    cache = Path.home() / ".cache" / "podlab" / "bundle"
    built = subprocess.run(
        [str(REPO / "scripts" / "build-bundle")],
        capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PYTHON=sys.executable, PODLAB_BUNDLE_CACHE=str(cache)),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    folder = Path(built.stdout.strip().splitlines()[-1])
    assert (folder / "podlab").is_file()
    yield folder


def venv_screenshot(path: Path, page: str) -> Path:
    """The same page from the project's venv, the reference the bundle is compared with."""
    result = subprocess.run(
        [sys.executable, "-m", "podlab", "--screenshot", str(path), "--page", page],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return path


def test_bundle_starts_without_the_venv_and_shows_the_catalog(bundle: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shot = elsewhere / "bundle-catalog.png"
    result = installed.run(
        [str(bundle / "podlab"), "--screenshot", str(shot), "--page", "catalog"], elsewhere
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    size, colours = installed.distinct_colours(shot)
    assert size == DEFAULT_SIZE and colours > 10, (size, colours)
    # The bundle's picture is the venv's Catalog (the catalog file's path aside), not another page.
    catalog = installed.same_pixels(shot, venv_screenshot(tmp_path / "catalog.png", "catalog"))
    dashboard = installed.same_pixels(shot, venv_screenshot(tmp_path / "dash.png", "dashboard"))
    assert catalog > 0.95 and catalog > dashboard + 0.05, (catalog, dashboard)


def test_bundle_carries_its_local_engine(bundle: Path, tmp_path: Path) -> None:
    """doctor from the bundle runs the self-test with the bundle's own llama-cpp-python."""
    installed.smollm2_imported(bundle / "podlab", tmp_path)
    result = installed.run([str(bundle / "podlab"), "doctor", "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    selftest = report["local"]["selftest"]
    assert selftest["status"] == "ok" and selftest["tokens_per_s"] > 0, selftest
    assert str(bundle) in json.dumps(report["local"]), report["local"]


def test_bundle_serves_a_model_with_its_guarded_local_engine(bundle: Path, tmp_path: Path) -> None:
    """`serve` from the bundle runs the guarded llama-cpp-python server inside it, and a chat
    through it answers."""
    podlab = str(bundle / "podlab")
    installed.smollm2_imported(bundle / "podlab", tmp_path)
    served = installed.run(
        [podlab, "serve", str(harness.smollm2_path()), "--engine", "local", "--json"], tmp_path
    )
    assert served.returncode == 0, served.stderr
    service = json.loads(served.stdout)
    try:
        assert service["state"] == "ready"
        # The guard is in front: without the service's key the server refuses.
        assert httpx.get(f"{service['api_url']}/models", timeout=30).status_code == 401
        chat = installed.run(
            [podlab, "chat", "--endpoint", service["api_url"], "Say hello."], tmp_path
        )
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.strip() != ""
    finally:
        removed = installed.run([podlab, "services", "rm", service["id"]], tmp_path)
    assert removed.returncode == 0, removed.stderr
