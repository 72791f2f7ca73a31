"""Qt item models over core objects (catalog models, stored models) and their filter proxies.

Views never hold core objects themselves: they show a proxy over one of these models, so that
sorting and filtering of 10,000 rows stay in the model/view machinery.
"""

from __future__ import annotations

from PySide6.QtCore import QSortFilterProxyModel
from PySide6.QtWidgets import QTableView


def select_source_row(table: QTableView, proxy: QSortFilterProxyModel, source_row: int) -> bool:
    """Make a source model's row current in a view over `proxy`, scrolled into sight.

    False when the row does not exist or the proxy's filters hide it."""
    if source_row < 0:
        return False
    index = proxy.mapFromSource(proxy.sourceModel().index(source_row, 0))
    if not index.isValid():
        return False
    table.setCurrentIndex(index)
    table.scrollTo(index)
    return True
