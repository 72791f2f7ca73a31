"""The window's size, place and last page, remembered between runs.

Saved on every change (a page switch at once, a move or resize once it settles) and when the
window closes, in the state folder as `window.json`, readable by the user alone; restored at
start. A missing or damaged file means the defaults, never an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QByteArray, QEvent, QObject, QTimer

from podlab.core.paths import atomic_write_text
from podlab.ui.main_window import PAGE_KEYS, MainWindow

log = logging.getLogger(__name__)

STATE_FILE_NAME = "window.json"
SETTLE_MS = 500
"""A drag or resize sends many events; the state is written once they stop for this long."""


@dataclass(frozen=True)
class WindowState:
    geometry: bytes
    """QWidget.saveGeometry(): size, place, screen and maximized state, as Qt restores them."""
    page: str


def load_window_state(path: Path) -> WindowState | None:
    """The remembered state, or None when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        geometry = base64.b64decode(data["geometry"], validate=True)
        page = data["page"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        log.warning("window state %s ignored: %s", path, exc)
        return None
    if page not in PAGE_KEYS:
        page = PAGE_KEYS[0]
    return WindowState(geometry=geometry, page=page)


def save_window_state(path: Path, state: WindowState) -> None:
    text = json.dumps({"geometry": base64.b64encode(state.geometry).decode(), "page": state.page})
    atomic_write_text(path, text + "\n", private=True)


class WindowStateKeeper(QObject):
    """Restores a window's state and saves it on each change and at close."""

    def __init__(self, window: MainWindow, path: Path) -> None:
        super().__init__(window)
        self._window = window
        self._path = path
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SETTLE_MS)
        self._timer.timeout.connect(self.save)

    def restore(self) -> str | None:
        """Apply the remembered geometry; returns the remembered page (None if nothing is)."""
        state = load_window_state(self._path)
        if state is None:
            return None
        if not self._window.restoreGeometry(QByteArray(state.geometry)):
            log.warning("window state %s: geometry not restored", self._path)
        return state.page

    def watch(self) -> None:
        """Save from now on: at each page switch, after moves and resizes, and at close."""
        self._window.sig_page_changed.connect(self.save)
        self._window.installEventFilter(self)
        self._window.on_close(self.save)

    def save(self) -> None:
        self._timer.stop()
        state = WindowState(
            geometry=bytes(self._window.saveGeometry().data()),
            page=self._window.current_page_key(),
        )
        try:
            save_window_state(self._path, state)
        except OSError as exc:
            log.warning("cannot save the window state to %s: %s", self._path, exc)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._window and event.type() in (QEvent.Type.Move, QEvent.Type.Resize):
            self._timer.start()
        return False
