"""A chat as a scrollable list of message bubbles, each one `MarkdownView`.

A bubble shows who speaks, the message, and for answers a line of speed figures (time to first
token, tokens, tokens/s, total time, finish reason) with a badge when the answer was interrupted
or failed. Copy is handled here; Edit and Regenerate are requests the page answers.

The view follows new text only while the reader is at the bottom: scrolling up to read stops
the following, scrolling back down resumes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import QEvent, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from podlab.core.chat.client import Metrics
from podlab.core.chat.energy import tokens_per_joule
from podlab.ui.widgets.markdown_view import MarkdownView

ROLE_TITLES = {"user": "You", "assistant": "Assistant", "system": "System prompt"}


def _mix(a: QColor, b: QColor, amount: float) -> QColor:
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * amount,
        a.greenF() + (b.greenF() - a.greenF()) * amount,
        a.blueF() + (b.blueF() - a.blueF()) * amount,
    )


def format_ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms"


def format_figures(
    metrics: Metrics | Mapping[str, Any] | None, energy_j: float | None = None
) -> str:
    """ "TTFT 112 ms · 128 tokens · 71.3 tok/s · total 1.86 s · stop" (what is known)."""
    if metrics is None:
        return ""
    if isinstance(metrics, Mapping):
        metrics = Metrics.from_dict(metrics)
    parts = [f"TTFT {format_ms(metrics.ttft_ms)}"]
    parts.append(f"{metrics.tokens} token{'s' if metrics.tokens != 1 else ''}")
    rate = metrics.tokens_per_s
    parts.append("– tok/s" if rate is None else f"{rate:.1f} tok/s")
    parts.append(f"total {format_ms(metrics.total_ms)}")
    if metrics.finish_reason:
        parts.append(metrics.finish_reason)
    if energy_j is not None:
        parts.append(f"{energy_j:.1f} J")
        efficiency = tokens_per_joule(metrics.tokens, energy_j)
        if efficiency is not None:
            parts.append(f"{efficiency:.2f} tok/J")
    return " · ".join(parts)


class MessageWidget(QFrame):
    """One bubble: header (speaker, model), the Markdown text, figures, actions."""

    sig_edit_requested = Signal(object)
    """Emitted with this widget when the user asks to edit the message (user messages)."""
    sig_regenerate_requested = Signal(object)
    """Emitted with this widget when the user asks for a new answer (assistant messages)."""

    def __init__(
        self,
        role: str,
        text: str = "",
        *,
        title: str = "",
        streaming: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.role = role
        self.message_id: int | None = None
        """The row of this message in the conversation store, when it has one."""
        self.setObjectName("bubble")
        self.setProperty("role", role)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(2)

        header = QHBoxLayout()
        header.setSpacing(6)
        self.title_label = QLabel(title or ROLE_TITLES.get(role, role.capitalize()))
        self.title_label.setObjectName("bubble-title")
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        self.badge = QLabel()
        self.badge.setObjectName("bubble-badge")
        self.badge.hide()
        header.addWidget(self.title_label)
        header.addWidget(self.badge)
        header.addStretch(1)
        self.copy_button = self._tool("Copy", "Copy this message as Markdown")
        self.copy_button.clicked.connect(self.copy_text)
        header.addWidget(self.copy_button)
        self.edit_button: QToolButton | None = None
        self.regenerate_button: QToolButton | None = None
        if role == "user":
            self.edit_button = self._tool("Edit", "Edit this prompt and send it again")
            self.edit_button.clicked.connect(lambda: self.sig_edit_requested.emit(self))
            header.addWidget(self.edit_button)
        elif role == "assistant":
            self.regenerate_button = self._tool("Regenerate", "Ask again for a new answer")
            self.regenerate_button.clicked.connect(lambda: self.sig_regenerate_requested.emit(self))
            header.addWidget(self.regenerate_button)
        layout.addLayout(header)

        self.view = MarkdownView(self, fit_height=True)
        self.view.setObjectName("bubble-text")
        layout.addWidget(self.view)

        self.figures = QLabel()
        self.figures.setObjectName("figures")
        self.figures.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.figures.setWordWrap(True)
        self.figures.hide()
        layout.addWidget(self.figures)

        self._streaming = streaming
        if text:
            self.view.set_markdown(text)
        if streaming:
            self.set_badge("streaming…", "muted")
        self._apply_colors()

    def _tool(self, text: str, tip: str) -> QToolButton:
        button = QToolButton(self)
        button.setText(text)
        button.setToolTip(tip)
        button.setAutoRaise(True)
        button.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        return button

    # -- content -----------------------------------------------------------------------------

    def append(self, text: str) -> None:
        self.view.append(text)

    def finish(self) -> None:
        self._streaming = False
        self.view.finish()
        if self.badge.property("kind") == "muted":
            self.badge.hide()

    def set_markdown(self, text: str) -> None:
        self.view.set_markdown(text)

    def text(self) -> str:
        return self.view.markdown()

    @property
    def streaming(self) -> bool:
        return self._streaming

    def set_title(self, title: str) -> None:
        self.title_label.setText(title)

    def set_figures(
        self,
        metrics: Metrics | Mapping[str, Any] | None,
        *,
        state: str = "complete",
        error: str | None = None,
        energy_j: float | None = None,
        energy_note: str | None = None,
    ) -> None:
        """Show the speed line, and a badge for an interrupted or failed answer."""
        text = format_figures(metrics, energy_j)
        if energy_j is None and energy_note:
            text = f"{text} · energy {energy_note}" if text else f"energy {energy_note}"
        if error:
            text = f"{text}\n{error}" if text else error
        self.figures.setText(text)
        self.figures.setVisible(bool(text))
        if state == "interrupted":
            self.set_badge("interrupted", "warning")
        elif state == "error":
            self.set_badge("error", "error")
        else:
            self.badge.hide()
            self.badge.setProperty("kind", "")

    def set_badge(self, text: str, kind: str) -> None:
        self.badge.setText(text)
        self.badge.setProperty("kind", kind)
        self.badge.show()
        self._apply_colors()

    def copy_text(self) -> None:
        QGuiApplication.clipboard().setText(self.text())

    def set_actions_enabled(self, enabled: bool) -> None:
        for button in (self.edit_button, self.regenerate_button):
            if button is not None:
                button.setEnabled(enabled)

    # -- colours ----------------------------------------------------------------------------

    def _colors(self) -> tuple[QColor, QColor, QColor, QColor]:
        """Background, border, muted text and badge colour, from the current palette."""
        palette = self.palette()
        base = palette.color(QPalette.ColorRole.Base)
        text = palette.color(QPalette.ColorRole.Text)
        accent = palette.color(QPalette.ColorRole.Highlight)
        dark = base.lightnessF() < 0.5
        if self.role == "user":
            background = _mix(base, accent, 0.16 if dark else 0.09)
            border = _mix(base, accent, 0.35)
        elif self.role == "system":
            background = base
            border = _mix(base, text, 0.25)
        else:
            background = _mix(base, text, 0.05 if dark else 0.025)
            border = _mix(base, text, 0.13)
        muted = _mix(text, base, 0.4)
        kind = self.badge.property("kind") or ""
        badge = {
            "warning": QColor("#e0a030") if dark else QColor("#9a5b00"),
            "error": QColor("#ff6b6b") if dark else QColor("#b00020"),
        }.get(kind, muted)
        return background, border, muted, badge

    def _apply_colors(self) -> None:
        background, _border, muted, badge = self._colors()
        self.view.set_background(background)
        figures = self.figures.palette()
        if figures.color(QPalette.ColorRole.WindowText) != muted:
            figures.setColor(QPalette.ColorRole.WindowText, muted)
            self.figures.setPalette(figures)
        if (self.badge.property("kind") or "") == "muted":  # "streaming…": a note, not a button
            sheet = f"QLabel {{ color: {badge.name()}; font-style: italic; }}"
        else:
            sheet = (
                f"QLabel {{ color: {badge.name()}; border: 1px solid {badge.name()};"
                " border-radius: 4px; padding: 0px 4px; }"
            )
        if self.badge.styleSheet() != sheet:
            self.badge.setStyleSheet(sheet)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        background, border, _muted, _badge = self._colors()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        pen = QPen(border, 1.0)
        if self.role == "system":
            pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.setBrush(background)
        painter.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 8.0, 8.0)
        painter.end()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "figures"):
            self._apply_colors()


class ChatView(QScrollArea):
    """The messages of one conversation, newest at the bottom."""

    sig_edit_requested = Signal(object)
    """Emitted with the MessageWidget the user wants to edit."""
    sig_regenerate_requested = Signal(object)
    """Emitted with the MessageWidget whose answer the user wants again."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self._content = QWidget()
        self._content.setObjectName("chat-content")
        self._layout = QVBoxLayout(self._content)
        self._layout.setContentsMargins(12, 12, 12, 12)
        self._layout.setSpacing(10)
        self._placeholder = QLabel()
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setWordWrap(True)
        self._placeholder.setEnabled(False)
        self._layout.addWidget(self._placeholder)
        self._layout.addStretch(1)
        self.setWidget(self._content)
        self._messages: list[MessageWidget] = []
        self._follow = True
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._on_scrolled)
        bar.rangeChanged.connect(self._on_range_changed)

    # -- messages ----------------------------------------------------------------------------

    def set_placeholder(self, text: str) -> None:
        self._placeholder.setText(text)
        self._placeholder.setVisible(bool(text) and not self._messages)

    def add_message(
        self, role: str, text: str = "", *, title: str = "", streaming: bool = False
    ) -> MessageWidget:
        widget = MessageWidget(role, text, title=title, streaming=streaming, parent=self._content)
        widget.sig_edit_requested.connect(self.sig_edit_requested)
        widget.sig_regenerate_requested.connect(self.sig_regenerate_requested)
        if role == "user":
            # Prompts sit a little to the right, answers use the full width.
            holder = QHBoxLayout()
            holder.setContentsMargins(48, 0, 0, 0)
            holder.addWidget(widget)
            self._layout.insertLayout(self._layout.count() - 1, holder)
        else:
            self._layout.insertWidget(self._layout.count() - 1, widget)
        self._messages.append(widget)
        self._placeholder.hide()
        return widget

    def messages(self) -> list[MessageWidget]:
        return list(self._messages)

    def last(self) -> MessageWidget | None:
        return self._messages[-1] if self._messages else None

    def remove_from(self, widget: MessageWidget) -> None:
        """Remove `widget` and every message after it (edit and regenerate start there)."""
        if widget not in self._messages:
            return
        index = self._messages.index(widget)
        for message in self._messages[index:]:
            self._remove_widget(message)
        del self._messages[index:]
        if not self._messages:
            self._placeholder.setVisible(bool(self._placeholder.text()))

    def clear(self) -> None:
        for message in self._messages:
            self._remove_widget(message)
        self._messages.clear()
        self._follow = True
        self._placeholder.setVisible(bool(self._placeholder.text()))

    def _remove_widget(self, message: MessageWidget) -> None:
        for index in range(self._layout.count()):
            item = self._layout.itemAt(index)
            inner = item.layout() if item is not None else None
            if item is not None and item.widget() is message:
                self._layout.takeAt(index)
                break
            if inner is not None and inner.indexOf(message) >= 0:
                self._layout.takeAt(index)
                inner.removeWidget(message)
                inner.deleteLater()
                break
        message.hide()
        message.setParent(None)
        message.deleteLater()

    # -- following the text ------------------------------------------------------------------

    @property
    def following(self) -> bool:
        """True while new text scrolls the view (the reader is at the bottom)."""
        return self._follow

    def scroll_to_bottom(self) -> None:
        self._follow = True
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_scrolled(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 8

    def _on_range_changed(self, _minimum: int, maximum: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(maximum)


class SendNotice(QFrame):
    """Why a message could not be sent, shown above the prompt box with the buttons that fix
    it: Start (the service is stopped) and Retry (send it again)."""

    sig_start = Signal()
    sig_retry = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("send-notice")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#send-notice { border: 1px solid #c0392b; border-radius: 4px; }")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.start_button = QPushButton("Start service")
        self.start_button.clicked.connect(self.sig_start.emit)
        self.retry_button = QPushButton("Retry")
        self.retry_button.clicked.connect(self.sig_retry.emit)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Dismiss")
        self.close_button.clicked.connect(self.hide)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 4, 4)
        row.addWidget(self.label, 1)
        for button in (self.start_button, self.retry_button, self.close_button):
            row.addWidget(button, 0, Qt.AlignmentFlag.AlignVCenter)
        self.hide()

    def show_notice(self, text: str, *, can_start: bool) -> None:
        self.label.setText(text)
        self.start_button.setVisible(can_start)
        self.start_button.setEnabled(True)
        self.retry_button.setEnabled(True)
        self.show()
