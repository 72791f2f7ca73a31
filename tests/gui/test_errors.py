"""Unexpected errors reach the user: logged, shown in a dialog with the log's path and a
"Copy details" button, and the app keeps running (pytest-qt, no real user)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import qasync
from PySide6.QtWidgets import QApplication, QPushButton

from podlab.core.lab import Lab
from podlab.core.logs import close_logging, configure_logging
from podlab.ui import background
from podlab.ui.crash import ErrorReporter
from podlab.ui.main_window import MainWindow

# pytest-qt would take sys.excepthook for itself; here the app's own hook is under test.
# The offscreen platform says this whenever a dialog window is shown.
pytestmark = [
    pytest.mark.gui,
    pytest.mark.qt_no_exception_capture,
    pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints"),
]


@pytest.fixture
def reporter(qtbot: Any, qloop: asyncio.AbstractEventLoop) -> Iterator[ErrorReporter]:
    path = configure_logging("info")
    found = ErrorReporter(path)
    found.install()
    found.install_loop(qloop)
    yield found
    found.uninstall()
    if found.dialog is not None:
        found.dialog.close()
    close_logging()


def shown_details(qtbot: Any, reporter: ErrorReporter, text: str) -> str:
    def says_it() -> bool:
        dialog = reporter.dialog
        return dialog is not None and dialog.isVisible() and text in dialog.details.toPlainText()

    qtbot.waitUntil(says_it, timeout=5000)
    assert reporter.dialog is not None
    return reporter.dialog.details.toPlainText()


def test_an_error_in_a_slot_shows_the_dialog_and_the_app_goes_on(
    qtbot: Any, reporter: ErrorReporter
) -> None:
    button = QPushButton("Break")
    qtbot.addWidget(button)
    calls: list[int] = []

    def broken_slot() -> None:
        calls.append(1)
        raise ValueError("slot went wrong")

    button.clicked.connect(broken_slot)
    button.click()
    details = shown_details(qtbot, reporter, "ValueError: slot went wrong")
    assert "broken_slot" in details  # the traceback, not only the message
    dialog = reporter.dialog
    assert dialog is not None
    assert str(reporter.log_path) in dialog.log_label.text()
    dialog.copy_button.click()
    copied = QApplication.clipboard().text()
    assert "ValueError: slot went wrong" in copied and str(reporter.log_path) in copied
    button.click()  # still running: a second error joins the same dialog
    qtbot.waitUntil(lambda: dialog.details.toPlainText().count("slot went wrong") >= 2)
    assert calls == [1, 1]
    assert reporter.log_path is not None
    assert "ValueError: slot went wrong" in Path(reporter.log_path).read_text()


def test_an_error_in_a_background_task_shows_the_dialog(
    qtbot: Any, reporter: ErrorReporter
) -> None:
    async def broken_task() -> None:
        await asyncio.sleep(0)
        raise KeyError("no such service")

    task = background.start(broken_task(), "look up a service")
    details = shown_details(qtbot, reporter, "KeyError: 'no such service'")
    assert task.done() and task not in background.running()
    assert reporter.dialog is not None
    assert "look up a service" in reporter.dialog.summary.text()
    assert "broken_task" in details


class AsyncBreaker(QPushButton):
    """A widget with an async slot, as the pages have them."""

    @qasync.asyncSlot()
    async def break_later(self) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async slot went wrong")


def test_an_error_in_an_async_slot_shows_the_dialog(qtbot: Any, reporter: ErrorReporter) -> None:
    button = AsyncBreaker("Break later")
    qtbot.addWidget(button)
    button.clicked.connect(button.break_later)
    button.click()
    shown_details(qtbot, reporter, "RuntimeError: async slot went wrong")


def test_errors_of_threads_and_loop_callbacks_show_the_dialog(
    qtbot: Any, reporter: ErrorReporter, qloop: asyncio.AbstractEventLoop
) -> None:
    def broken_thread() -> None:
        raise OSError("thread went wrong")

    worker = threading.Thread(target=broken_thread, name="probe")
    worker.start()
    worker.join()
    shown_details(qtbot, reporter, "OSError: thread went wrong")

    def broken_callback() -> None:
        raise ZeroDivisionError("callback went wrong")

    qloop.call_soon(broken_callback)
    shown_details(qtbot, reporter, "ZeroDivisionError: callback went wrong")


def test_background_tasks_are_cancelled_when_the_window_closes(
    qtbot: Any, qloop: asyncio.AbstractEventLoop
) -> None:
    window = MainWindow(Lab.open())
    qtbot.addWidget(window)
    task = background.start(asyncio.sleep(3600), "wait for ever")
    window.close()
    qtbot.waitUntil(task.done, timeout=5000)
    assert task.cancelled()
