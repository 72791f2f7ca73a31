"""Recipes: applications (chatbot, RAG, summarizer) described by ai-lab.yaml, as cards with
category and backend filters, the readme, the recommended models and the containers.

Recipes are read in a thread (bundled ones plus folders imported with Import… or
`podlab recipe import`); a broken recipe is listed in a banner as `file:line: problem` while the
others stay usable. Readmes come from other people's repositories, so they go through the same
inert Markdown view as model cards (no raw HTML, no remote images, links only on a click).

Running a recipe needs the recipe runner, which is not built yet: the Run button says so.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import shiboken6
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.core.models.catalog import load_catalog
from podlab.core.recipes.catalog import (
    RecipeCatalog,
    RecipeEntry,
    category_label,
    import_recipes,
    load_recipe_catalog,
)
from podlab.core.recipes.spec import RecipeSpecError
from podlab.ui import background
from podlab.ui.page_host import PageHost
from podlab.ui.widgets.model_card import ModelCardView

log = logging.getLogger(__name__)

RUN_NOT_YET = "Running recipes comes with the recipe runner"
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

    def __init__(self, lab: Lab, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lab = lab
        self.catalog = RecipeCatalog()
        self.model_names: dict[str, str] = {}

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
        self.run_button = QPushButton(RUN_NOT_YET)
        self.run_button.setEnabled(False)
        self.run_button.setToolTip(
            "Building and starting a recipe's containers in a Podman pod is not built yet"
        )
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
        details_layout.addWidget(self.run_button, 0, Qt.AlignmentFlag.AlignLeft)
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

        self.category_filter.currentIndexChanged.connect(self.apply_filters)
        self.backend_filter.currentIndexChanged.connect(self.apply_filters)
        self.cards.currentItemChanged.connect(self._on_current_changed)
        self.import_button.clicked.connect(self._on_import_clicked)
        self._loading: asyncio.Future[None] = background.start(self._load(), "load the recipes")

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

    def _names(self, model_ids: tuple[str, ...]) -> list[str]:
        return [self.model_names.get(model_id, model_id) for model_id in model_ids]


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return RecipesPage(lab)
