"""Services: every inference server Podlab runs, in Podman or the local engine.

A table (model/view over `InferenceService` objects of the shared `ServiceManager`) with the
state, the model, the engine, what the server really got (GPU layers or CPU, read from its log)
and the endpoint; below it the selected service's details: overview, live logs and client code
to copy. "New service…" asks for a model and the serving options; starting, stopping,
restarting and deleting run as tasks that the Tasks page shows. Only Podlab's own services are
listed (the manager finds them by their labels and records), never anyone else's containers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import qasync
import shiboken6
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QFontDatabase, QGuiApplication, QHideEvent, QPainter, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from podlab.core.lab import Lab
from podlab.core.models.store import PARTIAL, StoredModel
from podlab.core.serving.container_spec import PODLAB_SERVER_IMAGE, ServiceOptions
from podlab.core.serving.gpu.detect import GpuReport
from podlab.core.serving.gpu.host import Diagnosis
from podlab.core.serving.gpu.passthrough import WANTS, plan_passthrough
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.planning import ENGINE_CHOICES, ServeRequest
from podlab.core.serving.services import ServiceEvent
from podlab.core.serving.snippets import Snippet, snippets
from podlab.core.tasks import Task
from podlab.ui.download_bridge import bridge_for
from podlab.ui.service_bridge import (
    MessageDialog,
    ServiceBridge,
    ask,
    exec_dialog,
    open_dialog,
    service_bridge_for,
)
from podlab.ui.throttle import Throttle

ModelIndex = QModelIndex | QPersistentModelIndex
COLUMNS = ("Service", "Model", "State", "Engine", "Device", "Endpoint")
COL_NAME, COL_MODEL, COL_STATE, COL_ENGINE, COL_DEVICE, COL_ENDPOINT = range(len(COLUMNS))
LevelRole = Qt.ItemDataRole.UserRole + 1
"""Role with the badge level ("ok", "warning", "error", "busy", "off") of State and Device."""

BADGE_COLOURS = {
    "ok": "#2e7d32",
    "warning": "#a15c00",
    "error": "#c62828",
    "busy": "#1565c0",
    "off": "#607d8b",
}
"""Badge backgrounds with white text: readable on the light and the dark palette alike."""
STATE_LEVELS = {
    ServiceState.CREATING: "busy",
    ServiceState.STARTING: "busy",
    ServiceState.READY: "ok",
    ServiceState.FAILED: "error",
    ServiceState.STOPPED: "off",
    ServiceState.EXITED: "error",
}
ENGINE_TITLES = {"podman": "Podman", "local": "Local"}
GPU_TITLES = {
    "auto": "Auto (use a GPU when one can be passed)",
    "none": "None (CPU only)",
    "nvidia": "NVIDIA",
    "amd": "AMD",
    "intel": "Intel",
}
ENGINE_CHOICE_TITLES = {
    "auto": "Auto (Podman when found, else local)",
    "podman": "Podman container",
    "local": "Local process (llama-cpp-python)",
}
LOG_LINES_KEPT = 5000
REFRESH_WAIT_S = 10.0
"""How long "Open in Playground" waits for a fresh list of services before using the known."""
DEFAULT_IMAGE_TEXT = "Default (llama.cpp server for the GPU found)"


def device_badge(service: InferenceService) -> tuple[str, str, str]:
    """(text, level, tooltip) of what the server really got, from its log."""
    offload = service.offload
    wanted = service.gpu_vendor not in ("", "none")
    layers = ""
    if offload is not None and offload.offloaded_layers is not None:
        total = offload.total_layers
        layers = f"{offload.offloaded_layers}/{total}" if total else str(offload.offloaded_layers)
    where = ""
    if offload is not None and (offload.device_name or offload.backend):
        where = " on " + " ".join(p for p in (offload.backend, offload.device_name) if p)
    if service.device == "GPU":
        text = f"GPU: {layers} layers" if layers else "GPU"
        return text, "ok", f"All layers on the GPU{where}."
    if service.device == "GPU+CPU":
        text = f"GPU+CPU: {layers} layers" if layers else "GPU+CPU"
        return text, "warning", f"Only part of the model is on the GPU{where}; the rest on the CPU."
    if service.device == "CPU":
        if wanted:
            return (
                "CPU (GPU unused)",
                "error",
                f"A {service.gpu_vendor} GPU was passed but the server runs on the CPU.",
            )
        tip = "The server runs on the CPU (its log shows no layer on a GPU)."
        if service.diagnosis is not None and service.diagnosis.level != "ok":
            tip += f"\n{service.diagnosis.message}"
            return "CPU", "warning", tip
        return "CPU", "off", tip
    if service.state == ServiceState.READY:
        return "unknown", "warning", "The server's log did not say where the layers went."
    wanted_text = f"{service.gpu_vendor.upper()} GPU asked for" if wanted else "CPU asked for"
    return "—", "", f"Known once the server is ready ({wanted_text})."


class ServiceTableModel(QAbstractTableModel):
    """Rows are InferenceService objects; a manager event repaints or inserts/removes one row."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._services: list[InferenceService] = []

    def service_at(self, row: int) -> InferenceService | None:
        return self._services[row] if 0 <= row < len(self._services) else None

    def row_of(self, service_id: str) -> int:
        for row, service in enumerate(self._services):
            if service.id == service_id:
                return row
        return -1

    def services(self) -> list[InferenceService]:
        return list(self._services)

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._services)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> str | None:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        service = self.service_at(index.row())
        if service is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(service, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(service, column)
        if role == LevelRole:
            if column == COL_STATE:
                return STATE_LEVELS.get(service.state, "off")
            if column == COL_DEVICE:
                return device_badge(service)[1]
        return None

    @staticmethod
    def _text(service: InferenceService, column: int) -> str:
        if column == COL_NAME:
            return service.name
        if column == COL_MODEL:
            return service.model_ref
        if column == COL_STATE:
            return service.state.value
        if column == COL_ENGINE:
            return ENGINE_TITLES.get(service.engine, service.engine)
        if column == COL_DEVICE:
            return device_badge(service)[0]
        return service.api_url

    @staticmethod
    def _tooltip(service: InferenceService, column: int) -> str | None:
        if column == COL_STATE and service.error:
            return service.error
        if column == COL_DEVICE:
            return device_badge(service)[2]
        if column == COL_MODEL:
            return service.model_file
        if column == COL_NAME:
            return f"id {service.id}"
        return None

    def set_services(self, services: list[InferenceService]) -> None:
        """Replace the rows, keeping rows that stay (so the selection survives)."""
        wanted = {service.id: service for service in services}
        for row in reversed(range(len(self._services))):
            if self._services[row].id not in wanted:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._services[row]
                self.endRemoveRows()
        for row, service in enumerate(self._services):
            if wanted[service.id] is not service:
                self._services[row] = wanted[service.id]
            self._changed(row)
        known = {service.id for service in self._services}
        for service in services:
            if service.id not in known:
                self._insert(service)

    def on_event(self, event: ServiceEvent) -> None:
        row = self.row_of(event.service.id)
        if event.kind == "removed":
            if row >= 0:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._services[row]
                self.endRemoveRows()
            return
        if row < 0:
            self._insert(event.service)
            return
        self._services[row] = event.service
        self._changed(row)

    def _insert(self, service: InferenceService) -> None:
        row = len(self._services)
        self.beginInsertRows(QModelIndex(), row, row)
        self._services.append(service)
        self.endInsertRows()

    def _changed(self, row: int) -> None:
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))


class BadgeDelegate(QStyledItemDelegate):
    """Paints the State and Device cells as coloured badges (white text on a solid colour)."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        level = index.data(LevelRole)
        colour = BADGE_COLOURS.get(level or "")
        if colour is None:
            super().paint(painter, option, index)
            return
        self.initStyleOption(option, index)
        style = option.widget.style() if option.widget is not None else None
        if style is not None:  # selection background and focus, without the text
            option.text = ""
            style.drawControl(style.ControlElement.CE_ItemViewItem, option, painter, option.widget)
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        metrics = option.fontMetrics
        width = min(metrics.horizontalAdvance(text) + 16, option.rect.width() - 8)
        height = min(metrics.height() + 6, option.rect.height() - 4)
        rect = QRect(
            option.rect.left() + 4,
            option.rect.top() + (option.rect.height() - height) // 2,
            width,
            height,
        )
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(colour))
        painter.drawRoundedRect(rect, height / 2, height / 2)
        painter.setPen(QColor("white"))
        elided = metrics.elidedText(text, Qt.TextElideMode.ElideRight, width - 12)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, elided)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: ModelIndex) -> QSize:
        size = super().sizeHint(option, index)
        return QSize(size.width() + 20, max(size.height(), option.fontMetrics.height() + 10))


def _auto_spin(minimum: int, maximum: int, value: int, auto_text: str = "Auto") -> QSpinBox:
    """A spin box whose lowest value means "let Podlab / the server choose"."""
    spin = QSpinBox()
    spin.setRange(minimum, maximum)
    spin.setSpecialValueText(auto_text)
    spin.setValue(value)
    return spin


class NewServiceDialog(QDialog):
    """Model (from the store or a GGUF file), engine, GPU and serving options."""

    def __init__(
        self,
        models: list[StoredModel],
        report: GpuReport | None,
        *,
        engine: str = "auto",
        context_size: int = 4096,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("new-service-dialog")
        self.setWindowTitle("New service")
        self._report = report
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("model")
        for entry in models:
            if entry.usable and entry.path.suffix.lower() == ".gguf":
                size = f" · {entry.size / 1024**2:.0f} MiB" if entry.size else ""
                self.model_combo.addItem(f"{entry.name}{size}", str(entry.path))
        self.model_combo.addItem("A GGUF file on this computer…", "")
        self.path_edit = QLineEdit()
        self.path_edit.setObjectName("model-path")
        self.path_edit.setPlaceholderText("/path/to/model.gguf")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(browse)

        self.engine_combo = QComboBox()
        self.engine_combo.setObjectName("engine")
        for choice in ENGINE_CHOICES:
            self.engine_combo.addItem(ENGINE_CHOICE_TITLES.get(choice, choice), choice)
        self.engine_combo.setCurrentIndex(max(0, self.engine_combo.findData(engine)))
        self.gpu_combo = QComboBox()
        self.gpu_combo.setObjectName("gpu")
        for want in WANTS:
            self.gpu_combo.addItem(GPU_TITLES.get(want, want), want)
        self.gpu_note = QLabel()
        self.gpu_note.setObjectName("gpu-note")
        self.gpu_note.setWordWrap(True)
        self.gpu_note.setTextFormat(Qt.TextFormat.PlainText)

        self.ctx_spin = QSpinBox()
        self.ctx_spin.setObjectName("ctx-size")
        self.ctx_spin.setRange(256, 1_048_576)
        self.ctx_spin.setSingleStep(1024)
        self.ctx_spin.setValue(context_size)
        self.ctx_spin.setSuffix(" tokens")
        self.layers_spin = _auto_spin(-1, 999, -1, "Auto (all on a GPU, 0 on the CPU)")
        self.layers_spin.setObjectName("gpu-layers")
        self.threads_spin = _auto_spin(0, 512, 0)
        self.threads_spin.setObjectName("threads")
        self.parallel_spin = _auto_spin(0, 64, 0)
        self.parallel_spin.setObjectName("parallel")
        self.port_spin = _auto_spin(0, 65535, 0, "Auto (a free port)")
        self.port_spin.setObjectName("port")
        self.image_combo = QComboBox()
        self.image_combo.setObjectName("image")
        self.image_combo.setEditable(True)
        self.image_combo.addItem(DEFAULT_IMAGE_TEXT)
        self.image_combo.addItem(PODLAB_SERVER_IMAGE)
        self.image_combo.setToolTip(
            "Podman only. The default is llama.cpp's server image for the GPU found (CPU, CUDA, "
            f"ROCm, Intel); {PODLAB_SERVER_IMAGE} is Podlab's own llama-cpp-python image."
        )

        form = QFormLayout()
        form.addRow("Model", self.model_combo)
        form.addRow("GGUF file", path_row)
        form.addRow("Engine", self.engine_combo)
        form.addRow("GPU", self.gpu_combo)
        form.addRow("", self.gpu_note)
        form.addRow("Context size", self.ctx_spin)
        form.addRow("GPU layers", self.layers_spin)
        form.addRow("CPU threads", self.threads_spin)
        form.addRow("Parallel slots", self.parallel_spin)
        form.addRow("Port", self.port_spin)
        form.addRow("Server image", self.image_combo)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start_button = self.buttons.addButton(
            "Start service", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.buttons.accepted.connect(self._accept_if_valid)
        self.buttons.rejected.connect(self.reject)
        self.problem = QLabel()
        self.problem.setObjectName("problem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet(f"color: {BADGE_COLOURS['error']};")
        # Dynamic texts get fixed heights: a shown dialog whose minimum size changes makes
        # the offscreen platform warn, and a jumping dialog is unpleasant anyway.
        line = self.problem.fontMetrics().lineSpacing()
        self.problem.setFixedHeight(2 * line + 4)
        self.gpu_note.setFixedHeight(3 * line + 4)
        self.gpu_note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        note = QLabel(
            "The port is published on 127.0.0.1 unless the settings say otherwise. Parallel "
            "slots apply to llama.cpp's server; the local engine answers one request at a time."
        )
        note.setWordWrap(True)
        note.setEnabled(False)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(560)

        self.model_combo.currentIndexChanged.connect(self._model_chosen)
        self.gpu_combo.currentIndexChanged.connect(self._update_gpu_note)
        self.engine_combo.currentIndexChanged.connect(self._engine_chosen)
        self._engine_chosen()
        self._model_chosen()

    def set_model_path(self, path: str | Path) -> None:
        self.model_combo.setCurrentIndex(self.model_combo.count() - 1)
        self.path_edit.setText(str(path))

    def select_model(self, path: str | Path) -> None:
        """Pre-fill the model: its entry in the store list, else the GGUF file field (a model
        found in another tool's folder, whose file name does not end in .gguf)."""
        index = self.model_combo.findData(str(path))
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        else:
            self.set_model_path(path)

    def set_choice(self, combo: QComboBox, value: str) -> None:
        combo.setCurrentIndex(combo.findData(value))

    def _model_chosen(self) -> None:
        path = self.model_combo.currentData()
        if path:
            self.path_edit.setText(str(path))
        self.path_edit.setReadOnly(bool(path))

    def _engine_chosen(self) -> None:
        self.image_combo.setEnabled(self.engine_combo.currentData() != "local")
        self._update_gpu_note()

    def _browse(self) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, "Choose a GGUF model", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if name:
            self.set_model_path(name)

    def _update_gpu_note(self) -> None:
        want = str(self.gpu_combo.currentData())
        engine = str(self.engine_combo.currentData())
        if self._report is None:
            self.gpu_note.setText("")
            return
        diagnosis = plan_passthrough(self._report, want).diagnosis
        text = diagnosis.message + (f"\nFix: {diagnosis.fix}" if diagnosis.fix else "")
        if engine == "local":
            found = self._report.gpus if want == "auto" else self._report.by_vendor(want)
            if want != "none" and found:
                diagnosis = Diagnosis(
                    "ok",
                    f"Local engine: llama.cpp offloads to {found[0].label} if llama-cpp-python "
                    "was built with GPU support; the Device column shows what it really got.",
                )
            else:
                diagnosis = Diagnosis("ok", "Local engine on the CPU.")
            text = diagnosis.message
        elif engine == "auto" and self._report.gpus:
            text = "In Podman: " + text
        self.gpu_note.setText(text)
        colour = {"error": BADGE_COLOURS["error"], "warning": BADGE_COLOURS["warning"]}
        self.gpu_note.setStyleSheet(
            f"color: {colour[diagnosis.level]};" if diagnosis.level in colour else ""
        )

    def _accept_if_valid(self) -> None:
        path = self.path_edit.text().strip()
        problem = ""
        if not path:
            problem = "Choose a model from the store or a GGUF file."
        elif not Path(path).expanduser().is_file():
            problem = f"{path} is not a file."
        elif path.endswith(".partial"):
            problem = f"{path} is an unfinished download; finish it on the Models page first."
        self.problem.setText(problem)
        if not problem:
            self.accept()

    def values(self) -> ServeRequest:
        def auto(spin: QSpinBox) -> int | None:
            return None if spin.value() == spin.minimum() else spin.value()

        image = self.image_combo.currentText().strip()
        options = ServiceOptions(
            image=None if image in ("", DEFAULT_IMAGE_TEXT) else image,
            ctx_size=self.ctx_spin.value(),
            gpu_layers=auto(self.layers_spin),
            threads=auto(self.threads_spin),
            parallel=auto(self.parallel_spin),
            port=auto(self.port_spin),
        )
        return ServeRequest(
            model=str(Path(self.path_edit.text().strip()).expanduser()),
            engine=str(self.engine_combo.currentData()),
            gpu=str(self.gpu_combo.currentData()),
            options=options,
        )


class SnippetPane(QWidget):
    """One client snippet, read-only, with a Copy button."""

    def __init__(self, owner: ServiceDetails, snippet_key: str) -> None:
        super().__init__()
        self.key = snippet_key
        self._owner = owner
        self.code = QPlainTextEdit()
        self.code.setObjectName(f"snippet-{snippet_key}")
        self.code.setReadOnly(True)
        self.code.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.code.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setObjectName(f"copy-{snippet_key}")
        self.copy_button.clicked.connect(self.copy)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.code, 1)
        layout.addLayout(row)

    def set_snippet(self, snippet: Snippet | None) -> None:
        code = snippet.code if snippet else ""
        if self.code.toPlainText() != code:  # keep the user's selection across refreshes
            self.code.setPlainText(code)
        self.copy_button.setEnabled(snippet is not None)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.code.toPlainText())
        self._owner.sig_snippet_copied.emit(self.key)


class ServiceDetails(QWidget):
    """The selected service: actions, overview, live logs and client snippets."""

    sig_snippet_copied = Signal(str)
    """Emitted with the snippet key ("curl", "python-openai", ...) after Copy."""

    SNIPPET_TABS = (
        ("curl", "curl"),
        ("python-openai", "Python (openai)"),
        ("python-httpx", "Python (httpx)"),
        ("javascript", "JavaScript (fetch)"),
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service: InferenceService | None = None
        self.title = QLabel()
        self.title.setObjectName("service-title")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.restart_button = QPushButton("Restart")
        self.delete_button = QPushButton("Delete…")
        self.playground_button = QPushButton("Open in Playground")
        actions = QHBoxLayout()
        actions.addWidget(self.title, 1)
        for button in (
            self.start_button,
            self.stop_button,
            self.restart_button,
            self.delete_button,
            self.playground_button,
        ):
            actions.addWidget(button)

        self.overview = QLabel()
        self.overview.setObjectName("service-overview")
        self.overview.setWordWrap(True)
        self.overview.setTextFormat(Qt.TextFormat.RichText)
        self.overview.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.overview.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        overview_page = QWidget()
        overview_layout = QVBoxLayout(overview_page)
        overview_layout.addWidget(self.overview)
        overview_layout.addStretch(1)

        self.follow_check = QCheckBox("Follow")
        self.follow_check.setChecked(True)
        self.log_view = QPlainTextEdit()
        self.log_view.setObjectName("service-log")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES_KEPT)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_view.setPlaceholderText("The server's log appears here.")
        log_page = QWidget()
        log_layout = QVBoxLayout(log_page)
        log_layout.setContentsMargins(4, 4, 4, 4)
        log_top = QHBoxLayout()
        log_top.addWidget(QLabel("Server log (stdout and stderr)"), 1)
        log_top.addWidget(self.follow_check)
        log_layout.addLayout(log_top)
        log_layout.addWidget(self.log_view, 1)

        self.snippet_tabs = QTabWidget()
        self.snippet_tabs.setObjectName("snippet-tabs")
        self.snippet_panes: dict[str, SnippetPane] = {}
        for key, title in self.SNIPPET_TABS:
            pane = SnippetPane(self, key)
            self.snippet_panes[key] = pane
            self.snippet_tabs.addTab(pane, title)

        self.tabs = QTabWidget()
        self.tabs.addTab(overview_page, "Overview")
        self.tabs.addTab(log_page, "Logs")
        self.tabs.addTab(self.snippet_tabs, "Client code")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(actions)
        layout.addWidget(self.tabs, 1)
        self.show_service(None)

    def show_service(self, service: InferenceService | None) -> None:
        """Fill the overview and snippets (the log is the page's job: it follows it)."""
        self.service = service
        for button in (
            self.start_button,
            self.stop_button,
            self.restart_button,
            self.delete_button,
            self.playground_button,
        ):
            button.setEnabled(False)
        if service is None:
            self.title.setText("<b>No service selected</b>")
            self.overview.setText("")
            for pane in self.snippet_panes.values():
                pane.set_snippet(None)
            return
        state = service.state
        busy = state in (ServiceState.CREATING,)
        self.start_button.setEnabled(not state.running and not busy)
        self.stop_button.setEnabled(state.running)
        self.restart_button.setEnabled(not busy)
        self.delete_button.setEnabled(not busy)
        self.playground_button.setEnabled(state == ServiceState.READY)
        self._set_text(self.title, f"<b>{_escape(service.name)}</b> — {state.value}")
        self._set_text(self.overview, self._overview_html(service))
        by_key = {s.key: s for s in snippets(service.api_url, service.model_ref)}
        for key, pane in self.snippet_panes.items():
            pane.set_snippet(by_key.get(key))

    @staticmethod
    def _set_text(label: QLabel, text: str) -> None:
        if label.text() != text:  # a periodic refresh must not drop the user's selection
            label.setText(text)

    @staticmethod
    def _overview_html(service: InferenceService) -> str:
        text, level, tip = device_badge(service)
        colour = BADGE_COLOURS.get(level, "")
        badge = (
            f'<span style="background:{colour}; color:white">&nbsp;{_escape(text)}&nbsp;</span>'
            if colour
            else _escape(text)
        )
        options = service.options
        model = f"{_escape(service.model_ref)}<br><small>{_escape(service.model_file)}</small>"
        engine = f"{ENGINE_TITLES.get(service.engine, service.engine)} · {service.server_kind}"
        asked = service.gpu_vendor if service.gpu_vendor != "none" else "none (CPU)"
        context = f"{options.ctx_size} tokens"
        if options.gpu_layers is not None:
            context += f" · {options.gpu_layers} GPU layers"
        if options.threads:
            context += f" · {options.threads} threads"
        if options.parallel:
            context += f" · {options.parallel} slots"
        rows = [
            ("Endpoint", f"<code>{_escape(service.api_url)}</code> (OpenAI-compatible)"),
            ("Model", model),
            ("Engine", _escape(engine)),
            ("Device", f"{badge} <small>{_escape(tip)}</small>"),
            ("GPU asked for", _escape(asked)),
            ("Context", context),
        ]
        if service.engine == "podman":
            rows.append(("Image", f"<small>{_escape(service.image or 'unknown')}</small>"))
            if service.container_id:
                rows.append(("Container", f"<code>{_escape(service.container_id[:12])}</code>"))
        elif service.pid:
            rows.append(("Process", f"pid {service.pid}"))
        if service.diagnosis is not None and service.diagnosis.level != "ok":
            fix = f"<br>Fix: {_escape(service.diagnosis.fix)}" if service.diagnosis.fix else ""
            colour = BADGE_COLOURS["error" if service.diagnosis.level == "error" else "warning"]
            rows.append(
                (
                    "GPU",
                    f'<span style="color:{colour}">{_escape(service.diagnosis.message)}</span>'
                    + fix,
                )
            )
        if service.error:
            error = _escape(service.error)
            rows.append(("Error", f'<span style="color:{BADGE_COLOURS["error"]}">{error}</span>'))
        body = "".join(
            f"<tr><td style='padding-right:12px'><b>{name}</b></td><td>{value}</td></tr>"
            for name, value in rows
        )
        return f"<table cellspacing='4'>{body}</table>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class ServicesPage(QWidget):
    """The list of services with their details; see the module doc."""

    sig_service_selected = Signal(object)
    """Emitted with the selected InferenceService (or None) when the selection changes."""

    REFRESH_MS = 10_000

    def __init__(self, lab: Lab, window: QWidget | None = None) -> None:
        super().__init__()
        self.title = "Services"
        self._lab = lab
        self._window = window
        self.bridge: ServiceBridge | None = service_bridge_for(lab)
        self.active_dialog: QDialog | None = None
        """The dialog now open (tests fill and click it)."""
        self.last_task: Task | None = None
        """The task of the last action started from this page."""
        self._first_load: asyncio.Task[None] | None = None
        self._refreshes: set[asyncio.Task[None]] = set()
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
        self.details.follow_check.toggled.connect(self._on_follow_toggled)
        self.bridge.sig_service_event.connect(self._on_service_event)
        add_close_handler = getattr(window, "on_close", None)
        if callable(add_close_handler):
            add_close_handler(self.detach)
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
        task = asyncio.get_event_loop_policy().get_event_loop().create_task(self.refresh())
        self._refreshes.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(self._refreshes.discard)
        return task

    async def refresh(self) -> None:
        bridge = self.bridge
        if bridge is None:
            return
        try:
            services = await bridge.refresh()
        except Exception as exc:  # shown on the page; the next refresh tries again
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
        loop = asyncio.get_event_loop_policy().get_event_loop()
        self._follow_task = loop.create_task(self._read_log(service, follow))

    async def _read_log(self, service: InferenceService, follow: bool) -> None:
        bridge = self.bridge
        if bridge is None:
            return
        try:
            async for line in bridge.manager.logs(service, follow=follow, tail=LOG_LINES_KEPT):
                self._pending_lines.append(line)
                self._flush_log()
        except Exception as exc:  # a log that cannot be read is said in the log view
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
        finally:
            self.new_button.setEnabled(True)
        dialog = NewServiceDialog(
            models,
            report,
            engine=self._lab.settings.engine,
            context_size=self._lab.settings.default_context_size,
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
        if service is None or self.bridge is None:
            return None
        task: Task = getattr(self.bridge, name)(service)
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

    def open_in_playground(self) -> None:
        service = self.selected()
        show_page = getattr(self._window, "show_page", None)
        if not callable(show_page):
            return
        page = show_page("playground")
        use = getattr(page, "select_service", None)
        if callable(use) and service is not None:
            use(service.id)

    def _status(self, text: str) -> None:
        status_bar = getattr(self.window(), "statusBar", None)
        if callable(status_bar):
            status_bar().showMessage(text, 10000)

    def show_message(self, title: str, text: str, hint: str = "") -> None:
        box = MessageDialog(self, title, text, hint, level="warning")
        open_dialog(box)


# -- serving a model from another page (Catalog, Models) ---------------------------------------


def services_page_of(window: QWidget | None) -> ServicesPage | None:
    """The window's Services page (created if need be), which owns the New service dialog."""
    page = getattr(window, "page", None)
    if not callable(page):
        return None
    found = page("services")
    return found if isinstance(found, ServicesPage) else None


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


def _refuse_unusable(window: QWidget | None, entry: StoredModel) -> bool:
    """True (and said in the status bar) when `entry` cannot be served: an unfinished
    download, or a file that is gone, is never handed to a server."""
    if entry.usable:
        return False
    why = "its download is unfinished" if entry.state == PARTIAL else "its file is gone"
    _say(window, f"{entry.name} cannot be served: {why}")
    return True


def _say(window: QWidget | None, text: str) -> None:
    status_bar = getattr(window, "statusBar", None)
    if callable(status_bar):
        status_bar().showMessage(text, 10000)


async def serve_model(window: QWidget | None, entry: StoredModel) -> Task | None:
    """Serve: the Services page's New service dialog with `entry` chosen; once the task is
    started the window shows the Services page, which selects the service when it exists.
    None when there is nothing to do (cancelled, not servable, no Services page)."""
    services = services_page_of(window)
    if services is None or _refuse_unusable(window, entry):
        return None
    task = await services.new_service(entry.path)
    show_page = getattr(window, "show_page", None)
    if task is not None and callable(show_page):
        show_page("services")
    return task


async def open_model_in_playground(window: QWidget | None, entry: StoredModel) -> bool:
    """Open a model in the Playground: there, select its READY service (or the one starting,
    once ready); without one, offer to serve it first and select that service once it is
    ready. True when the window switched to the Playground."""
    services = services_page_of(window)
    show_page = getattr(window, "show_page", None)
    if services is None or services.bridge is None or not callable(show_page):
        return False
    if _refuse_unusable(window, entry):
        return False
    bridge = services.bridge
    with contextlib.suppress(Exception):  # Podman absent or slow: the known services count
        await asyncio.wait_for(asyncio.shield(bridge.refresh()), REFRESH_WAIT_S)
    service = service_for(bridge.services(), entry.path)
    if service is not None:
        _select_in_playground(show_page("playground"), service.id)
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
    playground = getattr(window, "page", lambda _key: None)("playground")
    task = await services.new_service(
        entry.path, on_created=lambda created: _select_in_playground(playground, created.id)
    )
    if task is None:
        return False
    show_page("playground")
    _say(window, f"Starting {entry.name}: the Playground selects it once it is ready")
    return True


def _select_in_playground(playground: QWidget | None, service_id: str) -> None:
    select = getattr(playground, "select_service", None)
    if callable(select) and playground is not None and shiboken6.isValid(playground):
        select(service_id)


def create_page(lab: Lab, window: QWidget) -> QWidget:
    return ServicesPage(lab, window)
