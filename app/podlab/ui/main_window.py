"""The main window: a navigation list of pages, the pages themselves, and a status bar.

Closing it (or Ctrl+Q, or Quit in the tray icon's menu) with services running asks whether to
keep them running or stop them, unless the answer was remembered (setting
`services_on_close`). While services run, a tray icon (where the desktop has a tray) or a
status bar label says how many.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import QSignalBlocker, QSize, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QStackedWidget,
    QWidget,
)

from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.core.settings import save_settings
from podlab.ui.page_host import PageHost

# Classes with many enums (QStyle, QKeySequence, QDialogButtonBox, QSystemTrayIcon...) build
# them when first imported: they are imported where used, after the window's first paint.
if TYPE_CHECKING:
    from PySide6.QtGui import QCloseEvent, QIcon
    from PySide6.QtWidgets import QDialog, QSystemTrayIcon

    from podlab.core.serving.inference import InferenceService
    from podlab.ui.pages.compare import ComparePage
    from podlab.ui.pages.playground import PlaygroundPage
    from podlab.ui.pages.services import ServicesPage
    from podlab.ui.service_bridge import MessageDialog

KEEP_RUNNING = 2
"""The close dialog's result for "Keep running" (Accepted, 1, stops them; Rejected cancels)."""


@dataclass(frozen=True)
class PageEntry:
    """A page of the navigation: created on first visit, so start-up stays fast."""

    key: str
    title: str
    icon: str
    """A QStyle.StandardPixmap name, resolved after the first paint (its enum is costly)."""
    module: str
    """Module under podlab.ui.pages with a `create_page(lab, host: PageHost) -> QWidget`."""
    paints_before_loop: bool = False
    """Whether the page can be built and painted before the asyncio loop exists (it starts no
    task while built, and asks `background.when_loop_ready` for its loading): the app then
    shows it with the window's first paint instead of after asyncio and qasync are loaded."""


PAGES: tuple[PageEntry, ...] = (
    PageEntry("dashboard", "Dashboard", "SP_ComputerIcon", "dashboard", paints_before_loop=True),
    PageEntry("catalog", "Catalog", "SP_FileDialogContentsView", "catalog"),
    PageEntry("models", "Models", "SP_DriveHDIcon", "models"),
    PageEntry("services", "Services", "SP_MediaPlay", "services"),
    PageEntry("playground", "Playground", "SP_CommandLink", "playground"),
    PageEntry("compare", "Compare", "SP_FileDialogListView", "compare"),
    PageEntry("evaluate", "Evaluate", "SP_FileDialogInfoView", "evaluate"),
    PageEntry("recipes", "Recipes", "SP_DirIcon", "recipes"),
    PageEntry("tasks", "Tasks", "SP_BrowserReload", "tasks"),
    PageEntry("settings", "Settings", "SP_FileDialogDetailedView", "settings"),
)
PAGE_KEYS = tuple(page.key for page in PAGES)


def page_shortcut(index: int) -> str:
    """The keys of the page at `index`: Ctrl+1 to Ctrl+9, then Ctrl+0 for the tenth."""
    return f"Ctrl+{'1234567890'[index]}"


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
        self._leaving = False
        """Set once the user chose what happens to running services: the next close closes."""
        self.close_dialog: MessageDialog | None = None
        """The "services are running" question while it is open (tests answer it)."""
        self.tray: QSystemTrayIcon | None = None

        self.nav = QListWidget()
        self.nav.setObjectName("navigation")
        self.nav.setAccessibleName("Pages")
        self.nav.setIconSize(QSize(20, 20))
        self.nav.setFixedWidth(180)
        self.nav.setSpacing(2)
        for index, page in enumerate(PAGES):
            item = QListWidgetItem(page.title)
            item.setToolTip(f"{page.title} ({page_shortcut(index)})")
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
        self.running_label = QLabel()
        self.running_label.setObjectName("running-services")
        self.running_label.hide()
        self.statusBar().addPermanentWidget(self.running_label)
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

    def page_if_built(self, key: str) -> QWidget | None:
        """The page for `key` if it was opened already (never builds one)."""
        return self._pages.get(key)

    def finish_start(self) -> None:
        """Icons and shortcuts, added right after the first paint (QStyle's and QKeySequence's
        enums take a few milliseconds to build, and the window can show without them)."""
        if self._finished:
            return
        self._finished = True
        from PySide6.QtGui import QKeySequence, QShortcut
        from PySide6.QtWidgets import QStyle

        for index, page in enumerate(PAGES):
            pixmap = getattr(QStyle.StandardPixmap, page.icon)
            self.nav.item(index).setIcon(self.style().standardIcon(pixmap))
            shortcut = QShortcut(QKeySequence(page_shortcut(index)), self)
            shortcut.setWhatsThis(f"Show the {page.title} page")
            shortcut.activated.connect(lambda row=index: self.nav.setCurrentRow(row))
        quit_shortcut = QShortcut(QKeySequence("Ctrl+Q"), self)
        quit_shortcut.setWhatsThis("Quit Podlab (asks first when services run)")
        quit_shortcut.activated.connect(self.close)
        self._watch_services()
        for keys in ("F1", "Ctrl+/"):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setWhatsThis("List the keyboard shortcuts")
            shortcut.activated.connect(self.show_shortcuts)

    def show_shortcuts(self) -> QDialog:
        """Open the keyboard shortcut list (F1 or Ctrl+/) and return it."""
        from PySide6.QtCore import Qt  # its enums are built on first use: not at start-up

        from podlab.ui.dialogs.shortcuts import ShortcutsDialog

        dialog = ShortcutsDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def show_page(self, key: str) -> QWidget:
        self.finish_start()
        return self.show_page_unfinished(key)

    def show_page_unfinished(self, key: str) -> QWidget:
        """Switch to `key` without `finish_start` (the app's first paint comes before it)."""
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

    def compare_page(self) -> ComparePage:
        from podlab.ui.pages.compare import ComparePage

        page = self.page("compare")
        assert isinstance(page, ComparePage)
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

    # -- running services: shown while the window is open, asked about when it closes ---------

    def running_services(self) -> list[InferenceService]:
        """The services this window's Lab knows to be running (none before the first look)."""
        from podlab.ui.service_bridge import service_bridge_for

        return [s for s in service_bridge_for(self.lab).services() if s.state.running]

    def _watch_services(self) -> None:
        from PySide6.QtWidgets import QMenu, QSystemTrayIcon

        from podlab.ui.service_bridge import service_bridge_for

        bridge = service_bridge_for(self.lab)
        bridge.sig_service_event.connect(self._show_running)
        bridge.sig_services_listed.connect(self._show_running)
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = QSystemTrayIcon(window_icon(), self)
            menu = QMenu(self)
            menu.addAction("Show Podlab", self._show_from_tray)
            menu.addAction("Quit", self.close)
            self.tray.setContextMenu(menu)
            self.tray.activated.connect(lambda _reason: self._show_from_tray())
        self._show_running()

    def _show_running(self, *_args: object) -> None:
        count = len(self.running_services())
        text = f"{count} service{'s' if count != 1 else ''} running" if count else ""
        if self.tray is not None:
            self.tray.setToolTip(f"Podlab: {text}")
            self.tray.setVisible(bool(count))
        else:
            self.running_label.setText(f"● {text}")
            self.running_label.setToolTip("Services keep answering until they are stopped")
            self.running_label.setVisible(bool(count))

    def _show_from_tray(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def closeEvent(self, event: QCloseEvent) -> None:
        keep = self._leaving or self.lab.settings.services_on_close == "keep"
        running = [] if keep else self.running_services()
        # Imported here: asyncio is not needed to paint the window (see app.run_gui).
        from podlab.ui import background

        if running:
            event.ignore()
            if self.close_dialog is None:
                background.start(self._close_with_services(running), "close the window")
            return
        if self.tray is not None:
            self.tray.hide()
        for handler in self._close_handlers:
            handler()
        background.cancel_all()
        super().closeEvent(event)

    async def _close_with_services(self, running: list[InferenceService]) -> None:
        choice = self.lab.settings.services_on_close
        if choice == "ask":
            choice = await self._ask_about_services(running)
            if not choice:
                return
        if choice == "stop":
            from podlab.ui.service_bridge import service_bridge_for

            manager = service_bridge_for(self.lab).manager
            self.show_status(f"Stopping {len(running)} running services…", 0)
            import asyncio

            results = await asyncio.gather(
                *(manager.stop(service) for service in running), return_exceptions=True
            )
            failed = [
                s.name
                for s, r in zip(running, results, strict=True)
                if isinstance(r, BaseException)
            ]
            if failed:
                self.show_status(f"Could not stop {', '.join(failed)}; see the Services page", 0)
                return
        self._leaving = True
        self.close()

    async def _ask_about_services(self, running: list[InferenceService]) -> str:
        """ "stop", "keep", or "" when the user cancelled the close."""
        from PySide6.QtWidgets import QCheckBox, QDialogButtonBox, QVBoxLayout

        from podlab.ui.service_bridge import MessageDialog, exec_dialog

        names = ", ".join(service.name for service in running)
        dialog = MessageDialog(
            self,
            "Services are running",
            f"{len(running)} service{'s are' if len(running) != 1 else ' is'} still running: "
            f"{names}.",
            "Stopped services free their memory; running ones keep answering after Podlab "
            "closes, and Podlab finds them again when it starts.",
            level="question",
            accept_text="Stop them and quit",
            reject_text="Cancel",
        )
        keep = dialog.buttons.addButton(
            "Keep running and quit", QDialogButtonBox.ButtonRole.ActionRole
        )
        keep.clicked.connect(lambda: dialog.done(KEEP_RUNNING))
        remember = QCheckBox("Remember my answer")
        remember.setObjectName("remember")
        remember.setToolTip("Change it later in Settings: Services when closing")
        layout = dialog.layout()
        assert isinstance(layout, QVBoxLayout)
        layout.insertWidget(1, remember)
        remembered: list[bool] = []  # read when answered: the dialog deletes itself on close
        remember.toggled.connect(lambda on: remembered.append(on))
        self.close_dialog = dialog
        try:
            result = await exec_dialog(dialog)
            choice = {1: "stop", KEEP_RUNNING: "keep"}.get(result, "")
            if choice and remembered and remembered[-1]:
                self._remember(choice)
            return choice
        finally:
            self.close_dialog = None

    def _remember(self, choice: str) -> None:
        loaded = self.lab.loaded_settings
        loaded.settings.services_on_close = choice
        try:
            save_settings(loaded)
        except (PodlabError, OSError) as exc:
            self.show_status(f"Your answer was not remembered: {exc}", 15000)


def window_icon() -> QIcon:
    from PySide6.QtGui import QIcon

    from podlab.core.resources import resource

    return QIcon(str(resource("icons/podlab.svg")))
