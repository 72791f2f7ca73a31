"""The catalog as a table: one row per model, showing one of its variants, plus a filter proxy.

A row shows the variant the user chose in the details pane, else the one matching the
quantization filter, else the model's default variant. The fit badge comes from
`hardware.fit_variant` at the context length the page chose; it is computed on first display
and cached until the context or the host facts change.

`CatalogFilterProxy` decides all rows in one Python pass when a filter changes and answers
`filterAcceptsRow` from that list, so typing in the search box re-filters 10,000 rows in a few
milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import (
    QObject,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QStyle

from podlab.core.models.hardware import Fit, HostFacts, estimate_memory, fit_variant
from podlab.core.models.modelinfo import ModelInfo, ModelVariant
from podlab.core.models.store import PARTIAL, READY, StoredModel
from podlab.ui.models.formatting import context_text, params_text, short_size_text
from podlab.ui.models.table import ModelIndex, RowTableModel

COLUMNS = ("Name", "Publisher", "Params", "Quantization", "Size", "Context", "License", "Fit")
(COL_NAME, COL_PUBLISHER, COL_PARAMS, COL_QUANT, COL_SIZE, COL_CONTEXT, COL_LICENSE, COL_FIT) = (
    range(len(COLUMNS))
)

MODEL_ROLE = Qt.ItemDataRole.UserRole + 1
"""The row's ModelInfo."""
VARIANT_ROLE = Qt.ItemDataRole.UserRole + 2
"""The ModelVariant the row shows."""
SORT_ROLE = Qt.ItemDataRole.UserRole + 3
"""The key a column sorts by: a number (unknown = -1) or case-folded text."""
FIT_LEVEL_ROLE = Qt.ItemDataRole.UserRole + 4
"""'green', 'yellow', 'red' or '' while the host is not known yet."""

FIT_COLOURS = {"green": "#2e9d4b", "yellow": "#e0a100", "red": "#d0342c", "": "#9a9a9a"}
FIT_RANK = {"green": 0, "yellow": 1, "red": 2, "": 3}

_dot_icons: dict[str, QIcon] = {}


def fit_dot(level: str) -> QIcon:
    """A filled coloured circle for a fit level (grey when unknown)."""
    icon = _dot_icons.get(level)
    if icon is None:
        pixmap = QPixmap(14, 14)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        colour = QColor(FIT_COLOURS.get(level, FIT_COLOURS[""]))
        painter.setPen(colour.darker(130))
        painter.setBrush(colour)
        painter.drawEllipse(1, 1, 12, 12)
        painter.end()
        icon = _dot_icons[level] = QIcon(pixmap)
    return icon


def fit_label(result: Fit | None) -> str:
    """One or two words for the badge; the tooltip carries the reason."""
    if result is None:
        return "…"
    if result.level == "green":
        return "Fits"
    if result.level == "yellow":
        return "GPU+CPU" if result.where == "gpu+cpu" else "Tight"
    return "Too big"


@dataclass
class _Row:
    model: ModelInfo
    haystack: str
    """id, name, publisher and description, case-folded, for the search box."""
    quantizations: frozenset[str]
    """Upper-case quantizations of every variant."""
    position: int
    """Order in the catalog files (the order shown until a column is sorted)."""


def _haystack(model: ModelInfo) -> str:
    return "\n".join((model.id, model.name, model.publisher or "", model.description)).casefold()


class CatalogTableModel(RowTableModel[_Row]):
    """Catalog models with their shown variant, local state and fit badge."""

    columns = COLUMNS

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._row_of: dict[str, int] = {}
        self._variant_row: dict[str, int] = {}
        self._chosen: dict[str, str] = {}
        self._preferred_quant: str | None = None
        self._ctx = 4096
        self._facts: HostFacts | None = None
        self._fits: dict[str, Fit | None] = {}
        self._sizes: dict[str, int | None] = {}
        self._stored: dict[str, StoredModel] = {}
        self._progress: dict[str, float | None] = {}
        self._failed: dict[str, str] = {}
        self._sort_keys: dict[int, list[object]] = {}
        self._sort_spec: tuple[int, Qt.SortOrder] = (-1, Qt.SortOrder.AscendingOrder)
        self._sort_generation = -1
        self.generation = 0
        """Bumped whenever something a filter reads changes (rows, states, fits, variants)."""

    # -- content -------------------------------------------------------------------------------

    def set_models(self, models: Iterable[ModelInfo]) -> None:
        self.beginResetModel()
        self._rows = [
            _Row(
                model,
                _haystack(model),
                frozenset((v.quantization or "").upper() for v in model.variants if v.quantization),
                position,
            )
            for position, model in enumerate(models)
        ]
        self._index_rows()
        self._chosen = {k: v for k, v in self._chosen.items() if k in self._row_of}
        self._fits.clear()
        self._sizes.clear()
        self.generation += 1
        if self._sort_spec[0] >= 0:
            self._rows = self._sorted_rows()
            self._index_rows()
            self.generation += 1
        self.endResetModel()

    def _index_rows(self) -> None:
        self._row_of = {row.model.id: i for i, row in enumerate(self._rows)}
        self._variant_row = {
            v.id: i for i, row in enumerate(self._rows) for v in row.model.variants
        }

    # -- sorting -------------------------------------------------------------------------------

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the rows in Python (one key per row) instead of n log n calls from C++.

        Column -1 restores the catalog's order. The order is kept when fits, states or the
        shown variants change, like a dynamically sorted proxy would.
        """
        self._sort_spec = (column, order)
        self._resort()

    def _sorted_rows(self) -> list[_Row]:
        column, order = self._sort_spec
        if column < 0:
            return sorted(self._rows, key=lambda row: row.position)
        keys = self._sort_column(column)
        ranked = sorted(
            range(len(self._rows)),
            key=lambda i: (keys[i], self._rows[i].position),
            reverse=order == Qt.SortOrder.DescendingOrder,
        )
        return [self._rows[i] for i in ranked]

    def _resort(self) -> None:
        rows = self._sorted_rows()
        if all(a is b for a, b in zip(rows, self._rows, strict=True)):
            return
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        moved = [self._rows[index.row()].model.id for index in old]
        self._rows = rows
        self._index_rows()
        self.generation += 1
        new = [
            self.index(self._row_of[model_id], index.column())
            for model_id, index in zip(moved, old, strict=True)
        ]
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

    def models(self) -> list[ModelInfo]:
        return [row.model for row in self._rows]

    def row_key(self, item: _Row) -> str:
        return item.model.id

    def row_of(self, key: str) -> int:
        """The source row of a model id, or -1 (from an index kept with the rows: fast)."""
        return self._row_of.get(key, -1)

    def row_record(self, row: int) -> _Row:
        return self._rows[row]

    # -- variants ------------------------------------------------------------------------------

    def shown_variant(self, model: ModelInfo) -> ModelVariant | None:
        chosen = self._chosen.get(model.id)
        if chosen is not None:
            found = model.variant(chosen)
            if found is not None:
                return found
        if self._preferred_quant:
            for variant in model.variants:
                if (variant.quantization or "").upper() == self._preferred_quant:
                    return variant
        return model.default_variant

    def choose_variant(self, model_id: str, variant_id: str) -> None:
        """The user picked a variant in the details pane: the row shows it from now on."""
        self._chosen[model_id] = variant_id
        self.generation += 1
        self._row_changed(self._row_of.get(model_id, -1))
        self._keep_sorted()

    def set_preferred_quantization(self, quantization: str | None) -> None:
        quantization = quantization.upper() if quantization else None
        if quantization == self._preferred_quant:
            return
        self._preferred_quant = quantization
        self.generation += 1
        self._all_changed()
        self._keep_sorted()

    def size_of(self, model: ModelInfo, variant: ModelVariant | None) -> tuple[int | None, bool]:
        """(bytes, estimated): the file size the catalog states, else parameters x bits per
        weight of the quantization (the same weights estimate the fit uses), else None."""
        if variant is not None and variant.size is not None:
            return variant.size, False
        key = f"{model.id}\0{variant.id if variant else ''}"
        if key not in self._sizes:
            weights: int | None = None
            if model.parameters:
                quant = variant.quantization if variant else None
                weights = estimate_memory(
                    None, model.parameters, None, 1, quantization=quant
                ).weights
            self._sizes[key] = weights
        return self._sizes[key], self._sizes[key] is not None

    # -- fit -----------------------------------------------------------------------------------

    @property
    def context(self) -> int:
        return self._ctx

    def set_context(self, ctx: int) -> None:
        if ctx == self._ctx:
            return
        self._ctx = ctx
        self._fits.clear()
        self.generation += 1
        self._column_changed(COL_FIT)
        self._keep_sorted()

    @property
    def facts(self) -> HostFacts | None:
        return self._facts

    def set_facts(self, facts: HostFacts | None) -> None:
        self._facts = facts
        self._fits.clear()
        self.generation += 1
        self._column_changed(COL_FIT)
        self._keep_sorted()

    def fit(self, model: ModelInfo, variant: ModelVariant | None) -> Fit | None:
        """The fit badge of a variant at the chosen context; None while the host is unknown."""
        if self._facts is None:
            return None
        key = f"{model.id}\0{variant.id if variant else ''}"
        if key not in self._fits:
            try:
                self._fits[key] = fit_variant(model, variant, self._ctx, self._facts)
            except ValueError:
                self._fits[key] = None
        return self._fits[key]

    # -- local state ---------------------------------------------------------------------------

    def set_stored(self, entries: Sequence[StoredModel]) -> None:
        """The store's own entries: which catalog variants are downloaded or partial."""
        self._stored = {e.variant_id: e for e in entries if e.variant_id and not e.read_only}
        self.generation += 1
        self._all_changed()

    def stored(self, variant_id: str) -> StoredModel | None:
        return self._stored.get(variant_id)

    def is_ready(self, variant_id: str) -> bool:
        entry = self._stored.get(variant_id)
        return entry is not None and entry.state == READY

    def has_download(self, model: ModelInfo) -> bool:
        return any(self.is_ready(v.id) for v in model.variants)

    def set_progress(self, variant_id: str, fraction: float | None) -> None:
        """A running download's progress (None: size unknown yet)."""
        self._progress[variant_id] = fraction
        self._failed.pop(variant_id, None)
        self._row_changed(self._variant_row.get(variant_id, -1))

    def clear_progress(self, variant_id: str) -> None:
        self._progress.pop(variant_id, None)
        self._row_changed(self._variant_row.get(variant_id, -1))

    def set_failure(self, variant_id: str, message: str) -> None:
        """The last download of a variant failed: its row and details say so until a retry."""
        self._failed[variant_id] = message
        self._row_changed(self._variant_row.get(variant_id, -1))

    def failure(self, variant_id: str) -> str | None:
        """Why the last download of a variant failed (None: it did not, or it was retried)."""
        if variant_id in self._progress:
            return None
        entry = self._stored.get(variant_id)
        return None if entry is not None and entry.state == READY else self._failed.get(variant_id)

    def downloading(self, variant_id: str) -> bool:
        return variant_id in self._progress

    def progress(self, variant_id: str) -> float | None:
        return self._progress.get(variant_id)

    def state_text(self, variant: ModelVariant) -> str:
        """ "downloaded", "downloading 45 %", "download failed", "partial 30 %" or "" (not on
        this machine)."""
        if variant.id in self._progress:
            fraction = self._progress[variant.id]
            return "downloading" + ("" if fraction is None else f" {fraction * 100:.0f} %")
        if self.failure(variant.id) is not None:
            return "download failed"
        entry = self._stored.get(variant.id)
        if entry is None:
            return ""
        if entry.state == READY:
            return "downloaded"
        if entry.state == PARTIAL:
            if entry.done is not None and entry.size:
                return f"partial {entry.done / entry.size * 100:.0f} %"
            return "partial"
        return entry.state

    # -- Qt model API --------------------------------------------------------------------------

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        if (
            orientation == Qt.Orientation.Horizontal
            and role == Qt.ItemDataRole.ToolTipRole
            and section == COL_FIT
        ):
            return "Will it run here? Estimated at the context length chosen above the table."
        return super().headerData(section, orientation, role)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if role == SORT_ROLE:
            return self._sort_column(index.column())[index.row()]
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        model = self._rows[index.row()].model
        column = index.column()
        if role == MODEL_ROLE:
            return model
        variant = self.shown_variant(model)
        if role == VARIANT_ROLE:
            return variant
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(model, variant, column)
        if role == FIT_LEVEL_ROLE:
            result = self.fit(model, variant)
            return result.level if result else ""
        if role == Qt.ItemDataRole.DecorationRole:
            if column == COL_FIT:
                result = self.fit(model, variant)
                return fit_dot(result.level if result else "")
            if column == COL_NAME and variant is not None:
                return self._state_icon(variant)
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(model, variant, column)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (
            COL_PARAMS,
            COL_SIZE,
            COL_CONTEXT,
        ):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _display(self, model: ModelInfo, variant: ModelVariant | None, column: int) -> str:
        if column == COL_NAME:
            return model.name
        if column == COL_PUBLISHER:
            return model.publisher or ""
        if column == COL_PARAMS:
            return params_text(model.parameters)
        if column == COL_QUANT:
            quant = (variant.quantization if variant else None) or ""
            more = len(model.variants) - 1
            return f"{quant} (+{more})" if more > 0 and quant else quant
        if column == COL_SIZE:
            size, estimated = self.size_of(model, variant)
            return ("≈ " if estimated else "") + short_size_text(size)
        if column == COL_CONTEXT:
            return context_text(model.context_length)
        if column == COL_LICENSE:
            return model.license or ""
        if column == COL_FIT:
            return fit_label(self.fit(model, variant))
        return ""

    def _sort_column(self, column: int) -> list[object]:
        """Sort keys of a whole column, computed once per generation."""
        if self._sort_generation != self.generation:
            self._sort_keys.clear()
            self._sort_generation = self.generation
        keys = self._sort_keys.get(column)
        if keys is None:
            keys = [
                self._sort_key(row.model, self.shown_variant(row.model), column)
                for row in self._rows
            ]
            self._sort_keys[column] = keys
        return keys

    def _sort_key(self, model: ModelInfo, variant: ModelVariant | None, column: int) -> object:
        if column == COL_PARAMS:
            return model.parameters or -1
        if column == COL_SIZE:
            return self.size_of(model, variant)[0] or -1
        if column == COL_CONTEXT:
            return model.context_length or -1
        if column == COL_FIT:
            result = self.fit(model, variant)
            rank = FIT_RANK[result.level if result else ""]
            total = result.estimate.total if result and result.estimate else 0
            return rank * 1e15 + total
        return self._display(model, variant, column).casefold()

    def _state_icon(self, variant: ModelVariant) -> QIcon | None:
        text = self.state_text(variant)
        if not text:
            return None
        style = QApplication.style()
        if text == "downloaded":
            return style.standardIcon(QStyle.StandardPixmap.SP_DialogApplyButton)
        if text == "download failed":
            return style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        return style.standardIcon(QStyle.StandardPixmap.SP_ArrowDown)

    def _tooltip(self, model: ModelInfo, variant: ModelVariant | None, column: int) -> str | None:
        if column == COL_FIT:
            result = self.fit(model, variant)
            if result is None:
                return "Checking this machine's memory and GPUs…"
            return result.reason
        if column == COL_NAME:
            state = self.state_text(variant) if variant else ""
            failure = self.failure(variant.id) if variant else None
            state = f"{state}: {failure}" if failure else state
            return f"{model.name} ({model.id})" + (f": {state}" if state else "")
        if column == COL_QUANT and len(model.variants) > 1:
            names = ", ".join(v.quantization or v.id for v in model.variants)
            return f"Variants: {names}. Choose one in the details pane."
        if column == COL_SIZE:
            _size, estimated = self.size_of(model, variant)
            if estimated:
                return (
                    f"Estimated from {params_text(model.parameters)} parameters at "
                    f"{(variant.quantization if variant else None) or 'an unknown quantization'}; "
                    "the catalog does not state the file size"
                )
            return None
        if column in (COL_PUBLISHER, COL_LICENSE):
            return self._display(model, variant, column) or None
        return None

    # -- change notifications ------------------------------------------------------------------

    def _keep_sorted(self) -> None:
        if self._sort_spec[0] >= 0:
            self._resort()

    def _row_changed(self, row: int) -> None:
        if 0 <= row < len(self._rows):
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def _column_changed(self, column: int) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, column), self.index(len(self._rows) - 1, column))

    def _all_changed(self) -> None:
        if self._rows:
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(self._rows) - 1, len(COLUMNS) - 1)
            )


@dataclass(frozen=True)
class CatalogFilter:
    """What the page's search box and filter widgets ask for; empty values filter nothing."""

    text: str = ""
    publisher: str = ""
    license: str = ""
    quantization: str = ""
    capability: str = ""
    min_size: int | None = None
    max_size: int | None = None
    """Bytes of the shown variant's file (stated, else estimated); unknown sizes are hidden
    while a size range is set."""
    downloaded_only: bool = False
    fits_only: bool = False
    """Hide models marked red (those that do not fit in GPU memory and RAM together)."""


class CatalogFilterProxy(QSortFilterProxyModel):
    """Search + filters over a CatalogTableModel, decided for all rows in one pass."""

    def __init__(self, source: CatalogTableModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._source = source
        self._filter = CatalogFilter()
        self._accepted: list[bool] = []
        self._seen: tuple[int, int] = (-1, -1)
        self._filter_generation = 0
        self.setSourceModel(source)
        self.setDynamicSortFilter(True)

    @property
    def filter(self) -> CatalogFilter:
        return self._filter

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Header clicks sort the source model (fast, in Python); the proxy only filters."""
        self._source.sort(column, order)

    def set_filter(self, new: CatalogFilter) -> None:
        """Apply new filter values; the rows change at once."""
        if new == self._filter:
            return
        self._source.set_preferred_quantization(new.quantization or None)
        self._begin_filter_change()
        self._filter = new
        self._filter_generation += 1
        self._end_filter_change()

    def update(self, **changes: object) -> None:
        """Change some filter values: `proxy.update(text="qwen", fits_only=True)`."""
        self.set_filter(dataclasses.replace(self._filter, **changes))  # type: ignore[arg-type]

    def _begin_filter_change(self) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt 6.10+
            self.beginFilterChange()

    def _end_filter_change(self) -> None:
        if hasattr(self, "endFilterChange"):  # Qt 6.10+
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older Qt
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: ModelIndex) -> bool:
        key = (self._source.generation, self._filter_generation)
        if key != self._seen:
            self._accepted = self._decide_all()
            self._seen = key
        return self._accepted[source_row] if 0 <= source_row < len(self._accepted) else True

    def _decide_all(self) -> list[bool]:
        source = self._source
        f = self._filter
        needle = f.text.strip().casefold()
        quant = f.quantization.upper()
        publisher = f.publisher
        licence = f.license
        capability = f.capability
        size_range = f.min_size is not None or f.max_size is not None
        low = f.min_size or 0
        high = f.max_size
        accepted = []
        for row in range(source.rowCount()):
            record = source.row_record(row)
            model = record.model
            ok = (
                (not needle or needle in record.haystack)
                and (not publisher or model.publisher == publisher)
                and (not licence or model.license == licence)
                and (not quant or quant in record.quantizations)
                and (not capability or capability in model.capabilities)
            )
            if ok and (size_range or f.fits_only):
                variant = source.shown_variant(model)
                if size_range:
                    size = source.size_of(model, variant)[0]
                    ok = size is not None and size >= low and (high is None or size <= high)
                if ok and f.fits_only:
                    result = source.fit(model, variant)
                    ok = result is None or result.level != "red"
            if ok and f.downloaded_only:
                ok = source.has_download(model)
            accepted.append(ok)
        return accepted
