"""One message as Markdown: a read-only text browser fed by a stream, rendered incrementally.

The network task calls `append(text)` for every token; a `Throttle` renders at most about 25
times a second (less when a render is expensive) through `IncrementalRenderer`, which rewrites
only the last unfinished block. `finish()` writes the last block and freezes the message.

Links are shown with their address as tooltip and opened in the desktop's browser only when the
user clicks them, and only for http, https and mailto. `podlab-copy:N` anchors copy code block N.
No resource is ever loaded from the network: `loadResource` refuses everything but `qrc:`.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QMimeData, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QDesktopServices,
    QGuiApplication,
    QPalette,
    QResizeEvent,
    QTextCursor,
)
from PySide6.QtWidgets import QApplication, QFrame, QSizePolicy, QTextBrowser, QWidget

from podlab.ui.markdown_render import (
    COPY_SCHEME,
    SAFE_LINK_SCHEMES,
    ZERO_WIDTH_SPACE,
    IncrementalRenderer,
    RenderTheme,
)
from podlab.ui.throttle import Throttle

RENDER_INTERVAL_MS = 40
"""At most 25 renders a second while a stream is running."""
SLICE_S = 0.005
"""Longest stretch of rendering in one event-loop turn when a backlog is written."""


def open_external(url: QUrl) -> bool:
    """Hand a link to the desktop (a browser, a mail client). Tests replace this function."""
    return QDesktopServices.openUrl(url)


class MarkdownView(QTextBrowser):
    """A Markdown message; `fit_height` makes it as tall as its text (for a chat list)."""

    sig_rendered = Signal()
    """Emitted after the document changed (a render or `set_markdown`)."""
    sig_link_opened = Signal(str)
    """Emitted with the address after a click handed a link to the desktop."""
    sig_code_copied = Signal(int)
    """Emitted with the number of the code block whose "Copy" was clicked."""
    sig_finished = Signal()
    """Emitted once the whole message is written after `finish()` or `set_markdown()`."""

    def __init__(self, parent: QWidget | None = None, *, fit_height: bool = False) -> None:
        super().__init__(parent)
        self._fit_height = fit_height
        self._scroll_before = 0
        self.blocked_resources: list[str] = []
        """Addresses the document asked to load and was refused (tests read it)."""
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)
        self.anchorClicked.connect(self._on_anchor_clicked)
        if fit_height:
            self.setFrameShape(QFrame.Shape.NoFrame)
            self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            # Transparent over its bubble (a palette, not a style sheet: style sheets would
            # cascade and report transparent colours to the theme).
            palette = self.palette()
            palette.setColor(QPalette.ColorRole.Base, QColor(Qt.GlobalColor.transparent))
            self.setPalette(palette)
            self.viewport().setAutoFillBackground(False)
            self.document().setDocumentMargin(2.0)
            self.document().documentLayout().documentSizeChanged.connect(self._fit)
            self._fit()
        self._renderer = IncrementalRenderer(self.document(), self._make_theme())
        self._finishing = False
        self._throttle = Throttle(self._render, RENDER_INTERVAL_MS, self, adaptive=True)
        # A backlog is written in slices, one per event-loop turn, so the window never freezes.
        self._more = QTimer(self)
        self._more.setSingleShot(True)
        self._more.setInterval(0)
        self._more.timeout.connect(self._render)

    # -- the stream --------------------------------------------------------------------------

    def append(self, text: str) -> None:
        """Add a piece of the answer; it shows within one render interval."""
        if not text or self._finishing:
            return
        self._renderer.append(text)
        self._throttle()

    def finish(self) -> None:
        """The answer is complete (or stopped): render the rest and never change again.

        A long backlog is written over the next event-loop turns; `sig_finished` tells when
        the message is complete (`finished` is True from then on).
        """
        if self._finishing:
            return
        self._finishing = True
        self._throttle.cancel()
        self._render()

    def finish_now(self) -> None:
        """Like `finish()`, but write everything before returning (tests, short texts)."""
        self._finishing = True
        self._throttle.cancel()
        self._more.stop()
        if not self._renderer.finished:
            at_bottom = self._at_bottom()
            self._renderer.finish()
            self._after_render(at_bottom)
            self.sig_finished.emit()

    def set_markdown(self, text: str) -> None:
        """Show a whole message (a stored answer, a user's prompt), finished at once or, when
        it is long, over the next few event-loop turns."""
        self._throttle.cancel()
        self._more.stop()
        self.document().clear()
        self._renderer = IncrementalRenderer(self.document(), self._make_theme())
        self._renderer.append(text)
        self._finishing = True
        self._render()
        self.setTextCursor(QTextCursor(self.document()))  # at the start, so shown from the top
        self._scroll_before = 0
        if not self._fit_height:
            self.verticalScrollBar().setValue(0)

    def markdown(self) -> str:
        """The source text received so far."""
        return self._renderer.source()

    @property
    def finished(self) -> bool:
        """True once the whole text is written and the message is frozen."""
        return self._renderer.finished

    @property
    def renderer(self) -> IncrementalRenderer:
        return self._renderer

    @property
    def throttle(self) -> Throttle:
        return self._throttle

    def render_now(self) -> None:
        """Render everything pending now, without slices (tests)."""
        self._throttle.cancel()
        self._more.stop()
        at_bottom = self._at_bottom()
        while self._renderer.render(final=self._finishing):
            pass
        self._after_render(at_bottom)
        if self._finishing and self._renderer.finished:
            self.sig_finished.emit()

    def code_text(self, number: int) -> str | None:
        return self._renderer.code_text(number)

    def set_background(self, color: QColor) -> None:
        """Paint this colour behind the text (a bubble's colour): an opaque view repaints
        alone when its text changes, a transparent one makes its parent repaint too."""
        palette = self.palette()
        if palette.color(QPalette.ColorRole.Base) != color:
            palette.setColor(QPalette.ColorRole.Base, color)
            self.setPalette(palette)
        self.viewport().setAutoFillBackground(color.alpha() == 255)

    # -- rendering ---------------------------------------------------------------------------

    def _render(self) -> None:
        if self._renderer.finished:
            return
        at_bottom = self._at_bottom()
        more = self._renderer.render(final=self._finishing, budget_s=SLICE_S)
        self._after_render(at_bottom)
        if more:
            self._more.start()
        elif self._finishing and self._renderer.finished:
            self.sig_finished.emit()

    def _at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        self._scroll_before = bar.value()
        return bar.value() >= bar.maximum() - 4

    def _after_render(self, was_at_bottom: bool) -> None:
        if not self._fit_height:
            # Follow the text only when the reader was at the end; otherwise stay put (the
            # widget's own cursor moves with inserted text and would drag the view along).
            bar = self.verticalScrollBar()
            bar.setValue(bar.maximum() if was_at_bottom else self._scroll_before)
        self.sig_rendered.emit()

    def _make_theme(self) -> RenderTheme:
        # Transparent over a bubble (fit_height): the colours are the application's.
        palette = QPalette(QApplication.palette() if self._fit_height else self.palette())
        return RenderTheme.from_palette(palette, self.font())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.FontChange) and hasattr(
            self, "_renderer"
        ):
            theme = self._make_theme()
            old = self._renderer.theme
            if (theme.text, theme.base, theme.link, theme.point_size) != (
                old.text,
                old.base,
                old.link,
                old.point_size,
            ):
                self._renderer.rebuild(theme)
                self.sig_rendered.emit()

    # -- fitting the height to the text ------------------------------------------------------

    def _fit(self) -> None:
        if not self._fit_height:
            return
        height = self.document().documentLayout().documentSize().height()
        margins = self.contentsMargins()
        total = int(height + 0.999) + margins.top() + margins.bottom() + 2 * self.frameWidth()
        total = max(total, 8)
        if self.minimumHeight() != total or self.maximumHeight() != total:
            self.setFixedHeight(total)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fit_height and event.size().width() != event.oldSize().width():
            self._fit()

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        if self._fit_height:
            return QSize(hint.width(), self.height())
        return hint

    # -- links, copies and resources ---------------------------------------------------------

    def createMimeDataFromSelection(self) -> QMimeData:
        """Copy what was selected without the zero-width spaces added for line breaking."""
        data = super().createMimeDataFromSelection()
        clean = QMimeData()
        clean.setText(data.text().replace(ZERO_WIDTH_SPACE, ""))
        if data.hasHtml():
            clean.setHtml(data.html().replace(ZERO_WIDTH_SPACE, ""))
        return clean

    def _on_anchor_clicked(self, url: QUrl) -> None:
        scheme = url.scheme().lower()
        if scheme == COPY_SCHEME:
            path = url.path()
            if path.isdigit():
                code = self.code_text(int(path))
                if code is not None:
                    QGuiApplication.clipboard().setText(code.removesuffix("\n"))
                    self.sig_code_copied.emit(int(path))
            return
        if scheme in SAFE_LINK_SCHEMES and open_external(url):
            self.sig_link_opened.emit(url.toString())

    def loadResource(self, type: int, name: QUrl | str) -> object:
        """Nothing is fetched: model output must not make the app contact any server."""
        url = name if isinstance(name, QUrl) else QUrl(name)
        if url.scheme() == "qrc":
            return super().loadResource(type, url)
        self.blocked_resources.append(url.toString())
        return None
