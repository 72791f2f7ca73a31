"""Where to send a prompt and how: an endpoint picker and a sampling-parameters form.

Used by the Playground (one of each) and by every pane of Compare. Neither talks HTTP itself:
the model list comes from `ChatClient.list_models()` (core), services from the shared
`ServiceBridge`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from podlab.core.chat.client import ChatClient, GenerationParams, normalize_base_url
from podlab.core.errors import PodlabError
from podlab.ui import background

CUSTOM = "Custom endpoint"
DEFAULT = "default"


class EndpointPicker(QWidget):
    """A running service or any OpenAI-compatible URL, a model, and an optional API key."""

    sig_changed = Signal()
    """Emitted when the endpoint, the model or the key changed (typed or picked)."""
    sig_models_loaded = Signal(list)
    """Emitted with the model ids after `refresh_models()` succeeded."""

    def __init__(self, parent: QWidget | None = None, *, compact: bool = False) -> None:
        super().__init__(parent)
        self._services: dict[str, Any] = {}
        self._models_task: asyncio.Task[list[str]] | None = None
        self.last_error = ""

        self.service_combo = QComboBox()
        self.service_combo.setObjectName("service")
        self.service_combo.setToolTip("A service started by Podlab, or any endpoint URL")
        self.service_combo.addItem(CUSTOM, "")
        self.service_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.url_edit = QLineEdit()
        self.url_edit.setAccessibleName("Endpoint URL")
        self.url_edit.setObjectName("endpoint")
        self.url_edit.setPlaceholderText("http://127.0.0.1:8080")
        self.url_edit.setToolTip("OpenAI-compatible base URL (/v1 is added when missing)")
        self.model_combo = QComboBox()
        self.model_combo.setAccessibleName("Model")
        self.model_combo.setObjectName("model")
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        model_edit = self.model_combo.lineEdit()
        assert model_edit is not None  # the combo is editable
        model_edit.setPlaceholderText("server default")
        self.model_combo.setMinimumContentsLength(14)
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.refresh_button = QToolButton()
        self.refresh_button.setText("↻")
        self.refresh_button.setToolTip("Ask the endpoint for its models (GET /v1/models)")
        self.refresh_button.clicked.connect(lambda: self.refresh_models_soon())
        self._service_key: str | None = None
        self.key_edit = QLineEdit()
        self.key_edit.setAccessibleName("API key")
        self.key_edit.setObjectName("api-key")
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_edit.setPlaceholderText("API key (optional)")
        self.key_edit.setToolTip("Sent as a Bearer token; never written to the history")
        self.status = QLabel()
        self.status.setObjectName("endpoint-status")
        self.status.setWordWrap(True)
        self.status.hide()

        model_row = QHBoxLayout()
        model_row.setContentsMargins(0, 0, 0, 0)
        model_row.setSpacing(2)
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.refresh_button)
        if compact:
            layout = QVBoxLayout(self)
            layout.setContentsMargins(0, 0, 0, 0)
            layout.setSpacing(3)
            first = QHBoxLayout()
            first.addWidget(self.service_combo)
            first.addWidget(self.url_edit, 1)
            layout.addLayout(first)
            second = QHBoxLayout()
            second.addLayout(model_row, 2)
            second.addWidget(self.key_edit, 1)
            layout.addLayout(second)
            layout.addWidget(self.status)
        else:
            grid = QGridLayout(self)
            grid.setContentsMargins(0, 0, 0, 0)
            grid.setHorizontalSpacing(6)
            grid.setVerticalSpacing(4)
            grid.addWidget(QLabel("Endpoint"), 0, 0)
            endpoint_row = QHBoxLayout()
            endpoint_row.addWidget(self.service_combo)
            endpoint_row.addWidget(self.url_edit, 1)
            grid.addLayout(endpoint_row, 0, 1)
            grid.addWidget(QLabel("Model"), 1, 0)
            second = QHBoxLayout()
            second.addLayout(model_row, 3)
            second.addWidget(self.key_edit, 2)
            grid.addLayout(second, 1, 1)
            grid.addWidget(self.status, 2, 1)
            grid.setColumnStretch(1, 1)

        self.service_combo.activated.connect(self._on_service_picked)
        self.url_edit.editingFinished.connect(self._on_url_edited)
        self.url_edit.textEdited.connect(lambda _text: self._forget_service())
        self.model_combo.currentTextChanged.connect(lambda _text: self.sig_changed.emit())
        self.key_edit.editingFinished.connect(self.sig_changed.emit)

    # -- values ------------------------------------------------------------------------------

    def endpoint(self) -> str:
        return self.url_edit.text().strip()

    def model(self) -> str | None:
        return self.model_combo.currentText().strip() or None

    def api_key(self) -> str | None:
        return self.key_edit.text() or None

    def set_endpoint(self, url: str, model: str | None = None) -> None:
        self.url_edit.setText(url)
        self._forget_service()
        for ident, service in self._services.items():
            if getattr(service, "endpoint", None) == url.rstrip("/").removesuffix("/v1"):
                self.service_combo.setCurrentIndex(self.service_combo.findData(ident))
                self._use_service_key(service)
        if model is not None:
            self.model_combo.setCurrentText(model)

    def set_model(self, model: str) -> None:
        self.model_combo.setCurrentText(model)

    def describe(self) -> str:
        """A short name for the user: the model, else the host."""
        return self.model() or self.endpoint() or "(no endpoint)"

    def show_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))
        self.status.setProperty("error", error)
        self.status.setStyleSheet("QLabel { color: #c0392b; }" if error else "")

    # -- services ----------------------------------------------------------------------------

    def set_services(self, services: Iterable[Any]) -> None:
        """Offer the services that are ready (objects with id, name, endpoint, model_ref); the
        chosen one stays chosen when it stops, marked with its state (a send then says so),
        instead of the choice falling back to a custom endpoint without a word."""
        current = self.service_combo.currentData()
        services = list(services)
        ready = [s for s in services if getattr(getattr(s, "state", None), "value", "") == "ready"]
        ready += [s for s in services if s.id == current and s not in ready]
        self._services = {s.id: s for s in ready}
        self.service_combo.blockSignals(True)
        try:
            self.service_combo.clear()
            self.service_combo.addItem(CUSTOM, "")
            for service in ready:
                state = getattr(getattr(service, "state", None), "value", "")
                label = service.name if state == "ready" else f"{service.name} ({state})"
                self.service_combo.addItem(label, service.id)
                index = self.service_combo.count() - 1
                self.service_combo.setItemData(
                    index, f"{service.model_ref} at {service.endpoint}", Qt.ItemDataRole.ToolTipRole
                )
            index = self.service_combo.findData(current) if current else 0
            self.service_combo.setCurrentIndex(max(0, index))
        finally:
            self.service_combo.blockSignals(False)

    def current_service(self) -> Any | None:
        """The chosen service (None for a custom endpoint); it may have stopped since."""
        return self._services.get(self.service_combo.currentData() or "")

    def select_service(self, service_id: str) -> bool:
        index = self.service_combo.findData(service_id)
        if index < 0:
            return False
        self.service_combo.setCurrentIndex(index)
        self._on_service_picked(index)
        return True

    def _on_service_picked(self, index: int) -> None:
        service = self._services.get(self.service_combo.itemData(index) or "")
        if service is None:
            return
        self.url_edit.setText(service.endpoint)
        self.model_combo.setCurrentText(service.model_ref)
        self._use_service_key(service)
        self.sig_changed.emit()
        self.refresh_models_soon()

    def _use_service_key(self, service: Any) -> None:
        """A Podlab service's own key goes with it: the user never types it."""
        key = getattr(service, "api_key", None)
        if key:
            self.key_edit.setText(key)
        self._service_key = key

    def _forget_service(self) -> None:
        if self.service_combo.currentIndex() != 0:
            self.service_combo.setCurrentIndex(0)
        # A service's key is never sent to another endpoint the user types.
        if self._service_key and self.key_edit.text() == self._service_key:
            self.key_edit.clear()
        self._service_key = None

    def _on_url_edited(self) -> None:
        self.sig_changed.emit()
        if self.endpoint():
            self.refresh_models_soon()

    # -- models ------------------------------------------------------------------------------

    def refresh_models_soon(self) -> asyncio.Task[list[str]] | None:
        """Ask the endpoint for its models in the background (the previous ask is dropped)."""
        if not self.endpoint():
            return None
        if self._models_task is not None and not self._models_task.done():
            self._models_task.cancel()
        self._models_task = background.start(self.refresh_models(), "list the models")
        return self._models_task

    async def refresh_models(self) -> list[str]:
        url = self.endpoint()
        try:
            normalize_base_url(url)
        except PodlabError as exc:
            self.show_status(exc.message, error=True)
            return []
        self.refresh_button.setEnabled(False)
        try:
            async with ChatClient(url, self.api_key(), connect_timeout=5.0) as client:
                models = await client.list_models()
        except PodlabError as exc:
            self.last_error = exc.message
            self.show_status(exc.message, error=True)
            return []
        finally:
            with contextlib.suppress(RuntimeError):  # the widget may be gone
                self.refresh_button.setEnabled(True)
        self.show_status("")
        typed = self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        try:
            self.model_combo.clear()
            self.model_combo.addItems(models)
            if typed:
                self.model_combo.setCurrentText(typed)
            elif models:
                self.model_combo.setCurrentIndex(0)
        finally:
            self.model_combo.blockSignals(False)
        if not typed and models:
            self.sig_changed.emit()
        self.sig_models_loaded.emit(models)
        return models


def _float_box(low: float, high: float, step: float, decimals: int = 2) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low - step, high)  # the value below the range means "the server's default"
    box.setSingleStep(step)
    box.setSpecialValueText(DEFAULT)
    box.setValue(box.minimum())
    box.setCorrectionMode(QAbstractSpinBox.CorrectionMode.CorrectToNearestValue)
    return box


def _int_box(low: int, high: int, special: str = DEFAULT) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low - 1, high)
    box.setSpecialValueText(special)
    box.setValue(box.minimum())
    return box


class ParamsForm(QWidget):
    """Temperature, top-p, top-k, max tokens, seed, stop sequences, repeat penalty, context.

    Every field starts at "default": nothing is sent and the server decides.
    """

    sig_changed = Signal()

    def __init__(self, parent: QWidget | None = None, *, compact: bool = False) -> None:
        super().__init__(parent)
        self.temperature = _float_box(0.0, 2.0, 0.05)
        self.top_p = _float_box(0.0, 1.0, 0.05)
        self.top_k = _int_box(0, 1000)
        self.max_tokens = _int_box(1, 131072)
        self.seed = _int_box(0, 2_147_483_647, "random")
        self.repeat_penalty = _float_box(0.0, 3.0, 0.05)
        self.n_ctx = _int_box(0, 1_048_576)
        self.n_ctx.setSingleStep(1024)
        self.n_ctx.setToolTip(
            "Context size of the service (set when a service starts; not sent with prompts)"
        )
        self.stop = QPlainTextEdit()
        self.stop.setObjectName("stop-sequences")
        self.stop.setPlaceholderText("one per line; \\n for a newline")
        self.stop.setTabChangesFocus(True)
        line = self.stop.fontMetrics().lineSpacing()
        self.stop.setFixedHeight(line * 2 + 12)
        self.stop.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.fields: dict[str, QWidget] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "repeat_penalty": self.repeat_penalty,
            "n_ctx": self.n_ctx,
            "stop": self.stop,
        }
        labels = {
            "temperature": "Temperature",
            "top_p": "Top p",
            "top_k": "Top k",
            "max_tokens": "Max tokens",
            "seed": "Seed",
            "repeat_penalty": "Repeat penalty",
            "n_ctx": "Context size",
            "stop": "Stop",
        }
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setVerticalSpacing(3 if compact else 6)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for name, widget in self.fields.items():
            widget.setObjectName(f"param-{name}")
            form.addRow(labels[name], widget)
            if isinstance(widget, QDoubleSpinBox | QSpinBox):
                widget.valueChanged.connect(lambda _value: self.sig_changed.emit())
        self.stop.textChanged.connect(self.sig_changed.emit)

    def params(self) -> GenerationParams:
        params = GenerationParams()
        for name in ("temperature", "top_p", "repeat_penalty"):
            box = self.fields[name]
            assert isinstance(box, QDoubleSpinBox)
            if box.value() > box.minimum():
                setattr(params, name, round(box.value(), box.decimals()))
        for name in ("top_k", "max_tokens", "seed", "n_ctx"):
            box = self.fields[name]
            assert isinstance(box, QSpinBox)
            if box.value() > box.minimum():
                setattr(params, name, box.value())
        params.stop = [
            line.replace("\\n", "\n").replace("\\t", "\t")
            for line in self.stop.toPlainText().splitlines()
            if line
        ]
        return params

    def set_params(self, params: GenerationParams | Mapping[str, Any] | None) -> None:
        if not isinstance(params, GenerationParams):
            try:
                params = GenerationParams.from_dict(params or {})
            except PodlabError:
                params = GenerationParams()
        for name, widget in self.fields.items():
            widget.blockSignals(True)
            try:
                value = getattr(params, name)
                if isinstance(widget, QDoubleSpinBox):
                    widget.setValue(widget.minimum() if value is None else float(value))
                elif isinstance(widget, QSpinBox):
                    widget.setValue(widget.minimum() if value is None else int(value))
                else:
                    self.stop.setPlainText(
                        "\n".join(s.replace("\n", "\\n").replace("\t", "\\t") for s in params.stop)
                    )
            finally:
                widget.blockSignals(False)
        self.sig_changed.emit()

    def to_dict(self) -> dict[str, Any]:
        """The parameters as stored with a conversation (only those that are set)."""
        return {k: v for k, v in self.params().to_dict().items() if v not in (None, [], {})}
