"""The main window opens, every page is reachable, the engine status shows, screenshots work."""

from __future__ import annotations

import asyncio
import json
import os
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
        "Evaluate",
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

    qtbot.keyClick(window, Qt.Key.Key_9, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page_key() == "tasks"
    qtbot.keyClick(window, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page_key() == "settings"


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


# The real start path (`podlab` with no arguments) in a child process: an application-wide event
# filter notes which modules are loaded when the Dashboard first paints, and quits once the
# Dashboard has filled its cards (so the loading held back until the loop existed did run).
FIRST_PAINT_CHILD = """
import json, sys
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow, QWidget
app = QApplication(sys.argv[:1])
seen = {}
def page_on_screen():
    shown = [w for w in app.topLevelWidgets() if isinstance(w, QMainWindow) and w.isVisible()]
    return shown[0].stack.currentWidget() if shown else None
def refreshed():
    seen["refreshed"] = True
    QTimer.singleShot(0, app.quit)
class PaintWatch(QObject):
    def eventFilter(self, watched, event):
        page = page_on_screen()
        if (
            "painted" not in seen
            and event.type() == QEvent.Type.Paint
            and page is not None
            and type(page).__name__ == "DashboardPage"
            and isinstance(watched, QWidget)
            and (watched is page or page.isAncestorOf(watched))
        ):
            seen["painted"] = sorted(m for m in ("asyncio", "qasync", "httpx") if m in sys.modules)
            page.sig_refreshed.connect(refreshed)
        return False
watch = PaintWatch()
app.installEventFilter(watch)
QTimer.singleShot(90_000, app.quit)
from podlab.launcher import main
main([])
print("SEEN " + json.dumps(seen))
"""


def test_the_dashboard_paints_before_asyncio_and_then_loads(tmp_path: Path) -> None:
    """Start-up paints the Dashboard with the window, before asyncio, qasync and httpx are
    imported, and fills its cards once the loop runs."""
    result = subprocess.run(
        [sys.executable, "-c", FIRST_PAINT_CHILD],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("SEEN "))
    seen = json.loads(line[5:])
    assert seen.get("painted") == [], seen
    assert seen.get("refreshed") is True, result.stderr


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


def test_ctrl_q_closes_the_window(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtCore import Qt

    assert window.isVisible()
    qtbot.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=2000)


def test_the_playground_has_a_real_icon(window: MainWindow) -> None:
    from PySide6.QtWidgets import QStyle

    def image(icon: object) -> QImage:
        assert hasattr(icon, "pixmap")
        return icon.pixmap(20, 20).toImage()

    icons = [image(window.nav.item(row).icon()) for row in range(window.nav.count())]
    question = image(window.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxQuestion))
    playground = icons[[p.key for p in PAGES].index("playground")]
    assert not playground.isNull() and playground != question
    assert sum(icon == playground for icon in icons) == 1  # no other page has it


def test_closing_with_services_running_asks_and_remembers(
    qtbot, qloop, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    """A real local llama-cpp-python service runs while the window closes: Cancel keeps the
    window, "Keep running" with "Remember my answer" closes it and leaves the service up, the
    next window closes without asking, and "stop" (from the settings) stops it."""
    from PySide6.QtWidgets import QCheckBox

    from podlab.core.serving.planning import ServeRequest
    from podlab.core.settings import load_settings
    from podlab.ui.service_bridge import service_bridge_for

    def open_window() -> MainWindow:
        win = MainWindow(Lab.open())
        qtbot.addWidget(win)
        win.show()
        win.show_page("dashboard")
        return win

    win = open_window()
    manager = service_bridge_for(win.lab).manager
    serving = asyncio.ensure_future(manager.serve(ServeRequest(smollm2_model, engine="local")))
    qtbot.waitUntil(serving.done, timeout=120000)
    service = serving.result()
    try:
        # Shown while it runs: the tray icon where the desktop has one, else the status bar.
        if win.tray is not None:
            assert win.tray.isVisible() and "1 service running" in win.tray.toolTip()
        else:
            assert win.running_label.isVisible()
            assert win.running_label.text() == "● 1 service running"

        win.close()
        qtbot.waitUntil(lambda: win.close_dialog is not None, timeout=5000)
        dialog = win.close_dialog
        assert service.name in dialog.text_label.text()
        dialog.reject_button.click()  # Cancel
        qtbot.waitUntil(lambda: win.close_dialog is None, timeout=5000)
        assert win.isVisible()

        win.close()
        qtbot.waitUntil(lambda: win.close_dialog is not None, timeout=5000)
        dialog = win.close_dialog
        remember = dialog.findChild(QCheckBox, "remember")
        remember.setChecked(True)
        keep = next(b for b in dialog.buttons.buttons() if b.text() == "Keep running and quit")
        keep.click()
        qtbot.waitUntil(lambda: not win.isVisible(), timeout=5000)
        assert load_settings().settings.services_on_close == "keep"
        assert service.state.running and service.pid is not None
        os.kill(service.pid, 0)  # still there

        # The answer is remembered: a new window finds the service and closes without asking.
        again = open_window()
        bridge = service_bridge_for(again.lab)
        refreshed = asyncio.ensure_future(bridge.refresh())
        qtbot.waitUntil(refreshed.done, timeout=30000)
        assert [s.id for s in again.running_services()] == [service.id]
        again.close()
        assert not again.isVisible() and again.close_dialog is None

        # "stop": closing stops the running services first.
        third = open_window()
        third.lab.settings.services_on_close = "stop"
        bridge = service_bridge_for(third.lab)
        refreshed = asyncio.ensure_future(bridge.refresh())
        qtbot.waitUntil(refreshed.done, timeout=30000)
        (found,) = third.running_services()
        third.close()
        qtbot.waitUntil(lambda: not third.isVisible(), timeout=30000)
        assert not found.state.running
    finally:
        removal = asyncio.ensure_future(manager.delete(service.id))
        qtbot.waitUntil(removal.done, timeout=30000)
