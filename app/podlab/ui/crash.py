"""One place where unexpected errors end: logged with their traceback, then shown in a dialog.

Python errors (`sys.excepthook`, which also receives errors raised in Qt slots and in qasync's
`asyncSlot` tasks), errors of other threads (`threading.excepthook`) and errors the asyncio
loop reports (a callback that raised, a task whose exception nobody retrieved) all go through
`ErrorReporter.report`. The app keeps running: the dialog is not modal, and the same dialog
collects further errors until the user closes it.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from podlab import __version__
from podlab.core.logs import redact

if TYPE_CHECKING:  # asyncio is imported after the window's first paint, not before
    import asyncio

log = logging.getLogger(__name__)

ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], object]


class ErrorDialog(QDialog):
    """The error, where the log is, and a button that copies both for a bug report."""

    def __init__(self, log_path: Path | None, parent: QWidget | None = None) -> None:
        from PySide6.QtCore import Qt

        super().__init__(parent)
        self.setObjectName("error-dialog")
        self.setWindowTitle("Podlab: unexpected error")
        self.setModal(False)
        self.resize(640, 420)
        self._log_path = log_path
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details = QPlainTextEdit()
        self.details.setObjectName("error-details")
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        where = str(log_path) if log_path else "not written (logging is not configured)"
        self.log_label = QLabel(f"Log file: {where}")
        self.log_label.setObjectName("error-log-path")
        self.log_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        hint = QLabel(
            "Podlab keeps running, but what you were doing may not have finished. "
            "Please attach these details and the log file to a bug report."
        )
        hint.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy details")
        self.copy_button.setObjectName("copy-error-details")
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(self.copy_details)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(hint)
        layout.addWidget(self.details, 1)
        layout.addWidget(self.log_label)
        layout.addWidget(buttons)

    def add_error(self, summary: str, details: str) -> None:
        """Show this error; one already shown stays above it in the details."""
        self.summary.setText(f"<b>{_escape(summary)}</b>")
        if self.details.toPlainText():
            self.details.appendPlainText("\n" + "-" * 60 + "\n")
        self.details.appendPlainText(details)

    def report_text(self) -> str:
        log_line = f"Log file: {self._log_path}" if self._log_path else "Log file: none"
        header = f"Podlab {__version__}, Python {sys.version.split()[0]}, {sys.platform}"
        return f"{header}\n{log_line}\n\n{self.details.toPlainText()}"

    def copy_details(self) -> None:
        QApplication.clipboard().setText(self.report_text())
        self.copy_button.setText("Copied")


class ErrorReporter(QObject):
    """Installs the hooks and owns the dialog; reports from any thread reach the GUI thread
    through the signal (queued across threads), and the dialog shows on the next loop pass."""

    sig_error = Signal(str, str)
    """Emitted with a one-line summary and the (redacted) traceback of each reported error."""

    def __init__(self, log_path: Path | None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.log_path = log_path
        self.dialog: ErrorDialog | None = None
        self._previous_excepthook: ExceptHook | None = None
        self._previous_threading_hook: Callable[[threading.ExceptHookArgs], object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Not Qt.ConnectionType.QueuedConnection: the Qt namespace builds all its enums on first
        # use (tens of milliseconds), and the reporter is made before the window's first paint.
        self.sig_error.connect(self._show_soon)

    def install(self) -> None:
        """Take over `sys.excepthook` and `threading.excepthook` (before the loop exists, so
        that an error while the first page loads is shown too)."""
        global _current
        self._previous_excepthook = sys.excepthook
        self._previous_threading_hook = threading.excepthook
        sys.excepthook = self._excepthook
        threading.excepthook = self._threading_excepthook
        _current = self

    def install_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Errors the asyncio loop reports (qasync's loop in the app) come here too."""
        loop.set_exception_handler(self._loop_exception_handler)
        self._loop = loop

    def uninstall(self) -> None:
        """Put back the hooks found by `install` (tests install and uninstall per test)."""
        global _current
        if self._previous_excepthook is not None:
            sys.excepthook = self._previous_excepthook
        if self._previous_threading_hook is not None:
            threading.excepthook = self._previous_threading_hook
        if self._loop is not None:
            self._loop.set_exception_handler(None)
            self._loop = None
        if _current is self:
            _current = None

    def report(self, error: BaseException, where: str = "") -> None:
        """Log `error` with its traceback and show it; safe to call from any thread."""
        summary = _summary(error, where)
        log.error("%s", summary, exc_info=(type(error), error, error.__traceback__))
        details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self.sig_error.emit(redact(summary), redact(details))

    def _excepthook(
        self, kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            QApplication.quit()
            return
        self.report(error.with_traceback(tb))

    def _threading_excepthook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        name = args.thread.name if args.thread is not None else "a thread"
        self.report(args.exc_value, f"in thread {name}")

    def _loop_exception_handler(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        error = context.get("exception")
        message = str(context.get("message", "asyncio error"))
        if isinstance(error, BaseException):
            self.report(error, message)
        else:
            log.error("asyncio: %s", message)
            self.sig_error.emit(redact(message), redact(repr(context)))

    @Slot(str, str)
    def _show_soon(self, summary: str, details: str) -> None:
        QTimer.singleShot(0, self, lambda: self._show(summary, details))

    def _show(self, summary: str, details: str) -> None:
        if self.dialog is None:
            parent = QApplication.activeWindow()
            self.dialog = ErrorDialog(self.log_path, parent)
            self.dialog.finished.connect(self._forget_dialog)
        self.dialog.add_error(summary, details)
        self.dialog.show()  # a dialog already shown keeps its place: the new error is added

    def _forget_dialog(self) -> None:
        if self.dialog is not None:
            self.dialog.deleteLater()
            self.dialog = None


_current: ErrorReporter | None = None


def report_error(error: BaseException, where: str = "") -> None:
    """Report through the installed reporter; only log when none is (a test, the CLI)."""
    if _current is not None:
        _current.report(error, where)
    else:
        log.error("%s", _summary(error, where), exc_info=(type(error), error, error.__traceback__))


def _summary(error: BaseException, where: str) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return f"{text} ({where})" if where else text


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
