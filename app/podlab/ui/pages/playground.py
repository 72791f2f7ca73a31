"""Playground: chat with any OpenAI-compatible endpoint, answers streamed and kept in SQLite.

Left: the conversations of the store (new, rename, delete, search, export as Markdown or JSON).
Middle: the endpoint (a running service or any URL), the chat, the prompt box. Right: system
prompt and sampling parameters. Ctrl+Enter sends, Esc stops at once.

The answer is written to the store while it streams (`AnswerWriter`), so a crash leaves it in
the history marked interrupted; Stop keeps the partial answer, marked interrupted too. Every
answer shows its speed figures. All HTTP goes through `podlab.core.chat.client.ChatClient`.
The last conversation and endpoint (a service, when it is still running) are remembered in the
Lab's session and reopened after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from podlab.core.chat.client import (
    ChatClient,
    Done,
    Error,
    GenerationParams,
    Metrics,
    Token,
    normalize_base_url,
)
from podlab.core.chat.conversations import Conversation, SearchHit
from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.core.paths import atomic_write_text
from podlab.core.text import readable_time
from podlab.ui import background
from podlab.ui.page_host import PageHost
from podlab.ui.widgets.chat_view import ChatView, MessageWidget, SendNotice
from podlab.ui.widgets.generation_form import EndpointPicker, ParamsForm

log = logging.getLogger(__name__)

PLACEHOLDER = (
    "Pick a running service or type an endpoint URL, choose a model, and write a prompt.\n"
    "Ctrl+Enter sends · Esc stops · answers are kept on the left."
)


def local_metrics(started: float, first: float | None, last: float | None, tokens: int) -> Metrics:
    """Figures of an answer the user stopped (the stream never sent its own `Done`)."""
    now = time.perf_counter()
    rate = None
    if first is not None and last is not None and tokens > 1 and last > first:
        rate = round((tokens - 1) / (last - first), 3)
    return Metrics(
        ttft_ms=None if first is None else round((first - started) * 1000.0, 3),
        tokens=tokens,
        tokens_per_s=rate,
        total_ms=round((now - started) * 1000.0, 3),
    )


def conversation_title(prompt: str, width: int = 48) -> str:
    """A title from the first line with words: Markdown marks and extra spaces dropped."""
    for line in prompt.splitlines():
        words = " ".join(line.strip().lstrip("#>*-+|` ").split())
        if any(c.isalnum() for c in words):
            return words if len(words) <= width else words[: width - 1] + "…"
    return "New chat"


class ConversationListModel(QAbstractListModel):
    """The stored conversations, newest activity first; titles are editable (rename)."""

    sig_renamed = Signal(int, str)
    """Emitted with the conversation id and the new title after an edit in the list."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[Conversation] = []
        self._snippets: dict[int, str] = {}

    def set_conversations(
        self, rows: list[Conversation], snippets: dict[int, str] | None = None
    ) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self._snippets = dict(snippets or {})
        self.endResetModel()

    def conversation(self, row: int) -> Conversation | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, conversation_id: int) -> int:
        for row, conversation in enumerate(self._rows):
            if conversation.id == conversation_id:
                return row
        return -1

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        conversation = self.conversation(index.row())
        if conversation is None:
            return None
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return conversation.title
        if role == Qt.ItemDataRole.ToolTipRole:
            parts = [conversation.title, f"Last message {readable_time(conversation.updated)}"]
            if conversation.model:
                parts.append(conversation.model)
            snippet = self._snippets.get(conversation.id)
            if snippet:
                parts.append(snippet)
            return "\n".join(parts)
        if role == Qt.ItemDataRole.UserRole:
            return conversation.id
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsEditable if index.isValid() else base

    def setData(
        self, index: QModelIndex | QPersistentModelIndex, value: Any, role: int = 2
    ) -> bool:
        conversation = self.conversation(index.row())
        title = str(value).strip()
        if conversation is None or role != Qt.ItemDataRole.EditRole or not title:
            return False
        self.sig_renamed.emit(conversation.id, title)
        return True


class PlaygroundPage(QWidget):
    """See the module doc."""

    title = "Playground"

    sig_answer_finished = Signal(object)
    """Emitted with the answer's MessageWidget when a stream ended (done, failed or stopped)."""

    def __init__(self, lab: Lab, host: PageHost | None = None) -> None:
        super().__init__()
        self.lab = lab
        self.conversation: Conversation | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._services_task: asyncio.Task[Any] | None = None
        self._pending_service: str | None = None
        self._editing: MessageWidget | None = None
        self._closed = False
        self._busy = False
        self.last_stop_ms: float | None = None
        """How long the last Stop took, from the key press to the answer being closed."""
        self._stop_pressed: float | None = None
        self.store = lab.conversations

        # -- left: conversations
        self.conversations = ConversationListModel(self)
        self.conversations.sig_renamed.connect(self.rename_conversation)
        # A one-column tree view: unlike QListView it elides long titles to its width.
        self.list_view = QTreeView()
        self.list_view.setObjectName("conversations")
        self.list_view.setAccessibleName("Conversations")
        self.list_view.setModel(self.conversations)
        self.list_view.setHeaderHidden(True)
        self.list_view.setRootIsDecorated(False)
        self.list_view.setUniformRowHeights(True)
        self.list_view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list_view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list_view.header().setStretchLastSection(True)
        self.list_view.setEditTriggers(
            QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        self.list_view.clicked.connect(self._on_conversation_clicked)
        self.list_view.activated.connect(self._on_conversation_clicked)
        self.search_edit = QLineEdit()
        self.search_edit.setAccessibleName("Search the conversations")
        self.search_edit.setObjectName("conversation-search")
        self.search_edit.setPlaceholderText("Search conversations")
        self.search_edit.setClearButtonEnabled(True)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(200)
        self._search_timer.timeout.connect(self.reload_conversations)
        self.search_edit.textChanged.connect(lambda _text: self._search_timer.start())
        self.new_button = QPushButton("New chat")
        self.new_button.setObjectName("new-chat")
        self.new_button.clicked.connect(self.new_conversation)
        self.rename_button = QToolButton()
        self.rename_button.setText("Rename")
        self.rename_button.clicked.connect(self._rename_current)
        self.delete_button = QToolButton()
        self.delete_button.setText("Delete")
        self.delete_button.clicked.connect(self._delete_current)
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        export_menu = QMenu(self.export_button)
        export_menu.addAction("Markdown…", lambda: self._export_current("markdown"))
        export_menu.addAction("JSON…", lambda: self._export_current("json"))
        self.export_button.setMenu(export_menu)
        left = QWidget()
        left.setObjectName("playground-left")
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(8, 8, 4, 8)
        heading = QLabel("<b>Conversations</b>")
        top = QHBoxLayout()
        top.addWidget(heading, 1)
        top.addWidget(self.new_button)
        left_layout.addLayout(top)
        left_layout.addWidget(self.search_edit)
        left_layout.addWidget(self.list_view, 1)
        actions = QHBoxLayout()
        actions.addWidget(self.rename_button)
        actions.addWidget(self.delete_button)
        actions.addWidget(self.export_button)
        actions.addStretch(1)
        left_layout.addLayout(actions)

        # -- middle: endpoint, chat, prompt
        self.picker = EndpointPicker()
        self.picker.setObjectName("playground-endpoint")
        self.chat = ChatView()
        self.chat.setObjectName("playground-chat")
        self.chat.set_placeholder(PLACEHOLDER)
        self.chat.sig_edit_requested.connect(self.edit_message)
        self.chat.sig_regenerate_requested.connect(self.regenerate)
        self.edit_banner = QLabel()
        self.edit_banner.setObjectName("edit-banner")
        self.edit_banner.setWordWrap(True)
        self.edit_cancel = QToolButton()
        self.edit_cancel.setText("Cancel edit")
        self.edit_cancel.clicked.connect(self.cancel_edit)
        banner = QHBoxLayout()
        banner.addWidget(self.edit_banner, 1)
        banner.addWidget(self.edit_cancel)
        self.edit_banner.hide()
        self.edit_cancel.hide()
        self.prompt = QPlainTextEdit()
        self.prompt.setAccessibleName("Message")
        self.prompt.setObjectName("prompt")
        self.prompt.setPlaceholderText("Write a prompt…  (Ctrl+Enter sends)")
        self.prompt.setTabChangesFocus(True)
        line = self.prompt.fontMetrics().lineSpacing()
        self.prompt.setFixedHeight(line * 4 + 14)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("send")
        self.send_button.setToolTip("Send the prompt (Ctrl+Enter)")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stop")
        self.stop_button.setToolTip("Stop the answer now (Esc)")
        self.stop_button.clicked.connect(self.stop)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setObjectName("regenerate")
        self.regenerate_button.setToolTip("Ask again for a new last answer")
        self.regenerate_button.clicked.connect(lambda: self.regenerate())
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.regenerate_button)
        buttons.addStretch(1)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt, 1)
        prompt_row.addLayout(buttons)
        self.status_label = QLabel()
        self.status_label.setObjectName("playground-status")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        middle = QWidget()
        middle_layout = QVBoxLayout(middle)
        middle_layout.setContentsMargins(4, 8, 4, 8)
        middle_layout.addWidget(self.picker)
        separator = QFrame()
        separator.setFrameShape(QFrame.Shape.HLine)
        separator.setFrameShadow(QFrame.Shadow.Sunken)
        middle_layout.addWidget(separator)
        middle_layout.addWidget(self.chat, 1)
        self.notice = SendNotice()
        self.notice.sig_start.connect(self._start_stopped_service)
        self.notice.sig_retry.connect(self._retry_send)
        self._retry: Callable[[], object] | None = None
        middle_layout.addWidget(self.notice)
        middle_layout.addLayout(banner)
        middle_layout.addLayout(prompt_row)
        middle_layout.addWidget(self.status_label)

        # -- right: system prompt and parameters
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setAccessibleName("System prompt")
        self.system_prompt.setObjectName("system-prompt")
        self.system_prompt.setPlaceholderText("You are a helpful assistant.")
        self.system_prompt.setTabChangesFocus(True)
        self.system_prompt.setFixedHeight(line * 5 + 14)
        self.params_form = ParamsForm()
        right_inner = QWidget()
        right_layout = QVBoxLayout(right_inner)
        right_layout.setContentsMargins(4, 8, 8, 8)
        right_layout.addWidget(QLabel("<b>System prompt</b>"))
        right_layout.addWidget(self.system_prompt)
        right_layout.addSpacing(6)
        right_layout.addWidget(QLabel("<b>Parameters</b>"))
        right_layout.addWidget(self.params_form)
        right_layout.addStretch(1)
        right = QScrollArea()
        right.setObjectName("playground-settings")
        right.setWidgetResizable(True)
        right.setFrameShape(QFrame.Shape.NoFrame)
        right.setWidget(right_inner)
        right.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(left)
        splitter.addWidget(middle)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        left.setMinimumWidth(170)
        right.setMinimumWidth(230)
        splitter.setSizes([210, 700, 250])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        send = QShortcut(QKeySequence("Ctrl+Return"), self)
        send.setWhatsThis("Send the message")
        send.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        send.activated.connect(self.send)
        send_enter = QShortcut(QKeySequence("Ctrl+Enter"), self)
        send_enter.setWhatsThis("Send the message")
        send_enter.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        send_enter.activated.connect(self.send)
        stop = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        stop.setWhatsThis("Stop the answer")
        stop.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        stop.activated.connect(self.stop)

        self._bridge: Any = None
        self._connect_services()
        if host is not None:
            host.on_close(self.shutdown)
        if lab.conversations_problem:
            self.show_status(lab.conversations_problem, error=True)
        self._update_buttons()
        self.reload_conversations()
        self._restore()

    # -- where the user left ------------------------------------------------------------------

    def _restore(self) -> None:
        """Reopen the last conversation and endpoint; a service once it is listed as running."""
        saved = self.lab.session.get("playground")
        ident = saved.get("conversation_id")
        if isinstance(ident, int) and self.conversations.row_of(ident) >= 0:
            self.open_conversation(ident)
        endpoint = str(saved.get("endpoint") or "")
        if endpoint:
            self.picker.set_endpoint(endpoint, str(saved.get("model") or "") or None)
        service = str(saved.get("service") or "")
        if service:
            self.select_service(service)

    def save_session(self) -> None:
        """Remember the conversation and endpoint shown (never the API key)."""
        if self._closed:
            return
        service = self.picker.service_combo.currentData() or self._pending_service or ""
        self.lab.session.put(
            "playground",
            {
                "conversation_id": None if self.conversation is None else self.conversation.id,
                "endpoint": self.picker.endpoint(),
                "model": self.picker.model() or "",
                "service": service,
            },
        )

    # -- store and services ------------------------------------------------------------------

    def _connect_services(self) -> None:
        try:
            from podlab.ui.service_bridge import service_bridge_for

            self._bridge = service_bridge_for(self.lab)
        except Exception:  # services are optional here: any URL works without them
            log.warning("no service bridge: services are not offered", exc_info=True)
            self._bridge = None
            return
        self._bridge.sig_services_listed.connect(self._on_services_listed)
        self._bridge.sig_service_event.connect(self._on_service_event)
        self.picker.set_services(self._bridge.services())

    def _disconnect_services(self) -> None:
        if self._bridge is not None and shiboken6.isValid(self._bridge):
            self._bridge.sig_services_listed.disconnect(self._on_services_listed)
            self._bridge.sig_service_event.disconnect(self._on_service_event)
        self._bridge = None

    def _on_services_listed(self, services: list[Any]) -> None:
        self.picker.set_services(services)
        if self._pending_service and self.picker.select_service(self._pending_service):
            self._pending_service = None

    def _on_service_event(self, _event: Any) -> None:
        if self._bridge is not None:
            self._on_services_listed(self._bridge.services())

    def refresh_services(self) -> asyncio.Task[Any] | None:
        if self._bridge is None:
            return None
        if self._services_task is None or self._services_task.done():

            async def refresh() -> None:
                try:
                    await self._bridge.refresh()
                except PodlabError as exc:  # no Podman: URLs still work
                    log.debug("services not listed: %s", exc.message)
                except Exception:  # still no reason to stop the Playground: URLs work
                    log.warning("services not listed", exc_info=True)

            self._services_task = background.start(refresh(), "list the services")
        return self._services_task

    def select_service(self, service_id: str) -> None:
        """Use a running service (the Services page's "Open in Playground")."""
        if not self.picker.select_service(service_id):
            self._pending_service = service_id
            self.refresh_services()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.refresh_services()

    async def settle(self) -> None:
        """Wait for the first load (screenshots, tests)."""
        task = self.refresh_services()
        if task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 5.0)

    def shutdown(self) -> None:
        """The window closes: stop the stream (its answer is kept, interrupted); the store is
        the Lab's and stays open until the process ends."""
        if self._closed:
            return
        self.save_session()
        self._closed = True
        self._disconnect_services()
        if self._stream_task is not None:
            self._stream_task.cancel()

    # -- conversations -----------------------------------------------------------------------

    def reload_conversations(self) -> None:
        if self._closed:
            return
        query = self.search_edit.text().strip()
        snippets: dict[int, str] = {}
        if query:
            hits: list[SearchHit] = self.store.search(query)
            order: list[int] = []
            for hit in hits:
                if hit.conversation_id not in snippets:
                    order.append(hit.conversation_id)
                    snippets[hit.conversation_id] = hit.snippet
            rows = []
            for ident in order:
                with contextlib.suppress(PodlabError):
                    rows.append(self.store.get_conversation(ident))
        else:
            rows = self.store.list_conversations()
        self.conversations.set_conversations(rows, snippets)
        self._select_current_row()

    def _select_current_row(self) -> None:
        row = -1 if self.conversation is None else self.conversations.row_of(self.conversation.id)
        selection = self.list_view.selectionModel()
        if row < 0:
            selection.clearSelection()
            return
        self.list_view.setCurrentIndex(self.conversations.index(row))

    def _on_conversation_clicked(self, index: QModelIndex) -> None:
        ident = self.conversations.data(index, Qt.ItemDataRole.UserRole)
        if ident is not None and (self.conversation is None or self.conversation.id != ident):
            self.open_conversation(int(ident))

    def new_conversation(self) -> None:
        """An empty chat; it is stored when its first prompt is sent."""
        self._stop_now()
        self.cancel_edit()
        self.conversation = None
        self.chat.clear()
        self.show_status("")
        self._select_current_row()
        self._update_buttons()
        self.save_session()
        self.prompt.setFocus()

    def open_conversation(self, conversation_id: int) -> None:
        self._stop_now()
        self.cancel_edit()
        try:
            conversation = self.store.get_conversation(conversation_id)
        except PodlabError as exc:
            self.show_status(exc.message, error=True)
            return
        self.conversation = conversation
        self.chat.clear()
        if conversation.endpoint:
            self.picker.set_endpoint(conversation.endpoint, conversation.model or "")
        self.params_form.set_params(conversation.params)
        self.system_prompt.setPlainText(conversation.system_prompt)
        for message in self.store.messages(conversation_id):
            if message.role == "system":
                continue
            title = self._answer_title(message.model) if message.role == "assistant" else ""
            widget = self.chat.add_message(message.role, message.content, title=title)
            widget.message_id = message.id
            if message.role == "assistant":
                widget.set_figures(message.metrics, state=message.state, error=message.error)
        self.chat.scroll_to_bottom()
        self.show_status("")
        self._select_current_row()
        self._update_buttons()
        self.save_session()

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        try:
            renamed = self.store.rename(conversation_id, title)
        except PodlabError as exc:
            self.show_status(exc.message, error=True)
            return
        if self.conversation is not None and self.conversation.id == conversation_id:
            self.conversation = renamed
        self.reload_conversations()

    def delete_conversation(self, conversation_id: int) -> None:
        if self.conversation is not None and self.conversation.id == conversation_id:
            self.new_conversation()
        self.store.delete(conversation_id)
        self.reload_conversations()

    def export_conversation(self, conversation_id: int, path: Path, kind: str) -> Path:
        """Write the conversation as Markdown (`kind` "markdown") or JSON."""
        if kind == "json":
            text = json.dumps(self.store.export_json(conversation_id), indent=2, ensure_ascii=False)
        else:
            text = self.store.export_markdown(conversation_id)
        atomic_write_text(path, text + ("" if text.endswith("\n") else "\n"))
        return path

    def _current_id(self) -> int | None:
        index = self.list_view.currentIndex()
        ident = (
            self.conversations.data(index, Qt.ItemDataRole.UserRole) if index.isValid() else None
        )
        if ident is None and self.conversation is not None:
            return self.conversation.id
        return None if ident is None else int(ident)

    def _rename_current(self) -> None:
        index = self.list_view.currentIndex()
        if index.isValid():
            self.list_view.edit(index)

    def _delete_current(self) -> None:
        ident = self._current_id()
        if ident is None:
            return
        background.start(self._confirm_delete(ident), "delete a conversation")

    async def _confirm_delete(self, conversation_id: int) -> None:
        from podlab.ui.service_bridge import MessageDialog, exec_dialog

        title = self.store.get_conversation(conversation_id).title
        dialog = MessageDialog(
            self,
            "Delete conversation",
            f"Delete “{title}” and all its messages?",
            "This cannot be undone.",
            level="question",
            accept_text="Delete",
            reject_text="Cancel",
        )
        if await exec_dialog(dialog) and not self._closed:
            self.delete_conversation(conversation_id)

    def _export_current(self, kind: str) -> None:
        ident = self._current_id()
        if ident is None:
            self.show_status("Open a conversation to export it.")
            return
        background.start(self._ask_export(ident, kind), f"export a conversation as {kind}")

    async def _ask_export(self, conversation_id: int, kind: str) -> None:
        from podlab.ui.service_bridge import exec_dialog

        conversation = self.store.get_conversation(conversation_id)
        suffix = ".json" if kind == "json" else ".md"
        safe = "".join(c if c.isalnum() or c in "-_ " else "_" for c in conversation.title)
        dialog = QFileDialog(self, "Export conversation", str(Path.home() / (safe + suffix)))
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setNameFilter("JSON (*.json)" if kind == "json" else "Markdown (*.md)")
        if not await exec_dialog(dialog) or not dialog.selectedFiles():
            return
        path = Path(dialog.selectedFiles()[0])
        try:
            self.export_conversation(conversation_id, path, kind)
        except OSError as exc:
            self.show_status(f"Cannot write {path}: {exc.strerror or exc}", error=True)
            return
        self.show_status(f"Exported to {path}")

    # -- sending -----------------------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        """True from Send until the answer is closed (done, failed or stopped)."""
        return self._busy

    def send(self) -> asyncio.Task[None] | None:
        """Send the prompt box (Ctrl+Enter); returns the streaming task."""
        text = self.prompt.toPlainText().strip()
        if not text or self.streaming or self._closed:
            return None
        if not self._check_endpoint() or self._refuse_stopped_service(self.send):
            return None
        return self._start(lambda: self._send(text))

    def regenerate(self, widget: MessageWidget | None = None) -> asyncio.Task[None] | None:
        """Drop the answer (the last one, or `widget` and what follows) and ask again."""
        if self.streaming or self.conversation is None or self._closed:
            return None
        if not self._check_endpoint() or self._refuse_stopped_service(self.regenerate):
            return None
        messages = self.chat.messages()
        if widget is None:
            widget = next((m for m in reversed(messages) if m.role == "assistant"), None)
            if widget is not None and widget is not messages[-1]:
                widget = None  # the last message is a prompt without answer: just answer it
        if widget is not None:
            self._truncate_from(widget)
        remaining = self.chat.messages()
        if not remaining or remaining[-1].role != "user":
            return None
        return self._start(self._answer)

    def edit_message(self, widget: MessageWidget) -> None:
        """Put an earlier prompt back in the box; sending replaces it and what follows."""
        if self.streaming:
            return
        self._editing = widget
        self.prompt.setPlainText(widget.text())
        self.edit_banner.setText(
            "Editing an earlier prompt: sending replaces it and every message after it."
        )
        self.edit_banner.show()
        self.edit_cancel.show()
        self.prompt.setFocus()

    def cancel_edit(self) -> None:
        if self._editing is not None:
            self._editing = None
            self.prompt.clear()
        self.edit_banner.hide()
        self.edit_cancel.hide()

    def stop(self) -> None:
        """Stop the answer now (Esc); the text so far is kept, marked interrupted."""
        task = self._stream_task
        if self.streaming and task is not None and not task.done():
            self._stop_pressed = time.perf_counter()
            task.cancel()
            self.stop_button.setEnabled(False)

    def _stop_now(self) -> None:
        if self.streaming:
            self.stop()

    def _check_endpoint(self) -> bool:
        try:
            normalize_base_url(self.picker.endpoint())
        except PodlabError as exc:
            self.show_status(f"{exc.message}. {exc.hint}".strip(), error=True)
            self.picker.url_edit.setFocus()
            return False
        return True

    def _start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await work()
            finally:
                self._set_busy(False)

        self._set_busy(True)
        self._stream_task = background.start(run(), "stream an answer")
        return self._stream_task

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        if not self._closed and shiboken6.isValid(self):
            self._update_buttons()

    def _ensure_conversation(self, first_prompt: str) -> Conversation:
        endpoint = self.picker.endpoint()
        model = self.picker.model() or ""
        params = self.params_form.to_dict()
        system_prompt = self.system_prompt.toPlainText().strip()
        if self.conversation is None:
            self.conversation = self.store.create_conversation(
                conversation_title(first_prompt),
                endpoint=endpoint,
                model=model,
                params=params,
                system_prompt=system_prompt,
            )
            self.save_session()
        else:
            self.conversation = self.store.update_conversation(
                self.conversation.id,
                endpoint=endpoint,
                model=model,
                params=params,
                system_prompt=system_prompt,
            )
        return self.conversation

    def _truncate_from(self, widget: MessageWidget) -> None:
        messages = self.chat.messages()
        if widget not in messages:
            return
        for message in messages[messages.index(widget) :]:
            if message.message_id is not None:
                self.store.delete_message(message.message_id)
        self.chat.remove_from(widget)

    async def _send(self, text: str) -> None:
        if self._editing is not None:
            self._truncate_from(self._editing)
            self.cancel_edit()
        conversation = self._ensure_conversation(text)
        stored = self.store.add_message(conversation.id, "user", text)
        bubble = self.chat.add_message("user", text)
        bubble.message_id = stored.id
        self.chat.scroll_to_bottom()
        self.prompt.clear()
        self.reload_conversations()
        await self._answer(sent=(bubble, text))

    def _answer_title(self, model: str | None) -> str:
        return f"Assistant · {model}" if model else "Assistant"

    async def _answer(self, sent: tuple[MessageWidget, str] | None = None) -> None:
        """Stream the answer to the history; `sent` is the prompt bubble and text of a new
        send (a send that gets no answer at all is taken back out of the history)."""
        self.notice.hide()
        conversation = self._ensure_conversation("")
        endpoint, model = self.picker.endpoint(), self.picker.model()
        params: GenerationParams = self.params_form.params()
        history = self.store.history(conversation.id)
        writer = self.store.begin_answer(conversation.id, model=model or "")
        bubble = self.chat.add_message("assistant", title=self._answer_title(model), streaming=True)
        bubble.message_id = writer.message_id
        bubble.set_actions_enabled(False)
        self.chat.scroll_to_bottom()
        self.show_status("")
        started = time.perf_counter()
        first: float | None = None
        last: float | None = None
        tokens = 0
        done: Done | None = None
        try:
            async with ChatClient(endpoint, self.picker.api_key()) as client:
                stream = client.stream_chat(history, model, params)
                async with aclosing(stream):
                    async for event in stream:
                        if isinstance(event, Token):
                            last = time.perf_counter()
                            if first is None:
                                first = last
                            tokens += 1
                            bubble.append(event.text)
                            writer.append(event.text)
                        elif isinstance(event, Error):
                            self.show_status(event.message, error=True)
                        elif isinstance(event, Done):
                            done = event
        except asyncio.CancelledError:
            metrics = local_metrics(started, first, last, tokens)
            writer.interrupt("stopped by the user", metrics.to_dict())
            self._close_bubble(bubble, metrics, "interrupted", "stopped by the user")
            return  # a Stop is the user's wish, not an error of this task
        except Exception as exc:  # anything unexpected: keep the text, say what happened
            log.exception("the answer failed")
            message = f"{type(exc).__name__}: {exc}"
            metrics = local_metrics(started, first, last, tokens)
            writer.fail(message, metrics.to_dict())
            self._close_bubble(bubble, metrics, "error", message)
            self.show_status(message, error=True)
            return
        if done is None:  # the stream ended without its Done (it never does; be safe)
            metrics = local_metrics(started, first, last, tokens)
            writer.interrupt("the stream ended early", metrics.to_dict())
            self._close_bubble(bubble, metrics, "interrupted", "the stream ended early")
            return
        if done.state == "error" and not tokens and not done.text:
            self._take_back(bubble, writer.message_id, sent, done.error or "no answer")
            return
        writer.close_from(done.state, done.text, done.metrics.to_dict(), done.error)
        self._close_bubble(bubble, done.metrics, done.state, done.error)
        if done.error and not tokens:
            self.show_status(done.error, error=True)

    # -- a send that could not reach the server ----------------------------------------------

    def _refuse_stopped_service(self, retry: Callable[[], object]) -> bool:
        """True (and the notice with Start and Retry) when the chosen service is not running:
        nothing is sent and nothing enters the history."""
        service = self.picker.current_service()
        if service is None or service.state.running:
            return False
        self._retry = retry
        self.notice.show_notice(
            f"{service.name} is stopped, so nothing was sent. Start it, then retry.",
            can_start=True,
        )
        return True

    def _take_back(
        self,
        bubble: MessageWidget,
        answer_id: int | None,
        sent: tuple[MessageWidget, str] | None,
        error: str,
    ) -> None:
        """The server gave no answer at all: the empty answer (and a new prompt, back into the
        prompt box) leave the history, and the notice says why with Retry."""
        if answer_id is not None:
            self.store.delete_message(answer_id)
        first = bubble
        if sent is not None:
            prompt_bubble, text = sent
            if prompt_bubble.message_id is not None:
                self.store.delete_message(prompt_bubble.message_id)
            first = prompt_bubble
            if not self.prompt.toPlainText().strip():
                self.prompt.setPlainText(text)
        self.chat.remove_from(first)
        self._retry = self.send if sent is not None else self.regenerate
        service = self.picker.current_service()
        if service is not None and not service.state.running:
            text = f"{service.name} is stopped, so nothing was sent. Start it, then retry."
        else:
            where = service.name if service is not None else self.picker.endpoint()
            text = f"No answer from {where}: {error}"
        self.notice.show_notice(text, can_start=service is not None and not service.state.running)
        self._set_busy(False)
        if not self._closed:
            self.reload_conversations()
        self.sig_answer_finished.emit(bubble)

    def _retry_send(self) -> None:
        retry, self._retry = self._retry, None
        self.notice.hide()
        if retry is not None:
            retry()

    def _start_stopped_service(self) -> None:
        service = self.picker.current_service()
        if service is None or self._bridge is None:
            return
        task = self._bridge.start(service)
        self.notice.show_notice(f"Starting {service.name}…", can_start=True)
        self.notice.start_button.setEnabled(False)
        self.notice.retry_button.setEnabled(False)

        async def wait() -> None:
            if task._handle is not None:
                await asyncio.gather(task._handle, return_exceptions=True)
            if self._closed or not shiboken6.isValid(self):
                return
            if task.error:
                self.notice.show_notice(
                    f"{service.name} did not start: {task.error}", can_start=True
                )
            else:
                self.picker.select_service(service.id)
                self.notice.show_notice(f"{service.name} is running again.", can_start=False)

        background.start(wait(), "wait for the service to start")

    def _close_bubble(
        self, bubble: MessageWidget, metrics: Metrics, state: str, error: str | None
    ) -> None:
        if self._stop_pressed is not None:
            self.last_stop_ms = (time.perf_counter() - self._stop_pressed) * 1000.0
            self._stop_pressed = None
        if shiboken6.isValid(bubble):
            bubble.finish()
            bubble.set_figures(metrics, state=state, error=error)
            bubble.set_actions_enabled(True)
        self._set_busy(False)
        if not self._closed:
            self.reload_conversations()
        self.sig_answer_finished.emit(bubble)

    # -- state -------------------------------------------------------------------------------

    def _update_buttons(self) -> None:
        streaming = self.streaming
        self.send_button.setEnabled(not streaming)
        self.stop_button.setEnabled(streaming)
        has_prompt = any(m.role == "user" for m in self.chat.messages())
        self.regenerate_button.setEnabled(not streaming and has_prompt)
        for widget in (self.rename_button, self.delete_button, self.export_button):
            widget.setEnabled(self.conversations.rowCount() > 0)

    def show_status(self, text: str, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setVisible(bool(text))
        self.status_label.setStyleSheet("QLabel { color: #c0392b; }" if error else "")


def create_page(lab: Lab, host: PageHost) -> QWidget:
    page = PlaygroundPage(lab, host)
    page.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    return page
