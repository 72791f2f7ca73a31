"""The Export dialog: a recipe or a served model as Containerfiles, Kubernetes YAML, KServe,
Quadlet units or Compose, previewed file by file before anything is written.

The files come from the export core (`export_recipe`, `export_service`), generated in a thread
each time a choice changes (a model's sha256 may have to be read from its file); Write writes
exactly the files shown. Images are named by digest where Podman knows one, as `podlab recipe
export` does. Every failure is said in the dialog, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QFontDatabase
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from podlab.core.errors import PodlabError
from podlab.core.export import (
    FORMATS,
    GPU_TARGETS,
    ExportedFile,
    export_recipe,
    export_service,
    write_export,
)
from podlab.core.export.digests import image_digests
from podlab.core.export.plan import dns_label, recipe_images
from podlab.core.lab import Lab
from podlab.core.models.store import StoredModel
from podlab.core.recipes.catalog import RecipeEntry
from podlab.core.recipes.spec import ContainerRole
from podlab.core.serving.inference import InferenceService
from podlab.core.serving.planning import resolve_model
from podlab.ui import background
from podlab.ui.models.services_model import BADGE_COLOURS
from podlab.ui.service_bridge import MessageDialog, ask, open_dialog

log = logging.getLogger(__name__)

FORMAT_TITLES = {
    "containerfile": "Containerfile",
    "kube": "Kubernetes",
    "kserve": "KServe",
    "quadlet": "Quadlet",
    "compose": "Compose",
}
FORMAT_TIPS = {
    "containerfile": "Containerfiles that build the images, and the model image (modelcar)",
    "kube": "A Pod for podman kube play; a Deployment and a Service for a cluster",
    "kserve": "A ServingRuntime and an InferenceService that reads the model image (oci://)",
    "quadlet": "systemd units that Podman's Quadlet starts at boot",
    "compose": "A compose.yaml for podman-compose or docker compose",
}
GPU_TITLES = {
    "none": "None (CPU only)",
    "nvidia": "NVIDIA",
    "amd": "AMD",
    "intel": "Intel",
}
FILE_PATH_ROLE = Qt.ItemDataRole.UserRole + 1
EXPORTS_FOLDER = "podlab-exports"
"""The folder under home where the output folder is suggested."""


@dataclass(frozen=True)
class ExportChoice:
    """What the user chose in the dialog."""

    formats: tuple[str, ...]
    gpu: str
    model_id: str | None = None
    embedding_id: str | None = None


async def _digests(lab: Lab, images: list[str]) -> dict[str, str]:
    """Image digests Podman knows (none without Podman)."""
    if not lab.engine.status.available:
        return {}
    try:
        return await image_digests(lab.engine, images)
    except PodlabError as exc:
        log.warning("cannot read image digests: %s", exc)
        return {}


@dataclass
class RecipeExport:
    """A recipe as the runner would start it, with a model of the store."""

    lab: Lab
    entry: RecipeEntry
    models: list[StoredModel]
    """Downloaded models, the recipe's recommended ones first."""
    model_id: str | None = None
    """The model chosen first (None: the first of `models`)."""
    embedding_models: list[StoredModel] = field(default_factory=list)
    """Downloaded models, the recipe's recommended embedding models first."""
    embedding_id: str | None = None
    gpu: str = "none"
    note: str = ""
    digests: dict[str, str] | None = None
    """Image digests used (read from Podman on the first generation)."""

    @property
    def title(self) -> str:
        return f"the {self.entry.name} recipe"

    @property
    def name(self) -> str:
        return dns_label(self.entry.id)

    @property
    def needs_embedding(self) -> bool:
        return bool(self.entry.spec.with_role(ContainerRole.EMBEDDING_SERVICE))

    async def files(self, choice: ExportChoice) -> list[ExportedFile]:
        if self.digests is None:
            self.digests = await _digests(self.lab, list(recipe_images(self.entry).values()))
        if choice.model_id is None:
            raise PodlabError(
                "no model is downloaded", hint="download one in the Catalog to export this recipe"
            )
        if self.needs_embedding and choice.embedding_id is None:
            raise PodlabError(
                f"{self.entry.name} needs an embedding model",
                hint="download one in the Catalog (a GGUF embedding model)",
            )
        return await asyncio.to_thread(self._generate, choice, dict(self.digests))

    def _generate(self, choice: ExportChoice, digests: Mapping[str, str]) -> list[ExportedFile]:
        settings = self.lab.settings
        assert choice.model_id is not None
        model = resolve_model(choice.model_id, settings)
        embedding = None
        if self.needs_embedding and choice.embedding_id is not None:
            embedding = resolve_model(choice.embedding_id, settings)
        return export_recipe(
            self.entry,
            model,
            settings=settings,
            embedding=embedding,
            gpu=choice.gpu,
            formats=choice.formats,
            image_digests=digests,
        )


@dataclass
class ServiceExport:
    """A served model from its own container spec; `sampling`: the request parameters it was
    tried with (a comparison pane's)."""

    lab: Lab
    service: InferenceService
    sampling: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    digests: dict[str, str] | None = None

    @property
    def title(self) -> str:
        return f"the service {self.service.name} ({self.service.model_ref})"

    @property
    def name(self) -> str:
        return dns_label(self.service.name)

    @property
    def gpu(self) -> str:
        vendor = self.service.gpu_vendor
        return vendor if vendor in GPU_TARGETS else "none"

    async def files(self, choice: ExportChoice) -> list[ExportedFile]:
        if self.digests is None:
            image = self.service.image or (self.service.spec.image if self.service.spec else "")
            self.digests = await _digests(self.lab, [image] if image else [])
        # Its own GPU keeps the spec it runs with; another one is planned for that GPU.
        gpu = None if choice.gpu == self.gpu else choice.gpu
        return await asyncio.to_thread(
            export_service,
            self.service,
            settings=self.lab.settings,
            formats=choice.formats,
            gpu=gpu,
            image_digests=dict(self.digests),
            sampling=self.sampling or None,
        )


ExportSource = RecipeExport | ServiceExport


def _plain_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    return label


class ExportDialog(QDialog):
    """Formats, GPU and model; every file previewed; an output folder and Write."""

    def __init__(self, source: ExportSource, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("export-dialog")
        self.setWindowTitle("Export")
        self.source = source
        self.files: list[ExportedFile] = []
        """The files shown now: what Write writes."""
        self.written_to: Path | None = None
        self.active_dialog: QDialog | None = None
        """The confirmation being asked (tests answer it)."""
        self._generation: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[bool] | None = None

        heading = _plain_label(f"Export {source.title}")
        font = heading.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        heading.setFont(font)
        self.explain = _plain_label(
            "The files run elsewhere what Podlab runs here: the same images, model, parameters "
            "and context size. The model travels as a model image; the API key is never written "
            "(each folder's README says how to give it)."
            + (f"\n{source.note}" if source.note else "")
        )

        self.format_checks: dict[str, QCheckBox] = {}
        format_row = QHBoxLayout()
        for key in FORMATS:
            check = QCheckBox(FORMAT_TITLES[key])
            check.setObjectName(f"format-{key}")
            check.setToolTip(FORMAT_TIPS[key])
            check.setChecked(True)
            check.toggled.connect(self.regenerate)
            self.format_checks[key] = check
            format_row.addWidget(check)
        format_row.addStretch(1)

        self.gpu_combo = QComboBox()
        self.gpu_combo.setObjectName("export-gpu")
        self.gpu_combo.setAccessibleName("GPU where it will run")
        for key in GPU_TARGETS:
            self.gpu_combo.addItem(GPU_TITLES[key], key)
        self.gpu_combo.setCurrentIndex(max(0, self.gpu_combo.findData(source.gpu)))
        recipe = source if isinstance(source, RecipeExport) else None
        self.model_combo = self._model_combo(
            "export-model",
            "Model",
            recipe.models if recipe else [],
            recipe.model_id if recipe else None,
        )
        self.embedding_combo = self._model_combo(
            "export-embedding-model",
            "Embedding model",
            recipe.embedding_models if recipe else [],
            recipe.embedding_id if recipe else None,
        )

        choices = QFormLayout()
        choices.addRow("Formats", format_row)
        choices.addRow("GPU", self.gpu_combo)
        choices.addRow("Model", self.model_combo)
        choices.addRow("Embedding model", self.embedding_combo)
        # A served model is one model: nothing to choose.
        choices.setRowVisible(self.model_combo, recipe is not None)
        choices.setRowVisible(self.embedding_combo, recipe is not None and recipe.needs_embedding)

        self.file_tree = QTreeWidget()
        self.file_tree.setObjectName("export-files")
        self.file_tree.setAccessibleName("Files to write")
        self.file_tree.setHeaderLabels(["Files"])
        self.file_tree.setRootIsDecorated(True)
        self.preview = QPlainTextEdit()
        self.preview.setObjectName("export-preview")
        self.preview.setAccessibleName("Preview of the chosen file")
        self.preview.setReadOnly(True)
        self.preview.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.preview.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.preview.setPlaceholderText("Choose a file to see what it will contain.")
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.file_tree)
        splitter.addWidget(self.preview)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([320, 700])

        self.folder_edit = QLineEdit()
        self.folder_edit.setObjectName("export-folder")
        self.folder_edit.setAccessibleName("Output folder")
        self.folder_edit.setText(str(Path.home() / EXPORTS_FOLDER / source.name))
        self.folder_edit.setToolTip("An empty folder, or one that does not exist yet")
        self.choose_button = QPushButton("Choose…")
        self.choose_button.setToolTip("Choose the output folder")
        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel("Output folder"))
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.choose_button)

        self.status = _plain_label()
        self.status.setObjectName("export-status")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        line = self.status.fontMetrics().lineSpacing()
        # A fixed height: a shown dialog whose minimum size changes makes offscreen Qt warn.
        self.status.setFixedHeight(3 * line + 4)
        self.status.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)

        self.buttons = QDialogButtonBox()
        self.open_folder_button = self.buttons.addButton(
            "Open folder", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.open_folder_button.setEnabled(False)
        self.open_folder_button.setToolTip("Show the written files in the file manager")
        self.close_button = self.buttons.addButton("Close", QDialogButtonBox.ButtonRole.RejectRole)
        self.write_button = self.buttons.addButton("Write", QDialogButtonBox.ButtonRole.ApplyRole)
        self.write_button.setEnabled(False)
        self.write_button.setDefault(True)

        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.explain)
        layout.addLayout(choices)
        layout.addWidget(splitter, 1)
        layout.addLayout(folder_row)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.resize(1060, 720)

        self.gpu_combo.currentIndexChanged.connect(self.regenerate)
        self.model_combo.currentIndexChanged.connect(self.regenerate)
        self.embedding_combo.currentIndexChanged.connect(self.regenerate)
        self.file_tree.currentItemChanged.connect(self._on_file_chosen)
        self.choose_button.clicked.connect(self._choose_folder)
        self.open_folder_button.clicked.connect(self.open_folder)
        self.write_button.clicked.connect(self._on_write)
        self.buttons.rejected.connect(self.reject)
        self.finished.connect(lambda _result: self._cancel_work())
        self.regenerate()

    @staticmethod
    def _model_combo(
        name: str, accessible: str, models: list[StoredModel], chosen: str | None
    ) -> QComboBox:
        combo = QComboBox()
        combo.setObjectName(name)
        combo.setAccessibleName(accessible)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        for model in models:
            combo.addItem(model.name, model.id)
        combo.setCurrentIndex(max(0, combo.findData(chosen)) if models else -1)
        return combo

    # -- choices and generation --------------------------------------------------------------

    def choice(self) -> ExportChoice:
        def chosen(combo: QComboBox) -> str | None:
            data = combo.currentData()
            return None if data is None else str(data)

        return ExportChoice(
            formats=tuple(key for key, check in self.format_checks.items() if check.isChecked()),
            gpu=str(self.gpu_combo.currentData()),
            model_id=chosen(self.model_combo),
            embedding_id=chosen(self.embedding_combo),
        )

    def regenerate(self) -> asyncio.Task[None]:
        """Generate the files for the choices now shown (the previous generation is dropped)."""
        if self._generation is not None and not self._generation.done():
            self._generation.cancel()
        self.write_button.setEnabled(False)
        self._say("Generating the files…")
        self._generation = background.start(self._generate(self.choice()), "generate an export")
        return self._generation

    async def settle(self) -> None:
        """Wait until the files shown match the choices (tests and screenshots call it)."""
        while self._generation is not None and not self._generation.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._generation)

    async def _generate(self, choice: ExportChoice) -> None:
        files: list[ExportedFile] = []
        problem = ""
        if not choice.formats:
            problem = "Choose at least one format."
        else:
            try:
                files = await self.source.files(choice)
            except PodlabError as exc:
                problem = f"Cannot export: {exc.message}" + (f"\n{exc.hint}" if exc.hint else "")
            except Exception as exc:  # an unexpected failure is said here, never a crash
                log.warning("generating an export failed", exc_info=True)
                problem = f"Cannot export: {exc}"
        if not shiboken6.isValid(self):
            return
        self._show_files(files)
        if problem:
            self._say(problem, error=True)
        else:
            folders = sorted({f.path.split("/", 1)[0] for f in files})
            self._say(f"{len(files)} files in {', '.join(folders)}. Nothing is written yet.")
        self.write_button.setEnabled(bool(files))

    def _show_files(self, files: list[ExportedFile]) -> None:
        """The files as a tree of their folders, in the order the core wrote them."""
        current = self.current_file_path()
        self.files = files
        self.file_tree.clear()
        folders: dict[str, QTreeWidgetItem] = {}

        def folder_item(path: str) -> QTreeWidgetItem | None:
            if not path:
                return None
            if path not in folders:
                parent_path, _, name = path.rpartition("/")
                parent = folder_item(parent_path)
                item = QTreeWidgetItem([f"{name}/"])
                item.setFlags(Qt.ItemFlag.ItemIsEnabled)
                if parent is None:
                    self.file_tree.addTopLevelItem(item)
                else:
                    parent.addChild(item)
                folders[path] = item
            return folders[path]

        first: QTreeWidgetItem | None = None
        chosen: QTreeWidgetItem | None = None
        for exported in files:
            folder, _, name = exported.path.rpartition("/")
            parent = folder_item(folder)
            item = QTreeWidgetItem([name])
            item.setData(0, FILE_PATH_ROLE, exported.path)
            item.setToolTip(0, exported.path)
            if parent is None:
                self.file_tree.addTopLevelItem(item)
            else:
                parent.addChild(item)
            first = first or item
            if exported.path == current:
                chosen = item
        self.file_tree.expandAll()
        target = chosen or first
        if target is not None:
            self.file_tree.setCurrentItem(target)
        else:
            self.preview.clear()

    def current_file_path(self) -> str | None:
        item = self.file_tree.currentItem()
        path = item.data(0, FILE_PATH_ROLE) if item is not None else None
        return None if path is None else str(path)

    def show_file(self, path: str) -> bool:
        """Preview the file at `path` (as listed); False when no such file is listed."""
        everything = Qt.MatchFlag.MatchWildcard | Qt.MatchFlag.MatchRecursive
        for item in self.file_tree.findItems("*", everything):
            if item.data(0, FILE_PATH_ROLE) == path:
                self.file_tree.setCurrentItem(item)
                return True
        return False

    def _on_file_chosen(self, item: QTreeWidgetItem | None, _previous: object) -> None:
        path = item.data(0, FILE_PATH_ROLE) if item is not None else None
        text = next((f.text for f in self.files if f.path == path), None)
        if text is None:
            return  # a folder: the preview keeps the last file
        self.preview.setPlainText(text)

    # -- writing -----------------------------------------------------------------------------

    def _choose_folder(self) -> None:
        start = Path(self.folder_edit.text().strip() or Path.home()).expanduser()
        while not start.is_dir() and start != start.parent:
            start = start.parent
        folder = QFileDialog.getExistingDirectory(self, "Export into a folder", str(start))
        if folder:
            self.folder_edit.setText(folder)

    def _on_write(self) -> None:
        if self._writing is None or self._writing.done():
            self._writing = background.start(self.write(), "write an export")

    async def write(self) -> bool:
        """Write the files shown into the output folder; a folder with files in it is replaced
        only when the user agrees. True when written."""
        files = list(self.files)
        folder = self.output_folder()
        if not files:
            return False
        if folder is None:
            self._say("Choose an output folder.", error=True)
            return False
        force = False
        if await asyncio.to_thread(_has_files, folder):
            question = MessageDialog(
                self,
                "Replace the folder's content?",
                f"{folder} is not empty.",
                "Writing the export replaces everything in it with these files.",
                level="warning",
                accept_text="Replace",
                reject_text="Cancel",
            )
            if not await ask(self, question):
                self._say("Nothing was written: the folder is not empty.")
                return False
            force = True
        self.write_button.setEnabled(False)
        try:
            await asyncio.to_thread(write_export, files, folder, force=force)
        except PodlabError as exc:
            self._say(
                f"Nothing was written: {exc.message}" + (f"\n{exc.hint}" if exc.hint else ""),
                error=True,
            )
            return False
        except Exception as exc:  # a full disk, no permission: said here, never a crash
            log.warning("writing an export failed", exc_info=True)
            self._say(f"Nothing was written: {exc}", error=True)
            return False
        finally:
            if shiboken6.isValid(self):
                self.write_button.setEnabled(bool(self.files))
        if not shiboken6.isValid(self):
            return True
        self.written_to = folder.absolute()
        self.open_folder_button.setEnabled(True)
        self._say(
            f"Wrote {len(files)} files into {self.written_to}.\n"
            "Each folder's README.md says how to run it and give it the API key."
        )
        return True

    def output_folder(self) -> Path | None:
        text = self.folder_edit.text().strip()
        return Path(text).expanduser() if text else None

    def open_folder(self) -> None:
        if self.written_to is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.written_to)))

    # -- plumbing ----------------------------------------------------------------------------

    def _say(self, text: str, error: bool = False) -> None:
        if not shiboken6.isValid(self):
            return  # closed while a thread was writing
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {BADGE_COLOURS['error']};" if error else "")

    def status_text(self) -> str:
        return self.status.text()

    def _cancel_work(self) -> None:
        if self._generation is not None and not self._generation.done():
            self._generation.cancel()


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def open_export_dialog(source: ExportSource, parent: QWidget) -> ExportDialog:
    """Show the Export dialog window-modal, without waiting for it (it writes by itself)."""
    dialog = ExportDialog(source, parent)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    open_dialog(dialog)
    return dialog
