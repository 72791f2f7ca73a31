"""Catalog: every model of the bundled and user catalogs, searchable and filterable, with a
fits-my-machine badge, a details pane with the model card, and Download / Serve / Playground /
Delete actions.

The catalog files are read in a thread; problems in them (file:line) show in a banner that can
be dismissed while the good entries stay listed. Downloads run as tasks (see the Tasks page)
through the shared DownloadBridge; the page only starts them and repaints on its signals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import shiboken6
from PySide6.QtCore import QEvent, QModelIndex, QObject, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from podlab.core.errors import ConfigError, PodlabError
from podlab.core.lab import Lab
from podlab.core.models.hardware import Fit, MemoryEstimate
from podlab.core.models.modelinfo import CAPABILITIES, ModelInfo, ModelVariant
from podlab.core.models.store import PARTIAL, READY, StoredModel
from podlab.core.tasks import Task
from podlab.core.text import plural
from podlab.ui import background
from podlab.ui.download_bridge import bridge_for
from podlab.ui.models import select_source_row
from podlab.ui.models.catalog_model import (
    COL_CONTEXT,
    COL_FIT,
    COL_LICENSE,
    COL_NAME,
    COL_PARAMS,
    COL_PUBLISHER,
    COL_QUANT,
    COL_SIZE,
    MODEL_ROLE,
    CatalogFilterProxy,
    CatalogTableModel,
    fit_dot,
)
from podlab.ui.models.formatting import context_text, params_text, size_text
from podlab.ui.page_host import PageHost
from podlab.ui.pages.services import open_model_in_playground, serve_model
from podlab.ui.service_bridge import ask
from podlab.ui.widgets.model_card import ModelCardView

log = logging.getLogger(__name__)

GIB = 1024**3
SIZE_RANGES: tuple[tuple[str, int | None, int | None], ...] = (
    ("Any size", None, None),
    ("Under 1 GiB", None, GIB),
    ("1–4 GiB", GIB, 4 * GIB),
    ("4–8 GiB", 4 * GIB, 8 * GIB),
    ("8–16 GiB", 8 * GIB, 16 * GIB),
    ("16–32 GiB", 16 * GIB, 32 * GIB),
    ("Over 32 GiB", 32 * GIB, None),
)
MAX_BANNER_LINES = 6
COLUMN_WIDTHS = {
    COL_PUBLISHER: 100,
    COL_PARAMS: 52,
    COL_QUANT: 90,
    COL_SIZE: 74,
    COL_CONTEXT: 58,
    COL_LICENSE: 84,
    COL_FIT: 74,
}
MIN_NAME_WIDTH = 150
NARROW_HIDE_ORDER = (COL_LICENSE, COL_PUBLISHER)
"""Columns hidden first when the table is too narrow for all of them."""
BANNER_STYLE = """
#catalog-banner { background: #fff4ce; border: 1px solid #d9b500; border-radius: 4px; }
#catalog-banner QLabel { color: #3d3000; }
"""


def estimate_text(estimate: MemoryEstimate) -> str:
    """ "≈ 5.6 GiB at 4096 tokens: weights 4.6 · KV cache 0.5 · overhead 0.5 GiB"."""

    def gib(value: int) -> str:
        return f"{value / GIB:.1f}"

    weights = ("≈ " if estimate.weights_estimated else "") + gib(estimate.weights)
    return (
        f"≈ {gib(estimate.total)} GiB at {estimate.ctx} tokens: weights {weights} · "
        f"KV cache {gib(estimate.kv_cache)} · overhead {gib(estimate.overhead)} GiB"
    )


def breakable(value: str, every: int = 16) -> str:
    """`value` with zero-width spaces where a label may wrap it: after each / and every
    `every` characters of a run without one (a URL or a digest has no space to wrap at)."""
    out: list[str] = []
    run = 0
    for char in value:
        out.append(char)
        run += 1
        if char in "/?&=-_" or run >= every:
            out.append("\u200b")
            run = 0
    return "".join(out)


class ErrorBanner(QFrame):
    """Problems of the catalog files, one per line (file:line: problem), with a Dismiss."""

    sig_dismissed = Signal()
    """Emitted when the user closed the banner."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("catalog-banner")
        self.setStyleSheet(BANNER_STYLE)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.dismiss = QToolButton()
        self.dismiss.setText("Dismiss")
        self.dismiss.setToolTip(
            "Hide this message (Reload shows it again if the files still have problems)"
        )
        self.dismiss.clicked.connect(self._on_dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.dismiss, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_errors(self, errors: Sequence[ConfigError]) -> None:
        if not errors:
            self.label.clear()
            self.hide()
            return
        lines = [str(error) for error in errors[:MAX_BANNER_LINES]]
        if len(errors) > MAX_BANNER_LINES:
            lines.append(f"… and {len(errors) - MAX_BANNER_LINES} more")
        head = (
            "A catalog file has a problem; its other entries and the other catalogs are listed:"
            if len(errors) == 1
            else f"Catalog files have {len(errors)} problems; the entries that could be read "
            "are listed:"
        )
        self.label.setText("\n".join([head, *lines]))
        self.show()

    def _on_dismiss(self) -> None:
        self.hide()
        self.sig_dismissed.emit()


class CatalogDetails(QWidget):
    """The selected model: variant chooser, actions, facts and the rendered model card."""

    sig_variant_chosen = Signal(str, str)
    """Emitted with (model id, variant id) when the user picks another variant."""

    def __init__(self, source: CatalogTableModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = source
        self.model: ModelInfo | None = None
        self.variant: ModelVariant | None = None

        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.35)
        font.setBold(True)
        self.title.setFont(font)
        self.title.setWordWrap(True)
        self.subtitle = QLabel()
        self.subtitle.setTextFormat(Qt.TextFormat.PlainText)
        self.subtitle.setWordWrap(True)
        self.subtitle.setEnabled(False)

        self.variant_combo = QComboBox()
        self.variant_combo.setAccessibleName("Quantization")
        self.variant_combo.setToolTip("The file to download: one per quantization")
        self.variant_combo.currentIndexChanged.connect(self._on_variant_index)
        self.download_button = QPushButton("Download")
        self.serve_button = QPushButton("Serve")
        self.serve_button.setToolTip("Start an inference service with this model")
        self.playground_button = QPushButton("Open in Playground")
        self.delete_button = QPushButton("Delete")
        self.state_label = QLabel()
        self.state_label.setWordWrap(True)
        self.state_label.setTextFormat(Qt.TextFormat.PlainText)

        variant_row = QHBoxLayout()
        variant_row.addWidget(QLabel("Variant:"))
        variant_row.addWidget(self.variant_combo, 1)
        variant_row.addWidget(self.download_button)
        buttons = QHBoxLayout()
        for button in (self.serve_button, self.playground_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)

        self.facts: dict[str, QLabel] = {}
        # A URL or a digest has no space to wrap at: shown with break points anywhere, and
        # copied whole (without them) by a Copy button.
        self.copy_buttons: dict[str, QPushButton] = {}
        self._copy_values: dict[str, str] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        for key, label in (
            ("fit", "Fit"),
            ("memory", "Memory"),
            ("size", "Size"),
            ("url", "URL"),
            ("sha256", "SHA-256"),
            ("context", "Context"),
            ("capabilities", "Capabilities"),
            ("source", "Catalog file"),
        ):
            value = QLabel()
            value.setTextFormat(Qt.TextFormat.PlainText)
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setMinimumWidth(120)
            self.facts[key] = value
            if key not in ("url", "sha256"):
                form.addRow(label, value)
                continue
            value.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
            button = QPushButton("Copy")
            button.setToolTip("Copy the whole value to the clipboard")
            button.clicked.connect(lambda _checked=False, k=key: self.copy_value(k))
            self.copy_buttons[key] = button
            holder = QWidget()
            row = QHBoxLayout(holder)
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(value, 1)
            row.addWidget(button, 0, Qt.AlignmentFlag.AlignTop)
            form.addRow(label, holder)
        self.fit_icon = QLabel()
        fit_row = form.itemAt(0, QFormLayout.ItemRole.FieldRole)
        if fit_row is not None and fit_row.widget() is self.facts["fit"]:
            holder = QWidget()
            row = QHBoxLayout(holder)
            row.setContentsMargins(0, 0, 0, 0)
            form.removeWidget(self.facts["fit"])
            row.addWidget(self.fit_icon, 0, Qt.AlignmentFlag.AlignTop)
            row.addWidget(self.facts["fit"], 1)
            form.setWidget(0, QFormLayout.ItemRole.FieldRole, holder)

        self.card = ModelCardView()
        self.card.setAccessibleName("Model card")
        self.card.setMinimumHeight(120)
        self.empty = QLabel("Select a model to see its card, its files and whether it fits.")
        self.empty.setWordWrap(True)
        self.empty.setEnabled(False)

        self.body = QWidget()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.title)
        body.addWidget(self.subtitle)
        body.addLayout(variant_row)
        body.addLayout(buttons)
        body.addWidget(self.state_label)
        body.addLayout(form)
        body.addWidget(self.card, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 0, 0, 0)
        layout.addWidget(self.empty)
        layout.addWidget(self.body, 1)
        self.body.hide()

    def show_model(self, model: ModelInfo | None) -> None:
        if model is None:
            self.model = self.variant = None
            self.body.hide()
            self.empty.show()
            return
        changed = self.model is None or self.model.id != model.id
        self.model = model
        self.empty.hide()
        self.body.show()
        if changed:
            self.title.setText(model.name)
            bits = [
                model.publisher or "unknown publisher",
                f"{params_text(model.parameters)} parameters" if model.parameters else "",
                model.license or "license not stated",
            ]
            self.subtitle.setText(" · ".join(bit for bit in bits if bit))
            self.card.show_card(model.description)
        shown = self.source.shown_variant(model)
        self.variant_combo.blockSignals(True)
        self.variant_combo.clear()
        for variant in model.variants:
            label = variant.quantization or variant.id
            state = self.source.state_text(variant)
            self.variant_combo.addItem(f"{label} ({state})" if state else label, variant.id)
        if shown is not None:
            self.variant_combo.setCurrentIndex(self.variant_combo.findData(shown.id))
        self.variant_combo.setEnabled(len(model.variants) > 1)
        self.variant_combo.blockSignals(False)
        self.variant = shown
        self.refresh()

    def refresh(self) -> None:
        """Repaint facts, state and buttons for the current variant (state or context changed)."""
        model, variant = self.model, self.variant
        if model is None:
            return
        size, estimated = self.source.size_of(model, variant)
        result: Fit | None = self.source.fit(model, variant)
        facts = self.facts
        if result is None:
            facts["fit"].setText("Checking this machine…")
            self.fit_icon.setPixmap(fit_dot("").pixmap(14, 14))
        else:
            facts["fit"].setText(result.reason)
            self.fit_icon.setPixmap(fit_dot(result.level).pixmap(14, 14))
        facts["memory"].setText(
            estimate_text(result.estimate) if result and result.estimate else "unknown"
        )
        if size is None:
            facts["size"].setText("not stated")
        elif estimated:
            facts["size"].setText(f"≈ {size_text(size)} (estimated; the catalog does not state it)")
        else:
            facts["size"].setText(f"{size_text(size)} ({size:,} bytes)")
        self._set_copyable("url", variant.url if variant else "")
        self._set_copyable("sha256", variant.sha256 if variant and variant.sha256 else "")
        if not (variant and variant.sha256):
            facts["sha256"].setText("published digest checked at download")
        facts["context"].setText(
            f"{context_text(model.context_length)} tokens ({model.context_length:,})"
            if model.context_length
            else "not stated"
        )
        facts["capabilities"].setText(", ".join(model.capabilities) or "none stated")
        # The catalog's `source` notes (where each fact was checked) are for its maintainers.
        facts["source"].setText(model.source)

        state = self.source.state_text(variant) if variant else ""
        entry = self.source.stored(variant.id) if variant else None
        downloading = variant is not None and self.source.downloading(variant.id)
        ready = entry is not None and entry.state == READY and not downloading
        failure = self.source.failure(variant.id) if variant else None
        if downloading:
            self.state_label.setText(f"{state.capitalize()} (details on the Tasks page)")
            self.download_button.setText("Cancel download")
            self.download_button.setEnabled(True)
        elif failure is not None:
            self.state_label.setText(f"Download failed: {failure}")
            self.download_button.setText("Retry download")
            self.download_button.setEnabled(True)
        elif ready:
            assert entry is not None
            self.state_label.setText(f"Downloaded: {entry.path}")
            self.download_button.setText("Downloaded")
            self.download_button.setEnabled(False)
        elif entry is not None and entry.state == PARTIAL:
            self.state_label.setText(f"{state.capitalize()}: the download can resume")
            self.download_button.setText("Resume download")
            self.download_button.setEnabled(True)
        else:
            self.state_label.setText("Not on this machine")
            self.download_button.setText("Download")
            self.download_button.setEnabled(variant is not None)
        # Never offer a partial or running download to a server.
        self.serve_button.setEnabled(ready)
        self.playground_button.setEnabled(ready)
        self.delete_button.setEnabled(entry is not None and not downloading)
        self.delete_button.setText(
            "Discard partial" if entry is not None and entry.state == PARTIAL else "Delete"
        )
        tip = "" if ready else "Download the model first"
        self.serve_button.setToolTip("Start an inference service with this model" if ready else tip)
        self.playground_button.setToolTip("Chat with this model" if ready else tip)

    def _set_copyable(self, key: str, value: str) -> None:
        self._copy_values[key] = value
        self.facts[key].setText(breakable(value))
        self.facts[key].setToolTip(value)
        self.copy_buttons[key].setVisible(bool(value))

    def copy_value(self, key: str) -> None:
        """Put the whole URL or digest on the clipboard."""
        QGuiApplication.clipboard().setText(self._copy_values.get(key, ""))

    def _on_variant_index(self, index: int) -> None:
        if self.model is None or index < 0:
            return
        variant_id = self.variant_combo.itemData(index)
        self.variant = self.model.variant(variant_id)
        self.sig_variant_chosen.emit(self.model.id, variant_id)
        self.refresh()


class CatalogPage(QWidget):
    """The catalog table with search and filters on the left, the details pane on the right."""

    sig_serve_requested = Signal(str, str)
    """Emitted with (model id, variant id) when the user asks to serve a downloaded variant
    (before the New service dialog opens)."""

    sig_open_in_playground = Signal(str, str)
    """Emitted with (model id, variant id) after the window switched to the Playground."""

    sig_catalog_loaded = Signal(int)
    """Emitted with the number of models after the catalog was (re)loaded."""

    def __init__(self, lab: Lab, host: PageHost | None = None) -> None:
        super().__init__()
        self.title = "Catalog"
        self.lab = lab
        self._host = host
        self.bridge = bridge_for(lab)
        self.errors: list[ConfigError] = []
        self.active_dialog: QMessageBox | None = None

        self.source = CatalogTableModel(self)
        self.source.set_context(lab.settings.default_context_size)
        self.proxy = CatalogFilterProxy(self.source, self)

        self.banner = ErrorBanner()
        self.search = QLineEdit()
        self.search.setAccessibleName("Search the catalog")
        self.search.setPlaceholderText("Search name, publisher, description…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda text: self._filter(text=text))
        self.context_spin = QSpinBox()
        self.context_spin.setRange(256, 1_048_576)
        self.context_spin.setSingleStep(1024)
        self.context_spin.setValue(lab.settings.default_context_size)
        self.context_spin.setSuffix(" tokens")
        self.context_spin.setToolTip(
            "Context length the fit badges are estimated for (the KV cache grows with it)"
        )
        self.context_spin.valueChanged.connect(self._on_context_changed)
        self.fits_check = QCheckBox("Fits my machine")
        self.fits_check.setToolTip("Hide models marked red: too big for this machine's memory")
        self.fits_check.toggled.connect(lambda on: self._filter(fits_only=on))
        self.downloaded_check = QCheckBox("Downloaded")
        self.downloaded_check.setToolTip("Only models with a finished download")
        self.downloaded_check.toggled.connect(lambda on: self._filter(downloaded_only=on))

        self.publisher_combo = self._filter_combo("All publishers", "publisher")
        self.license_combo = self._filter_combo("All licenses", "license")
        self.quant_combo = self._filter_combo("All quantizations", "quantization")
        self.capability_combo = self._filter_combo("All capabilities", "capability")
        self.size_combo = QComboBox()
        for label, low, high in SIZE_RANGES:
            self.size_combo.addItem(label, (low, high))
        self.size_combo.currentIndexChanged.connect(self._on_size_changed)
        self.reload_button = QToolButton()
        self.reload_button.setText("Reload")
        self.reload_button.setToolTip("Read the catalog files again (after editing your own)")
        self.reload_button.clicked.connect(self.reload)
        self.count_label = QLabel("Loading the catalog…")
        self.count_label.setEnabled(False)

        self.table = QTableView()
        self.table.setAccessibleName("Catalog models")
        self.table.setObjectName("catalog-table")
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        header.setHighlightSections(False)
        header.setMinimumSectionSize(40)
        for column, width in COLUMN_WIDTHS.items():
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            self.table.setColumnWidth(column, width)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # catalog order until a click
        self.table.setSortingEnabled(True)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_changed)

        self.details = CatalogDetails(self.source)
        self.details.sig_variant_chosen.connect(self._on_variant_chosen)
        self.details.download_button.clicked.connect(self._on_download_clicked)
        self.details.serve_button.clicked.connect(self._on_serve_clicked)
        self.details.playground_button.clicked.connect(self._on_playground_clicked)
        self.details.delete_button.clicked.connect(self._on_delete_clicked)

        search_row = QHBoxLayout()
        search_row.addWidget(self.search, 1)
        search_row.addWidget(self.fits_check)
        search_row.addWidget(self.downloaded_check)
        filter_row = QHBoxLayout()
        for combo in (
            self.publisher_combo,
            self.license_combo,
            self.quant_combo,
            self.capability_combo,
            self.size_combo,
        ):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(9)
            filter_row.addWidget(combo, 1)
        heading = QHBoxLayout()
        heading.addWidget(QLabel("<h2>Catalog</h2>"))
        heading.addStretch(1)
        heading.addWidget(self.count_label)
        heading.addSpacing(12)
        fit_label = QLabel("Estimate fit at")
        fit_label.setBuddy(self.context_spin)
        heading.addWidget(fit_label)
        heading.addWidget(self.context_spin)
        heading.addWidget(self.reload_button)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addLayout(search_row)
        left_layout.addLayout(filter_row)
        left_layout.addWidget(self.table, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([760, 330])
        self.splitter.setChildrenCollapsible(False)
        self._viewport = self.table.viewport()
        self._viewport.installEventFilter(self)
        layout = QVBoxLayout(self)
        layout.addLayout(heading)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter, 1)

        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.rowsRemoved.connect(self._update_count)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)
        self.bridge.sig_store_changed.connect(self._on_store_changed)
        self.bridge.sig_download_progress.connect(self._on_download_progress)
        self.bridge.sig_download_finished.connect(self._on_download_finished)
        self._loading: asyncio.Task[None] = background.start(self._load(), "load the catalog page")
        self._attached = True
        if host is not None:
            host.on_close(self.detach)

    def detach(self) -> None:
        """Disconnect from the shared bridge (it outlives the page); safe to call twice."""
        if not self._attached:
            return
        self._attached = False
        self.bridge.sig_store_changed.disconnect(self._on_store_changed)
        self.bridge.sig_download_progress.disconnect(self._on_download_progress)
        self.bridge.sig_download_finished.disconnect(self._on_download_finished)

    # -- layout ----------------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt override
        if event.type() == QEvent.Type.Resize and watched is self._viewport:
            self._fit_columns()
        return super().eventFilter(watched, event)

    def _fit_columns(self) -> None:
        """In a narrow window, hide License then Publisher (the details pane shows both) so
        that the names and the fit badges stay readable."""
        room = self.table.viewport().width() - MIN_NAME_WIDTH
        hidden: set[int] = set()
        for column in NARROW_HIDE_ORDER:
            if sum(w for c, w in COLUMN_WIDTHS.items() if c not in hidden) <= room:
                break
            hidden.add(column)
        for column in NARROW_HIDE_ORDER:
            if self.table.isColumnHidden(column) != (column in hidden):
                self.table.setColumnHidden(column, column in hidden)
                if column not in hidden:
                    self.table.setColumnWidth(column, COLUMN_WIDTHS[column])

    # -- loading ---------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait for the first load (catalog, store state, host facts): screenshots call it."""
        await asyncio.shield(self._loading)

    async def _load(self, reload: bool = False) -> None:
        load = await self.bridge.catalog(reload=reload)
        if not shiboken6.isValid(self):
            return
        current = self.current_model()
        self.source.set_models(load.catalog)
        self.errors = list(load.errors)
        self.banner.show_errors(self.errors)
        self._fill_filter_choices()
        await self._refresh_store()
        if not shiboken6.isValid(self):
            return
        self._update_count()
        self.sig_catalog_loaded.emit(len(load.catalog))
        if (current is None or not self.select_model(current.id)) and self.proxy.rowCount():
            self.table.selectRow(0)
        try:
            facts = await self.bridge.host_facts()
            if not shiboken6.isValid(self):
                return
        except Exception as exc:  # the badges stay grey; the catalog stays usable
            log.warning("cannot read this machine's memory and GPUs: %s", exc)
            self._status(f"Fit badges unavailable: cannot read this machine's memory ({exc})")
            return
        self.source.set_facts(facts)
        self.details.refresh()

    @asyncSlot()
    async def reload(self) -> None:
        """Read the catalog files again; the banner shows their problems anew."""
        # awaited here: a failure reaches the handler once, through this async slot
        self._loading = background.start(
            self._load(reload=True), "reload the catalog", awaited=True
        )
        await self._loading

    async def _refresh_store(self) -> None:
        entries = await asyncio.to_thread(self.bridge.store.own)
        if not shiboken6.isValid(self):
            return
        self.source.set_stored(entries)
        self.details.refresh()

    def _filter_combo(self, everything: str, field: str) -> QComboBox:
        combo = QComboBox()
        combo.addItem(everything, "")
        combo.currentIndexChanged.connect(
            lambda _i, c=combo, f=field: self._filter(**{f: c.currentData() or ""})
        )
        return combo

    def _fill_filter_choices(self) -> None:
        models = self.source.models()
        self._set_choices(
            self.publisher_combo,
            sorted({m.publisher for m in models if m.publisher}, key=str.casefold),
        )
        self._set_choices(
            self.license_combo, sorted({m.license for m in models if m.license}, key=str.casefold)
        )
        quants = {v.quantization.upper() for m in models for v in m.variants if v.quantization}
        self._set_choices(self.quant_combo, sorted(quants))
        present = {c for m in models for c in m.capabilities}
        self._set_choices(self.capability_combo, [c for c in CAPABILITIES if c in present])

    @staticmethod
    def _set_choices(combo: QComboBox, values: Sequence[str]) -> None:
        """Refill a filter combo, keeping its choice when the new catalog still has it."""
        current = combo.currentData()
        combo.blockSignals(True)
        while combo.count() > 1:
            combo.removeItem(1)
        for value in values:
            combo.addItem(value, value)
        combo.setCurrentIndex(max(0, combo.findData(current)))
        combo.blockSignals(False)
        if combo.currentData() != current:  # the chosen value is gone: the filter follows
            combo.currentIndexChanged.emit(combo.currentIndex())

    # -- selection -------------------------------------------------------------------------------

    def current_model(self) -> ModelInfo | None:
        index = self.table.currentIndex()
        if not index.isValid():
            return None
        model = self.proxy.data(index, MODEL_ROLE)
        return model if isinstance(model, ModelInfo) else None

    def select_model(self, model_id: str) -> bool:
        """Select a model's row (if the filters show it); True when selected."""
        return select_source_row(self.table, self.proxy, self.source.row_of(model_id))

    def _filter(self, **changes: object) -> None:
        """Apply a filter change; the selected model stays selected while shown, else the
        first row is (Qt alone would move the selection to a neighbouring row)."""
        kept = self.current_model()
        self.proxy.update(**changes)
        if kept is not None and self.select_model(kept.id):
            return
        if self.proxy.rowCount():
            self.table.setCurrentIndex(self.proxy.index(0, 0))
            self.table.scrollToTop()

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        model = self.proxy.data(current, MODEL_ROLE) if current.isValid() else None
        self.details.show_model(model if isinstance(model, ModelInfo) else None)

    def _on_variant_chosen(self, model_id: str, variant_id: str) -> None:
        self.source.choose_variant(model_id, variant_id)

    def _update_count(self, *_args: object) -> None:
        total = self.source.rowCount()
        shown = self.proxy.rowCount()
        text = plural(total, "model") if shown == total else f"{shown} of {plural(total, 'model')}"
        self.count_label.setText(text)

    def _on_context_changed(self, ctx: int) -> None:
        self.source.set_context(ctx)
        self.details.refresh()

    def _on_size_changed(self, index: int) -> None:
        low, high = self.size_combo.itemData(index) or (None, None)
        self._filter(min_size=low, max_size=high)

    # -- actions ---------------------------------------------------------------------------------

    def _status(self, text: str, msecs: int = 8000) -> None:
        if self._host is not None:
            self._host.show_status(text, msecs)

    def _selected(self) -> tuple[ModelInfo, ModelVariant] | None:
        model, variant = self.details.model, self.details.variant
        if model is None or variant is None:
            return None
        return model, variant

    def download(self, model: ModelInfo, variant: ModelVariant) -> object:
        """Start (or resume) a download task; returns the Task."""
        task = self.bridge.start_pull(model, variant)
        self.source.set_progress(variant.id, self.source.progress(variant.id))
        self.details.refresh()
        self._status(f"Downloading {task.name.removeprefix('Download ')}: progress in Tasks")
        return task

    def _on_download_clicked(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        model, variant = selected
        task = self.bridge.active_task(variant.id)
        if task is not None:
            task.cancel()
            self._status(f"Cancelling the download of {model.name}; the partial file is kept")
            return
        try:
            self.download(model, variant)
        except PodlabError as exc:
            self._status(f"Cannot download {model.name}: {exc.message} {exc.hint}".strip(), 15000)

    def _ready_entry(self) -> tuple[ModelInfo, ModelVariant, StoredModel] | None:
        """The selected variant's file when it is downloaded and finished, else None (a
        partial or running download is never offered to a server)."""
        selected = self._selected()
        if selected is None:
            return None
        model, variant = selected
        entry = self.source.stored(variant.id)
        if entry is None or not entry.usable or self.source.downloading(variant.id):
            return None
        return model, variant, entry

    @asyncSlot()
    async def _on_serve_clicked(self) -> None:
        await self.serve_selected()

    async def serve_selected(self) -> Task | None:
        """Serve the selected variant: the New service dialog with its file chosen, then the
        Services page with the new service (its start is a task on the Tasks page)."""
        found = self._ready_entry()
        if found is None:
            return None
        model, variant, entry = found
        self.sig_serve_requested.emit(model.id, variant.id)
        return await serve_model(self._host, entry)

    @asyncSlot()
    async def _on_playground_clicked(self) -> None:
        await self.open_selected_in_playground()

    async def open_selected_in_playground(self) -> bool:
        """The Playground with a ready service of the selected variant, or an offer to serve
        it first; True when the window switched to the Playground."""
        found = self._ready_entry()
        if found is None:
            return False
        model, variant, entry = found
        opened = await open_model_in_playground(self._host, entry)
        if opened:
            self.sig_open_in_playground.emit(model.id, variant.id)
        return opened

    @asyncSlot()
    async def _on_delete_clicked(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        model, variant = selected
        entry = self.source.stored(variant.id)
        if entry is None:
            return
        what = "the partial download" if entry.state == PARTIAL else "the downloaded file"
        box = QMessageBox(
            QMessageBox.Icon.Question,
            f"Delete {model.name}?",
            f"Delete {what} of {model.name} {variant.quantization or ''}?\n\n{entry.path}\n\n"
            "It can be downloaded again from the catalog.",
            QMessageBox.StandardButton.NoButton,
            self,
        )
        delete = box.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        await ask(self, box)
        confirmed = box.clickedButton() is delete
        box.deleteLater()
        if not confirmed:
            return
        try:
            result = await self.bridge.remove(entry.id)
        except PodlabError as exc:
            self._status(f"{model.name} was not deleted: {exc.message} {exc.hint}".strip(), 15000)
            return
        except OSError as exc:
            self._status(f"{model.name} was not deleted: {exc.strerror or exc}", 15000)
            return
        self._status(f"Deleted {model.name}: {size_text(result.deleted_bytes)} freed")

    # -- bridge events ---------------------------------------------------------------------------

    @asyncSlot()
    async def _on_store_changed(self) -> None:
        if self._attached:
            await self._refresh_store()

    def _on_download_progress(self, store_id: str, fraction: object) -> None:
        value = fraction if isinstance(fraction, float) else None
        self.source.set_progress(store_id, value)
        if self.details.variant is not None and self.details.variant.id == store_id:
            self.details.refresh()

    def _on_download_finished(self, store_id: str, error: str) -> None:
        self.source.clear_progress(store_id)
        if error and error != "cancelled":
            self.source.set_failure(store_id, error)
            self._status(f"Download failed: {error}", 15000)
        elif not error:
            self._status("Download finished; the model is on the Models page")
        if self.details.variant is not None and self.details.variant.id == store_id:
            self.details.refresh()


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return CatalogPage(lab, host)
