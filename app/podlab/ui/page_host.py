"""What a page may ask of the window that holds it, as a typed Protocol.

Pages get a `PageHost` in their constructor (None when a test builds a page on its own) and
never reach into the window with getattr: what they need is named here, and `MainWindow`
implements it. The Services, Playground and Compare pages are reached through typed accessors,
because other pages hand work to them (serve a model, chat with a service, compare a model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from PySide6.QtWidgets import QWidget

from podlab.core.lab import Lab

if TYPE_CHECKING:
    from podlab.ui.pages.compare import ComparePage
    from podlab.ui.pages.playground import PlaygroundPage
    from podlab.ui.pages.services import ServicesPage


class PageHost(Protocol):
    """The window as its pages see it."""

    @property
    def lab(self) -> Lab:
        """The process's shared state (the same one the page was built with)."""
        ...

    def page(self, key: str) -> QWidget:
        """The page called `key`, created on first use, without showing it."""
        ...

    def show_page(self, key: str) -> QWidget:
        """Switch to the page called `key` and return it."""
        ...

    def show_status(self, text: str, timeout_ms: int = 10000) -> None:
        """A short message in the status bar (0 keeps it until the next one)."""
        ...

    def on_close(self, handler: Callable[[], None]) -> None:
        """Run `handler` when the window closes (pages stop their work there)."""
        ...

    def services_page(self) -> ServicesPage:
        """The Services page, created if need be (it owns the New service dialog)."""
        ...

    def playground_page(self) -> PlaygroundPage:
        """The Playground page, created if need be, without showing it."""
        ...

    def compare_page(self) -> ComparePage:
        """The Compare page, created if need be, without showing it."""
        ...


@runtime_checkable
class SettlingPage(Protocol):
    """A page that loads in the background when shown, and can be awaited until it is done
    (screenshots and tests wait for it)."""

    async def settle(self) -> None: ...
