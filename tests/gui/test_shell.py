"""The main window opens, every page is reachable, the engine status shows, screenshots work."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from podlab.core.lab import Lab
from podlab.ui.main_window import PAGE_KEYS, PAGES, MainWindow

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, qloop) -> MainWindow:  # type: ignore[no-untyped-def]
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    win.show_page("dashboard")
    return win


def test_every_page_is_reachable_from_the_navigation(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    assert [window.nav.item(i).text() for i in range(window.nav.count())] == [
        "Dashboard",
        "Catalog",
        "Models",
        "Services",
        "Playground",
        "Compare",
        "Recipes",
        "Tasks",
        "Settings",
    ]
    for row, entry in enumerate(PAGES):
        window.nav.setCurrentRow(row)
        page = window.page(entry.key)
        assert window.stack.currentWidget() is page
        assert page.isVisible()
        assert window.current_page_key() == entry.key


def test_keyboard_shortcut_switches_pages(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtCore import Qt

    qtbot.keyClick(window, Qt.Key.Key_8, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page_key() == "tasks"


def test_status_bar_shows_the_real_engine_state(window: MainWindow, qtbot, podman_env) -> None:  # type: ignore[no-untyped-def]
    from podlab.ui.engine_status import refresh_engine_status

    task = asyncio.ensure_future(refresh_engine_status(window))
    qtbot.waitUntil(task.done, timeout=20000)
    task.result()
    assert window.engine_label.text().startswith("Podman 4.")


def test_status_bar_says_how_to_fix_a_missing_engine(
    window: MainWindow, qtbot, monkeypatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from podlab.ui.engine_status import refresh_engine_status

    monkeypatch.setenv("CONTAINER_HOST", f"unix://{tmp_path}/no-such.sock")
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman binary either
    task = asyncio.ensure_future(refresh_engine_status(window))
    qtbot.waitUntil(task.done, timeout=20000)
    task.result()
    assert "not available" in window.engine_label.text()
    assert window.engine_label.toolTip().strip() != ""


@pytest.mark.parametrize("page", ["dashboard", "tasks", "settings"])
def test_screenshot_command_writes_a_png_of_the_page(tmp_path: Path, page: str) -> None:
    shot = tmp_path / f"{page}.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "podlab",
            "--screenshot",
            str(shot),
            "--page",
            page,
            "--size",
            "1024x700",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    image = QImage(str(shot))
    assert (image.width(), image.height()) == (1024, 700)
    assert "Traceback" not in result.stderr


def test_screenshot_rejects_an_unknown_page(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "podlab", "--screenshot", str(tmp_path / "x.png"), "--page", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert set(PAGE_KEYS) >= {"dashboard", "settings"}


def test_playground_and_compare_share_the_labs_conversation_store(window: MainWindow) -> None:
    from podlab.ui.pages.compare import ComparePage

    playground = window.playground_page()
    compare = window.page("compare")
    assert isinstance(compare, ComparePage)
    assert playground.store is compare.store is window.lab.conversations
    assert playground.store.path == window.lab.locations.database_file
    window.close()  # the pages stop; the store stays the Lab's until it closes it
    window.lab.close()


def test_settings_page_shows_the_log_file(window: MainWindow) -> None:
    from PySide6.QtWidgets import QLabel

    page = window.show_page("settings")
    label = page.findChild(QLabel, "log-file")
    assert label is not None
    assert str(window.lab.locations.log_file) in label.text()
