"""A desktop notification when a long task ends while the user looks elsewhere.

Downloads, builds and service starts take minutes; the user switches to another window
meanwhile. When such a task ends and Podlab's window is not the active one, a notification
says so (through the system tray, where the desktop has one; otherwise only a log line).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QSystemTrayIcon, QWidget

from podlab.core.lab import Lab
from podlab.core.tasks import Task, TaskState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notification:
    title: str
    text: str
    failed: bool


def notification_for(task: Task, window_active: bool) -> Notification | None:
    """What to tell the user about `task`, or None: only a task that ended on its own (done or
    failed, not cancelled by the user) while the window was not active is worth a notification."""
    if window_active or task.state not in (TaskState.DONE, TaskState.FAILED):
        return None
    if task.state is TaskState.FAILED:
        return Notification(f"Failed: {task.name}", task.error or "See the Tasks page.", True)
    return Notification(f"Finished: {task.name}", task.detail or "Done.", False)


class TaskNotifier(QObject):
    """Watches the Lab's tasks and notifies about the ones that end while the window is not
    active. `tray` gives the app's tray icon when it has one (the window makes it while services
    run); otherwise one is made for messages where the desktop has a system tray."""

    def __init__(
        self,
        lab: Lab,
        window: QWidget,
        tray: Callable[[], QSystemTrayIcon | None] | None = None,
    ) -> None:
        super().__init__(window)
        self._lab = lab
        self._window = window
        self._app_tray = tray
        self._tray: QSystemTrayIcon | None = None
        self._announced: set[int] = set()
        self._subscribed = True
        lab.tasks.subscribe(self._on_task)
        self.shown: list[Notification] = []
        """Every notification given, through the tray or the log (what tests read)."""

    def detach(self) -> None:
        """Stop watching (the window closes)."""
        if self._subscribed:
            self._subscribed = False
            self._lab.tasks.unsubscribe(self._on_task)

    def _on_task(self, task: Task) -> None:
        if task.id in self._announced:
            return
        notification = notification_for(task, self._window.isActiveWindow())
        if task.state.finished:
            self._announced.add(task.id)
        if notification is not None:
            self.show(notification)

    def show(self, notification: Notification) -> None:
        self.shown.append(notification)
        tray = self._tray_icon()
        if tray is None:
            log.info("notification (no system tray): %s: %s", notification.title, notification.text)
            return
        icon = (
            QSystemTrayIcon.MessageIcon.Warning
            if notification.failed
            else QSystemTrayIcon.MessageIcon.Information
        )
        tray.showMessage(notification.title, notification.text, icon, 10000)

    def _tray_icon(self) -> QSystemTrayIcon | None:
        shared = self._app_tray() if self._app_tray is not None else None
        if shared is not None:
            self._tray = shared
        if self._tray is None and QSystemTrayIcon.isSystemTrayAvailable():
            self._tray = QSystemTrayIcon(self._window.windowIcon(), self)
            self._tray.show()
        if self._tray is None or not QSystemTrayIcon.supportsMessages():
            return None
        return self._tray
