"""Every long job (downloads, builds, service starts) in one list, with progress and cancel."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from podlab.core.lab import Lab
from podlab.core.tasks import Task, TaskManager
from podlab.ui.models.table import ModelIndex, RowTableModel
from podlab.ui.page_host import PageHost

COLUMNS = ("Task", "State", "Progress", "Detail")


class TaskTableModel(RowTableModel[Task]):
    """Rows are the manager's tasks; a change to one task repaints one row."""

    columns = COLUMNS

    def __init__(self, manager: TaskManager) -> None:
        super().__init__()
        self._manager = manager
        self._rows = manager.tasks
        manager.subscribe(self._on_task_changed)

    def detach(self) -> None:
        self._manager.unsubscribe(self._on_task_changed)

    def task_at(self, row: int) -> Task | None:
        return self.item_at(row)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> str | None:
        task = self.task_at(index.row())
        if task is None or role != Qt.ItemDataRole.DisplayRole:
            return None
        column = index.column()
        if column == 0:
            return task.name
        if column == 1:
            return task.state.value
        if column == 2:
            return "…" if task.progress is None else f"{task.progress * 100:.0f} %"
        return task.error or task.detail

    def _on_task_changed(self, task: Task) -> None:
        if task in self._rows:
            row = self._rows.index(task)
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
            return
        self.beginInsertRows(QModelIndex(), len(self._rows), len(self._rows))
        self._rows.append(task)
        self.endInsertRows()

    def reload(self) -> None:
        self.beginResetModel()
        self._rows = self._manager.tasks
        self.endResetModel()


class TasksPage(QWidget):
    def __init__(self, lab: Lab, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = "Tasks"
        self._lab = lab
        self.model = TaskTableModel(lab.tasks)
        self.table = QTableView()
        self.table.setAccessibleName("Tasks")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.log = QPlainTextEdit()
        self.log.setAccessibleName("Task log")
        self.log.setReadOnly(True)
        self.log.setPlaceholderText("Select a task to see its log.")
        self.empty = QLabel("No tasks yet. Downloads, image builds and service starts appear here.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._cancel_selected)
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.clicked.connect(self._clear_finished)

        buttons = QHBoxLayout()
        buttons.addWidget(self.empty, 1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.clear_button)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.log)
        splitter.setSizes([400, 200])
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>Tasks</h2>"))
        layout.addLayout(buttons)
        layout.addWidget(splitter, 1)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._show_log())
        self.model.dataChanged.connect(lambda *_: self._show_log())
        self.model.rowsInserted.connect(lambda *_: self._update_empty())
        self._update_empty()

    def _selected(self) -> Task | None:
        return self.model.task_at(self.table.currentIndex().row())

    def _show_log(self) -> None:
        task = self._selected()
        text = "" if task is None else "\n".join(task.log + ([task.error] if task.error else []))
        if self.log.toPlainText() != text:
            self.log.setPlainText(text)

    def _cancel_selected(self) -> None:
        task = self._selected()
        if task is not None:
            task.cancel()

    def _clear_finished(self) -> None:
        self._lab.tasks.clear_finished()
        self.model.reload()
        self._update_empty()

    def _update_empty(self) -> None:
        self.empty.setVisible(self.model.rowCount() == 0)


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return TasksPage(lab)
