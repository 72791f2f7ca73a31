"""Compare: one prompt to 2-4 panes side by side, each its own endpoint, model, parameters and
history; speed figures per answer, the fastest marked; blind votes and an Elo leaderboard;
prompt sets into a results table; export as Markdown or JSON.

The page drives `podlab.core.chat.compare.Comparison` (modes parallel, one-per-server, sequential)
and shows its events; every pane streams through its own `MarkdownView` with its own throttle.
A failing pane shows its error while the others go on. Each pane's header says what tells it
apart (`pane_names`); a vote that could not count is refused before it is offered; the panes'
setup is remembered in the Lab's session and comes back after a restart. "Deploy what won…" on
a pane whose endpoint is a Podlab service opens the Export dialog for that service, with the
pane's sampling parameters recorded beside its context size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from podlab.core.chat.client import (
    Done,
    Error,
    GenerationParams,
    Metrics,
    Token,
    normalize_base_url,
)
from podlab.core.chat.compare import (
    MAX_PANES,
    MIN_PANES,
    CompareEvent,
    Comparison,
    Pane,
    PaneEvent,
    PaneStarted,
    PromptSetResult,
    RoundDone,
    RoundResult,
    compute_leaderboard,
    load_prompts,
    pane_names,
)
from podlab.core.chat.energy import EnergyMeter
from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.core.paths import atomic_write_text
from podlab.core.text import plural
from podlab.ui import background
from podlab.ui.dialogs.export import ExportDialog, ServiceExport, open_export_dialog
from podlab.ui.page_host import PageHost
from podlab.ui.widgets.chat_view import ChatView, MessageWidget, format_ms
from podlab.ui.widgets.generation_form import EndpointPicker, ParamsForm

log = logging.getLogger(__name__)

MODE_LABELS = {
    "parallel": "Parallel (all at once)",
    "per-server": "One per server at a time",
    "sequential": "Sequential (one after another)",
}
SLOT_NAMES = "ABCD"
HIDDEN_TITLE = "Hidden model"
FASTEST_TIP = (
    "The shortest time from sending the prompt to the complete answer. Time spent waiting for"
    " another pane on the same server is not counted."
)
PANE_HINT = (
    "Pick a service or an endpoint URL and a model for this pane.\n"
    "Its answers, speed figures and its own history show here."
)


class PaneWidget(QFrame):
    """One side: where and how to ask, and this pane's own conversation."""

    sig_close_requested = Signal(object)
    """Emitted with this pane when its close button is clicked."""
    sig_setup_changed = Signal()
    """Emitted when the endpoint, model, parameters, system prompt or name changed."""
    sig_deploy_requested = Signal(object)
    """Emitted with this pane when "Deploy what won…" is clicked."""

    def __init__(self, number: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("compare-pane")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.pane = Pane(endpoint="")
        self.answer: MessageWidget | None = None
        """The bubble of the answer streaming in this round."""
        self.number = number

        self.title = QLabel()
        self.title.setObjectName("pane-title")
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.badge = QLabel("★ fastest")
        self.badge.setObjectName("pane-fastest")
        self.badge.setStyleSheet(
            "QLabel { color: #1e7b34; border: 1px solid #1e7b34; border-radius: 4px;"
            " padding: 0px 4px; }"
        )
        self.badge.hide()
        self.state = QLabel()
        self.state.setObjectName("pane-state")
        self.settings_button = QToolButton()
        self.settings_button.setText("Settings")
        self.settings_button.setCheckable(True)
        self.settings_button.setToolTip("Parameters, system prompt and the name shown")
        self.clear_button = QToolButton()
        self.clear_button.setText("Clear")
        self.clear_button.setToolTip("Forget this pane's history")
        self.clear_button.clicked.connect(self.clear_history)
        self.deploy_button = QToolButton()
        self.deploy_button.setObjectName("pane-deploy")
        self.deploy_button.setText("Deploy what won…")
        self.deploy_button.setToolTip(
            "Export this pane's service as files that run elsewhere (Kubernetes, Quadlet, "
            "Compose…), with its context size and this pane's parameters"
        )
        self.deploy_button.setEnabled(False)
        self.deploy_button.clicked.connect(lambda: self.sig_deploy_requested.emit(self))
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Remove this pane")
        self.close_button.clicked.connect(lambda: self.sig_close_requested.emit(self))
        header = QHBoxLayout()
        header.addWidget(self.title)
        header.addWidget(self.badge)
        header.addStretch(1)
        header.addWidget(self.state)
        header.addWidget(self.deploy_button)
        header.addWidget(self.settings_button)
        header.addWidget(self.clear_button)
        header.addWidget(self.close_button)

        self.picker = EndpointPicker(compact=True)
        self.label_edit = QLineEdit()
        self.label_edit.setAccessibleName("Pane label")
        self.label_edit.setObjectName("pane-label")
        self.label_edit.setPlaceholderText("name shown and rated (default: the model)")
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setAccessibleName("Pane system prompt")
        self.system_prompt.setObjectName("pane-system-prompt")
        self.system_prompt.setPlaceholderText("System prompt (optional)")
        self.system_prompt.setTabChangesFocus(True)
        self.system_prompt.setFixedHeight(self.system_prompt.fontMetrics().lineSpacing() * 3 + 12)
        self.params_form = ParamsForm(compact=True)
        self.settings = QWidget()
        settings_layout = QVBoxLayout(self.settings)
        settings_layout.setContentsMargins(0, 0, 0, 0)
        settings_layout.addWidget(self.label_edit)
        settings_layout.addWidget(self.system_prompt)
        settings_layout.addWidget(self.params_form)
        self.settings.hide()
        self.settings_button.toggled.connect(self.settings.setVisible)

        self.chat = ChatView()
        self.chat.setObjectName("pane-chat")
        self.chat.set_placeholder(PANE_HINT)
        self.error = QLabel()
        self.error.setObjectName("pane-error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("QLabel { color: #c0392b; }")
        self.error.hide()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addWidget(self.picker)
        layout.addWidget(self.settings)
        layout.addWidget(self.chat, 1)
        layout.addWidget(self.error)
        self.set_title(f"Pane {number}")
        for signal in (
            self.picker.sig_changed,
            self.picker.url_edit.textChanged,
            self.params_form.sig_changed,
            self.label_edit.textChanged,
            self.system_prompt.textChanged,
        ):
            signal.connect(self._on_setup_changed)

    def _on_setup_changed(self) -> None:
        self.chat.set_placeholder("" if self.picker.endpoint() else PANE_HINT)
        self.deploy_button.setEnabled(self.picker.current_service() is not None)
        self.sig_setup_changed.emit()

    def set_title(self, text: str) -> None:
        self.title.setText(text)

    def setup(self) -> dict[str, Any]:
        """What to remember of this pane (no API key, no history)."""
        return {
            "endpoint": self.picker.endpoint(),
            "model": self.picker.model() or "",
            "service": self.picker.service_combo.currentData() or "",
            "params": self.params_form.params().to_dict(),
            "system_prompt": self.system_prompt.toPlainText(),
            "label": self.label_edit.text(),
        }

    def restore(self, setup: dict[str, Any]) -> None:
        """Set the pane up as `setup()` described it (a service when it is still running)."""
        endpoint = str(setup.get("endpoint") or "")
        if endpoint:
            self.picker.set_endpoint(endpoint, str(setup.get("model") or "") or None)
        service = str(setup.get("service") or "")
        if service:
            self.picker.select_service(service)
        params = setup.get("params")
        self.params_form.set_params(GenerationParams.from_dict(params) if params else None)
        self.system_prompt.setPlainText(str(setup.get("system_prompt") or ""))
        self.label_edit.setText(str(setup.get("label") or ""))
        self._on_setup_changed()

    def sync_pane(self) -> Pane:
        """Copy the form into the core `Pane` (its history stays)."""
        pane = self.pane
        pane.endpoint = self.picker.endpoint()
        pane.model = self.picker.model()
        pane.api_key = self.picker.api_key()
        pane.params = self.params_form.params()
        pane.system_prompt = self.system_prompt.toPlainText().strip()
        pane.label = self.label_edit.text().strip()
        return pane

    def set_blind(self, blind: bool, name: str = "") -> None:
        """Hide everything that tells which model this is (`name` replaces answer titles)."""
        self.picker.setVisible(not blind)
        self.settings_button.setVisible(not blind)
        self.deploy_button.setVisible(not blind)
        if blind:
            self.settings_button.setChecked(False)
        for message in self.chat.messages():
            if message.role == "assistant":
                real = str(message.property("real_title") or "")
                message.set_title(name if blind else real)

    def clear_history(self) -> None:
        self.pane.history.clear()
        self.chat.clear()
        self.badge.hide()
        self.error.hide()
        self.state.setText("")

    def begin(self, prompt: str, title: str, real_title: str) -> MessageWidget:
        self.badge.hide()
        self.chat.set_placeholder("")
        self.error.hide()
        question = self.chat.add_message("user", prompt)
        if question.edit_button is not None:
            question.edit_button.hide()  # one prompt goes to every pane: edit it below
        self.answer = self.chat.add_message("assistant", title=title, streaming=True)
        self.answer.setProperty("real_title", real_title)
        self.answer.set_actions_enabled(False)
        if self.answer.regenerate_button is not None:
            self.answer.regenerate_button.hide()
        self.chat.scroll_to_bottom()
        self.state.setText("queued")
        return self.answer

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()


class ComparePage(QWidget):
    """See the module doc."""

    title = "Compare"

    sig_round_finished = Signal(object)
    """Emitted with the `RoundResult` after every round (also after a stopped one: None)."""

    def __init__(self, lab: Lab, host: PageHost | None = None) -> None:
        super().__init__()
        self.lab = lab
        self._closed = False
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.comparison: Comparison | None = None
        """The comparison of the last round (votes go to it)."""
        self.rounds: list[RoundResult] = []
        self.prompt_set: PromptSetResult | None = None
        self.energy = EnergyMeter()
        self.store = lab.conversations
        if lab.conversations_problem:
            log.warning("comparisons are not saved: %s", lab.conversations_problem)
        self._bridge: Any = None
        self.export_dialog: ExportDialog | None = None
        """The Export dialog last opened from a pane (tests fill and click it)."""

        # -- top bar
        self.mode_combo = QComboBox()
        self.mode_combo.setObjectName("compare-mode")
        for key, label in MODE_LABELS.items():
            self.mode_combo.addItem(label, key)
        self.blind_check = QCheckBox("Blind")
        self.blind_check.setObjectName("compare-blind")
        self.blind_check.setToolTip(
            "Hide names and shuffle the panes until you vote; each blind round starts from"
            " empty panes"
        )
        self.blind_check.toggled.connect(self._on_blind_toggled)
        self.add_button = QPushButton("Add pane")
        self.add_button.setObjectName("add-pane")
        self.add_button.clicked.connect(lambda: self.add_pane())
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        menu.addAction("Markdown…", lambda: self._ask_export("markdown"))
        menu.addAction("JSON…", lambda: self._ask_export("json"))
        self.export_button.setMenu(menu)
        top = QHBoxLayout()
        top.addWidget(QLabel("<b>Compare</b>"))
        top.addSpacing(12)
        top.addWidget(QLabel("Mode"))
        top.addWidget(self.mode_combo)
        top.addWidget(self.blind_check)
        top.addStretch(1)
        top.addWidget(self.add_button)
        top.addWidget(self.export_button)

        # -- panes tab
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        self.panes: list[PaneWidget] = []
        self.vote_bar = QWidget()
        self.vote_bar.setObjectName("vote-bar")
        vote_layout = QHBoxLayout(self.vote_bar)
        vote_layout.setContentsMargins(0, 0, 0, 0)
        self.vote_label = QLabel("Which answer is better?")
        vote_layout.addWidget(self.vote_label)
        self.vote_buttons: list[QPushButton] = []
        for slot in range(MAX_PANES):
            button = QPushButton(f"{SLOT_NAMES[slot]} is better")
            button.setObjectName(f"vote-{SLOT_NAMES[slot]}")
            button.clicked.connect(lambda _checked=False, slot=slot: self.vote_slot(slot))
            vote_layout.addWidget(button)
            self.vote_buttons.append(button)
        self.tie_button = QPushButton("Tie")
        self.tie_button.setObjectName("vote-tie")
        self.tie_button.clicked.connect(lambda: self.vote_slot(None))
        vote_layout.addWidget(self.tie_button)
        vote_layout.addStretch(1)
        self.vote_bar.hide()
        self.prompt = QPlainTextEdit()
        self.prompt.setAccessibleName("Prompt for every pane")
        self.prompt.setObjectName("compare-prompt")
        self.prompt.setPlaceholderText("One prompt for every pane…  (Ctrl+Enter sends)")
        self.prompt.setTabChangesFocus(True)
        self.prompt.setFixedHeight(self.prompt.fontMetrics().lineSpacing() * 3 + 14)
        self.send_button = QPushButton("Send to all")
        self.send_button.setObjectName("compare-send")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("compare-stop")
        self.stop_button.clicked.connect(self.stop)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt, 1)
        prompt_row.addLayout(buttons)
        self.status_label = QLabel()
        self.status_label.setObjectName("compare-status")
        self.status_label.setWordWrap(True)
        panes_tab = QWidget()
        panes_layout = QVBoxLayout(panes_tab)
        panes_layout.setContentsMargins(0, 4, 0, 0)
        panes_layout.addWidget(self.splitter, 1)
        panes_layout.addWidget(self.vote_bar)
        panes_layout.addLayout(prompt_row)
        panes_layout.addWidget(self.status_label)

        # -- prompt set tab
        self.prompts_edit = QPlainTextEdit()
        self.prompts_edit.setAccessibleName("Prompt set, one prompt per line")
        self.prompts_edit.setObjectName("prompt-set")
        self.prompts_edit.setPlaceholderText(
            "One prompt per line, or load a file (text, JSON, YAML)"
        )
        self.prompts_edit.setFixedHeight(self.prompts_edit.fontMetrics().lineSpacing() * 5 + 14)
        self.load_prompts_button = QPushButton("Load file…")
        self.load_prompts_button.clicked.connect(self._ask_prompt_file)
        self.run_set_button = QPushButton("Run prompt set")
        self.run_set_button.setObjectName("run-prompt-set")
        self.run_set_button.clicked.connect(self.run_prompt_set)
        set_buttons = QVBoxLayout()
        set_buttons.addWidget(self.load_prompts_button)
        set_buttons.addWidget(self.run_set_button)
        set_buttons.addStretch(1)
        set_top = QHBoxLayout()
        set_top.addWidget(self.prompts_edit, 1)
        set_top.addLayout(set_buttons)
        self.summary_table = self._table(
            "Prompt set summary",
            ["Pane", "Complete", "Failed", "Mean tok/s", "Mean TTFT", "Fastest"],
        )
        self.results_table = self._table(
            "Every answer",
            ["#", "Prompt", "Pane", "State", "TTFT", "Tokens", "Tok/s", "Total", "Fastest"],
        )
        set_tab = QWidget()
        set_layout = QVBoxLayout(set_tab)
        set_layout.addLayout(set_top)
        set_layout.addWidget(QLabel("<b>Summary</b>"))
        set_layout.addWidget(self.summary_table, 1)
        set_layout.addWidget(QLabel("<b>Every answer</b>"))
        set_layout.addWidget(self.results_table, 3)

        # -- leaderboard tab
        self.leaderboard_table = self._table(
            "Leaderboard", ["Rank", "Name", "Elo", "Games", "Won", "Lost", "Tied"]
        )
        self.leaderboard_note = QLabel(
            "Ratings come from blind votes: turn on Blind, send a prompt, pick the better answer."
        )
        self.leaderboard_note.setWordWrap(True)
        self.delete_row_button = QPushButton("Delete row…")
        self.delete_row_button.setObjectName("leaderboard-delete")
        self.delete_row_button.setToolTip(
            "Forget every vote the selected name took part in; the others are rated again"
        )
        self.delete_row_button.clicked.connect(self._ask_delete_row)
        self.reset_board_button = QPushButton("Reset…")
        self.reset_board_button.setObjectName("leaderboard-reset")
        self.reset_board_button.setToolTip("Forget every vote")
        self.reset_board_button.clicked.connect(self._ask_reset_leaderboard)
        self.leaderboard_table.itemSelectionChanged.connect(self._update_board_buttons)
        self.active_dialog: QMessageBox | None = None
        """The confirmation being asked (tests answer it)."""
        board_top = QHBoxLayout()
        board_top.addWidget(self.leaderboard_note, 1)
        board_top.addWidget(self.delete_row_button)
        board_top.addWidget(self.reset_board_button)
        board_tab = QWidget()
        board_layout = QVBoxLayout(board_tab)
        board_layout.addLayout(board_top)
        board_layout.addWidget(self.leaderboard_table, 1)

        self.tabs = QTabWidget()
        self.tabs.setObjectName("compare-tabs")
        self.tabs.addTab(panes_tab, "Panes")
        self.tabs.addTab(set_tab, "Prompt set")
        self.tabs.addTab(board_tab, "Leaderboard")
        self.tabs.currentChanged.connect(self._on_tab_changed)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(top)
        layout.addWidget(self.tabs, 1)

        for combo in (("Ctrl+Return", self.send), ("Ctrl+Enter", self.send)):
            shortcut = QShortcut(QKeySequence(combo[0]), self)
            shortcut.setWhatsThis("Send the prompt to every pane")
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(combo[1])
        stop = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        stop.setWhatsThis("Stop every pane")
        stop.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        stop.activated.connect(self.stop)

        self._connect_services()
        self._restore()
        if host is not None:
            host.on_close(self.shutdown)
        self._update_buttons()
        self.refresh_leaderboard()

    # -- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _table(name: str, headers: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(headers))
        table.setAccessibleName(name)
        table.setHorizontalHeaderLabels(headers)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        return table

    def _connect_services(self) -> None:
        try:
            from podlab.ui.service_bridge import service_bridge_for

            self._bridge = service_bridge_for(self.lab)
        except Exception:  # services are optional: URLs work without them
            log.warning("no service bridge: services are not offered", exc_info=True)
            return
        self._bridge.sig_services_listed.connect(self._on_services_listed)
        self._on_services_listed(self._bridge.services())

    def _on_services_listed(self, services: list[Any]) -> None:
        for pane in self.panes:
            pane.picker.set_services(services)

    def _restore(self) -> None:
        """The panes, mode and Blind as the user left them (two empty panes the first time)."""
        saved = self.lab.session.get("compare")
        setups = [p for p in saved.get("panes", []) if isinstance(p, dict)][:MAX_PANES]
        for setup in setups:
            pane = self.add_pane()
            if pane is not None:
                pane.restore(setup)
        while len(self.panes) < MIN_PANES:
            self.add_pane()
        index = self.mode_combo.findData(saved.get("mode"))
        if index >= 0:
            self.mode_combo.setCurrentIndex(index)
        self.blind_check.setChecked(bool(saved.get("blind")))
        self._refresh_titles()

    def save_session(self) -> None:
        """Remember the panes' setup, the mode and Blind (not the answers: they are stored)."""
        self.lab.session.put(
            "compare",
            {
                "panes": [pane.setup() for pane in self.panes],
                "mode": self.mode_combo.currentData(),
                "blind": self.blind_check.isChecked(),
            },
        )

    def shutdown(self) -> None:
        if self._closed:
            return
        self.save_session()
        self._closed = True
        if self._bridge is not None and shiboken6.isValid(self._bridge):
            self._bridge.sig_services_listed.disconnect(self._on_services_listed)
        self._bridge = None
        if self._task is not None:
            self._task.cancel()  # the store is the Lab's: it stays open for the other pages

    async def settle(self) -> None:
        """Nothing loads in the background; present for screenshots."""
        await asyncio.sleep(0)

    # -- panes -------------------------------------------------------------------------------

    def add_pane(self, endpoint: str = "", model: str | None = None) -> PaneWidget | None:
        if len(self.panes) >= MAX_PANES or self._busy:
            return None
        pane = PaneWidget(len(self.panes) + 1)
        pane.sig_close_requested.connect(self.remove_pane)
        pane.sig_setup_changed.connect(self._refresh_titles)
        pane.sig_deploy_requested.connect(self.deploy)
        if self.blind_check.isChecked():
            pane.set_blind(True)
        if endpoint:
            pane.picker.set_endpoint(endpoint, model)
        if self._bridge is not None:
            pane.picker.set_services(self._bridge.services())
        self.panes.append(pane)
        self.splitter.addWidget(pane)
        self._renumber()
        self._update_buttons()
        return pane

    def open_endpoint(
        self, endpoint: str, model: str | None = None, service_id: str = ""
    ) -> PaneWidget | None:
        """Put a model in the first pane without an endpoint (else a new pane, else the last
        one): how another page hands its choice over (Evaluate's Open in Compare). A running
        service is chosen as a service, so its key goes with it. None while a round runs."""
        if self._busy:
            return None
        empty = next((pane for pane in self.panes if not pane.picker.endpoint()), None)
        pane = empty or self.add_pane() or self.panes[-1]
        if not (service_id and pane.picker.select_service(service_id)):
            pane.picker.set_endpoint(endpoint, model)
        self._refresh_titles()
        return pane

    def deploy(self, pane: PaneWidget) -> ExportDialog | None:
        """The Export dialog for the pane's service, with the pane's sampling parameters."""
        service = pane.picker.current_service()
        if service is None:
            self.show_status("Only a Podlab service can be exported.", error=True)
            return None
        sampling = pane.params_form.params().to_request()
        context = f"context size {service.options.ctx_size} tokens (its service's)"
        kept = ", ".join(f"{k} {v}" for k, v in sampling.items()) or "the server's defaults"
        note = f"From the pane {pane.title.text()}: {context}; parameters: {kept}."
        self.export_dialog = open_export_dialog(
            ServiceExport(self.lab, service, sampling, note=note), self
        )
        return self.export_dialog

    def remove_pane(self, pane: PaneWidget) -> None:
        if len(self.panes) <= MIN_PANES or self._busy or pane not in self.panes:
            return
        self.panes.remove(pane)
        pane.hide()
        pane.setParent(None)
        pane.deleteLater()
        self._renumber()
        self._update_buttons()

    def _renumber(self) -> None:
        for number, pane in enumerate(self.panes, 1):
            pane.number = number
        for index, pane in enumerate(self.panes):
            self.splitter.insertWidget(index, pane)
        self._refresh_titles()

    def _refresh_titles(self) -> None:
        """Each header says what tells its pane apart ("SmolLM2 · T=0.2"); hidden when blind."""
        if len(self.panes) < MIN_PANES or self._busy:
            return
        if self.blind_check.isChecked():
            if self.comparison is None or not self.comparison.blind or self.comparison.revealed:
                for pane in self.panes:
                    pane.set_title(HIDDEN_TITLE)
                    pane.title.setToolTip("Names show after your vote")
            return
        names = pane_names([pane.sync_pane() for pane in self.panes])
        for pane, name in zip(self.panes, names, strict=True):
            pane.set_title(name if pane.picker.endpoint() else f"Pane {pane.number}")
            pane.title.setToolTip(f"Pane {pane.number}: {pane.picker.endpoint() or 'no endpoint'}")

    def _on_blind_toggled(self, blind: bool) -> None:
        """Blind hides at once who is who: names, endpoints and every earlier (named) answer."""
        self.vote_bar.hide()
        self.comparison = None
        for pane in self.panes:
            if blind:
                pane.clear_history()
            pane.set_blind(blind, HIDDEN_TITLE)
        self._show_order(list(range(len(self.panes))))
        self._refresh_titles()

    def _show_order(self, order: list[int]) -> None:
        """Lay the panes out in display order (`order[slot] == pane index`)."""
        for slot, index in enumerate(order):
            self.splitter.insertWidget(slot, self.panes[index])

    # -- a round -----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._busy

    def send(self) -> asyncio.Task[None] | None:
        prompt = self.prompt.toPlainText().strip()
        if not prompt or self._busy or self._closed:
            return None
        if not self._check_panes():
            return None
        self.prompt.clear()
        self.save_session()
        return self._start(lambda: self._round(prompt))

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _check_panes(self) -> bool:
        for pane in self.panes:
            try:
                normalize_base_url(pane.picker.endpoint())
            except PodlabError as exc:
                self.show_status(f"Pane {pane.number}: {exc.message}", error=True)
                return False
        return True

    def _start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await work()
            finally:
                self._set_busy(False)

        self._set_busy(True)
        self._task = background.start(run(), "compare round")
        return self._task

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        if not self._closed and shiboken6.isValid(self):
            self._update_buttons()

    def _comparison(self) -> Comparison:
        panes = [widget.sync_pane() for widget in self.panes]
        return Comparison(
            panes,
            store=self.store,
            blind=self.blind_check.isChecked(),
            energy=self.energy if self.energy.available else None,
        )

    async def _round(self, prompt: str) -> None:
        comparison = self._comparison()
        self.comparison = comparison
        mode = self.mode_combo.currentData()
        self.vote_bar.hide()
        result: RoundResult | None = None
        stream = comparison.run(prompt, mode)
        shown = False
        try:
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if not shown:  # the order is shuffled once the round started
                        shown = True
                        self._show_order(comparison.order)
                        for index, pane in enumerate(self.panes):
                            name = comparison.display_name(index)
                            if comparison.blind:  # its history is gone: so is what showed it
                                pane.clear_history()
                            pane.set_title(name)
                            pane.set_blind(comparison.blind, name)
                            pane.begin(prompt, name, comparison.names[index])
                        self.show_status(f"Sending to {len(self.panes)} panes ({mode})…")
                    if isinstance(event, RoundDone):
                        result = event.result
                    else:
                        self._on_event(comparison, event)
        except asyncio.CancelledError:
            for pane in self.panes:
                if pane.answer is not None and pane.answer.streaming:
                    pane.answer.finish()
                    pane.answer.set_figures(None, state="interrupted", error="stopped")
                    pane.state.setText("stopped")
            self.show_status("Stopped.")
            self.sig_round_finished.emit(None)
            return
        if result is None:
            return
        self._round_done(comparison, result)

    def _on_event(self, comparison: Comparison, event: CompareEvent) -> None:
        if isinstance(event, PaneStarted):
            self.panes[event.pane].state.setText("streaming…")
            return
        if not isinstance(event, PaneEvent):
            return
        pane = self.panes[event.pane]
        inner = event.event
        answer = pane.answer
        if answer is None:
            return
        if isinstance(inner, Token):
            answer.append(inner.text)
        elif isinstance(inner, Error):
            pane.show_error(inner.message)
        elif isinstance(inner, Done):
            answer.finish()
            answer.set_figures(inner.metrics, state=inner.state, error=inner.error)
            pane.state.setText(
                {"complete": "done", "interrupted": "interrupted"}.get(inner.state, "failed")
            )

    def _round_done(self, comparison: Comparison, result: RoundResult) -> None:
        self.rounds.append(result)
        note = None if self.energy.available else "not available"
        for pane_result in result.panes:
            pane = self.panes[pane_result.pane]
            pane.badge.setVisible(pane_result.fastest)
            if pane_result.fastest and pane_result.answer_s is not None:
                pane.badge.setText(f"★ fastest (complete answer in {pane_result.answer_s:.1f} s)")
                pane.badge.setToolTip(FASTEST_TIP)
            if pane.answer is not None and pane_result.metrics is not None:
                energy_note = note
                if pane_result.energy_j is None and note is None:
                    energy_note = "shared (panes ran together)"
                pane.answer.set_figures(
                    pane_result.metrics,
                    state=pane_result.state,
                    error=pane_result.error,
                    energy_j=pane_result.energy_j,
                    energy_note=energy_note,
                )
        fastest = result.fastest
        parts = [f"Round {len(self.rounds)} done in {result.total_s:.2f} s"]
        if fastest is not None:
            answer_s = result.panes[fastest].answer_s or 0.0
            parts.append(
                f"fastest: {comparison.display_name(fastest)} (complete answer in {answer_s:.1f} s)"
            )
        parts += result.waits(comparison.display_name)
        if result.energy_j is not None:
            parts.append(f"energy {result.energy_j:.1f} J")
            if result.tokens_per_j is not None:
                parts.append(f"{result.tokens_per_j:.2f} tokens per joule")
        else:
            parts.append("energy not available")
        self.show_status(" · ".join(parts))
        if comparison.blind:
            count = len(self.panes)
            problem = comparison.vote_problem()
            for slot, button in enumerate(self.vote_buttons):
                button.setVisible(slot < count)
                button.setEnabled(problem is None)
            self.tie_button.setEnabled(problem is None)
            self.vote_label.setText(
                "Which answer is better?" if problem is None else f"No vote: {problem}."
            )
            self.vote_label.setStyleSheet("" if problem is None else "QLabel { color: #c0392b; }")
            self.vote_bar.show()
        self.sig_round_finished.emit(result)

    def vote_slot(self, slot: int | None) -> None:
        """Vote for the answer in display slot `slot` (A, B, ...), None for a tie."""
        comparison = self.comparison
        if comparison is None or self._busy:
            return
        winner = None if slot is None else comparison.order[slot]
        problem = comparison.vote_problem()
        if problem is not None:
            self.show_status(f"The vote is not taken: {problem}.", error=True)
            return
        try:
            comparison.vote(winner)
        except PodlabError as exc:
            self.show_status(exc.message, error=True)
            return
        self.vote_bar.hide()
        for index, pane in enumerate(self.panes):
            pane.set_blind(False)
            pane.set_title(comparison.display_name(index))
        self._show_order(list(range(len(self.panes))))
        chosen = "a tie" if winner is None else comparison.display_name(winner)
        self.show_status(f"Voted: {chosen}. Names revealed; the leaderboard is updated.")
        self.refresh_leaderboard()

    # -- prompt sets -------------------------------------------------------------------------

    def run_prompt_set(self) -> asyncio.Task[None] | None:
        prompts = [line for line in self.prompts_edit.toPlainText().splitlines() if line.strip()]
        if not prompts or self._busy or self._closed or not self._check_panes():
            return None
        return self._start(lambda: self._prompt_set(prompts))

    async def _prompt_set(self, prompts: list[str]) -> None:
        comparison = self._comparison()
        comparison.blind = False
        mode = self.mode_combo.currentData()
        self.results_table.setRowCount(0)
        self.summary_table.setRowCount(0)

        def progress(index: int, event: CompareEvent) -> None:
            if isinstance(event, RoundDone):
                self._add_result_rows(index, event.result)
                self.show_status(f"Prompt set: {index + 1} of {len(prompts)} done")

        try:
            outcome = await comparison.run_prompt_set(prompts, mode, progress)
        except asyncio.CancelledError:
            self.show_status("Prompt set stopped.")
            return
        self.prompt_set = outcome
        self._fill_summary(outcome)
        self.show_status(
            f"Prompt set done: {plural(len(prompts), 'prompt')} × {len(self.panes)} panes"
        )

    def _add_result_rows(self, index: int, result: RoundResult) -> None:
        for pane in result.panes:
            metrics = pane.metrics
            row = self.results_table.rowCount()
            self.results_table.insertRow(row)
            cells = [
                str(index + 1),
                " ".join(result.prompt.split())[:80],
                pane.label,
                pane.state + (f": {pane.error}" if pane.error else ""),
                format_ms(None if metrics is None else metrics.ttft_ms),
                "–" if metrics is None else str(metrics.tokens),
                _rate(metrics),
                format_ms(None if metrics is None else metrics.total_ms),
                "★" if pane.fastest else "",
            ]
            for column, text in enumerate(cells):
                self.results_table.setItem(row, column, QTableWidgetItem(text))

    def _fill_summary(self, outcome: PromptSetResult) -> None:
        rows = outcome.summary()
        self.summary_table.setRowCount(len(rows))
        for row, data in enumerate(rows):
            rate = data["mean_tokens_per_s"]
            ttft = data["mean_ttft_ms"]
            cells = [
                str(data["label"]),
                str(data["complete"]),
                str(data["failed"]),
                "–" if rate is None else f"{rate:.1f}",
                format_ms(ttft),
                str(data["fastest"]),
            ]
            for column, text in enumerate(cells):
                self.summary_table.setItem(row, column, QTableWidgetItem(text))

    def _ask_prompt_file(self) -> None:
        background.start(self._load_prompt_file(), "load a prompt file")

    async def _load_prompt_file(self) -> None:
        from podlab.ui.service_bridge import exec_dialog

        dialog = QFileDialog(self, "Load prompts", str(Path.home()))
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setNameFilter("Prompts (*.txt *.json *.yaml *.yml);;All files (*)")
        if not await exec_dialog(dialog) or not dialog.selectedFiles():
            return
        self.load_prompt_file(Path(dialog.selectedFiles()[0]))

    def load_prompt_file(self, path: Path) -> list[str]:
        try:
            prompts = load_prompts(path)
        except PodlabError as exc:
            self.show_status(exc.message, error=True)
            return []
        self.prompts_edit.setPlainText("\n".join(" ".join(p.split()) for p in prompts))
        return prompts

    # -- leaderboard and export --------------------------------------------------------------

    def _on_tab_changed(self, index: int) -> None:
        if self.tabs.tabText(index) == "Leaderboard":
            self.refresh_leaderboard()

    def _update_board_buttons(self) -> None:
        rows = self.leaderboard_table.rowCount()
        self.delete_row_button.setEnabled(bool(self.leaderboard_table.selectedItems()))
        self.reset_board_button.setEnabled(rows > 0)

    def selected_player(self) -> str | None:
        items = self.leaderboard_table.selectedItems()
        if not items:
            return None
        name = self.leaderboard_table.item(items[0].row(), 1)
        return None if name is None else name.text()

    def _ask_delete_row(self) -> None:
        player = self.selected_player()
        if player is not None:
            background.start(
                self._confirm_then(
                    f"Forget every vote {player!r} took part in?",
                    "The other names are rated again without those games.",
                    "Delete",
                    lambda: self.delete_player(player),
                ),
                "delete a leaderboard row",
            )

    def _ask_reset_leaderboard(self) -> None:
        background.start(
            self._confirm_then(
                "Reset the leaderboard?",
                "Every vote is forgotten; the answers of earlier rounds stay stored.",
                "Reset",
                self.reset_leaderboard,
            ),
            "reset the leaderboard",
        )

    async def _confirm_then(
        self, question: str, detail: str, action: str, then: Callable[[], None]
    ) -> None:
        from podlab.ui.service_bridge import ask

        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Leaderboard",
            question,
            QMessageBox.StandardButton.NoButton,
            self,
        )
        box.setInformativeText(detail)
        confirm = box.addButton(action, QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        await ask(self, box)
        confirmed = box.clickedButton() is confirm
        box.deleteLater()
        if confirmed and not self._closed:
            then()

    def delete_player(self, player: str) -> None:
        count = self.store.delete_votes_of(player)
        self.refresh_leaderboard()
        self.show_status(f"Deleted {player} from the leaderboard ({plural(count, 'vote')}).")

    def reset_leaderboard(self) -> None:
        count = self.store.clear_votes()
        self.refresh_leaderboard()
        self.show_status(f"The leaderboard is reset ({plural(count, 'vote')} forgotten).")

    def refresh_leaderboard(self) -> None:
        if self._closed:
            return
        ratings = compute_leaderboard(self.store.votes())
        self.leaderboard_table.setRowCount(len(ratings))
        for row, rating in enumerate(ratings):
            cells = [
                str(row + 1),
                rating.name,
                f"{rating.rating:.0f}",
                str(rating.games),
                str(rating.wins),
                str(rating.losses),
                str(rating.ties),
            ]
            for column, text in enumerate(cells):
                self.leaderboard_table.setItem(row, column, QTableWidgetItem(text))
        self._update_board_buttons()

    def export_text(self, kind: str) -> str:
        """This session's rounds (and the last prompt set) as Markdown or JSON."""
        if kind == "json":
            data: dict[str, Any] = {
                "format": "podlab.comparison/1",
                "panes": [pane.sync_pane().describe() for pane in self.panes],
                "rounds": [r.to_dict() for r in self.rounds],
            }
            if self.prompt_set is not None:
                data["prompt_set"] = self.prompt_set.to_dict()
            return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        parts = [r.to_markdown(heading=f"Round {i + 1}") for i, r in enumerate(self.rounds)]
        if self.prompt_set is not None:
            parts.append(self.prompt_set.to_markdown())
        return "\n".join(parts) if parts else "# Comparison\n\n_No rounds yet._\n"

    def export(self, path: Path, kind: str) -> Path:
        atomic_write_text(path, self.export_text(kind))
        return path

    def _ask_export(self, kind: str) -> None:
        background.start(self._export_dialog(kind), f"export the comparison as {kind}")

    async def _export_dialog(self, kind: str) -> None:
        from podlab.ui.service_bridge import exec_dialog

        suffix = ".json" if kind == "json" else ".md"
        dialog = QFileDialog(self, "Export comparison", str(Path.home() / f"comparison{suffix}"))
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        if not await exec_dialog(dialog) or not dialog.selectedFiles():
            return
        path = Path(dialog.selectedFiles()[0])
        try:
            self.export(path, kind)
        except OSError as exc:
            self.show_status(f"Cannot write {path}: {exc.strerror or exc}", error=True)
            return
        self.show_status(f"Exported to {path}")

    # -- state -------------------------------------------------------------------------------

    def _update_buttons(self) -> None:
        busy = self._busy
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        self.run_set_button.setEnabled(not busy)
        self.add_button.setEnabled(not busy and len(self.panes) < MAX_PANES)
        self.mode_combo.setEnabled(not busy)
        self.blind_check.setEnabled(not busy)
        for pane in self.panes:
            pane.close_button.setEnabled(not busy and len(self.panes) > MIN_PANES)
            pane.clear_button.setEnabled(not busy)

    def show_status(self, text: str, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet("QLabel { color: #c0392b; }" if error else "")


def _rate(metrics: Metrics | None) -> str:
    if metrics is None or metrics.tokens_per_s is None:
        return "–"
    return f"{metrics.tokens_per_s:.1f}"


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return ComparePage(lab, host)
