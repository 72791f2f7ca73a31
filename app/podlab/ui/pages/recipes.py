"""Recipes: applications (chatbot, RAG, summarizer) described by ai-lab.yaml, as cards with
category and backend filters, the readme, the recommended models and the containers.

Recipes are read in a thread (bundled ones plus folders imported with Import… or
`podlab recipe import`); a broken recipe is listed in a banner as `file:line: problem` while the
others stay usable. Readmes come from other people's repositories, so they go through the same
inert Markdown view as model cards (no raw HTML, no remote images, links only on a click).

Run starts the chosen recipe with a downloaded model through the RecipeRunner, as a Lab task
whose log is the build and start log; its failure and log tail also show on the page. The
"Running applications" list comes from the pods' labels, so runs started earlier (or from the
command line) are found again after a restart; while the page shows, it reads that list again
every few seconds (one pod listing), so a run stopped from the command line shows as stopped.
Without Podman the page says how to get it.

Export… (beside Run, and for a running application) opens the Export dialog: the recipe with
the chosen model on the GPU Run would use, or the application as it runs (its model and GPU).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.core.models.catalog import load_catalog
from podlab.core.models.store import StoredModel
from podlab.core.recipes.catalog import (
    RecipeCatalog,
    RecipeEntry,
    category_label,
    import_recipes,
    load_recipe_catalog,
)
from podlab.core.recipes.runner import RecipeRun, RecipeRunner, RunEvent, RunRequest
from podlab.core.recipes.spec import ContainerRole, RecipeSpecError
from podlab.core.serving.gpu.detect import detect_gpus
from podlab.core.serving.gpu.host import HostProbe
from podlab.core.serving.gpu.passthrough import plan_passthrough
from podlab.core.tasks import Task
from podlab.ui import background
from podlab.ui.dialogs.export import ExportDialog, RecipeExport, open_export_dialog
from podlab.ui.download_bridge import bridge_for
from podlab.ui.page_host import PageHost
from podlab.ui.widgets.model_card import ModelCardView

log = logging.getLogger(__name__)

RUN_COLUMNS = ("Recipe", "State", "Model", "App URL")
NO_MODEL = "No model is downloaded yet: download one in the Catalog to run this recipe."
ANY = "__any__"
RECIPE_ROLE = Qt.ItemDataRole.UserRole + 1
BANNER_STYLE = (
    "#recipes-banner { background: #fff4ce; border: 1px solid #d9b500; border-radius: 4px; }"
    "#recipes-banner QLabel { color: #3d3000; }"
)


def _plain_label(text: str = "", word_wrap: bool = True) -> QLabel:
    """A label that never interprets its text: recipe names and texts come from anyone."""
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(word_wrap)
    return label


class RecipeCard(QFrame):
    """One recipe in the list: name, description, category and backend."""

    def __init__(self, entry: RecipeEntry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entry = entry
        self.setFrameShape(QFrame.Shape.StyledPanel)
        name = _plain_label(entry.name, word_wrap=False)
        font = name.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.1)
        name.setFont(font)
        description = _plain_label(entry.description)
        tags = " · ".join(
            [*(category_label(c) for c in entry.categories), entry.backend or "any backend"]
        )
        tag_label = _plain_label(tags, word_wrap=False)
        tag_label.setStyleSheet("color: #555;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addWidget(name)
        layout.addWidget(description)
        layout.addWidget(tag_label)


class RecipesPage(QWidget):
    """Cards with filters on the left, the chosen recipe's details and readme on the right."""

    sig_recipes_loaded = Signal(int)
    """Emitted after each load with the number of recipes listed."""

    sig_runs_listed = Signal()
    """Emitted each time the Running applications list has been read from Podman."""

    RUNS_REFRESH_MS = 3_000
    """How often the shown page reads the runs again: one pod listing, cheap for Podman."""

    def __init__(
        self, lab: Lab, host: PageHost | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.lab = lab
        self._host = host
        self.catalog = RecipeCatalog()
        self.model_names: dict[str, str] = {}
        self.models: list[StoredModel] = []
        self.runs: list[RecipeRun] = []
        self.podman_problem = ""
        """Why recipes cannot run here (Podman missing), with how to get it; "" when they can."""
        self.gpu_probe: HostProbe | None = None
        """Host facts for GPU planning (None: this machine's); tests give a GPU-less host."""
        self._runner: RecipeRunner | None = None
        self.run_task: Task | None = None
        self._run_name = ""
        self.export_dialog: ExportDialog | None = None
        """The Export dialog last opened (tests fill and click it)."""
        lab.tasks.subscribe(self._on_task_changed)
        self.destroyed.connect(lambda: lab.tasks.unsubscribe(self._on_task_changed))

        heading = QHBoxLayout()
        title = QLabel("<h2>Recipes</h2>")
        self.category_filter = QComboBox()
        self.category_filter.setAccessibleName("Category")
        self.backend_filter = QComboBox()
        self.backend_filter.setAccessibleName("Backend")
        for combo in (self.category_filter, self.backend_filter):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip(
            "Add the recipes of a local folder or git checkout (ai-lab-recipes layout)"
        )
        heading.addWidget(title)
        heading.addStretch(1)
        heading.addWidget(QLabel("Category:"))
        heading.addWidget(self.category_filter)
        heading.addWidget(QLabel("Backend:"))
        heading.addWidget(self.backend_filter)
        heading.addWidget(self.import_button)

        self.banner = QFrame()
        self.banner.setObjectName("recipes-banner")
        self.banner.setStyleSheet(BANNER_STYLE)
        self.banner_label = _plain_label()
        self.banner_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.setContentsMargins(8, 6, 8, 6)
        banner_layout.addWidget(self.banner_label)
        self.banner.hide()

        self.cards = QListWidget()
        self.cards.setAccessibleName("Recipes")
        self.cards.setSpacing(4)
        self.cards.setVerticalScrollMode(QListWidget.ScrollMode.ScrollPerPixel)
        self.empty_label = _plain_label("No recipe matches these filters.")
        self.empty_label.hide()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.cards, 1)
        left_layout.addWidget(self.empty_label)

        self.name_label = _plain_label()
        font = self.name_label.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.3)
        self.name_label.setFont(font)
        self.facts_label = _plain_label()
        self.models_label = _plain_label()
        self.containers_label = _plain_label()
        self.model_combo = QComboBox()
        self.model_combo.setAccessibleName("Model")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.embedding_combo = QComboBox()
        self.embedding_combo.setAccessibleName("Embedding model")
        self.embedding_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.embedding_label = QLabel("Embedding model:")
        self.no_model_label = _plain_label(NO_MODEL)
        self.open_catalog_button = QPushButton("Open Catalog")
        self.podman_label = _plain_label()
        self.podman_label.setObjectName("recipes-podman")
        self.podman_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.podman_label.hide()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip(
            "Build what changed and start the recipe in a Podman pod with the chosen model"
        )
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip(
            "Preview and write this recipe with the chosen model as Containerfiles, Kubernetes "
            "YAML, KServe, Quadlet or Compose"
        )
        self.run_status = _plain_label()
        self.run_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        model_row = QHBoxLayout()
        model_row.addWidget(QLabel("Model:"))
        model_row.addWidget(self.model_combo)
        model_row.addWidget(self.embedding_label)
        model_row.addWidget(self.embedding_combo)
        model_row.addWidget(self.run_button)
        model_row.addWidget(self.export_button)
        model_row.addStretch(1)
        no_model_row = QHBoxLayout()
        no_model_row.addWidget(self.no_model_label, 1)
        no_model_row.addWidget(self.open_catalog_button)
        self.no_model_box = QWidget()
        self.no_model_box.setLayout(no_model_row)
        self.no_model_box.hide()
        self.readme = ModelCardView()
        self.readme.setPlaceholderText("This recipe has no readme.")
        self.readme.setAccessibleName("Readme")
        # A long readme renders over a few event-loop turns; show it from its top once done.
        self.readme.sig_finished.connect(lambda: self.readme.verticalScrollBar().setValue(0))
        details = QWidget()
        details_layout = QVBoxLayout(details)
        details_layout.setContentsMargins(0, 0, 0, 0)
        details_layout.addWidget(self.name_label)
        details_layout.addWidget(self.facts_label)
        details_layout.addWidget(self.models_label)
        details_layout.addWidget(self.containers_label)
        details_layout.addLayout(model_row)
        details_layout.addWidget(self.no_model_box)
        details_layout.addWidget(self.podman_label)
        details_layout.addWidget(self.run_status)
        details_layout.addWidget(self.readme, 1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(details)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setSizes([420, 640])
        self.splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.addLayout(heading)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self._running_box())

        self.category_filter.currentIndexChanged.connect(self.apply_filters)
        self.backend_filter.currentIndexChanged.connect(self.apply_filters)
        self.cards.currentItemChanged.connect(self._on_current_changed)
        self.import_button.clicked.connect(self._on_import_clicked)
        self.open_catalog_button.clicked.connect(self._open_catalog)
        self.run_button.clicked.connect(self._on_run_clicked)
        self.export_button.clicked.connect(self._on_export_clicked)
        self.export_run_button.clicked.connect(self._on_export_run_clicked)
        self.model_combo.currentIndexChanged.connect(self._update_run_button)
        self.runs_table.itemSelectionChanged.connect(self._update_run_actions)
        self.open_button.clicked.connect(self._on_open_clicked)
        self.stop_button.clicked.connect(self._on_stop_clicked)
        self.delete_button.clicked.connect(self._on_delete_clicked)
        self._loading: asyncio.Future[None] = background.start(self._load(), "load the recipes")
        self._runs_poll: asyncio.Task[None] | None = None
        self._runs_readings = 0
        self._runs_timer = QTimer(self)
        self._runs_timer.setInterval(self.RUNS_REFRESH_MS)
        self._runs_timer.timeout.connect(self._poll_runs)

    def _running_box(self) -> QGroupBox:
        box = QGroupBox("Running applications")
        self.runs_table = QTableWidget(0, len(RUN_COLUMNS))
        self.runs_table.setAccessibleName("Running applications")
        self.runs_table.setHorizontalHeaderLabels(RUN_COLUMNS)
        self.runs_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.runs_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.runs_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.runs_table.verticalHeader().hide()
        self.runs_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents
        )
        self.runs_table.horizontalHeader().setStretchLastSection(True)
        self.runs_table.setMaximumHeight(160)
        self.runs_empty = _plain_label("No recipe is running.")
        self.open_button = QPushButton("Open in browser")
        self.export_run_button = QPushButton("Export…")
        self.export_run_button.setAccessibleName("Export the running application…")
        self.export_run_button.setToolTip(
            "Preview and write this application as it runs (its model and GPU) as files that "
            "run elsewhere"
        )
        self.stop_button = QPushButton("Stop")
        self.delete_button = QPushButton("Delete")
        buttons = QHBoxLayout()
        buttons.addWidget(self.runs_empty, 1)
        for button in (
            self.open_button,
            self.export_run_button,
            self.stop_button,
            self.delete_button,
        ):
            button.setEnabled(False)
            buttons.addWidget(button)
        layout = QVBoxLayout(box)
        layout.addWidget(self.runs_table)
        layout.addLayout(buttons)
        return box

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._runs_timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._runs_timer.stop()

    def _poll_runs(self) -> None:
        """Read the runs again, unless the first load or the previous reading is not done."""
        if not self._loading.done() or (self._runs_poll and not self._runs_poll.done()):
            return
        self._runs_poll = background.start(self.refresh_runs(), "list the recipe runs")

    # -- loading ---------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait for the first load: screenshots and tests call it."""
        await asyncio.shield(self._loading)

    async def _load(self, extra_errors: list[PodlabError] | None = None) -> None:
        catalog, names = await asyncio.to_thread(self._read, self.lab)
        if not shiboken6.isValid(self):
            return
        self.catalog = catalog
        self.model_names = names
        self._show_errors([*(extra_errors or []), *catalog.errors])
        self._fill_filters()
        self._fill_cards()
        self.sig_recipes_loaded.emit(len(catalog))
        await self.refresh()

    async def refresh(self) -> None:
        """Read the downloaded models and whether Podman answers, then list the runs."""
        models = await bridge_for(self.lab).list_models()
        status = await self.lab.engine.connect()
        if not shiboken6.isValid(self):
            return
        self.models = [model for model in models if model.usable]
        if status.available:
            self.podman_problem = ""
        else:
            self.podman_problem = (
                f"Recipes need Podman: {(status.problem or 'Podman is not available').rstrip('.')}."
                + (f"\n{status.hint}" if status.hint else "")
            )
        self.podman_label.setText(self.podman_problem)
        self.podman_label.setVisible(bool(self.podman_problem))
        self._fill_models(self.current_recipe())
        await self.refresh_runs()

    @staticmethod
    def _read(lab: Lab) -> tuple[RecipeCatalog, dict[str, str]]:
        catalog = load_recipe_catalog(lab.locations)
        try:
            models = load_catalog().catalog
            names = {model.id: model.name for model in models}
        except PodlabError as exc:  # the recipes stay listed with model ids only
            log.warning("cannot read the model catalog: %s", exc)
            names = {}
        return catalog, names

    async def import_folder(self, folder: str) -> None:
        """Import the recipes under `folder`, then list them (or show why not)."""
        problems: list[PodlabError] = []
        try:
            await asyncio.to_thread(import_recipes, Path(folder), self.lab.locations)
        except RecipeSpecError as exc:
            problems = list(exc.problems)
        except PodlabError as exc:
            problems = [exc]
        self._loading = background.start(self._load(problems), "load the recipes", awaited=True)
        await self._loading

    @asyncSlot()
    async def _on_import_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import recipes from a folder")
        if folder:
            await self.import_folder(folder)

    def _show_errors(self, errors: list[PodlabError]) -> None:
        if not errors:
            self.banner.hide()
            return
        lines = [line for error in errors for line in error.message.splitlines()]
        head = "These recipes could not be read; the others are listed:"
        self.banner_label.setText("\n".join([head, *lines[:8]]))
        self.banner.show()

    # -- cards and filters -----------------------------------------------------------------------

    def _fill_filters(self) -> None:
        for combo, values, label, everything in (
            (self.category_filter, self.catalog.categories(), category_label, "All categories"),
            (self.backend_filter, self.catalog.backends(), str, "All backends"),
        ):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(everything, ANY)
            for value in values:
                combo.addItem(label(value), value)
            index = combo.findData(current)
            combo.setCurrentIndex(max(index, 0))
            combo.blockSignals(False)

    def _fill_cards(self) -> None:
        current = self.current_recipe()
        self.cards.clear()
        for entry in self.catalog:
            item = QListWidgetItem()
            item.setData(RECIPE_ROLE, entry.id)
            card = RecipeCard(entry)
            item.setSizeHint(card.sizeHint())
            self.cards.addItem(item)
            self.cards.setItemWidget(item, card)
        self.apply_filters()
        if current is not None:
            self.select_recipe(current.id)

    def apply_filters(self) -> None:
        category = self.category_filter.currentData()
        backend = self.backend_filter.currentData()
        shown = {
            entry.id
            for entry in self.catalog.filtered(
                category=None if category in (None, ANY) else category,
                backend=None if backend in (None, ANY) else backend,
            )
        }
        first_shown: QListWidgetItem | None = None
        for row in range(self.cards.count()):
            item = self.cards.item(row)
            hidden = item.data(RECIPE_ROLE) not in shown
            item.setHidden(hidden)
            if not hidden and first_shown is None:
                first_shown = item
        self.empty_label.setVisible(first_shown is None and len(self.catalog) > 0)
        current = self.cards.currentItem()
        if current is None or current.isHidden():
            if first_shown is None:
                self.cards.setCurrentRow(-1)
                self._show_recipe(None)
            else:
                self.cards.setCurrentItem(first_shown)

    def visible_recipe_ids(self) -> list[str]:
        return [
            str(self.cards.item(row).data(RECIPE_ROLE))
            for row in range(self.cards.count())
            if not self.cards.item(row).isHidden()
        ]

    def select_recipe(self, recipe_id: str) -> bool:
        for row in range(self.cards.count()):
            item = self.cards.item(row)
            if item.data(RECIPE_ROLE) == recipe_id and not item.isHidden():
                self.cards.setCurrentItem(item)
                return True
        return False

    def current_recipe(self) -> RecipeEntry | None:
        item = self.cards.currentItem()
        if item is None:
            return None
        return self.catalog.get(str(item.data(RECIPE_ROLE)))

    def _on_current_changed(self, current: QListWidgetItem | None, _previous: object) -> None:
        entry = self.catalog.get(str(current.data(RECIPE_ROLE))) if current else None
        self._show_recipe(entry)

    # -- details ---------------------------------------------------------------------------------

    def _show_recipe(self, entry: RecipeEntry | None) -> None:
        if entry is None:
            for label in (self.name_label, self.facts_label, self.models_label):
                label.clear()
            self.containers_label.clear()
            self.readme.show_card("")
            self._fill_models(None)
            return
        self.name_label.setText(entry.name)
        origin = "bundled with Podlab" if entry.origin == "bundled" else entry.origin
        categories = ", ".join(category_label(c) for c in entry.categories) or "no category"
        self.facts_label.setText(
            f"{entry.description}\n\n{categories} · backend: {entry.backend or 'any'} · {origin}"
        )
        lines = []
        if entry.recommended:
            lines.append("Recommended models: " + ", ".join(self._names(entry.recommended)))
        else:
            lines.append(f"Any {entry.backend or ''} model can run it.".replace("  ", " "))
        if entry.recommended_embedding:
            lines.append("Embedding models: " + ", ".join(self._names(entry.recommended_embedding)))
        self.models_label.setText("\n".join(lines))
        self.containers_label.setText(
            "Containers: "
            + "; ".join(
                f"{c.name} ({c.role.value}, port {', '.join(map(str, c.ports)) or 'none'})"
                for c in entry.spec.containers
            )
        )
        self.readme.show_card(entry.readme)
        self._fill_models(entry)

    def _names(self, model_ids: tuple[str, ...]) -> list[str]:
        return [self.model_names.get(model_id, model_id) for model_id in model_ids]

    # -- models and Run --------------------------------------------------------------------------

    def _fill_models(self, entry: RecipeEntry | None) -> None:
        """Only downloaded models can run; the recipe's recommended ones come first."""
        recommended = entry.recommended if entry else ()
        embedding = entry.recommended_embedding if entry else ()
        needs_embedding = entry is not None and bool(
            entry.spec.with_role(ContainerRole.EMBEDDING_SERVICE)
        )
        for combo, preferred in (
            (self.model_combo, recommended),
            (self.embedding_combo, embedding),
        ):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            for model in _recommended_first(self.models, preferred):
                mark = " (recommended)" if model.catalog_id in preferred else ""
                combo.addItem(f"{model.name}{mark}", model.id)
            combo.setCurrentIndex(max(combo.findData(current), 0) if combo.count() else -1)
            combo.blockSignals(False)
        self.embedding_label.setVisible(needs_embedding)
        self.embedding_combo.setVisible(needs_embedding)
        self.no_model_box.setVisible(entry is not None and not self.models)
        self._update_run_button()

    def _update_run_button(self) -> None:
        entry = self.current_recipe()
        busy = self.run_task is not None and not self.run_task.state.finished
        self.run_button.setEnabled(
            entry is not None
            and not self.podman_problem
            and self.model_combo.currentData() is not None
            and not busy
        )
        self.export_button.setEnabled(
            entry is not None and self.model_combo.currentData() is not None
        )

    def _open_catalog(self) -> None:
        if self._host is not None:
            self._host.show_page("catalog")

    def runner(self) -> RecipeRunner:
        """The page's runner on the Lab's one Podman connection, made on first use."""
        if self._runner is None:
            self._runner = RecipeRunner(
                self.lab.engine, self.lab.settings, gpu_probe=self.gpu_probe
            )
            self._runner.subscribe(self._on_run_event)
        return self._runner

    def _on_run_clicked(self) -> None:
        entry = self.current_recipe()
        model_id = self.model_combo.currentData()
        if entry is None or model_id is None:
            return
        self.start_run(entry, str(model_id), self.embedding_combo.currentData())

    def start_run(self, entry: RecipeEntry, model_id: str, embedding_id: str | None) -> Task:
        """Run `entry` with a downloaded model as a Lab task (shown on the Tasks page)."""
        store = bridge_for(self.lab).store
        needs_embedding = bool(entry.spec.with_role(ContainerRole.EMBEDDING_SERVICE))

        async def work(task: Task) -> None:
            model = await asyncio.to_thread(store.path_of, model_id)
            embedding = None
            if needs_embedding and embedding_id:
                embedding = await asyncio.to_thread(store.path_of, embedding_id)
            request = RunRequest(entry, model, embedding, gpu="auto")
            try:
                run = await self.runner().run(request)
            except PodlabError as exc:
                self._show_run_status(f"{entry.name} failed: {exc.message}", exc.hint)
                raise
            except Exception as exc:
                self._show_run_status(f"{entry.name} failed: {exc}")
                raise
            else:
                self._show_run_status(f"{entry.name} runs at {run.app_url}")
            finally:
                await self.refresh_runs()

        self._run_name = entry.name
        self._show_run_status(f"{entry.name}: starting…")
        self.run_task = self.lab.tasks.start(f"Run recipe {entry.name}", "recipe", work)
        self._update_run_button()
        return self.run_task

    def _on_task_changed(self, task: Task) -> None:
        if task is self.run_task and task.state.finished and shiboken6.isValid(self):
            self._update_run_button()

    def _on_run_event(self, event: RunEvent) -> None:
        """Build and start lines go to the task's log; states and steps to its detail line."""
        task = self.run_task
        where = f"[{event.container}] " if event.container else ""
        if event.kind == "log":
            line = f"{where}{event.text}"
        elif event.kind == "build":
            line = f"{where}building {event.text}"
        elif event.kind == "reuse":
            line = f"{where}reusing {event.text} (inputs unchanged)"
        elif event.kind == "ready":
            line = f"{where}answers at {event.text}"
        else:
            line = event.text
        if task is not None:
            task.add_log(line)
            if event.kind != "log":
                task.report(detail=line)
        if event.kind == "state" and event.text != "failed":
            self._show_run_status(f"{self._run_name}: {event.text}…")

    def _show_run_status(self, text: str, log_tail: str = "") -> None:
        if shiboken6.isValid(self):
            self.run_status.setText(f"{text}\n{log_tail}".strip())

    # -- export ----------------------------------------------------------------------------------

    @asyncSlot()
    async def _on_export_clicked(self) -> None:
        entry = self.current_recipe()
        if entry is not None:
            await self.export_recipe(
                entry, self.model_combo.currentData(), self.embedding_combo.currentData()
            )

    @asyncSlot()
    async def _on_export_run_clicked(self) -> None:
        run = self.selected_run()
        if run is not None:
            await self.export_run(run)

    async def export_recipe(
        self, entry: RecipeEntry, model_id: str | None, embedding_id: str | None
    ) -> ExportDialog:
        """The Export dialog for `entry` with a downloaded model, on the GPU Run would use."""
        plan = plan_passthrough(await asyncio.to_thread(detect_gpus, self.gpu_probe), "auto")
        return self._open_export(entry, model_id, embedding_id, plan.passthrough.vendor, "")

    async def export_run(self, run: RecipeRun) -> ExportDialog | None:
        """The Export dialog for a running application: its recipe, model and GPU."""
        entry = self.catalog.get(run.recipe_id)
        if entry is None:
            return None
        model_id = _store_id(self.models, run.model)
        embedding_id = _store_id(self.models, run.embedding_model)
        note = f"As run {run.id} runs: model {run.model or 'unknown'}"
        if run.gpu:
            note += f" on {'the CPU' if run.gpu == 'none' else f'an {run.gpu.upper()} GPU'}."
        else:
            note += "; its GPU was not recorded (a run of an older Podlab): choose it."
        if run.model and model_id is None:
            note += " Its model is not in the model store any more: choose another."
        return self._open_export(entry, model_id, embedding_id, run.gpu or "none", note)

    def _open_export(
        self,
        entry: RecipeEntry,
        model_id: str | None,
        embedding_id: str | None,
        gpu: str,
        note: str,
    ) -> ExportDialog:
        source = RecipeExport(
            self.lab,
            entry,
            _recommended_first(self.models, entry.recommended),
            model_id=model_id,
            embedding_models=_recommended_first(self.models, entry.recommended_embedding),
            embedding_id=embedding_id,
            gpu=gpu,
            note=note,
        )
        self.export_dialog = open_export_dialog(source, self)
        return self.export_dialog

    # -- running applications --------------------------------------------------------------------

    async def refresh_runs(self) -> None:
        """List the runs from Podman's pod labels (nothing to list without Podman)."""
        self._runs_readings += 1
        reading = self._runs_readings
        runs: list[RecipeRun] = []
        if not self.podman_problem:
            try:
                runs = await self.runner().runs()
            except PodlabError as exc:
                log.warning("cannot list the recipe runs: %s", exc)
        if not shiboken6.isValid(self) or reading != self._runs_readings:
            return  # gone, or a later reading (after a Stop, say) is newer than this one
        selected = self.selected_run()
        self.runs = sorted(runs, key=lambda run: run.created)
        rows = [self._run_cells(run) for run in self.runs]
        if rows != self._shown_rows():  # an unchanged list is left alone (no flicker)
            self.runs_table.setRowCount(len(rows))
            for row, cells in enumerate(rows):
                for column, text in enumerate(cells):
                    self.runs_table.setItem(row, column, QTableWidgetItem(text))
            self.runs_table.clearSelection()
            if selected is not None:
                self.select_run(selected.id)
        self.runs_empty.setVisible(not self.runs)
        self._update_run_actions()
        self.sig_runs_listed.emit()

    def _run_cells(self, run: RecipeRun) -> tuple[str, ...]:
        entry = self.catalog.get(run.recipe_id)
        return (entry.name if entry else run.recipe_id, run.state.value, run.model, run.app_url)

    def _shown_rows(self) -> list[tuple[str, ...]]:
        table = self.runs_table
        return [
            tuple(
                item.text() if (item := table.item(row, column)) else ""
                for column in range(table.columnCount())
            )
            for row in range(table.rowCount())
        ]

    def selected_run(self) -> RecipeRun | None:
        rows = self.runs_table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.runs):
            return None
        return self.runs[rows[0].row()]

    def select_run(self, run_id: str) -> bool:
        for row, run in enumerate(self.runs):
            if run.id == run_id:
                self.runs_table.selectRow(row)
                return True
        return False

    def _update_run_actions(self) -> None:
        run = self.selected_run()
        self.open_button.setEnabled(run is not None and bool(run.app_url))
        self.export_run_button.setEnabled(
            run is not None and self.catalog.get(run.recipe_id) is not None
        )
        self.stop_button.setEnabled(run is not None and run.state.value == "running")
        self.delete_button.setEnabled(run is not None)

    def _on_open_clicked(self) -> None:
        run = self.selected_run()
        if run is not None and run.app_url:
            QDesktopServices.openUrl(QUrl(run.app_url))

    @asyncSlot()
    async def _on_stop_clicked(self) -> None:
        run = self.selected_run()
        if run is not None:
            await self._act(self.runner().stop(run.id), f"stop {run.pod}")

    @asyncSlot()
    async def _on_delete_clicked(self) -> None:
        run = self.selected_run()
        if run is not None:
            await self._act(self.runner().remove(run.id), f"delete {run.pod}")

    async def _act(self, action: Coroutine[Any, Any, object], what: str) -> None:
        """Stop or delete a run; a failure is said on the page, then the list is read again."""
        for button in (self.open_button, self.stop_button, self.delete_button):
            button.setEnabled(False)
        try:
            await action
        except PodlabError as exc:
            self._show_run_status(f"Could not {what}: {exc.message}", exc.hint)
        await self.refresh_runs()


def _recommended_first(
    models: list[StoredModel], recommended: tuple[str, ...]
) -> list[StoredModel]:
    """The recipe's recommended models in its order of preference, then the others by name."""
    order = {model_id: index for index, model_id in enumerate(recommended)}
    return sorted(
        models,
        key=lambda m: (order.get(m.catalog_id or "", len(order)), m.name.lower()),
    )


def _store_id(models: list[StoredModel], ref: str) -> str | None:
    """The store model a run names: by its store id (CLI runs) or its file name (the page's
    runs resolve the model's file, whose name without .gguf becomes the reference)."""
    if not ref:
        return None
    for model in models:
        if model.id == ref:
            return model.id
    for model in models:
        if model.path.name.removesuffix(".gguf") == ref:
            return model.id
    return None


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return RecipesPage(lab, host)
