"""The main window: a navigation list of pages, the pages themselves, and a status bar."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import QSignalBlocker, QSize, Signal
from PySide6.QtGui import QCloseEvent, QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QStackedWidget,
    QStyle,
    QWidget,
)

from podlab.core.lab import Lab
from podlab.ui import background
from podlab.ui.page_host import PageHost

if TYPE_CHECKING:
    from podlab.ui.pages.playground import PlaygroundPage
    from podlab.ui.pages.services import ServicesPage


@dataclass(frozen=True)
class PageEntry:
    """A page of the navigation: created on first visit, so start-up stays fast."""

    key: str
    title: str
    icon: str
    """A QStyle.StandardPixmap name, resolved after the first paint (its enum is costly)."""
    module: str
    """Module under podlab.ui.pages with a `create_page(lab, host: PageHost) -> QWidget`."""


PAGES: tuple[PageEntry, ...] = (
    PageEntry("dashboard", "Dashboard", "SP_ComputerIcon", "dashboard"),
    PageEntry("catalog", "Catalog", "SP_FileDialogContentsView", "catalog"),
    PageEntry("models", "Models", "SP_DriveHDIcon", "models"),
    PageEntry("services", "Services", "SP_MediaPlay", "services"),
    PageEntry("playground", "Playground", "SP_MessageBoxQuestion", "playground"),
    PageEntry("compare", "Compare", "SP_FileDialogListView", "compare"),
    PageEntry("recipes", "Recipes", "SP_DirIcon", "recipes"),
    PageEntry("tasks", "Tasks", "SP_BrowserReload", "tasks"),
    PageEntry("settings", "Settings", "SP_FileDialogDetailedView", "settings"),
)
PAGE_KEYS = tuple(page.key for page in PAGES)


class MainWindow(QMainWindow):
    """Holds the pages; pages reach core through the shared `Lab`, and the window only through
    what `PageHost` names (this class implements it)."""

    sig_page_changed = Signal(str)
    """Emitted with the page key after the user (or code) switched pages."""

    def __init__(self, lab: Lab, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._lab = lab
        self.setWindowTitle("Podlab")
        self.setMinimumSize(QSize(900, 600))
        self._pages: dict[str, QWidget] = {}
        self._close_handlers: list[Callable[[], None]] = []

        self.nav = QListWidget()
        self.nav.setObjectName("navigation")
        self.nav.setIconSize(QSize(20, 20))
        self.nav.setFixedWidth(180)
        self.nav.setSpacing(2)
        for index, page in enumerate(PAGES):
            item = QListWidgetItem(page.title)
            item.setToolTip(f"{page.title} (Ctrl+{index + 1})")
            self.nav.addItem(item)
        self.stack = QStackedWidget()
        for page in PAGES:
            holder = QWidget()
            holder.setObjectName(f"holder-{page.key}")
            self.stack.addWidget(holder)

        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.engine_label = QLabel("Container engine: checking…")
        self.engine_label.setObjectName("engine-status")
        self.statusBar().addPermanentWidget(self.engine_label)
        self.statusBar().messageChanged.connect(self._on_status_message_changed)
        for error in lab.loaded_settings.errors:
            self.statusBar().showMessage(f"Settings: {error} (defaults used)")

        self.nav.currentRowChanged.connect(self._on_row_changed)
        self._finished = False
        # The first row is marked without building its page: the caller shows the window first
        # and then calls show_page, so the window appears before any page's imports and load.
        blocker = QSignalBlocker(self.nav)
        self.nav.setCurrentRow(0)
        blocker.unblock()

    @property
    def lab(self) -> Lab:
        return self._lab

    def page(self, key: str) -> QWidget:
        """The page widget for `key`, created on first use."""
        if key not in self._pages:
            entry = next(page for page in PAGES if page.key == key)
            module = importlib.import_module(f"podlab.ui.pages.{entry.module}")
            host: PageHost = self  # mypy checks here that the window is a PageHost
            widget: QWidget = module.create_page(self.lab, host)
            index = PAGE_KEYS.index(key)
            old = self.stack.widget(index)
            if old is not None:
                self.stack.removeWidget(old)
                old.deleteLater()
            self.stack.insertWidget(index, widget)
            self._pages[key] = widget
        return self._pages[key]

    def finish_start(self) -> None:
        """Icons and shortcuts, added right after the first paint (QStyle's and QKeySequence's
        enums take a few milliseconds to build, and the window can show without them)."""
        if self._finished:
            return
        self._finished = True
        for index, page in enumerate(PAGES):
            pixmap = getattr(QStyle.StandardPixmap, page.icon)
            self.nav.item(index).setIcon(self.style().standardIcon(pixmap))
            shortcut = QShortcut(QKeySequence(f"Ctrl+{index + 1}"), self)
            shortcut.activated.connect(lambda row=index: self.nav.setCurrentRow(row))

    def show_page(self, key: str) -> QWidget:
        self.finish_start()
        row = PAGE_KEYS.index(key)
        if self.nav.currentRow() == row:
            self._on_row_changed(row)
        else:
            self.nav.setCurrentRow(row)
        return self.page(key)

    def current_page_key(self) -> str:
        return PAGE_KEYS[self.nav.currentRow()]

    def services_page(self) -> ServicesPage:
        from podlab.ui.pages.services import ServicesPage

        page = self.page("services")
        assert isinstance(page, ServicesPage)
        return page

    def playground_page(self) -> PlaygroundPage:
        from podlab.ui.pages.playground import PlaygroundPage

        page = self.page("playground")
        assert isinstance(page, PlaygroundPage)
        return page

    def show_status(self, text: str, timeout_ms: int = 10000) -> None:
        """The message, and in the bar's tooltip whole (a long one is cut at the window edge)."""
        self.statusBar().showMessage(text, timeout_ms)
        self.statusBar().setToolTip(text)

    def _on_status_message_changed(self, text: str) -> None:
        if not text:
            self.statusBar().setToolTip("")

    def set_engine_status(self, text: str, tooltip: str = "", ok: bool = True) -> None:
        self.engine_label.setText(text)
        self.engine_label.setToolTip(tooltip)
        self.engine_label.setProperty("ok", ok)

    def on_close(self, handler: Callable[[], None]) -> None:
        """Run `handler` when the window closes (pages use it to stop their work)."""
        self._close_handlers.append(handler)

    def _on_row_changed(self, row: int) -> None:
        if row < 0:
            return
        key = PAGE_KEYS[row]
        self.page(key)
        self.stack.setCurrentIndex(row)
        self.sig_page_changed.emit(key)

    def closeEvent(self, event: QCloseEvent) -> None:
        for handler in self._close_handlers:
            handler()
        background.cancel_all()
        super().closeEvent(event)


def window_icon() -> QIcon:
    from podlab.core.resources import resource

    return QIcon(str(resource("icons/podlab.svg")))
