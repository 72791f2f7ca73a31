"""Desktop behaviour: one instance per user, remembered window state, the shortcut list,
accessible names on every control, notifications for tasks that end out of sight."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QShortcut
from PySide6.QtNetwork import QLocalSocket
from PySide6.QtWidgets import QWidget

from podlab.core.lab import Lab
from podlab.core.paths import Locations
from podlab.core.tasks import TaskState
from podlab.ui.dialogs.new_service import NewServiceDialog
from podlab.ui.dialogs.shortcuts import ShortcutsDialog, shortcut_rows
from podlab.ui.main_window import PAGE_KEYS, PAGES, MainWindow, page_shortcut
from podlab.ui.notify import TaskNotifier
from podlab.ui.single_instance import InstanceServer, hand_over, server_name
from podlab.ui.window_state import STATE_FILE_NAME, WindowStateKeeper, load_window_state
from tests.gui.a11y import unnamed_controls

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def window(qtbot, qloop) -> MainWindow:  # type: ignore[no-untyped-def]
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.resize(1100, 700)
    win.show()
    win.show_page("dashboard")
    return win


def _on_later_launch(window: MainWindow, files: list[str]) -> None:
    from podlab.ui.app import _on_later_launch as handler

    handler(window, files)


@pytest.mark.qt_log_ignore("This plugin does not support raise")  # offscreen has no stacking
def test_second_launch_hands_its_gguf_to_the_first_window_and_exits(
    window: MainWindow, qtbot, smollm2_model: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The real `podlab FILE.gguf` in a second process, from another working folder, with a
    relative path: it exits at once without a window, and the first imports the file."""
    server = InstanceServer(server_name(Locations.default()), window)
    assert server.listen()
    server.sig_launched.connect(lambda files: _on_later_launch(window, files))
    workdir = smollm2_model.parent
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'app'}{os.pathsep}{ROOT}"}
    second = subprocess.Popen(
        [sys.executable, "-m", "podlab", smollm2_model.name],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        qtbot.waitUntil(lambda: second.poll() is not None, timeout=60000)
    finally:
        if second.poll() is None:
            second.kill()
    output = second.communicate()[0]
    assert second.returncode == 0, output
    assert "handed over" in output
    models = window.page("models")
    qtbot.waitUntil(lambda: window.current_page_key() == "models", timeout=5000)
    qtbot.waitUntil(lambda: bool(models.entry_ids()), timeout=30000)  # type: ignore[attr-defined]
    entry = models.current_entry()  # type: ignore[attr-defined]
    assert entry is not None and Path(entry.path).resolve() == smollm2_model.resolve()
    server.close()


def test_hand_over_finds_nobody_when_no_window_is_open(qapp) -> None:  # type: ignore[no-untyped-def]
    assert hand_over(server_name(Locations.default()), [], timeout_ms=500) is False


def test_a_malformed_message_is_ignored(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    name = server_name(Locations.default())
    server = InstanceServer(name, window)
    assert server.listen()
    received: list[list[str]] = []
    server.sig_launched.connect(received.append)
    socket = QLocalSocket()
    socket.connectToServer(name)
    assert socket.waitForConnected(2000)
    socket.write(json.dumps({"files": "not a list"}).encode() + b"\n")
    socket.flush()
    qtbot.waitUntil(lambda: socket.state() == QLocalSocket.LocalSocketState.UnconnectedState)
    assert received == []
    good = QLocalSocket()  # and the server still serves the next launch
    good.connectToServer(name)
    assert good.waitForConnected(2000)
    good.write(json.dumps({"files": ["/x.gguf"]}).encode() + b"\n")
    good.flush()
    qtbot.waitUntil(lambda: received == [["/x.gguf"]], timeout=5000)
    qtbot.waitUntil(lambda: good.bytesAvailable() > 0, timeout=5000)
    assert bytes(good.readAll().data()) == b"ok\n"
    server.close()


def test_window_geometry_and_page_are_saved_privately_and_restored(
    window: MainWindow, qtbot, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = Lab.open().locations.state_dir / STATE_FILE_NAME
    keeper = WindowStateKeeper(window, path)
    assert keeper.restore() is None  # nothing remembered yet
    keeper.watch()
    window.resize(900, 640)  # the offscreen screen is 800x800: a restore clamps to it
    window.move(30, 40)
    window.show_page("tasks")  # a page switch saves at once
    state = load_window_state(path)
    assert state is not None and state.page == "tasks"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = window.geometry()
    window.close()  # and the close saves the last size

    again = MainWindow(Lab.open())
    qtbot.addWidget(again)
    again.resize(1000, 700)
    page = WindowStateKeeper(again, path).restore()
    again.show()
    assert page == "tasks"
    # the x is clamped: the window (900 wide at least) is wider than the offscreen screen
    assert (again.size(), again.geometry().y()) == (saved.size(), saved.y())


def test_a_damaged_window_state_means_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    path.write_text('{"geometry": "not base64!", "page": "tasks"}')
    assert load_window_state(path) is None
    path.write_text(json.dumps({"geometry": "", "page": "gone"}))
    state = load_window_state(path)
    assert state is not None and state.page == PAGE_KEYS[0]
    assert QByteArray(state.geometry).isEmpty()


@pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")  # offscreen
@pytest.mark.parametrize("keys", [Qt.Key.Key_F1, "Ctrl+/"])
def test_f1_and_ctrl_slash_list_every_shortcut(window: MainWindow, qtbot, keys) -> None:  # type: ignore[no-untyped-def]
    for key in PAGE_KEYS:  # every page built, so that its shortcuts exist
        window.show_page(key)
    window.activateWindow()
    if keys == "Ctrl+/":
        qtbot.keyClick(window, Qt.Key.Key_Slash, Qt.KeyboardModifier.ControlModifier)
    else:
        qtbot.keyClick(window, keys)
    dialogs = window.findChildren(ShortcutsDialog)
    assert len(dialogs) == 1 and dialogs[0].isVisible()
    listed = dialogs[0].rows()
    listed_keys = {part for _, keys_text, _ in listed for part in keys_text.split(", ")}
    every = {
        sequence.toString()
        for shortcut in window.findChildren(QShortcut)
        for sequence in shortcut.keys()  # noqa: SIM118
    }
    assert every <= listed_keys
    assert {page_shortcut(i) for i in range(len(PAGES))} | {"F1", "Ctrl+/"} <= listed_keys
    assert len({page_shortcut(i) for i in range(len(PAGES))}) == len(PAGES)
    assert ("Playground", "Esc", "Stop the answer") in listed
    assert all(description for _, _, description in listed), listed
    dialogs[0].close()


def test_shortcut_rows_name_the_page_of_each_shortcut(window: MainWindow) -> None:
    window.show_page("compare")
    places = {row.where for row in shortcut_rows(window)}
    assert places == {"Window", "Compare"}


def test_every_interactive_control_has_an_accessible_name(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    for key in PAGE_KEYS:
        window.show_page(key)
    missing = unnamed_controls(window)
    dialog = NewServiceDialog([], None, parent=window)
    missing += unnamed_controls(dialog)
    missing += unnamed_controls(ShortcutsDialog(window))
    assert missing == []


def test_a_task_that_ends_out_of_sight_is_notified(
    window: MainWindow, qtbot, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """Offscreen there is no system tray: the notification becomes a log line; the same task
    ending in the active window is not notified (the user sees the Tasks page)."""
    notifier = TaskNotifier(window.lab, window)
    elsewhere = QWidget()  # the user works in another window
    qtbot.addWidget(elsewhere)
    elsewhere.show()
    elsewhere.activateWindow()
    qtbot.waitUntil(lambda: not window.isActiveWindow(), timeout=5000)
    caplog.set_level(logging.INFO, logger="podlab.ui.notify")
    window.lab.tasks.start("Download demo", "download", lambda task: asyncio.sleep(0.01))
    qtbot.waitUntil(lambda: bool(notifier.shown), timeout=5000)
    assert notifier.shown[0].title == "Finished: Download demo"
    assert "notification (no system tray): Finished: Download demo" in caplog.text
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    window.lab.tasks.start("Seen", "download", lambda task: asyncio.sleep(0))
    qtbot.waitUntil(lambda: window.lab.tasks.tasks[-1].state.finished, timeout=5000)
    notifier.detach()
    window.lab.tasks.start("Ignored", "download", lambda task: asyncio.sleep(0))
    qtbot.wait(100)
    assert [n.title for n in notifier.shown] == ["Finished: Download demo"]
    assert window.lab.tasks.tasks[-1].state is TaskState.DONE
