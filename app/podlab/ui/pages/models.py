"""Models: what is on this machine. Podlab's downloads (finished or partial), imported GGUF
files, and models found in RamaLama, Ollama and the Hugging Face cache (read-only).

Everything goes through the shared DownloadBridge's ModelStore, read in a thread. Removing an
imported model forgets it and never deletes the user's file; the confirmation says so. Serve and
Open in Playground go through the Services page (its New service dialog, its tasks); only a
finished model is offered to a server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import shiboken6
from PySide6.QtCore import QModelIndex, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.core.models.store import PARTIAL, READY, DiskUsage, StoredModel
from podlab.core.tasks import Task
from podlab.core.text import plural
from podlab.ui import background
from podlab.ui.download_bridge import bridge_for
from podlab.ui.models import select_source_row
from podlab.ui.models.formatting import context_text, params_text, size_text
from podlab.ui.models.store_model import (
    COL_NAME,
    COL_PATH,
    COL_QUANT,
    COL_SIZE,
    COL_SOURCE,
    COL_STATE,
    ENTRY_ROLE,
    SOURCE_NAMES,
    StoreFilterProxy,
    StoreTableModel,
    source_text,
)
from podlab.ui.page_host import PageHost
from podlab.ui.pages.services import open_model_in_playground, serve_model
from podlab.ui.service_bridge import ask

COLUMN_WIDTHS = {COL_NAME: 260, COL_SOURCE: 170, COL_QUANT: 100, COL_SIZE: 90, COL_STATE: 120}
DETAIL_FIELDS = (
    ("name", "Name"),
    ("id", "Id"),
    ("source", "Source"),
    ("state", "State"),
    ("path", "File"),
    ("size", "Size"),
    ("sha256", "SHA-256"),
    ("url", "URL"),
    ("gguf", "GGUF"),
    ("template", "Chat template"),
    ("added", "Added"),
)


def disk_text(usage: DiskUsage) -> str:
    parts = [f"Podlab's models: {size_text(usage.used)}"]
    if usage.partial:
        parts[0] += f" ({size_text(usage.partial)} unfinished)"
    if usage.external:
        parts.append(f"imported and other tools' models: {size_text(usage.external)}")
    if usage.free is not None:
        parts.append(f"{size_text(usage.free)} free")
    return " · ".join(parts)


def sha_text(entry: StoredModel) -> str:
    """The digest and how far it can be trusted (nothing is verified before the last byte)."""
    if entry.state == PARTIAL:
        if entry.sha256:
            return f"{entry.sha256} (expected; checked when the download finishes)"
        return "checked against the server's published digest when the download finishes"
    if not entry.sha256:
        return "not computed"
    how = {
        "expected": "verified against the catalog",
        "server": "verified against the server's published digest",
        "computed": "computed by Podlab; nothing published to check it against",
        "ollama": "Ollama's blob name",
        "huggingface": "the Hugging Face cache's blob name",
        "ramalama": "RamaLama's blob name",
    }.get(entry.sha256_source or "", entry.sha256_source or "")
    return f"{entry.sha256} ({how})" if how else entry.sha256


def gguf_text(entry: StoredModel) -> str:
    meta = entry.metadata
    if meta is None:
        return "not read"
    bits = [
        meta.architecture or "unknown architecture",
        f"{params_text(meta.parameters)} parameters" if meta.parameters else "",
        meta.file_type or "",
        f"context {context_text(meta.context_length)} ({meta.context_length:,} tokens)"
        if meta.context_length
        else "",
        plural(meta.tensor_count, "tensor") if meta.tensor_count else "",
    ]
    return " · ".join(bit for bit in bits if bit)


class ModelsPage(QWidget):
    """The store's models in a table, actions above it, the selected model's facts below."""

    sig_serve_requested = Signal(str)
    """Emitted with the store id of a ready model the user asks to serve (before the New
    service dialog opens)."""

    sig_model_imported = Signal(str)
    """Emitted with the store id of a GGUF file the user imported."""

    def __init__(self, lab: Lab, host: PageHost | None = None) -> None:
        super().__init__()
        self.title = "Models"
        self.lab = lab
        self._host = host
        self.bridge = bridge_for(lab)
        self.active_dialog: QWidget | None = None
        self.usage: DiskUsage | None = None

        self.source = StoreTableModel(self)
        self.proxy = StoreFilterProxy(self.source, self)

        self.disk_label = QLabel()
        self.disk_label.setEnabled(False)
        self.search = QLineEdit()
        self.search.setAccessibleName("Search the models")
        self.search.setPlaceholderText("Search models…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.proxy.set_text)
        self.import_button = QPushButton("Import GGUF…")
        self.import_button.setToolTip(
            "Use a GGUF file you already have; it stays where it is and remains yours"
        )
        self.import_button.clicked.connect(self._on_import_clicked)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._on_remove_clicked)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Finish an unfinished download")
        self.resume_button.clicked.connect(self._on_resume_clicked)
        self.folder_button = QPushButton("Open folder")
        self.folder_button.clicked.connect(self._on_open_folder_clicked)
        self.serve_button = QPushButton("Serve")
        self.serve_button.setToolTip("Start an inference service with this model")
        self.serve_button.clicked.connect(self._on_serve_clicked)
        self.playground_button = QPushButton("Open in Playground")
        self.playground_button.setToolTip(
            "Chat with this model (its running service, or serve it first)"
        )
        self.playground_button.clicked.connect(self._on_playground_clicked)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setTextFormat(Qt.TextFormat.PlainText)
        self.notice.hide()

        self.table = QTableView()
        self.table.setAccessibleName("Models on this machine")
        self.table.setObjectName("models-table")
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        for column, width in COLUMN_WIDTHS.items():
            self.table.setColumnWidth(column, width)
        header.setSectionResizeMode(COL_PATH, QHeaderView.ResizeMode.Stretch)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_changed)
        self.empty = QLabel(
            "No models yet. Download one from the Catalog, or import a GGUF file you have."
        )
        self.empty.setEnabled(False)

        self.facts: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for key, label in DETAIL_FIELDS:
            value = QLabel()
            value.setTextFormat(Qt.TextFormat.PlainText)
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.facts[key] = value
            form.addRow(label, value)
        self.details = QWidget()
        details_layout = QVBoxLayout(self.details)
        details_layout.setContentsMargins(4, 8, 4, 0)
        details_layout.addLayout(form)
        details_layout.addStretch(1)
        self.details.hide()

        heading = QHBoxLayout()
        heading.addWidget(QLabel("<h2>Models</h2>"))
        heading.addStretch(1)
        heading.addWidget(self.disk_label)
        actions = QHBoxLayout()
        actions.addWidget(self.search, 1)
        for button in (
            self.import_button,
            self.resume_button,
            self.serve_button,
            self.playground_button,
            self.folder_button,
            self.remove_button,
        ):
            actions.addWidget(button)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.table, 1)
        top_layout.addWidget(self.empty)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addLayout(heading)
        layout.addLayout(actions)
        layout.addWidget(self.notice)
        layout.addWidget(splitter, 1)

        self.bridge.sig_store_changed.connect(self._on_store_changed)
        self.bridge.sig_download_progress.connect(self._on_download_progress)
        self.bridge.sig_download_finished.connect(self._on_download_finished)
        self._update_buttons()
        self._loading: asyncio.Task[None] = background.start(self.refresh(), "load the models page")
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

    # -- loading ---------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait for the first listing (screenshots call it)."""
        await asyncio.shield(self._loading)

    async def refresh(self) -> None:
        """List the store again (own and discovered models, disk usage), keeping the selection."""
        current = self.current_entry()
        entries = await self.bridge.list_models()
        usage = await self.bridge.disk_usage()
        if not shiboken6.isValid(self):
            return
        self.usage = usage
        for entry in entries:
            if self.bridge.active_task(entry.id) is None:
                self.source.clear_progress(entry.id)
        self.source.set_entries(entries)
        self.disk_label.setText(disk_text(self.usage))
        self.disk_label.setToolTip(f"Models folder: {self.usage.models_dir}")
        self.empty.setVisible(not entries)
        if (current is None or not self.select(current.id)) and self.proxy.rowCount():
            self.table.selectRow(0)
        self._show_details()

    # -- selection -------------------------------------------------------------------------------

    def current_entry(self) -> StoredModel | None:
        index = self.table.currentIndex()
        entry = self.proxy.data(index, ENTRY_ROLE) if index.isValid() else None
        return entry if isinstance(entry, StoredModel) else None

    def select(self, model_id: str) -> bool:
        return select_source_row(self.table, self.proxy, self.source.row_of(model_id))

    def entry_ids(self) -> list[str]:
        return [entry.id for entry in self.source.entries()]

    def _on_current_changed(self, _current: QModelIndex, _previous: QModelIndex) -> None:
        self._show_details()

    def _show_details(self) -> None:
        entry = self.current_entry()
        self._update_buttons()
        if entry is None:
            self.details.hide()
            return
        facts = self.facts
        facts["name"].setText(entry.name)
        facts["id"].setText(entry.id)
        facts["source"].setText(source_text(entry))
        failure = self.source.failure(entry)
        state = self.source.state_text(entry)
        facts["state"].setText(f"{state}: {failure}" if failure else state)
        facts["path"].setText(str(entry.path))
        facts["size"].setText(
            f"{size_text(entry.size)} ({entry.size:,} bytes)" if entry.size else "unknown"
        )
        facts["sha256"].setText(sha_text(entry))
        facts["url"].setText(entry.url or "—")
        facts["gguf"].setText(
            "read when the download finishes" if entry.state == PARTIAL else gguf_text(entry)
        )
        template = entry.metadata.chat_template if entry.metadata else None
        facts["template"].setText(
            "none in the file (the server's default format is used)"
            if not template
            else f"included ({len(template):,} characters)"
        )
        facts["template"].setToolTip(template or "")
        facts["added"].setText(entry.added or "—")
        self.details.show()

    def _update_buttons(self) -> None:
        entry = self.current_entry()
        downloading = entry is not None and self.bridge.active_task(entry.id) is not None
        ready = entry is not None and entry.state == READY and not downloading
        # Never offer an unfinished (or running) download to a server.
        self.serve_button.setEnabled(ready)
        self.playground_button.setEnabled(ready)
        self.resume_button.setEnabled(
            entry is not None and entry.state == PARTIAL and not entry.read_only and not downloading
        )
        failed = entry is not None and self.source.failure(entry) is not None
        self.resume_button.setText("Retry download" if failed else "Resume")
        self.folder_button.setEnabled(entry is not None)
        self.remove_button.setEnabled(entry is not None and not entry.read_only)
        if entry is not None and entry.read_only:
            owner = SOURCE_NAMES.get(entry.source, entry.source)
            self.remove_button.setToolTip(f"Found in {owner}'s folder; remove it with {owner}")
        elif entry is not None and entry.source == "imported" and not entry.managed:
            self.remove_button.setToolTip("Forget this model; your file is not deleted")
        else:
            self.remove_button.setToolTip("Delete the downloaded file")

    # -- messages --------------------------------------------------------------------------------

    def _status(self, text: str, msecs: int = 8000) -> None:
        if self._host is not None:
            self._host.show_status(text, msecs)

    def _problem(self, exc: PodlabError) -> None:
        self.notice.setText(f"{exc.message}" + (f"\n{exc.hint}" if exc.hint else ""))
        self.notice.show()

    # -- actions ---------------------------------------------------------------------------------

    @asyncSlot()
    async def _on_import_clicked(self) -> None:
        dialog = QFileDialog(self, "Import a GGUF model", str(Path.home()))
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setNameFilters(["GGUF models (*.gguf)", "All files (*)"])
        accepted = await ask(self, dialog)
        files = dialog.selectedFiles()
        dialog.deleteLater()
        if accepted and files:
            await self.import_path(Path(files[0]))

    async def import_path(self, path: Path) -> StoredModel | None:
        """Register a GGUF file in place, select it and show its metadata."""
        self.notice.hide()
        try:
            entry = await self.bridge.import_gguf(path)
        except PodlabError as exc:
            self._problem(exc)
            return None
        except OSError as exc:
            self._problem(PodlabError(f"cannot import {path}: {exc.strerror or exc}"))
            return None
        await self.refresh()
        self.select(entry.id)
        self._show_details()
        self._status(f"Imported {entry.name}: {gguf_text(entry)}")
        self.sig_model_imported.emit(entry.id)
        return entry

    @asyncSlot()
    async def _on_remove_clicked(self) -> None:
        entry = self.current_entry()
        if entry is None or entry.read_only:
            return
        keeps_file = entry.source == "imported" and not entry.managed
        if keeps_file:
            title = f"Remove {entry.name} from Podlab?"
            text = f"Podlab will forget {entry.name}.\n\nYour file is NOT deleted:\n{entry.path}"
            action = "Remove from Podlab"
        else:
            title = f"Delete {entry.name}?"
            what = "unfinished download" if entry.state == PARTIAL else "file"
            size = entry.done if entry.state == PARTIAL else entry.size
            text = (
                f"Delete the {what} ({size_text(size) or 'unknown size'}):\n{entry.path}\n\n"
                "Models from the catalog can be downloaded again."
            )
            action = "Delete"
        box = QMessageBox(
            QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.NoButton, self
        )
        confirm = box.addButton(action, QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        await ask(self, box)
        confirmed = box.clickedButton() is confirm
        box.deleteLater()
        if not confirmed:
            return
        try:
            result = await self.bridge.remove(entry.id)
        except PodlabError as exc:
            self._problem(exc)
            return
        except OSError as exc:
            self._problem(PodlabError(f"cannot remove {entry.path}: {exc.strerror or exc}"))
            return
        if result.kept_path is not None:
            self._status(f"Removed {entry.name}; your file stays at {result.kept_path}")
        else:
            self._status(f"Deleted {entry.name}: {size_text(result.deleted_bytes)} freed")

    def _on_resume_clicked(self) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        try:
            task = self.bridge.start_resume(entry)
        except PodlabError as exc:
            self._problem(exc)
            return
        self._update_buttons()
        self._status(f"{task.name}: progress in Tasks")

    def _on_open_folder_clicked(self) -> None:
        entry = self.current_entry()
        if entry is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(entry.path.parent)))

    @asyncSlot()
    async def _on_serve_clicked(self) -> None:
        await self.serve_current()

    async def serve_current(self) -> Task | None:
        """Serve the selected model: the New service dialog with it chosen, then the Services
        page with the new service (its start is a task on the Tasks page)."""
        entry = self.current_entry()
        if entry is None or entry.state != READY or self.bridge.active_task(entry.id):
            return None
        self.sig_serve_requested.emit(entry.id)
        return await serve_model(self._host, entry)

    @asyncSlot()
    async def _on_playground_clicked(self) -> None:
        await self.open_current_in_playground()

    async def open_current_in_playground(self) -> bool:
        """The Playground with a ready service of the selected model, or an offer to serve it
        first; True when the window switched to the Playground."""
        entry = self.current_entry()
        if entry is None or entry.state != READY or self.bridge.active_task(entry.id):
            return False
        return await open_model_in_playground(self._host, entry)

    # -- bridge events ---------------------------------------------------------------------------

    @asyncSlot()
    async def _on_store_changed(self) -> None:
        if self._attached:
            await self.refresh()

    def _on_download_progress(self, store_id: str, fraction: object) -> None:
        self.source.set_progress(store_id, fraction if isinstance(fraction, float) else None)
        current = self.current_entry()
        if current is not None and current.id == store_id:
            self._update_buttons()
            self.facts["state"].setText(self.source.state_text(current))

    def _on_download_finished(self, store_id: str, error: str) -> None:
        self.source.clear_progress(store_id)
        if error and error != "cancelled":
            self.source.set_failure(store_id, error)
        current = self.current_entry()
        if current is not None and current.id == store_id:
            self._show_details()


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return ModelsPage(lab, host)
