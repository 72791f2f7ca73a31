"""Qt side of services: one shared ServiceManager per Lab, service work as Tasks, async dialogs.

The Services page, the Dashboard and the Playground use `service_bridge_for(lab)`: one
`ServiceManager`, so a service started on one page is the same object on the others. Creating,
starting, restarting, stopping and deleting a service run as `TaskManager` tasks (kind
"service"), so the Tasks page lists them with their progress lines and a cancel button; the
manager's events become the `sig_service_event` signal.

Also here: `exec_dialog` (await a dialog's answer without a nested event loop) and
`MessageDialog` (a message or question that the offscreen platform shows without warnings).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from podlab.core.lab import Lab
from podlab.core.serving.inference import InferenceService
from podlab.core.serving.planning import ServeRequest
from podlab.core.serving.services import ServiceEvent, ServiceManager
from podlab.core.tasks import Task

TASK_KIND = "service"


class ServiceBridge(QObject):
    """Shared by every page of one Lab; see the module doc."""

    sig_service_event = Signal(object)
    """Emitted with each `ServiceEvent` of the manager (added, changed, removed)."""

    sig_services_listed = Signal(object)
    """Emitted with the list of services after each `refresh()`."""

    def __init__(self, lab: Lab, manager: ServiceManager | None = None) -> None:
        super().__init__()
        self.lab = lab
        self.manager = manager or ServiceManager(
            lab.engine, settings=lab.settings, locations=lab.locations
        )
        self._unsubscribe: Callable[[], None] | None = self.manager.subscribe(self._on_event)
        self._claimed: set[str] = set()
        self._refresh_lock = asyncio.Lock()

    def close(self) -> None:
        """Stop listening to the manager (the matching end of `subscribe`)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: ServiceEvent) -> None:
        if shiboken6.isValid(self):
            self.sig_service_event.emit(event)

    # -- reading -----------------------------------------------------------------------------

    def services(self) -> list[InferenceService]:
        """The services as last seen (no Podman call)."""
        return self.manager.known()

    async def refresh(self) -> list[InferenceService]:
        """Find every Podlab service again (Podman labels and local records)."""
        async with self._refresh_lock:
            services = await self.manager.list_services()
        self.sig_services_listed.emit(services)
        return services

    # -- work as tasks -----------------------------------------------------------------------

    def new_service(
        self,
        request: ServeRequest,
        *,
        on_created: Callable[[InferenceService], Any] | None = None,
    ) -> Task:
        """Create and start a service as a task; the task fails with the server's log tail."""
        text = str(request.model)
        label = Path(text).name if "/" in text or text.endswith(".gguf") else text

        async def work(task: Task) -> None:
            claimed: list[InferenceService] = []

            def listen(event: ServiceEvent) -> None:
                service = event.service
                if not claimed and event.kind == "added" and service.id not in self._claimed:
                    self._claimed.add(service.id)
                    claimed.append(service)
                if claimed and service is claimed[0] and event.detail:
                    task.add_log(event.detail)
                    task.report(detail=event.detail)

            unsubscribe = self.manager.subscribe(listen)
            try:
                task.report(detail="preparing")
                service = await self.manager.create(request)
                if on_created is not None:
                    on_created(service)
                task.report(0.3, f"starting {service.name}")
                await self.manager.start(service)
                task.add_log(f"ready at {service.api_url} on the {service.device}")
                task.report(1.0, f"ready at {service.api_url} ({service.device})")
            finally:
                unsubscribe()
                for service in claimed:
                    self._claimed.discard(service.id)

        return self.lab.tasks.start(f"Start service {label}", TASK_KIND, work)

    def start(self, service: InferenceService) -> Task:
        return self._run(f"Start service {service.name}", service, self._start_work)

    def restart(self, service: InferenceService) -> Task:
        return self._run(f"Restart service {service.name}", service, self._restart_work)

    def stop(self, service: InferenceService) -> Task:
        return self._run(f"Stop service {service.name}", service, self.manager.stop)

    def delete(self, service: InferenceService) -> Task:
        return self._run(f"Delete service {service.name}", service, self.manager.delete)

    async def _start_work(self, service: InferenceService) -> Any:
        return await self.manager.start(service)

    async def _restart_work(self, service: InferenceService) -> Any:
        return await self.manager.restart(service)

    def _run(
        self,
        name: str,
        service: InferenceService,
        action: Callable[[InferenceService], Awaitable[Any]],
    ) -> Task:
        async def work(task: Task) -> None:
            def listen(event: ServiceEvent) -> None:
                if event.service is service and event.detail:
                    task.add_log(event.detail)
                    task.report(detail=event.detail)

            unsubscribe = self.manager.subscribe(listen)
            try:
                await action(service)
            finally:
                unsubscribe()

        return self.lab.tasks.start(name, TASK_KIND, work)

    async def aclose(self) -> None:
        self.close()
        await self.manager.engine.aclose()


_bridges: dict[int, tuple[weakref.ref[Lab], ServiceBridge]] = {}


def service_bridge_for(lab: Lab) -> ServiceBridge:
    """The one ServiceBridge of a Lab (created on first use)."""
    key = id(lab)
    found = _bridges.get(key)
    if found is not None and found[0]() is lab and shiboken6.isValid(found[1]):
        return found[1]
    bridge = ServiceBridge(lab)

    def forget(_ref: weakref.ref[Lab]) -> None:
        _bridges.pop(key, None)

    _bridges[key] = (weakref.ref(lab, forget), bridge)
    return bridge


# -- dialogs ---------------------------------------------------------------------------------


def open_dialog(dialog: QDialog) -> None:
    """Open `dialog` window-modal without a nested event loop.

    The layout is activated first, so the window gets its size limits before it exists (the
    offscreen platform warns about limits that change on a shown window).
    """
    layout = dialog.layout()
    if layout is not None:
        layout.activate()
    dialog.open()


async def exec_dialog(dialog: QDialog) -> int:
    """Show `dialog` and wait for its result, keeping the one qasync loop.

    `QDialog.exec()` would spin a second Qt loop inside a coroutine; `open()` plus the
    `finished` signal does not, and tests can find the dialog and click its buttons.
    """
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def done(result: int) -> None:
        if not future.done():
            future.set_result(result)

    dialog.finished.connect(done)
    open_dialog(dialog)
    try:
        return await future
    finally:
        if shiboken6.isValid(dialog):  # a WA_DeleteOnClose dialog may be gone already
            dialog.finished.disconnect(done)


async def ask(page: Any, dialog: QDialog) -> bool:
    """Show `dialog` as the page's `active_dialog` (where tests find it and answer it), wait,
    and say whether it was accepted; the page forgets the dialog afterwards."""
    page.active_dialog = dialog
    try:
        return bool(await exec_dialog(dialog) == QDialog.DialogCode.Accepted)
    finally:
        page.active_dialog = None


ICONS = {
    "info": QStyle.StandardPixmap.SP_MessageBoxInformation,
    "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
    "error": QStyle.StandardPixmap.SP_MessageBoxCritical,
    "question": QStyle.StandardPixmap.SP_MessageBoxQuestion,
}


class MessageDialog(QDialog):
    """A message or a yes/no question, like QMessageBox but with a fixed layout.

    (QMessageBox changes its size limits while it is shown, which the offscreen platform used
    by tests and screenshots reports as a warning.)
    """

    def __init__(
        self,
        parent: QWidget | None,
        title: str,
        text: str,
        informative: str = "",
        *,
        level: str = "info",
        accept_text: str = "OK",
        reject_text: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("message-dialog")
        self.setWindowTitle(title)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        icon = QLabel()
        icon.setPixmap(self.style().standardIcon(ICONS.get(level, ICONS["info"])).pixmap(40, 40))
        self.text_label = QLabel(text)
        self.text_label.setWordWrap(True)
        self.text_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.informative_label = QLabel(informative)
        self.informative_label.setWordWrap(True)
        self.informative_label.setVisible(bool(informative))
        self.informative_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox()
        self.accept_button = self.buttons.addButton(
            accept_text, QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.reject_button = (
            self.buttons.addButton(reject_text, QDialogButtonBox.ButtonRole.RejectRole)
            if reject_text
            else None
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        texts = QVBoxLayout()
        texts.addWidget(self.text_label)
        texts.addWidget(self.informative_label)
        row = QHBoxLayout()
        row.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        row.addLayout(texts, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(460)
