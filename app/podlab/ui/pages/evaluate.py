"""Evaluate: run a prompt set against several models (and quantizations and context sizes) and
see speed against quality with confidence intervals.

The left side starts a run: a prompt set (built-in, or a YAML/JSONL file; a refused file shows
its `file:line: problem`), the models (downloaded ones, served one after another by the chosen
engine, and running services, asked where they run), an optional quantization and context
matrix, and an optional judge. A run is a Lab task (the Tasks page shows it, a notification
says when it ends out of sight) that can be paused, resumed and cancelled; every answer is in
the evaluation store as soon as it is scored, so a run also resumes after a restart.

The right side shows a stored run: the speed-versus-quality chart, the cell table, the answers
of two cells side by side (plain text: model output never renders as HTML), the comparison with
an earlier run (cells whose quality fell below that run's confidence interval are flagged),
exports, and Open in Compare for the best cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import shiboken6
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from podlab.core.chat.client import GenerationParams
from podlab.core.errors import PodlabError
from podlab.core.evaluate.promptset import PromptSet, builtin_set_names, resolve_prompt_set
from podlab.core.evaluate.report import FORMATS, compare_runs, describe_run, export_run
from podlab.core.evaluate.results import Backend, CellSpec, ItemRecord, RunRecord
from podlab.core.evaluate.runner import (
    DEFAULT_MAX_TOKENS,
    EvalRunner,
    RunProgress,
    new_run_config,
    task_progress,
)
from podlab.core.evaluate.scorers import JudgeConfig
from podlab.core.evaluate.stats import CellSummary
from podlab.core.evaluate.store import EvalStore
from podlab.core.lab import Lab
from podlab.core.models.store import StoredModel
from podlab.core.paths import atomic_write_text
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.tasks import Task
from podlab.ui import background
from podlab.ui.download_bridge import bridge_for
from podlab.ui.models.eval_model import CellSummaryModel, figure
from podlab.ui.page_host import PageHost
from podlab.ui.widgets.quality_chart import QualityChart

if TYPE_CHECKING:
    from podlab.ui.service_bridge import ServiceBridge

log = logging.getLogger(__name__)

TASK_KIND = "evaluation"
EVAL_SERVICE_PREFIX = "podlab-eval-"
"""Services the runner starts for its cells: never offered as models to evaluate."""
FORMAT_NAMES = {"csv": "CSV", "json": "JSON", "md": "Markdown"}
RESUMABLE = ("paused", "cancelled", "failed")
ANSWER_COLUMNS = ("Item", "Prompt", "Left score", "Left answer", "Right score", "Right answer")
EARLIER_COLUMNS = ("Cell", "Earlier", "This run", "Change", "")
ERROR_STYLE = "QLabel { color: #c0392b; }"
DROP_COLOUR = "#c0392b"
PREVIEW_CHARS = 160


def _plain_label(text: str = "") -> QLabel:
    """A label that never interprets its text (set names, model names, errors)."""
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    return label


W = TypeVar("W", bound=QWidget)


def _named(widget: W, name: str, description: str = "") -> W:
    """`widget` with the name (and description) a screen reader announces."""
    widget.setAccessibleName(name)
    if description:
        widget.setAccessibleDescription(description)
        widget.setToolTip(description)
    return widget


def split_list(text: str) -> list[str]:
    """ "Q4_K_M, Q8_0" or "2048 4096" as a list (commas or spaces), without repeats."""
    parts = text.replace(",", " ").split()
    return list(dict.fromkeys(parts))


def score_text(record: ItemRecord | None) -> str:
    if record is None:
        return "–"
    if record.status == "failed":
        return "failed"
    if record.score is None:
        return record.score_state
    return f"{record.score:g}"


def answer_text(record: ItemRecord | None) -> str:
    if record is None:
        return ""
    if record.status == "failed":
        return f"(no answer: {record.error})"
    return record.answer


def best_cell(summaries: list[CellSummary]) -> CellSummary | None:
    """The cell with the highest mean score; the faster one among equals."""
    scored = [s for s in summaries if s.quality.mean is not None]
    if not scored:
        return None
    return max(scored, key=lambda s: (s.quality.mean or 0.0, s.tg_tokens_per_s or 0.0))


@dataclass(frozen=True)
class ModelChoice:
    """A model offered for evaluation: a downloaded model or a running service."""

    label: str
    model: StoredModel | None = None
    service: InferenceService | None = None

    @property
    def key(self) -> str:
        """What stays the same across refreshes (two models may share a name)."""
        if self.model is not None:
            return f"model:{self.model.id}"
        return f"service:{self.service.id if self.service is not None else ''}"


class EvaluatePage(QWidget):
    """See the module doc."""

    sig_runs_listed = Signal()
    """Emitted after the runs list was read from the store."""
    sig_run_shown = Signal(int)
    """Emitted with the run id once its chart and tables are filled."""
    sig_run_ended = Signal(object)
    """Emitted with the stored `RunRecord` when a run started here stops (any reason)."""

    def __init__(self, lab: Lab, host: PageHost | None = None) -> None:
        super().__init__()
        self.lab = lab
        self._host = host
        self.store: EvalStore | None = None
        self.store_problem = ""
        self.prompt_set: PromptSet | None = None
        self.choices: list[ModelChoice] = []
        self.services: list[InferenceService] = []
        self.runs: list[RunRecord] = []
        self.current_run: RunRecord | None = None
        self.summaries: list[CellSummary] = []
        self.items_by_cell: dict[int, list[ItemRecord]] = {}
        self.run_task: Task | None = None
        self.running_run_id: int | None = None
        self._runner: EvalRunner | None = None
        self._closed = False

        title = QLabel("<h2>Evaluate</h2>")
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self._left_side())
        splitter.addWidget(self._details())
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 5)
        splitter.setSizes([360, 900])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(title)
        layout.addWidget(splitter, 1)

        lab.tasks.subscribe(self._on_task_changed)
        self.destroyed.connect(lambda: lab.tasks.unsubscribe(self._on_task_changed))
        if host is not None:
            host.on_close(self.shutdown)
        self._update_buttons()
        self._loading: asyncio.Future[None] = background.start(self._load(), "load the evaluations")

    # -- building ----------------------------------------------------------------------------

    def _left_side(self) -> QWidget:
        form_box = QGroupBox("New run")
        self.set_combo = _named(
            QComboBox(), "Prompt set", "A built-in prompt set or a file you opened"
        )
        self.set_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.set_combo.setMinimumContentsLength(14)
        self.open_set_button = _named(
            QPushButton("Open file…"), "Open a prompt set file", "A YAML or JSONL prompt set"
        )
        set_row = QHBoxLayout()
        set_row.addWidget(self.set_combo, 1)
        set_row.addWidget(self.open_set_button)
        self.set_info = _plain_label()
        self.set_info.setObjectName("eval-set-info")
        self.set_error = _plain_label()
        self.set_error.setObjectName("eval-set-error")
        self.set_error.setStyleSheet(ERROR_STYLE)
        self.set_error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.set_error.hide()
        self.model_list = _named(
            QListWidget(),
            "Models to evaluate",
            "Tick the downloaded models and running services to evaluate",
        )
        self.model_list.setMinimumHeight(90)
        self.no_models = _plain_label(
            "No model is downloaded and no service runs: get one in the Catalog."
        )
        self.no_models.hide()
        self.backend_combo = _named(
            QComboBox(),
            "Engine for downloaded models",
            "Downloaded models are served one after another by this engine",
        )
        self.backend_combo.addItem("Local engine", "local")
        self.backend_combo.addItem("Podman", "podman")
        self.quant_edit = _named(
            QLineEdit(),
            "Quantizations",
            "Optional: quantizations of catalog models to compare, e.g. Q4_K_M, Q8_0",
        )
        self.quant_edit.setPlaceholderText("optional: Q4_K_M, Q8_0")
        self.ctx_edit = _named(
            QLineEdit(), "Context sizes", "Optional: context sizes to compare, e.g. 2048, 4096"
        )
        self.ctx_edit.setPlaceholderText("optional: 2048, 4096")
        self.max_tokens = _named(
            QSpinBox(), "Maximum tokens per answer", "Answers stop after this many tokens"
        )
        self.max_tokens.setRange(1, 32768)
        self.max_tokens.setValue(DEFAULT_MAX_TOKENS)
        self.judge_combo = _named(
            QComboBox(),
            "Judge model",
            "A running service that scores the items whose scorer is a judge",
        )
        options = QFormLayout()
        options.addRow("Engine", self.backend_combo)
        options.addRow("Quantizations", self.quant_edit)
        options.addRow("Context sizes", self.ctx_edit)
        options.addRow("Max tokens", self.max_tokens)
        options.addRow("Judge", self.judge_combo)

        self.run_button = _named(
            QPushButton("Run"), "Run", "Ask every item of the set to every chosen model"
        )
        self.pause_button = _named(
            QPushButton("Pause"), "Pause", "Stop after the item being asked; Resume goes on"
        )
        self.cancel_button = _named(
            QPushButton("Cancel"), "Cancel", "Stop now; the answers so far stay stored"
        )
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        self.progress = _named(QProgressBar(), "Run progress")
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.run_status = _plain_label()
        self.run_status.setObjectName("eval-run-status")
        self.run_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        form = QVBoxLayout(form_box)
        form.addWidget(QLabel("Prompt set"))
        form.addLayout(set_row)
        form.addWidget(self.set_info)
        form.addWidget(self.set_error)
        form.addWidget(QLabel("Models"))
        form.addWidget(self.model_list, 1)
        form.addWidget(self.no_models)
        form.addLayout(options)
        form.addLayout(buttons)
        form.addWidget(self.progress)
        form.addWidget(self.run_status)

        runs_box = QGroupBox("Runs")
        self.runs_list = _named(QListWidget(), "Evaluation runs", "Stored runs, newest first")
        self.resume_button = _named(
            QPushButton("Resume"), "Resume", "Go on with a paused, cancelled or interrupted run"
        )
        self.delete_button = _named(
            QPushButton("Delete"), "Delete run", "Forget the selected run and its answers"
        )
        runs_buttons = QHBoxLayout()
        runs_buttons.addStretch(1)
        runs_buttons.addWidget(self.resume_button)
        runs_buttons.addWidget(self.delete_button)
        runs_layout = QVBoxLayout(runs_box)
        runs_layout.addWidget(self.runs_list, 1)
        runs_layout.addLayout(runs_buttons)

        self.set_combo.currentIndexChanged.connect(self._on_set_chosen)
        self.open_set_button.clicked.connect(self._ask_set_file)
        self.model_list.itemChanged.connect(lambda _item: self._update_buttons())
        self.run_button.clicked.connect(self._on_run_clicked)
        self.pause_button.clicked.connect(self.pause)
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button.clicked.connect(self._on_resume_clicked)
        self.delete_button.clicked.connect(self._on_delete_clicked)
        self.runs_list.currentRowChanged.connect(self._on_run_selected)

        left = QSplitter(Qt.Orientation.Vertical)
        left.setChildrenCollapsible(False)
        left.addWidget(form_box)
        left.addWidget(runs_box)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 2)
        return left

    def _details(self) -> QWidget:
        self.run_title = _plain_label("No run yet")
        self.run_title.setObjectName("eval-run-title")
        font = self.run_title.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.2)
        self.run_title.setFont(font)
        self.run_facts = _plain_label()
        self.run_facts.setObjectName("eval-run-facts")
        self.export_button = _named(
            QToolButton(), "Export", "Save the run as CSV, JSON or Markdown"
        )
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        for fmt in FORMATS:
            menu.addAction(f"{FORMAT_NAMES[fmt]}…", partial(self._ask_export, fmt))
        self.export_button.setMenu(menu)
        self.compare_button = _named(
            QPushButton("Open in Compare"),
            "Open in Compare",
            "Chat with the best cell's model side by side with others on the Compare page",
        )
        top = QHBoxLayout()
        top.addWidget(self.run_title, 1)
        top.addWidget(self.compare_button)
        top.addWidget(self.export_button)

        self.placeholder = _plain_label(
            "No evaluation yet. Pick a prompt set and tick one or more models on the left, then "
            "Run: every item is asked to every model, and this side charts speed against "
            "quality with a 95% confidence interval per model."
        )
        self.placeholder.setObjectName("eval-placeholder")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignTop)

        self.chart = QualityChart()
        self.cell_model = CellSummaryModel(self)
        self.cell_table = _named(QTableView(), "Cells", "One row per model of the run")
        self.cell_table.setModel(self.cell_model)
        self._table_look(self.cell_table)

        chart_tab = QWidget()
        chart_layout = QVBoxLayout(chart_tab)
        chart_layout.setContentsMargins(0, 4, 0, 0)
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(self.chart)
        vertical.addWidget(self.cell_table)
        vertical.setStretchFactor(0, 3)
        vertical.setStretchFactor(1, 2)
        chart_layout.addWidget(vertical)

        self.tabs = QTabWidget()
        self.tabs.tabBar().setAccessibleName("Run views")
        self.tabs.addTab(chart_tab, "Speed and quality")
        self.tabs.addTab(self._answers_tab(), "Answers")
        self.tabs.addTab(self._earlier_tab(), "Against an earlier run")

        details = QWidget()
        layout = QVBoxLayout(details)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.run_facts)
        layout.addWidget(self.placeholder, 1)  # shown instead of the tabs until a run exists
        layout.addWidget(self.tabs, 1)
        self.compare_button.clicked.connect(self._on_compare_clicked)
        return details

    def _answers_tab(self) -> QWidget:
        self.left_cell = _named(QComboBox(), "Left cell", "The cell whose answers show on the left")
        self.right_cell = _named(
            QComboBox(), "Right cell", "The cell whose answers show on the right"
        )
        row = QHBoxLayout()
        row.addWidget(QLabel("Left"))
        row.addWidget(self.left_cell, 1)
        row.addWidget(QLabel("Right"))
        row.addWidget(self.right_cell, 1)
        self.answers_table = _named(
            QTableWidget(0, len(ANSWER_COLUMNS)),
            "Answers per item",
            "Each item with both cells' scores and answers",
        )
        self.answers_table.setHorizontalHeaderLabels(list(ANSWER_COLUMNS))
        self._table_look(self.answers_table)
        self.answers_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.prompt_view = _named(QPlainTextEdit(), "Prompt of the chosen item")
        self.left_answer = _named(QPlainTextEdit(), "Left cell's answer")
        self.right_answer = _named(QPlainTextEdit(), "Right cell's answer")
        for view in (self.prompt_view, self.left_answer, self.right_answer):
            view.setReadOnly(True)
        self.prompt_view.setMaximumHeight(self.prompt_view.fontMetrics().lineSpacing() * 3 + 14)
        side = QSplitter(Qt.Orientation.Horizontal)
        side.addWidget(self.left_answer)
        side.addWidget(self.right_answer)
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(self.answers_table)
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(self.prompt_view)
        lower_layout.addWidget(side, 1)
        vertical.addWidget(lower)
        tab = QWidget()
        layout = QVBoxLayout(tab)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(row)
        layout.addWidget(vertical, 1)
        self.left_cell.currentIndexChanged.connect(lambda _i: self._fill_answers())
        self.right_cell.currentIndexChanged.connect(lambda _i: self._fill_answers())
        self.answers_table.itemSelectionChanged.connect(self._show_chosen_answers)
        return tab

    def _earlier_tab(self) -> QWidget:
        self.earlier_combo = _named(QComboBox(), "Earlier run", "The run this one is compared with")
        self.earlier_note = _plain_label()
        self.earlier_note.setObjectName("eval-earlier-note")
        self.earlier_table = _named(
            QTableWidget(0, len(EARLIER_COLUMNS)),
            "Quality against the earlier run",
            "Cells matched by model, quantization, image, context size and engine",
        )
        self.earlier_table.setHorizontalHeaderLabels(list(EARLIER_COLUMNS))
        self._table_look(self.earlier_table)
        row = QHBoxLayout()
        row.addWidget(QLabel("Compare with"))
        row.addWidget(self.earlier_combo, 1)
        tab = QWidget()
        layout = QVBoxLayout(tab)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.earlier_note)
        layout.addWidget(self.earlier_table, 1)
        self.earlier_combo.currentIndexChanged.connect(lambda _i: self._fill_earlier())
        return tab

    @staticmethod
    def _table_look(table: QTableView) -> None:
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        table.setWordWrap(False)

    # -- loading -----------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait for the first load: screenshots and tests call it."""
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        try:
            self.store = await asyncio.to_thread(EvalStore.open_default, self.lab.locations)
        except PodlabError as exc:
            self.store_problem = exc.message + (f" ({exc.hint})" if exc.hint else "")
            log.warning("no evaluation store: %s", self.store_problem)
        names = await asyncio.to_thread(builtin_set_names)
        if not shiboken6.isValid(self):
            return
        self.set_combo.blockSignals(True)
        for name in names:
            self.set_combo.addItem(name, name)
        self.set_combo.blockSignals(False)
        if names:
            await self.choose_set(names[0])
        await self.refresh_models()
        await self.refresh_runs()
        if self.store_problem:
            self.show_run_status(f"Results cannot be stored: {self.store_problem}", error=True)

    async def refresh_models(self) -> None:
        """Offer the downloaded models, then the running services (not the runner's own)."""
        models = await bridge_for(self.lab).list_models()
        bridge = self._service_bridge()
        services: list[InferenceService] = []
        if bridge is not None:
            with contextlib.suppress(Exception):  # Podman absent: the local services count
                services = await asyncio.wait_for(bridge.refresh(), 10)
            services = services or bridge.services()
        if not shiboken6.isValid(self):
            return
        ready = [
            s
            for s in services
            if s.state is ServiceState.READY and not s.name.startswith(EVAL_SERVICE_PREFIX)
        ]
        self.services = ready
        checked = set(self.checked_keys())
        self.choices = [ModelChoice(m.name, model=m) for m in models if m.usable]
        self.choices += [ModelChoice(f"{s.name} (running service)", service=s) for s in ready]
        self.model_list.blockSignals(True)
        self.model_list.clear()
        for choice in self.choices:
            item = QListWidgetItem(choice.label)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            state = choice.key in checked
            item.setCheckState(Qt.CheckState.Checked if state else Qt.CheckState.Unchecked)
            if choice.model is not None:
                item.setToolTip(str(choice.model.path))
            elif choice.service is not None:
                item.setToolTip(f"{choice.service.model_ref} at {choice.service.endpoint}")
            self.model_list.addItem(item)
        self.model_list.blockSignals(False)
        self.no_models.setVisible(not self.choices)
        judge = self.judge_combo.currentData()
        self.judge_combo.clear()
        self.judge_combo.addItem("No judge", "")
        for service in ready:
            self.judge_combo.addItem(service.name, service.id)
        self.judge_combo.setCurrentIndex(max(0, self.judge_combo.findData(judge)))
        self._update_buttons()

    def _service_bridge(self) -> ServiceBridge | None:
        """The Lab's shared services (None where they cannot be had: URLs still work)."""
        try:
            from podlab.ui.service_bridge import service_bridge_for

            return service_bridge_for(self.lab)
        except Exception:
            log.warning("no service bridge: services are not offered", exc_info=True)
            return None

    # -- prompt sets -------------------------------------------------------------------------

    async def choose_set(self, name_or_path: str | Path) -> PromptSet | None:
        """Load a built-in set by name or a file; a refused file keeps the last good set and
        shows its `file:line: problem`."""
        try:
            chosen = await asyncio.to_thread(resolve_prompt_set, name_or_path)
        except PodlabError as exc:
            self.set_error.setText(exc.message + (f"\n{exc.hint}" if exc.hint else ""))
            self.set_error.show()
            return None
        if not shiboken6.isValid(self):
            return None
        self.set_error.hide()
        self.prompt_set = chosen
        key = str(name_or_path)
        if isinstance(name_or_path, Path) or key not in builtin_set_names():
            path = Path(name_or_path)
            if self.set_combo.findData(str(path)) < 0:
                self.set_combo.addItem(f"{chosen.name} ({path.name})", str(path))
        self.set_combo.blockSignals(True)
        self.set_combo.setCurrentIndex(max(0, self.set_combo.findData(key)))
        self.set_combo.blockSignals(False)
        count = len(chosen.items)
        scorers = sorted({item.scorer.name for item in chosen.items})
        about = f"{count} item{'s' if count != 1 else ''} · scored by {', '.join(scorers)}"
        self.set_info.setText(f"{chosen.description}\n{about}".strip())
        self._update_buttons()
        return chosen

    def _on_set_chosen(self, index: int) -> None:
        data = self.set_combo.itemData(index)
        if data:
            background.start(self.choose_set(str(data)), "load a prompt set")

    def _ask_set_file(self) -> None:
        background.start(self._open_set_dialog(), "open a prompt set")

    async def _open_set_dialog(self) -> None:
        from podlab.ui.service_bridge import exec_dialog

        dialog = QFileDialog(self, "Open a prompt set", str(Path.home()))
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setNameFilters(["Prompt sets (*.yaml *.yml *.jsonl *.json)", "All files (*)"])
        if await exec_dialog(dialog) and dialog.selectedFiles():
            await self.choose_set(Path(dialog.selectedFiles()[0]))

    # -- what to run -------------------------------------------------------------------------

    def checked_choices(self) -> list[ModelChoice]:
        """The ticked models, in the list's order (rows follow `choices`)."""
        return [
            choice
            for row, choice in enumerate(self.choices)
            if row < self.model_list.count()
            and self.model_list.item(row).checkState() == Qt.CheckState.Checked
        ]

    def checked_keys(self) -> list[str]:
        return [choice.key for choice in self.checked_choices()]

    def check_models(self, keys: list[str]) -> None:
        """Tick exactly the models with these keys (`ModelChoice.key`)."""
        for row, choice in enumerate(self.choices):
            state = choice.key in keys
            self.model_list.item(row).setCheckState(
                Qt.CheckState.Checked if state else Qt.CheckState.Unchecked
            )

    def cell_specs(self) -> tuple[list[CellSpec], dict[str, str]]:
        """The matrix the form describes (checked models x quantizations x context sizes) and
        the keys of the running services among them, by URL. Quantizations apply to models
        from the catalog; context sizes to every model Podlab serves itself."""
        quants: list[str | None] = [*split_list(self.quant_edit.text())] or [None]
        ctx_texts = split_list(self.ctx_edit.text())
        bad = [text for text in ctx_texts if not text.isdigit() or int(text) < 128]
        if bad:
            raise PodlabError(
                f"context sizes are whole numbers of tokens (128 or more), not {', '.join(bad)}"
            )
        sizes: list[int | None] = [int(text) for text in ctx_texts] or [None]
        backend: Backend = "podman" if self.backend_combo.currentData() == "podman" else "local"
        cells: list[CellSpec] = []
        keys: dict[str, str] = {}
        for choice in self.checked_choices():
            if choice.service is not None:
                cells.append(CellSpec(choice.service.endpoint, backend="endpoint"))
                if choice.service.api_key:
                    keys[choice.service.endpoint] = choice.service.api_key
                continue
            model = choice.model
            assert model is not None
            for quant in quants:
                for size in sizes:
                    if quant and model.catalog_id:
                        cells.append(CellSpec(model.catalog_id, backend, quant=quant, ctx=size))
                    else:
                        cells.append(CellSpec(str(model.path), backend, ctx=size))
        return list(dict.fromkeys(cells)), keys

    def _judge(self) -> tuple[JudgeConfig | None, str | None]:
        service_id = self.judge_combo.currentData()
        service = next((s for s in self.services if s.id == service_id), None)
        if service is None:
            return None, None
        return JudgeConfig(endpoint=service.endpoint, model=service.model_ref), service.api_key

    # -- running -----------------------------------------------------------------------------

    def busy(self) -> bool:
        return self.run_task is not None and not self.run_task.state.finished

    def _on_run_clicked(self) -> None:
        try:
            self.start_new_run()
        except PodlabError as exc:
            self.show_run_status(exc.message + (f" ({exc.hint})" if exc.hint else ""), True)

    def start_new_run(self) -> Task | None:
        """Store a run of the chosen set, models and matrix, and start it as a task."""
        if self.store is None or self.prompt_set is None or self.busy():
            return None
        cells, keys = self.cell_specs()
        judge, judge_key = self._judge()
        params = GenerationParams(max_tokens=self.max_tokens.value())
        config = new_run_config(self.prompt_set, cells, params=params, judge=judge)
        run = self.store.create_run(config)
        return self._start(run, keys, judge_key)

    def resume(self, run: RunRecord) -> Task | None:
        """Go on with a paused, cancelled, failed or interrupted run (the keys of services it
        asks are looked up again: they are never stored)."""
        if self.busy():
            return None
        by_url = {s.endpoint: s for s in self.services}
        keys = {
            cell.model: by_url[cell.model].api_key or ""
            for cell in run.config.cells
            if cell.backend == "endpoint" and cell.model in by_url
        }
        judge_url = (run.config.judge or {}).get("endpoint")
        judge_service = by_url.get(str(judge_url)) if judge_url else None
        judge_key = judge_service.api_key if judge_service is not None else None
        return self._start(run, {k: v for k, v in keys.items() if v}, judge_key)

    def _start(self, run: RunRecord, keys: dict[str, str], judge_key: str | None) -> Task:
        store = self.store
        assert store is not None
        bridge = self._service_bridge()
        manager = bridge.manager if bridge is not None else None
        runner = EvalRunner(store, manager, judge_api_key=judge_key, endpoint_api_keys=keys)

        async def work(task: Task) -> None:
            to_task = task_progress(task)

            def progress(event: RunProgress) -> None:
                to_task(event)
                self._on_progress(event)

            try:
                ended = await runner.run(run.id, progress)
            finally:
                self._runner = None
                self.running_run_id = None
                with contextlib.suppress(PodlabError):
                    self._run_ended(store.get_run(run.id))
            if ended.status == "cancelled":
                raise asyncio.CancelledError
            if ended.status == "failed":
                raise PodlabError(ended.error or "the run failed")
            task.report(1.0, f"{describe_run(ended)}")

        self._runner = runner
        self.running_run_id = run.id
        self.progress.setValue(0)
        self.progress.show()
        self.show_run_status(f"Run {run.id}: starting…")
        cells = len(run.config.cells)
        name = f"Evaluate {run.set_name} ({cells} cell{'s' if cells != 1 else ''})"
        self.run_task = self.lab.tasks.start(name, TASK_KIND, work)
        self._update_buttons()
        background.start(self.refresh_runs(select=run.id), "list the evaluations")
        return self.run_task

    def pause(self) -> None:
        if self._runner is not None:
            self._runner.pause()
            self.show_run_status("Pausing after the item being asked…")

    def cancel(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            self.show_run_status("Cancelling…")

    def _on_progress(self, event: RunProgress) -> None:
        if not shiboken6.isValid(self):
            return
        self.progress.setValue(round(event.fraction * 1000))
        where = f"Run {event.run_id}, cell {min(event.cell_index + 1, event.cells)}/{event.cells}"
        text = f"{where} {event.cell_label}: {event.items_done}/{event.items} items"
        if event.state in ("finished", "paused", "cancelled"):
            text = f"Run {event.run_id} {event.state}"
        elif event.state == "cell-failed":
            text += f" · failed: {event.message}"
        elif event.state == "starting":
            text = f"{where}: starting {event.cell_label}…"
        self.show_run_status(text, error=event.state == "cell-failed")
        if event.state in ("cell-done", "cell-failed"):
            background.start(self.refresh_runs(), "list the evaluations")

    def _run_ended(self, run: RunRecord) -> None:
        if not shiboken6.isValid(self):
            return
        self.progress.hide()
        message = f"Run {run.id} {run.status}"
        if run.error:
            message += f": {run.error}"
        self.show_run_status(message, error=run.status == "failed")
        self.sig_run_ended.emit(run)
        background.start(self.refresh_runs(), "list the evaluations")

    def _on_task_changed(self, task: Task) -> None:
        if task is self.run_task and task.state.finished and shiboken6.isValid(self):
            self._update_buttons()

    def show_run_status(self, text: str, error: bool = False) -> None:
        self.run_status.setText(text)
        self.run_status.setStyleSheet(ERROR_STYLE if error else "")

    def _update_buttons(self) -> None:
        busy = self.busy()
        self.run_button.setEnabled(
            not busy
            and self.store is not None
            and self.prompt_set is not None
            and bool(self.checked_choices())
        )
        self.pause_button.setEnabled(busy)
        self.cancel_button.setEnabled(busy)
        run = self.selected_run()
        resumable = run is not None and (
            run.status in RESUMABLE or (self.store is not None and self.store.is_orphaned(run))
        )
        self.resume_button.setEnabled(not busy and resumable)
        self.delete_button.setEnabled(run is not None and run.id != self.running_run_id)
        shown = self.current_run is not None
        self.export_button.setEnabled(shown)
        self.compare_button.setEnabled(shown and best_cell(self.summaries) is not None)

    # -- runs --------------------------------------------------------------------------------

    async def refresh_runs(self, select: int | None = None) -> None:
        """List the stored runs (newest first) and show the selected one again."""
        store = self.store
        runs = await asyncio.to_thread(store.list_runs) if store is not None else []
        if not shiboken6.isValid(self):
            return
        wanted = select if select is not None else self._selected_id()
        self.runs = runs
        self.runs_list.blockSignals(True)
        self.runs_list.clear()
        for run in runs:
            status: str = run.status
            if store is not None and store.is_orphaned(run) and run.id != self.running_run_id:
                status = "interrupted"
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created))
            cells = len(run.config.cells)
            text = f"{run.id} · {run.set_name} · {cells} cell{'s' * (cells != 1)} · {status}"
            item = QListWidgetItem(f"{text}\n{when}")
            item.setData(Qt.ItemDataRole.UserRole, run.id)
            self.runs_list.addItem(item)
        row = next((i for i, run in enumerate(runs) if run.id == wanted), 0 if runs else -1)
        self.runs_list.setCurrentRow(row)
        self.runs_list.blockSignals(False)
        self.sig_runs_listed.emit()
        await self.show_run(runs[row].id if row >= 0 else None)

    def _selected_id(self) -> int | None:
        item = self.runs_list.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def selected_run(self) -> RunRecord | None:
        wanted = self._selected_id()
        return next((run for run in self.runs if run.id == wanted), None)

    def select_run(self, run_id: int) -> bool:
        for row, run in enumerate(self.runs):
            if run.id == run_id:
                self.runs_list.setCurrentRow(row)
                return True
        return False

    def _on_run_selected(self, row: int) -> None:
        run_id = self.runs[row].id if 0 <= row < len(self.runs) else None
        background.start(self.show_run(run_id), "show an evaluation")

    async def show_run(self, run_id: int | None) -> None:
        """Fill the chart, the cell table, the answers and the earlier-run comparison."""
        store = self.store
        if store is None or run_id is None:
            self._show_nothing()
            return

        def read() -> tuple[RunRecord, list[CellSummary], dict[int, list[ItemRecord]]]:
            return store.get_run(run_id), store.summary(run_id), store.run_items(run_id)

        run, summaries, items = await asyncio.to_thread(read)
        if not shiboken6.isValid(self):
            return
        self.current_run = run
        self.summaries = summaries
        self.items_by_cell = items
        self.placeholder.hide()
        self.tabs.show()
        self.run_title.setText(f"Run {run.id}: {run.set_name}")
        params = ", ".join(f"{k} {v}" for k, v in sorted(run.config.params.items()))
        judge = (run.config.judge or {}).get("model") or (run.config.judge or {}).get("endpoint")
        facts = [
            f"{run.status} · {len(run.config.prompt_set.items)} items · sha256 "
            f"{run.set_sha256[:12]} · {params}",
        ]
        if judge:
            facts.append(f"Judge: {judge}")
        if run.error:
            facts.append(f"Error: {run.error}")
        self.run_facts.setText("\n".join(facts))
        self.chart.show_cells(summaries)
        self.cell_model.set_summaries(summaries)
        for combo, default in ((self.left_cell, 0), (self.right_cell, 1)):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            for summary in summaries:
                combo.addItem(summary.label, summary.cell_id)
            index = combo.findData(current)
            combo.setCurrentIndex(index if index >= 0 else min(default, combo.count() - 1))
            combo.blockSignals(False)
        self._fill_answers()
        earlier = self.earlier_combo.currentData()
        self.earlier_combo.blockSignals(True)
        self.earlier_combo.clear()
        for other in self.runs:
            if other.id < run.id:
                self.earlier_combo.addItem(describe_run(other), other.id)
        same_set = [other.id for other in self.runs if other.set_sha256 == run.set_sha256]
        index = self.earlier_combo.findData(earlier)
        if index < 0:  # the newest earlier run of the same set, else the newest earlier one
            found = (self.earlier_combo.findData(i) for i in same_set if i < run.id)
            index = next((i for i in found if i >= 0), 0)
        self.earlier_combo.setCurrentIndex(index)
        self.earlier_combo.blockSignals(False)
        self._fill_earlier()
        self._update_buttons()
        self.sig_run_shown.emit(run.id)

    def _show_nothing(self) -> None:
        self.current_run = None
        self.summaries = []
        self.items_by_cell = {}
        self.run_title.setText("No run yet" if not self.runs else "No run chosen")
        self.run_facts.clear()
        self.tabs.hide()
        self.placeholder.show()
        self.chart.show_cells([])
        self.cell_model.set_summaries([])
        self._update_buttons()

    # -- answers side by side ----------------------------------------------------------------

    def _fill_answers(self) -> None:
        """One row per item of the set: the two chosen cells' scores and answers (plain text
        in table cells; the whole answers below, in read-only plain text views)."""
        run = self.current_run
        self.answers_table.setRowCount(0)
        self.left_answer.clear()
        self.right_answer.clear()
        self.prompt_view.clear()
        if run is None:
            return
        left = self._records(self.left_cell.currentData())
        right = self._records(self.right_cell.currentData())
        items = run.config.prompt_set.items
        self.answers_table.setRowCount(len(items))
        for row, item in enumerate(items):
            texts = (
                item.id,
                _preview(item.prompt),
                score_text(left.get(item.id)),
                _preview(answer_text(left.get(item.id))),
                score_text(right.get(item.id)),
                _preview(answer_text(right.get(item.id))),
            )
            for column, text in enumerate(texts):
                self.answers_table.setItem(row, column, QTableWidgetItem(text))
        if items:
            self.answers_table.selectRow(0)

    def _records(self, cell_id: object) -> dict[str, ItemRecord]:
        if not isinstance(cell_id, int):
            return {}
        return {record.item_id: record for record in self.items_by_cell.get(cell_id, [])}

    def _show_chosen_answers(self) -> None:
        run = self.current_run
        rows = self.answers_table.selectionModel().selectedRows()
        if run is None or not rows:
            return
        item = run.config.prompt_set.items[rows[0].row()]
        left = self._records(self.left_cell.currentData()).get(item.id)
        right = self._records(self.right_cell.currentData()).get(item.id)
        reference = item.reference
        if isinstance(reference, list):
            reference = " | ".join(reference)
        prompt = item.prompt + (f"\n\nReference: {reference}" if reference else "")
        self.prompt_view.setPlainText(prompt)
        self.left_answer.setPlainText(answer_text(left))
        self.right_answer.setPlainText(answer_text(right))

    def answers_shown(self) -> tuple[str, str]:
        """The two answers shown side by side (tests read them)."""
        return self.left_answer.toPlainText(), self.right_answer.toPlainText()

    # -- against an earlier run --------------------------------------------------------------

    def _fill_earlier(self) -> None:
        self.earlier_table.setRowCount(0)
        run = self.current_run
        before = self.earlier_combo.currentData()
        if run is None or self.store is None or not isinstance(before, int):
            self.earlier_note.setText("There is no earlier run to compare with.")
            return
        try:
            rows = compare_runs(self.store, before, run.id)
        except PodlabError as exc:
            self.earlier_note.setText(exc.message)
            return
        self.earlier_table.setRowCount(len(rows))
        dropped = 0
        for row, comparison in enumerate(rows):
            delta = comparison.delta
            flag = "▼ below the earlier 95% CI" if comparison.dropped else ""
            if comparison.before is None:
                flag = "new in this run"
            elif comparison.after is None:
                flag = "only in the earlier run"
            texts = (
                comparison.label,
                _quality_with_ci(comparison.before),
                _quality_with_ci(comparison.after),
                "–" if delta is None else f"{delta:+.2f}",
                flag,
            )
            for column, text in enumerate(texts):
                cell = QTableWidgetItem(text)
                if comparison.dropped:
                    cell.setForeground(QBrush(QColor(DROP_COLOUR)))
                self.earlier_table.setItem(row, column, cell)
            dropped += comparison.dropped
        if dropped:
            self.earlier_note.setText(
                f"{dropped} cell{'s' if dropped != 1 else ''} scored below the earlier run's "
                "95% confidence interval: more than noise explains."
            )
        else:
            self.earlier_note.setText(
                "No cell scored below the earlier run's 95% confidence interval."
            )

    def dropped_labels(self) -> list[str]:
        """Cells flagged in the comparison with the earlier run (tests read them)."""
        labels = []
        for row in range(self.earlier_table.rowCount()):
            label, flag = self.earlier_table.item(row, 0), self.earlier_table.item(row, 4)
            if label is not None and flag is not None and flag.text().startswith("▼"):
                labels.append(label.text())
        return labels

    # -- actions on a run --------------------------------------------------------------------

    def _on_resume_clicked(self) -> None:
        run = self.selected_run()
        if run is not None:
            self.resume(run)

    def _on_delete_clicked(self) -> None:
        run = self.selected_run()
        if run is not None:
            background.start(self.delete_run(run.id), "delete an evaluation")

    async def delete_run(self, run_id: int) -> None:
        if self.store is None or run_id == self.running_run_id:
            return
        await asyncio.to_thread(self.store.delete_run, run_id)
        await self.refresh_runs()

    def export(self, path: Path, fmt: str) -> Path:
        """Write the shown run as `fmt` (csv, json, md); readable by the user alone, like
        the store it comes from."""
        run = self.current_run
        if run is None or self.store is None:
            raise PodlabError("there is no run to export")
        atomic_write_text(path, export_run(self.store, run.id, fmt), private=True)
        return path

    def _ask_export(self, fmt: str) -> None:
        background.start(self._export_dialog(fmt), f"export an evaluation as {fmt}")

    async def _export_dialog(self, fmt: str) -> None:
        from podlab.ui.service_bridge import exec_dialog

        run = self.current_run
        if run is None:
            return
        name = f"evaluation-{run.id}-{run.set_name}.{fmt}"
        dialog = QFileDialog(self, f"Export as {FORMAT_NAMES[fmt]}", str(Path.home() / name))
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setNameFilters([f"{FORMAT_NAMES[fmt]} (*.{fmt})", "All files (*)"])
        if not await exec_dialog(dialog) or not dialog.selectedFiles():
            return
        path = Path(dialog.selectedFiles()[0])
        try:
            self.export(path, fmt)
        except OSError as exc:
            self.show_run_status(f"Cannot write {path}: {exc.strerror or exc}", error=True)
            return
        self.show_run_status(f"Exported run {run.id} to {path}")

    def _on_compare_clicked(self) -> None:
        background.start(self.open_in_compare(), "open the best cell in Compare")

    async def open_in_compare(self) -> bool:
        """Put the best cell's model in a Compare pane: its running service (or its URL); a
        downloaded model without a service opens the New service dialog first."""
        best = best_cell(self.summaries)
        host = self._host
        if best is None or host is None or self.store is None:
            return False
        spec = (await asyncio.to_thread(self.store.cell, best.cell_id)).spec
        bridge = self._service_bridge()
        services = bridge.services() if bridge is not None else []
        if spec.backend == "endpoint":
            service = next((s for s in services if s.endpoint == spec.model), None)
            host.compare_page().open_endpoint(spec.model, None, service.id if service else "")
            host.show_page("compare")
            return True
        from podlab.ui.pages.services import service_for

        service = service_for(services, spec.model)
        if service is not None and service.state is ServiceState.READY:
            host.compare_page().open_endpoint(service.endpoint, service.model_ref, service.id)
            host.show_page("compare")
            return True
        host.show_status(
            f"No service runs {best.label}: start one, then Open in Compare puts it in a pane"
        )
        task = await host.services_page().new_service(Path(spec.model))
        if task is not None:
            host.show_page("services")
        return False

    def shutdown(self) -> None:
        """The window closes: a run in progress stops and is stored as cancelled (Resume goes
        on with it at the next start)."""
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()


def _preview(text: str) -> str:
    """The start of a text on one line, for a table cell."""
    line = " ".join(text.split())
    return line if len(line) <= PREVIEW_CHARS else line[: PREVIEW_CHARS - 1] + "…"


def _quality_with_ci(summary: CellSummary | None) -> str:
    if summary is None or summary.quality.mean is None:
        return "–"
    quality = summary.quality
    return f"{quality.mean:.2f} [{figure(quality.ci_low, 2)}, {figure(quality.ci_high, 2)}]"


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return EvaluatePage(lab, host)
