"""The model store as a table: Podlab's downloads, partials and imports, then models found in
RamaLama, Ollama and the Hugging Face cache (read-only), with a search proxy."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import (
    QObject,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QFont

from podlab.core.models.store import MISSING, PARTIAL, READY, StoredModel
from podlab.ui.models.formatting import size_text
from podlab.ui.models.table import ModelIndex, RowTableModel

COLUMNS = ("Name", "Source", "Quantization", "Size", "State", "Path")
COL_NAME, COL_SOURCE, COL_QUANT, COL_SIZE, COL_STATE, COL_PATH = range(len(COLUMNS))

ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1
"""The row's StoredModel."""
SORT_ROLE = Qt.ItemDataRole.UserRole + 2

SOURCE_NAMES = {
    "catalog": "Catalog",
    "url": "URL",
    "imported": "Imported",
    "ollama": "Ollama",
    "huggingface": "Hugging Face cache",
    "ramalama": "RamaLama",
}


def source_text(entry: StoredModel) -> str:
    name = SOURCE_NAMES.get(entry.source, entry.source)
    if entry.read_only:
        return f"{name} (read-only)"
    if entry.source == "imported":
        return "Imported (copy)" if entry.managed else "Imported (your file)"
    return name


def partial_fraction(entry: StoredModel) -> float | None:
    if entry.state != PARTIAL or entry.done is None or not entry.size:
        return None
    return min(1.0, entry.done / entry.size)


class StoreTableModel(RowTableModel[StoredModel]):
    """Rows are StoredModel entries; running downloads add their live percentage."""

    columns = COLUMNS

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._progress: dict[str, float | None] = {}
        self._failed: dict[str, str] = {}

    def set_entries(self, entries: Sequence[StoredModel]) -> None:
        self.beginResetModel()
        self._rows = list(entries)
        self.endResetModel()

    def entries(self) -> list[StoredModel]:
        return list(self._rows)

    def entry_at(self, row: int) -> StoredModel | None:
        return self.item_at(row)

    def row_key(self, item: StoredModel) -> str:
        return item.id

    def set_progress(self, model_id: str, fraction: float | None) -> None:
        self._progress[model_id] = fraction
        self._failed.pop(model_id, None)
        row = self.row_of(model_id)
        if row >= 0:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def clear_progress(self, model_id: str) -> None:
        self._progress.pop(model_id, None)

    def downloading(self, model_id: str) -> bool:
        return model_id in self._progress

    def set_failure(self, model_id: str, message: str) -> None:
        """The last download of an entry failed (shown until it is retried)."""
        self._failed[model_id] = message
        row = self.row_of(model_id)
        if row >= 0:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def failure(self, entry: StoredModel) -> str | None:
        if entry.id in self._progress or entry.state != PARTIAL:
            return None
        return self._failed.get(entry.id)

    def state_text(self, entry: StoredModel) -> str:
        if entry.id in self._progress:
            fraction = self._progress[entry.id]
            return "Downloading" + ("" if fraction is None else f" {fraction * 100:.0f} %")
        if entry.state == READY:
            return "Ready"
        if entry.state == PARTIAL:
            fraction = partial_fraction(entry)
            done = "" if fraction is None else f" {fraction * 100:.0f} %"
            if self.failure(entry) is not None:
                return f"Download failed ({done.strip() or 'partial'} kept)"
            return "Partial" + done
        if entry.state == MISSING:
            return "File missing"
        return entry.state

    # -- Qt model API --------------------------------------------------------------------------

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        entry = self.entry_at(index.row()) if index.isValid() else None
        if entry is None:
            return None
        column = index.column()
        if role == ENTRY_ROLE:
            return entry
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(entry, column)
        if role == SORT_ROLE:
            if column == COL_SIZE:
                return entry.size or -1
            if column == COL_STATE:
                fraction = partial_fraction(entry)
                rank = {READY: 0, PARTIAL: 1}.get(entry.state, 2)
                return rank + (fraction or 0) / 10
            return self._display(entry, column).casefold()
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == COL_PATH:
                return str(entry.path)
            if column == COL_SOURCE and entry.read_only:
                owner = SOURCE_NAMES.get(entry.source, entry.source)
                return f"Found in {owner}'s folder; Podlab only reads it."
            if column == COL_NAME:
                return entry.id
            return None
        if role == Qt.ItemDataRole.FontRole and entry.read_only:
            font = QFont()
            font.setItalic(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and column == COL_SIZE:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _display(self, entry: StoredModel, column: int) -> str:
        if column == COL_NAME:
            return entry.name
        if column == COL_SOURCE:
            return source_text(entry)
        if column == COL_QUANT:
            return entry.quantization or ""
        if column == COL_SIZE:
            return size_text(entry.size)
        if column == COL_STATE:
            return self.state_text(entry)
        if column == COL_PATH:
            return str(entry.path)
        return ""


class StoreFilterProxy(QSortFilterProxyModel):
    """Search over name, id, source, quantization and path."""

    def __init__(self, source: StoreTableModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._source = source
        self._needle = ""
        self.setSourceModel(source)
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)

    def set_text(self, text: str) -> None:
        needle = text.strip().casefold()
        if needle == self._needle:
            return
        if hasattr(self, "beginFilterChange"):  # Qt 6.10+
            self.beginFilterChange()
        self._needle = needle
        if hasattr(self, "endFilterChange"):
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older Qt
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: ModelIndex) -> bool:
        if not self._needle:
            return True
        entry = self._source.entry_at(source_row)
        if entry is None:
            return False
        haystack = " ".join(
            (entry.name, entry.id, source_text(entry), entry.quantization or "", str(entry.path))
        )
        return self._needle in haystack.casefold()
