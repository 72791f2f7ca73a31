"""One Podlab window per user: a second launch hands its arguments to the first and exits.

The first instance listens on a `QLocalServer`; a later `podlab FILE.gguf` (from a terminal or
the file manager, through the desktop entry's MIME type) connects, sends its files as one JSON
line, waits for the answer and exits without making a window. The first raises its window and
imports the files. The server's name is per user and per state folder, so that two users, or
two test runs with their own XDG folders, never reach each other's window.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from podlab.core.paths import Locations

if TYPE_CHECKING:
    from podlab.ui.main_window import MainWindow

log = logging.getLogger(__name__)

ACK = b"ok\n"
MAX_MESSAGE_BYTES = 1 << 20
"""A launch's arguments are a few paths; anything longer is not from Podlab."""


def server_name(locations: Locations) -> str:
    """The local socket's name for this user and this set of Podlab folders."""
    folder = hashlib.sha256(str(locations.state_dir).encode()).hexdigest()[:16]
    return f"podlab-{os.getuid()}-{folder}"


def launch_files(paths: list[str]) -> list[str]:
    """The files of a launch as absolute paths: the first instance has another working folder."""
    return [str(Path(path).expanduser().absolute()) for path in paths]


def hand_over(name: str, files: list[str], timeout_ms: int = 3000) -> bool:
    """Give `files` to the instance listening on `name`; False when none answers (then this
    process is the first and opens its own window)."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(timeout_ms):
        return False
    socket.write(json.dumps({"files": files}).encode() + b"\n")
    socket.waitForBytesWritten(timeout_ms)
    answer = b""
    while not answer.endswith(b"\n") and socket.waitForReadyRead(timeout_ms):
        answer += bytes(socket.readAll().data())
    socket.disconnectFromServer()
    return answer == ACK


class InstanceServer(QObject):
    """Listens for later launches and tells the window what they asked for."""

    sig_launched = Signal(list)
    """Emitted with the absolute file paths a later launch passed (empty: just show the window)."""

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._name = name
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._on_new_connection)

    def listen(self) -> bool:
        """Start listening; a socket left by a crashed instance is removed first (`hand_over`
        found nobody answering on it)."""
        QLocalServer.removeServer(self._name)
        if not self._server.listen(self._name):
            log.warning(
                "single instance: cannot listen on %s: %s", self._name, self._server.errorString()
            )
            return False
        return True

    def close(self) -> None:
        self._server.close()

    def _on_new_connection(self) -> None:
        while (socket := self._server.nextPendingConnection()) is not None:
            buffer = bytearray()
            socket.readyRead.connect(lambda s=socket, b=buffer: self._on_ready_read(s, b))
            socket.disconnected.connect(socket.deleteLater)
            if socket.bytesAvailable():
                self._on_ready_read(socket, buffer)

    def _on_ready_read(self, socket: QLocalSocket, buffer: bytearray) -> None:
        buffer += bytes(socket.readAll().data())
        if len(buffer) > MAX_MESSAGE_BYTES:
            socket.abort()
            return
        if not buffer.endswith(b"\n"):
            return
        try:
            files = json.loads(buffer)["files"]
            if not (isinstance(files, list) and all(isinstance(f, str) for f in files)):
                raise ValueError("files must be a list of paths")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("single instance: ignored a malformed launch message: %s", exc)
            socket.abort()
            return
        socket.write(ACK)
        socket.flush()
        self.sig_launched.emit(files)


def bring_forward(window: MainWindow) -> None:
    """Show the window over the others, restored if it was minimized."""
    from PySide6.QtCore import Qt  # its enums are built on first use: not at start-up

    window.setWindowState(window.windowState() & ~Qt.WindowState.WindowMinimized)
    window.show()
    window.raise_()
    window.activateWindow()


def open_launch_files(window: MainWindow, files: list[str]) -> None:
    """Import each GGUF file of a launch on the Models page; other files are only reported."""
    from podlab.ui import background
    from podlab.ui.pages.models import ModelsPage

    ggufs = [Path(path) for path in files if path.lower().endswith(".gguf")]
    others = [path for path in files if not path.lower().endswith(".gguf")]
    if others:
        window.show_status(f"Podlab opens GGUF models only, not {', '.join(others)}")
    if not ggufs:
        return
    page = window.show_page("models")
    assert isinstance(page, ModelsPage)
    for path in ggufs:
        background.start(page.import_path(path), f"import {path.name}")
