"""Services: every inference server Podlab runs, in Podman or the local engine.

A table (model/view over `InferenceService` objects of the shared `ServiceManager`) with the
state, the model, the engine, what the server really got (GPU layers or CPU, read from its log)
and the endpoint; below it the selected service's details: overview, live logs and client code
to copy. "New service…" asks for a model and the serving options; starting, stopping,
restarting and deleting run as tasks that the Tasks page shows; Export… opens the Export dialog
for the selected service. Only Podlab's own services are
listed (the manager finds them by their labels and records), never anyone else's containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import qasync
import shiboken6
from PySide6.QtCore import (
    QModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from podlab.core.lab import Lab
from podlab.core.models.hardware import llama_cpp_offloads_to_gpu
from podlab.core.models.store import PARTIAL, StoredModel
from podlab.core.serving.gpu.detect import GpuReport
from podlab.core.serving.gpu.passthrough import plan_passthrough
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.planning import ServeRequest
from podlab.core.serving.services import ServiceEvent
from podlab.core.tasks import Task
from podlab.ui import background
from podlab.ui.dialogs.export import ExportDialog, ServiceExport, open_export_dialog
from podlab.ui.dialogs.new_service import NewServiceDialog
from podlab.ui.download_bridge import bridge_for
from podlab.ui.models.services_model import (
    COL_DEVICE,
    COL_ENDPOINT,
    COL_STATE,
    BadgeDelegate,
    ServiceTableModel,
)
from podlab.ui.page_host import PageHost
from podlab.ui.service_bridge import (
    MessageDialog,
    ServiceBridge,
    ask,
    exec_dialog,
    service_bridge_for,
)
from podlab.ui.throttle import Throttle
from podlab.ui.widgets.service_details import LOG_LINES_KEPT, ServiceDetails

if TYPE_CHECKING:
    from podlab.ui.pages.playground import PlaygroundPage

log = logging.getLogger(__name__)

REFRESH_WAIT_S = 10.0
"""How long "Open in Playground" waits for a fresh list of services before using the known."""


class ServicesPage(QWidget):
    """The list of services with their details; see the module doc."""

    sig_service_selected = Signal(object)
    """Emitted with the selected InferenceService (or None) when the selection changes."""

    REFRESH_MS = 10_000

    def __init__(self, lab: Lab, host: PageHost | None = None) -> None:
        super().__init__()
        self.title = "Services"
        self._lab = lab
        self._host = host
        self.bridge: ServiceBridge | None = service_bridge_for(lab)
        self.active_dialog: QDialog | None = None
        """The dialog now open (tests fill and click it)."""
        self.last_task: Task | None = None
        """The task of the last action started from this page."""
        self.export_dialog: ExportDialog | None = None
        """The Export dialog last opened (tests fill and click it)."""
        self._first_load: asyncio.Task[None] | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._followed_id: str | None = None
        self._pending_lines: list[str] = []
        self._flush_log = Throttle(self._append_pending, 100, self)

        heading = QLabel("<h2>Services</h2>")
        self.engine_note = QLabel()
        self.engine_note.setObjectName("engine-note")
        self.engine_note.setWordWrap(True)
        self.engine_note.hide()
        self.new_button = QPushButton("New service…")
        self.new_button.setObjectName("new-service")
        self.refresh_button = QPushButton("Refresh")
        top = QHBoxLayout()
        top.addWidget(heading, 1)
        top.addWidget(self.new_button)
        top.addWidget(self.refresh_button)

        self.model = ServiceTableModel(self)
        self.table = QTableView()
        self.table.setAccessibleName("Services")
        self.table.setObjectName("services-table")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self._badges = BadgeDelegate(self.table)
        self.table.setItemDelegateForColumn(COL_STATE, self._badges)
        self.table.setItemDelegateForColumn(COL_DEVICE, self._badges)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_ENDPOINT, QHeaderView.ResizeMode.Stretch)
        header.setHighlightSections(False)

        self.empty = QLabel(
            "<h3>No services yet</h3>Serve a model as an OpenAI-compatible API: choose "
            "<b>New service…</b>, pick a downloaded model or a GGUF file, and Podlab starts it in "
            "a Podman container (on your GPU when it can pass one) or in a local process."
        )
        self.empty.setObjectName("services-empty")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setMargin(40)
        self.list_stack = QStackedWidget()
        self.list_stack.addWidget(self.empty)
        self.list_stack.addWidget(self.table)

        self.details = ServiceDetails()
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.list_stack)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([260, 420])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.engine_note)
        layout.addWidget(splitter, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(self.REFRESH_MS)
        self._timer.timeout.connect(self.refresh_soon)
        self.new_button.clicked.connect(self._on_new)
        self.refresh_button.clicked.connect(self.refresh_soon)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_changed)
        self.model.rowsInserted.connect(self._update_empty)
        self.model.rowsRemoved.connect(self._update_empty)
        self.model.dataChanged.connect(self._on_data_changed)
        self.details.start_button.clicked.connect(self._on_start)
        self.details.stop_button.clicked.connect(self._on_stop)
        self.details.restart_button.clicked.connect(self._on_restart)
        self.details.delete_button.clicked.connect(self._on_delete)
        self.details.playground_button.clicked.connect(self.open_in_playground)
        self.details.export_button.clicked.connect(self.export_selected)
        self.details.follow_check.toggled.connect(self._on_follow_toggled)
        self.bridge.sig_service_event.connect(self._on_service_event)
        if host is not None:
            host.on_close(self.detach)
        self.model.set_services(self.bridge.services())
        self._update_empty()

    # -- life cycle --------------------------------------------------------------------------

    def detach(self) -> None:
        """Disconnect from the shared bridge (it outlives the page) and stop following."""
        if self.bridge is not None:
            self.bridge.sig_service_event.disconnect(self._on_service_event)
            self.bridge = None
        self._timer.stop()
        self._stop_following()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._timer.start()
        if self._first_load is None:
            self._first_load = self.refresh_soon()
        elif self._first_load.done():
            self.refresh_soon()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._timer.stop()

    async def settle(self) -> None:
        """Await the first listing (for screenshots and tests)."""
        if self._first_load is None:
            self._first_load = self.refresh_soon()
        with contextlib.suppress(Exception):
            await asyncio.shield(self._first_load)

    def refresh_soon(self) -> asyncio.Task[None]:
        return background.start(self.refresh(), "refresh the services")

    async def refresh(self) -> None:
        bridge = self.bridge
        if bridge is None:
            return
        try:
            services = await bridge.refresh()
        except Exception as exc:  # shown on the page; the next refresh tries again
            log.warning("listing the services failed", exc_info=True)
            if shiboken6.isValid(self):
                self.engine_note.setText(f"⚠ Could not list the services: {exc}")
                self.engine_note.show()
            return
        if not shiboken6.isValid(self) or self.bridge is None:
            return
        self.model.set_services(services)
        problem = bridge.manager.engine_problem
        self.engine_note.setText(
            f"ℹ Podman services cannot be listed or started: {problem} (see the Dashboard). "
            "The local engine works without it."
            if problem
            else ""
        )
        self.engine_note.setVisible(bool(problem))
        self._update_empty()

    # -- selection, events -------------------------------------------------------------------

    def selected(self) -> InferenceService | None:
        return self.model.service_at(self.table.currentIndex().row())

    def select_service(self, service_id: str) -> None:
        row = self.model.row_of(service_id)
        if row >= 0:
            self.table.selectRow(row)

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        service = self.model.service_at(current.row())
        self.details.show_service(service)
        self._follow(service)
        self.sig_service_selected.emit(service)

    def _on_service_event(self, event: ServiceEvent) -> None:
        self.model.on_event(event)
        if self.table.currentIndex().row() < 0 and self.model.rowCount() == 1:
            self.table.selectRow(0)

    def _on_data_changed(self, top_left: QModelIndex, bottom_right: QModelIndex) -> None:
        current = self.table.currentIndex().row()
        if top_left.row() <= current <= bottom_right.row():
            service = self.model.service_at(current)
            self.details.show_service(service)
            following = self._follow_task is not None and not self._follow_task.done()
            if service is not None and service.state.running and not following:
                self._follow(service)  # (re)started: read its log again from the top

    def _update_empty(self) -> None:
        has_rows = self.model.rowCount() > 0
        self.list_stack.setCurrentWidget(self.table if has_rows else self.empty)
        self.details.setVisible(has_rows)

    # -- logs --------------------------------------------------------------------------------

    def _stop_following(self) -> None:
        if self._follow_task is not None and not self._follow_task.done():
            self._follow_task.cancel()
        self._follow_task = None

    def _follow(self, service: InferenceService | None) -> None:
        self._stop_following()
        self._pending_lines.clear()
        self.details.log_view.clear()
        self._followed_id = service.id if service is not None else None
        if service is None or self.bridge is None or service.state == ServiceState.CREATING:
            return
        follow = self.details.follow_check.isChecked() and service.state.running
        self._follow_task = background.start(
            self._read_log(service, follow), f"read the log of {service.name}"
        )

    async def _read_log(self, service: InferenceService, follow: bool) -> None:
        bridge = self.bridge
        if bridge is None:
            return
        try:
            async for line in bridge.manager.logs(service, follow=follow, tail=LOG_LINES_KEPT):
                self._pending_lines.append(line)
                self._flush_log()
        except Exception as exc:  # a log that cannot be read is said in the log view
            log.warning("reading the log of %s failed", service.name, exc_info=True)
            self._pending_lines.append(f"[podlab] cannot read the log: {exc}")
            self._flush_log()

    def _append_pending(self) -> None:
        if not self._pending_lines or not shiboken6.isValid(self.details.log_view):
            return
        text = "\n".join(self._pending_lines)
        self._pending_lines.clear()
        view = self.details.log_view
        bar = view.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        view.appendPlainText(text)
        if at_bottom:
            bar.setValue(bar.maximum())

    def log_text(self) -> str:
        """The log shown now, including lines not painted yet (tests read it)."""
        self._flush_log.flush()
        return self.details.log_view.toPlainText()

    def _on_follow_toggled(self, checked: bool) -> None:
        service = self.selected()
        if checked:
            self._follow(service)
        else:
            self._stop_following()

    # -- actions -----------------------------------------------------------------------------

    @qasync.asyncSlot()
    async def _on_new(self) -> None:
        await self.new_service()

    async def new_service(
        self,
        model: str | Path | None = None,
        *,
        on_created: Callable[[InferenceService], Any] | None = None,
    ) -> Task | None:
        """Ask for a model and options; start the service as a task (None when cancelled).

        `model` pre-fills the dialog (the Catalog's and Models page's Serve); once the
        service exists it is selected here, and `on_created` gets it too.
        """
        bridge = self.bridge
        if bridge is None or self.active_dialog is not None:
            return None  # (one dialog at a time)
        self.new_button.setEnabled(False)
        try:
            models = await bridge_for(self._lab).list_models()
            report = await bridge.manager.gpu_report()
            local_gpu = await asyncio.to_thread(
                llama_cpp_offloads_to_gpu, bridge.manager.local.python
            )
        finally:
            self.new_button.setEnabled(True)
        dialog = NewServiceDialog(
            models,
            report,
            engine=self._lab.settings.engine,
            context_size=self._lab.settings.default_context_size,
            local_gpu=local_gpu,
            parent=self,
        )
        if model is not None:
            dialog.select_model(model)
        accepted = await ask(self, dialog)
        request = dialog.values()
        dialog.deleteLater()
        if not accepted:
            return None
        return await self.start_new_service(request, report, on_created=on_created)

    async def start_new_service(
        self,
        request: ServeRequest,
        report: GpuReport | None = None,
        *,
        on_created: Callable[[InferenceService], Any] | None = None,
    ) -> Task | None:
        """Start a service as the dialog asked; asks before running on the CPU when a GPU is
        present but cannot be passed (never a silent fallback)."""
        bridge = self.bridge
        if bridge is None:
            return None
        if report is None:
            report = await bridge.manager.gpu_report()
        allow_cpu = False
        # Only a container needs the GPU passed (CDI, /dev nodes); the local engine uses
        # whatever its llama.cpp build supports, and the badge says what it really got.
        engine = await bridge.manager.resolve_engine(request.engine)
        diagnosis = plan_passthrough(report, request.gpu).diagnosis
        if engine == "podman" and diagnosis.level == "error":
            question = MessageDialog(
                self,
                "Run on the CPU?",
                diagnosis.message,
                (f"Fix: {diagnosis.fix}\n\n" if diagnosis.fix else "")
                + "You can fix this first (see the Dashboard), or run this service on the CPU "
                "now, which is much slower.",
                level="warning",
                accept_text="Run on the CPU",
                reject_text="Cancel",
            )
            allow_cpu = await ask(self, question)
            if not allow_cpu:
                return None
        task = bridge.new_service(
            replace(request, allow_cpu=allow_cpu),
            on_created=lambda service: self._created(service, on_created),
        )
        self._watch(task)
        return task

    def _created(
        self, service: InferenceService, also: Callable[[InferenceService], Any] | None
    ) -> None:
        if shiboken6.isValid(self):
            self.select_service(service.id)
        if also is not None:
            also(service)

    def _watch(self, task: Task) -> None:
        """Say in the status bar when an action failed (the Tasks page has the details)."""
        self.last_task = task
        handle = task._handle
        if handle is None:
            return

        def finished(_handle: object) -> None:
            if task.error and shiboken6.isValid(self):
                self._status(f"{task.name} failed: {task.error.splitlines()[0]}")

        handle.add_done_callback(finished)

    def _action(self, name: str) -> Task | None:
        service = self.selected()
        bridge = self.bridge
        if service is None or bridge is None:
            return None
        actions = {
            "start": bridge.start,
            "stop": bridge.stop,
            "restart": bridge.restart,
            "delete": bridge.delete,
        }
        task = actions[name](service)
        self._watch(task)
        return task

    def start_selected(self) -> Task | None:
        return self._action("start")

    def stop_selected(self) -> Task | None:
        return self._action("stop")

    def restart_selected(self) -> Task | None:
        return self._action("restart")

    def _on_start(self) -> None:
        self.start_selected()

    def _on_stop(self) -> None:
        self.stop_selected()

    def _on_restart(self) -> None:
        self.restart_selected()

    @qasync.asyncSlot()
    async def _on_delete(self) -> None:
        await self.delete_selected()

    async def delete_selected(self) -> Task | None:
        """Ask, then delete the selected service (its container or process; never the model)."""
        service = self.selected()
        if service is None or self.bridge is None:
            return None
        what = "container" if service.engine == "podman" else "server process and its record"
        dialog = MessageDialog(
            self,
            "Delete this service?",
            f"Delete {service.name}? Its {what} is removed; the model file stays.",
            level="question",
            accept_text="Delete",
            reject_text="Cancel",
        )
        agreed = await ask(self, dialog)
        if not agreed or self.bridge is None:
            return None
        if self._followed_id == service.id:
            self._stop_following()
        return self._action("delete")

    def export_selected(self) -> ExportDialog | None:
        """The Export dialog for the selected service, as it runs (its spec and GPU)."""
        service = self.selected()
        if service is None:
            return None
        self.export_dialog = open_export_dialog(ServiceExport(self._lab, service), self)
        return self.export_dialog

    def open_in_playground(self) -> None:
        service = self.selected()
        if self._host is None:
            return
        self._host.show_page("playground")
        if service is not None:
            self._host.playground_page().select_service(service.id)

    def _status(self, text: str) -> None:
        if self._host is not None:
            self._host.show_status(text)


# -- serving a model from another page (Catalog, Models) ---------------------------------------


def service_for(
    services: Iterable[InferenceService], model_file: str | Path
) -> InferenceService | None:
    """The service to chat with about this model file: the newest READY one, else the newest
    one still starting (the Playground selects it once it is ready); None if none runs."""
    wanted = Path(model_file).expanduser().resolve()
    mine = [
        s for s in services if s.model_file and Path(s.model_file).expanduser().resolve() == wanted
    ]
    for states in ((ServiceState.READY,), (ServiceState.CREATING, ServiceState.STARTING)):
        found = [s for s in mine if s.state in states]
        if found:
            return max(found, key=lambda s: s.created)
    return None


def _refuse_unusable(host: PageHost, entry: StoredModel) -> bool:
    """True (and said in the status bar) when `entry` cannot be served: an unfinished
    download, or a file that is gone, is never handed to a server."""
    if entry.usable:
        return False
    why = "its download is unfinished" if entry.state == PARTIAL else "its file is gone"
    host.show_status(f"{entry.name} cannot be served: {why}")
    return True


async def serve_model(host: PageHost | None, entry: StoredModel) -> Task | None:
    """Serve: the Services page's New service dialog with `entry` chosen; once the task is
    started the window shows the Services page, which selects the service when it exists.
    None when there is nothing to do (cancelled, not servable, no Services page)."""
    if host is None or _refuse_unusable(host, entry):
        return None
    task = await host.services_page().new_service(entry.path)
    if task is not None:
        host.show_page("services")
    return task


async def open_model_in_playground(host: PageHost | None, entry: StoredModel) -> bool:
    """Open a model in the Playground: there, select its READY service (or the one starting,
    once ready); without one, offer to serve it first and select that service once it is
    ready. True when the window switched to the Playground."""
    if host is None:
        return False
    services = host.services_page()
    if services.bridge is None or _refuse_unusable(host, entry):
        return False
    bridge = services.bridge
    with contextlib.suppress(Exception):  # Podman absent or slow: the known services count
        await asyncio.wait_for(asyncio.shield(bridge.refresh()), REFRESH_WAIT_S)
    service = service_for(bridge.services(), entry.path)
    if service is not None:
        host.show_page("playground")
        _select_in_playground(host.playground_page(), service.id)
        return True
    if services.active_dialog is not None:
        return False
    question = MessageDialog(
        services,
        "Serve this model first?",
        f"No service runs {entry.name} yet.",
        "Start one now? The New service dialog opens with this model; the Playground "
        "selects the service as soon as it answers (the start shows in Tasks).",
        level="question",
        accept_text="Serve…",
        reject_text="Cancel",
    )
    services.active_dialog = question
    try:
        agreed = await exec_dialog(question) == QDialog.DialogCode.Accepted
    finally:
        services.active_dialog = None
    if not agreed or not shiboken6.isValid(services):
        return False
    playground = host.playground_page()
    task = await services.new_service(
        entry.path, on_created=lambda created: _select_in_playground(playground, created.id)
    )
    if task is None:
        return False
    host.show_page("playground")
    host.show_status(f"Starting {entry.name}: the Playground selects it once it is ready")
    return True


def _select_in_playground(playground: PlaygroundPage, service_id: str) -> None:
    if shiboken6.isValid(playground):
        playground.select_service(service_id)


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return ServicesPage(lab, host)
