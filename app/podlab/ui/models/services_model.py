"""The Services table: one row per `InferenceService`, with State and Device drawn as badges."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import (
    QModelIndex,
    QRect,
    QSize,
    Qt,
)
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (
    QStyledItemDelegate,
    QStyleOptionViewItem,
)

from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.services import ServiceEvent
from podlab.ui.models.table import ModelIndex, RowTableModel

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


class ServiceTableModel(RowTableModel[InferenceService]):
    """Rows are InferenceService objects; a manager event repaints or inserts/removes one row."""

    columns = COLUMNS

    def row_key(self, item: InferenceService) -> str:
        return item.id

    def service_at(self, row: int) -> InferenceService | None:
        return self.item_at(row)

    def services(self) -> list[InferenceService]:
        return list(self._rows)

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
        for row in reversed(range(len(self._rows))):
            if self._rows[row].id not in wanted:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._rows[row]
                self.endRemoveRows()
        for row, service in enumerate(self._rows):
            if wanted[service.id] is not service:
                self._rows[row] = wanted[service.id]
            self._changed(row)
        known = {service.id for service in self._rows}
        for service in services:
            if service.id not in known:
                self._insert(service)

    def on_event(self, event: ServiceEvent) -> None:
        row = self.row_of(event.service.id)
        if event.kind == "removed":
            if row >= 0:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._rows[row]
                self.endRemoveRows()
            return
        if row < 0:
            self._insert(event.service)
            return
        self._rows[row] = event.service
        self._changed(row)

    def _insert(self, service: InferenceService) -> None:
        row = len(self._rows)
        self.beginInsertRows(QModelIndex(), row, row)
        self._rows.append(service)
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
