"""One Podlab window per user: a second launch hands its arguments to the first and exits.

The first instance listens on a `QLocalServer`; a later `podlab FILE.gguf` (from a terminal or
the file manager, through the desktop entry's MIME type) connects, sends its files as one JSON
line, waits for the answer and exits without making a window. The first raises its window and
imports the files. The later launch talks through Python's socket module, so that QtNetwork is
loaded only after the first window's first paint. The server's name is per user and per state
folder, so that two users, or two test runs with their own XDG folders, never reach each
other's window.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from podlab.core.paths import Locations

if TYPE_CHECKING:
    from PySide6.QtNetwork import QLocalSocket

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


def local_socket_path(name: str) -> str:
    """Where `QLocalServer.listen(name)` puts its socket on Unix: Qt's temporary folder
    (TMPDIR, else /tmp) joined with the name. `InstanceServer.listen` checks it."""
    return os.path.join(os.path.normpath(os.environ.get("TMPDIR") or "/tmp"), name)


def hand_over(name: str, files: list[str], timeout_ms: int = 3000) -> bool:
    """Give `files` to the instance listening on `name`; False when none answers (then this
    process is the first and opens its own window)."""
    import socket

    answer = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout_ms / 1000)
        try:
            connection.connect(local_socket_path(name))
            connection.sendall(json.dumps({"files": files}).encode() + b"\n")
            while not answer.endswith(b"\n"):
                chunk = connection.recv(len(ACK))
                if not chunk:
                    break
                answer += chunk
        except OSError:  # no socket, nobody listening on it, or no answer in time
            return False
    return answer == ACK


class InstanceServer(QObject):
    """Listens for later launches and tells the window what they asked for."""

    sig_launched = Signal(list)
    """Emitted with the absolute file paths a later launch passed (empty: just show the window)."""

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        from PySide6.QtNetwork import QLocalServer

        super().__init__(parent)
        self._name = name
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._on_new_connection)

    def listen(self) -> bool:
        """Start listening; a socket left by a crashed instance is removed first (`hand_over`
        found nobody answering on it)."""
        self._server.removeServer(self._name)
        if not self._server.listen(self._name):
            log.warning(
                "single instance: cannot listen on %s: %s", self._name, self._server.errorString()
            )
            return False
        if self._server.fullServerName() != local_socket_path(self._name):
            log.warning(
                "single instance: listening on %s, where later launches do not look (%s)",
                self._server.fullServerName(),
                local_socket_path(self._name),
            )
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
