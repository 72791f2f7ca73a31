"""The keyboard shortcut list (F1 or Ctrl+/): every shortcut of the window and its pages.

The list is read from the live widgets, not kept by hand, so it cannot drift: each `QShortcut`
or `QAction` with keys is listed with its "What's this" text as the description, grouped by the
page that owns it. Pages not opened yet are built lazily and add their shortcuts once opened.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from podlab.ui.main_window import PAGES, MainWindow


@dataclass(frozen=True)
class ShortcutRow:
    where: str
    """"Window", or the title of the page where the shortcut works."""
    keys: str
    description: str


def shortcut_rows(window: MainWindow) -> list[ShortcutRow]:
    """Every shortcut the window and its built pages have, keys of one action joined."""
    page_titles = {id(window.page_if_built(page.key)): page.title for page in PAGES}
    grouped: dict[tuple[str, str], list[str]] = {}
    for owner, keys, description in _shortcuts(window):
        where = _owning_page(owner, page_titles)
        grouped.setdefault((where, description), []).append(keys)
    return [
        ShortcutRow(where, ", ".join(keys), description)
        for (where, description), keys in grouped.items()
    ]


def _shortcuts(window: MainWindow) -> list[tuple[QObject, str, str]]:
    found: list[tuple[QObject, str, str]] = []
    for shortcut in window.findChildren(QShortcut):
        for sequence in shortcut.keys():  # noqa: SIM118 (a QShortcut, not a dict)
            keys = sequence.toString(QKeySequence.SequenceFormat.NativeText)
            found.append((shortcut, keys, shortcut.whatsThis()))
    for action in window.findChildren(QAction):
        for sequence in action.shortcuts():
            keys = sequence.toString(QKeySequence.SequenceFormat.NativeText)
            found.append((action, keys, action.whatsThis() or action.text().replace("&", "")))
    return found


def _owning_page(owner: QObject, page_titles: dict[int, str]) -> str:
    node: QObject | None = owner
    while node is not None:
        if id(node) in page_titles:
            return page_titles[id(node)]
        node = node.parent()
    return "Window"


class ShortcutsDialog(QDialog):
    """A read-only table: where, keys, what they do."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(560, 420)
        rows = shortcut_rows(window)
        self.table = QTableWidget(len(rows), 3)
        self.table.setAccessibleName("Keyboard shortcuts")
        self.table.setHorizontalHeaderLabels(["Where", "Keys", "Action"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        for row, entry in enumerate(rows):
            for column, text in enumerate((entry.where, entry.keys, entry.description)):
                self.table.setItem(row, column, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)

    def rows(self) -> list[tuple[str, str, str]]:
        """The table's text, row by row (where, keys, action)."""
        texts = [
            [self._text(row, column) for column in range(3)] for row in range(self.table.rowCount())
        ]
        return [(where, keys, action) for where, keys, action in texts]

    def _text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""
