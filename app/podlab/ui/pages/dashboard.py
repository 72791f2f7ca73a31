"""Dashboard: the container engine, the local engine (with a self-test: one tiny real
inference), the host, every GPU with a diagnosis and its fix, the disk used by models and the
running services, each on a card.

Every fact comes from core (engine, gpu, hardware, store, services); the page only lays them
out. Each card loads on its own, so a slow `nvidia-smi` never holds the engine card back, and
a failure in one card is shown on that card instead of breaking the page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import shiboken6
from PySide6.QtCore import Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication, QShowEvent
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.ui import background
from podlab.ui.page_host import PageHost

# The Dashboard is the first page most starts show, and it paints before its facts load: what
# reads them (Podman, GPUs, the store, the services, httpx underneath) is imported when the
# first refresh runs, after the first paint.
if TYPE_CHECKING:
    import asyncio

    from podlab.core.models.hardware import HostFacts
    from podlab.core.serving.engine import Engine, EngineStatus
    from podlab.core.serving.gpu.detect import GpuReport
    from podlab.core.serving.gpu.host import Diagnosis, GpuInfo, HostProbe
    from podlab.core.serving.local_server import LocalEngine
    from podlab.core.serving.selftest import SelfTestResult
    from podlab.ui.download_bridge import DownloadBridge
    from podlab.ui.service_bridge import ServiceBridge

log = logging.getLogger(__name__)

LEVEL_COLOURS = {
    "ok": "#2e7d32",
    "warning": "#a15c00",
    "error": "#c62828",
    "info": "#546e7a",
}
"""Chip backgrounds with white text: readable on the light and the dark palette alike."""
LEVEL_SYMBOLS = {"ok": "✔", "warning": "⚠", "error": "✖", "info": "ℹ"}
VENDOR_NAMES = {
    "nvidia": "NVIDIA",
    "amd": "AMD",
    "intel": "Intel",
    "apple": "Apple",
    "wsl": "Windows (WSL)",
}
NO_GPU_TEXT = "No GPU found — services run on the CPU"
MAX_SERVICES_LISTED = 4

CARD_STYLE = """
QFrame#dashboard-card {
    background: palette(base);
    border: 1px solid palette(mid);
    border-radius: 10px;
}
QFrame#dashboard-card QLabel { background: transparent; }
QLabel#card-title { font-weight: 600; }
QLabel#card-muted { color: palette(placeholder-text); }
"""


def human_bytes(value: int | float | None) -> str:
    if value is None:
        return "unknown"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover (the loop always returns)


def fix_command_text(diagnosis: Diagnosis) -> str | None:
    """The fix command as a user pastes it into a terminal (with sudo when the fix says so)."""
    if not diagnosis.fix_command:
        return None
    import shlex

    command = shlex.join(diagnosis.fix_command)
    if diagnosis.fix and f"sudo {command}" in diagnosis.fix:
        return f"sudo {command}"
    return command


class Chip(QLabel):
    """A small coloured status word in a card's header."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card-chip")
        self.level = "info"
        self.set_level("info", "Checking…")

    def set_level(self, level: str, text: str) -> None:
        self.level = level
        self.setText(text)
        colour = LEVEL_COLOURS.get(level, LEVEL_COLOURS["info"])
        self.setStyleSheet(
            f"QLabel {{ background: {colour}; color: white; border-radius: 9px;"
            " padding: 2px 10px; font-weight: 600; }"
        )


class Card(QFrame):
    """A titled box with a status chip, lines of text and a row of buttons."""

    def __init__(self, key: str, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = key
        self.setObjectName("dashboard-card")
        self.setProperty("card", key)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.title = QLabel(title)
        self.title.setObjectName("card-title")
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.title.setFont(font)
        self.title.setWordWrap(True)
        self.chip = Chip()
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        # The chip stays at the top of a wrapped title: a stretch under it rather than
        # Qt.AlignmentFlag.AlignTop, because the Qt namespace builds all its enums on first use
        # (tens of milliseconds) and cards are made before the first paint.
        chip_column = QVBoxLayout()
        chip_column.addWidget(self.chip)
        chip_column.addStretch(1)
        header.addLayout(chip_column)
        self._body = QVBoxLayout()
        self._body.setSpacing(4)
        self._buttons = QHBoxLayout()
        self._buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 12, 14, 12)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addLayout(self._body)
        layout.addStretch(1)
        layout.addLayout(self._buttons)
        self.buttons: dict[str, QPushButton] = {}

    def set_status(self, level: str, text: str) -> None:
        self.chip.set_level(level, text)

    def clear(self) -> None:
        """Remove the lines and buttons (their connections go with them)."""
        for layout in (self._body, self._buttons):
            while layout.count():
                item = layout.takeAt(0)
                widget = item.widget() if item is not None else None
                if widget is not None:
                    widget.hide()
                    widget.deleteLater()
        self._buttons.addStretch(1)
        self.buttons.clear()

    def add_text(
        self, text: str, *, muted: bool = False, mono: bool = False, rich: bool = False
    ) -> QLabel:
        from PySide6.QtCore import Qt

        label = QLabel(text)
        label.setWordWrap(True)
        label.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.PlainText)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        if muted:
            label.setObjectName("card-muted")
        if mono:
            label.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self._body.addWidget(label)
        return label

    def add_url(self, url: str) -> QLineEdit:
        """A URL on one line: never wrapped inside the address; it scrolls when the card is
        narrow, and selects and copies whole."""
        field = QLineEdit(url)
        field.setObjectName("card-url")
        field.setReadOnly(True)
        field.setFrame(False)
        field.setStyleSheet("QLineEdit { background: transparent; }")
        field.setToolTip(url)
        field.setCursorPosition(0)
        self._body.addWidget(field)
        return field

    def add_diagnosis(self, diagnosis: Diagnosis) -> QLabel:
        colour = LEVEL_COLOURS.get(diagnosis.level, LEVEL_COLOURS["info"])
        symbol = LEVEL_SYMBOLS.get(diagnosis.level, "•")
        text = f'<span style="color:{colour}; font-weight:600">{symbol}</span> ' + _escape(
            diagnosis.message
        )
        if diagnosis.fix:
            text += f"<br><b>Fix:</b> {_escape(diagnosis.fix)}"
        return self.add_text(text, rich=True)

    def add_button(self, key: str, text: str, slot: Callable[[], Any]) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(f"{self.key}-{key}")
        button.clicked.connect(slot)
        self._buttons.addWidget(button)
        self.buttons[key] = button
        return button

    def text(self) -> str:
        """Everything the card says, as plain text (tests and accessibility read it)."""
        from PySide6.QtCore import Qt

        parts = [self.title.text(), self.chip.text()]
        for index in range(self._body.count()):
            item = self._body.itemAt(index)
            widget = item.widget() if item is not None else None
            if isinstance(widget, QLabel):
                doc = widget.text()
                if widget.textFormat() == Qt.TextFormat.RichText:
                    from PySide6.QtGui import QTextDocument

                    rich = QTextDocument()
                    rich.setHtml(doc)
                    doc = rich.toPlainText()
                parts.append(doc)
            elif isinstance(widget, QLineEdit):
                parts.append(widget.text())
        return "\n".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class CdiSpecDialog(QDialog):
    """Shows the CDI spec Podlab would write, and where, before anything is written."""

    def __init__(self, spec: dict[str, Any], path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("cdi-spec-dialog")
        self.setWindowTitle("Write a CDI spec for your NVIDIA GPU?")
        self.resize(720, 520)
        intro = QLabel(
            "Podman passes NVIDIA GPUs to containers through a CDI spec. None was found and the "
            "NVIDIA Container Toolkit (nvidia-ctk) is not installed, so Podlab made one from the "
            f"driver's own files. It will be written to <b>{_escape(str(path))}</b> (this needs "
            "administrator rights). Nothing is written unless you choose <i>Write spec</i>."
        )
        intro.setWordWrap(True)
        import shlex

        import yaml

        self.spec_yaml = yaml.safe_dump(spec, sort_keys=False)
        self.spec_text = QPlainTextEdit(self.spec_yaml)
        self.spec_text.setReadOnly(True)
        self.spec_text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.write_button = self.buttons.addButton(
            "Write spec", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.copy_button = self.buttons.addButton(
            "Copy as command", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.copy_button.setToolTip("A shell command that writes this spec with sudo")
        self.copy_button.clicked.connect(self.copy_command)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.command = (
            f"sudo mkdir -p {shlex.quote(str(path.parent))} && "
            f"sudo tee {shlex.quote(str(path))} > /dev/null <<'PODLAB_CDI'\n"
            f"{self.spec_yaml}PODLAB_CDI\n"
        )
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.spec_text, 1)
        layout.addWidget(self.buttons)

    def copy_command(self) -> None:
        """Put a `sudo tee` command writing the same spec on the clipboard."""
        QGuiApplication.clipboard().setText(self.command)
        self.copy_button.setText("Copied")


class DashboardPage(QWidget):
    """Cards over core facts; refreshes when shown (at most every few seconds) and on demand."""

    sig_refreshed = Signal()
    """Emitted after a refresh filled every card (also after a refresh that hit errors)."""

    sig_fix_copied = Signal(str)
    """Emitted with the command text after "Copy fix command" put it on the clipboard."""

    sig_selftest_done = Signal(object)
    """Emitted with the SelfTestResult after the local engine's self-test ended."""

    MIN_REFRESH_GAP = 5.0

    def __init__(self, lab: Lab, host: PageHost | None = None) -> None:
        super().__init__()
        self.title = "Dashboard"
        self._lab = lab
        self._host = host
        self._probe: HostProbe | None = None
        self.cdi_spec_path: Path | None = None
        """Where "Write CDI spec" writes; None: PODLAB_CDI_SPEC_PATH under the probe's root."""
        self._local_engine: LocalEngine | None = None
        self._local_state: tuple[bool, str] = (False, "")
        self.selftest: SelfTestResult | None = None
        """The local engine's last self-test (None while it runs or before it ran)."""
        self._selftest_task: asyncio.Task[None] | None = None
        self._models: DownloadBridge | None = None
        self._services: ServiceBridge | None = None
        self._detached = False
        if host is not None:
            host.on_close(self.detach)
        self.last_engine_status: EngineStatus | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._last_refresh = -1e9
        self.last_report: GpuReport | None = None
        self.last_facts: HostFacts | None = None
        self.active_dialog: QDialog | None = None
        """The consent dialog now open (tests click its buttons)."""

        self.setStyleSheet(CARD_STYLE)
        heading = QLabel("<h2>Dashboard</h2>")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setObjectName("dashboard-refresh")
        self.refresh_button.clicked.connect(self.refresh_soon)
        top = QHBoxLayout()
        top.addWidget(heading, 1)
        top.addWidget(self.refresh_button)

        self.engine_card = Card("engine", "Container engine")
        self.local_card = Card("local", "Local engine")
        self.host_card = Card("host", "This computer")
        self.models_card = Card("models", "Models on disk")
        self.services_card = Card("services", "Services")
        self.gpu_cards: list[Card] = []

        grid = QGridLayout()
        grid.setSpacing(12)
        grid.addWidget(self.engine_card, 0, 0, 1, 2)
        grid.addWidget(self.local_card, 0, 2)
        grid.addWidget(self.host_card, 1, 0)
        grid.addWidget(self.models_card, 1, 1)
        grid.addWidget(self.services_card, 1, 2)
        for column in range(3):
            grid.setColumnStretch(column, 1)
        gpu_heading = QLabel("<h3>GPUs</h3>")
        self.gpu_box = QVBoxLayout()
        self.gpu_box.setSpacing(12)

        inner = QWidget()
        inner.setObjectName("dashboard-inner")
        page_column = QVBoxLayout(inner)
        page_column.setContentsMargins(0, 0, 8, 0)
        page_column.addLayout(grid)
        page_column.addWidget(gpu_heading)
        page_column.addLayout(self.gpu_box)
        page_column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(inner)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(scroll, 1)

    @property
    def probe(self) -> HostProbe:
        """How GPUs are detected; tests point it at a fake /sys, /dev and /etc/cdi tree."""
        if self._probe is None:
            from podlab.core.serving.gpu.host import HostProbe

            self._probe = HostProbe()
        return self._probe

    @probe.setter
    def probe(self, probe: HostProbe) -> None:
        self._probe = probe

    def _local(self) -> LocalEngine:
        if self._local_engine is None:
            from podlab.core.serving.local_server import LocalEngine

            self._local_engine = LocalEngine(self._lab.locations)
        return self._local_engine

    def _attach(self) -> None:
        """Connect to the shared bridges at the first refresh (they import the store, the
        services and httpx, which the first paint does not need)."""
        if self._detached or self._models is not None:
            return
        from podlab.ui.download_bridge import bridge_for
        from podlab.ui.service_bridge import service_bridge_for

        self._models = bridge_for(self._lab)
        self._models.sig_store_changed.connect(self._on_store_changed)
        self._services = service_bridge_for(self._lab)
        self._services.sig_service_event.connect(self._on_service_event)

    def detach(self) -> None:
        """Disconnect from the shared bridges, which outlive the page; end the self-test."""
        self._detached = True
        if self._selftest_task is not None and not self._selftest_task.done():
            self._selftest_task.cancel()
        if self._models is not None:
            self._models.sig_store_changed.disconnect(self._on_store_changed)
            self._models = None
        if self._services is not None:
            self._services.sig_service_event.disconnect(self._on_service_event)
            self._services = None

    def _on_store_changed(self) -> None:
        self._last_refresh = -1e9  # stale: the next show refreshes
        if self.isVisible():
            self.refresh_soon()

    # ------------------------------------------------------------------ loading

    def cards(self) -> list[Card]:
        return [
            self.engine_card,
            self.local_card,
            self.host_card,
            self.models_card,
            self.services_card,
            *self.gpu_cards,
        ]

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        background.when_loop_ready(self._refresh_if_stale)

    def _refresh_if_stale(self) -> None:
        import asyncio

        loop = asyncio.get_event_loop_policy().get_event_loop()
        if loop.time() - self._last_refresh > self.MIN_REFRESH_GAP:
            self.refresh_soon()

    def refresh_soon(self) -> asyncio.Task[None]:
        """Start a refresh unless one is running; returns the task doing it."""
        import asyncio

        self._attach()
        if self._refresh_task is None or self._refresh_task.done():
            loop = asyncio.get_event_loop_policy().get_event_loop()
            self._last_refresh = loop.time()
            self._refresh_task = background.start(self.refresh(), "refresh the dashboard")
        return self._refresh_task

    async def settle(self) -> None:
        """Await the load that showing the page started (for screenshots and tests)."""
        await self.refresh_soon()

    async def refresh(self) -> None:
        import asyncio

        self.refresh_button.setEnabled(False)
        try:
            await asyncio.gather(
                self._guard(self.engine_card, self._load_engine),
                self._guard(self.local_card, self._load_local),
                self._guard(self.host_card, self._load_hardware),
                self._guard(self.models_card, self._load_models),
                self._guard(self.services_card, self._load_services),
            )
        finally:
            if shiboken6.isValid(self.refresh_button):  # the page may close meanwhile
                self.refresh_button.setEnabled(True)
                self.sig_refreshed.emit()

    async def _guard(self, card: Card, load: Callable[[], Awaitable[None]]) -> None:
        """Run one card's load; an unexpected failure is said on that card only."""
        import asyncio

        try:
            await load()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one broken fact must not hide the others
            if not isinstance(exc, PodlabError):
                log.error("a dashboard card failed to load", exc_info=True)
            card.clear()
            card.set_status("error", "Error")
            message = (
                exc.message if isinstance(exc, PodlabError) else f"{type(exc).__name__}: {exc}"
            )
            card.add_text(f"Could not read this: {message}")
            if isinstance(exc, PodlabError) and exc.hint:
                card.add_text(exc.hint, muted=True)

    # ------------------------------------------------------------------ engine card

    def engine(self) -> Engine:
        """The app's one Podman connection (`connect()` discovers it afresh on every refresh)."""
        return self._lab.engine

    async def _load_engine(self) -> None:
        from podlab.core.serving.engine import INIT_MISSING_FIX, install_hint

        status = await self.engine().connect()
        self.last_engine_status = status
        card = self.engine_card
        card.clear()
        if status.available:
            card.set_status("ok", "Running")
            card.add_text(f"Podman {status.version}")
            card.add_text(f"API socket: {status.url}", muted=True)
            if status.transport == "ssh":
                card.add_text("Reached through an SSH tunnel.", muted=True)
            if status.source:
                card.add_text(f"Found through: {status.source}", muted=True)
            if status.limits:
                card.set_status("warning", "Remote")
                card.add_text(status.limits)
            if status.has_init is False:
                card.set_status("warning", "Running, catatonit missing")
                card.add_text(
                    "catatonit, Podman's init process, is not installed: services start without "
                    f"it. Fix: {INIT_MISSING_FIX}"
                )
            card.add_text(
                "Services run in containers with ports published on "
                f"{self._lab.settings.bind_address}.",
                muted=True,
            )
            return
        installed = bool(status.cli)
        card.set_status("error", "Not running" if installed else "Not found")
        card.add_text(status.problem or "Podman not found")
        if status.cli:
            card.add_text(f"Podman command: {status.cli}", muted=True)
        if status.hint:
            card.add_text(f"How to fix: {status.hint}", muted=True)
        if not installed and "install" not in status.hint:
            card.add_text(
                f"The podman command is not found on this computer either; {install_hint()}",
                muted=True,
            )
        card.add_text("Until then, services use the local engine.", muted=True)
        if status.can_start_service:
            card.add_button("start-service", "Start Podman service…", self._on_start_service)

    def _on_start_service(self) -> None:
        background.start(self.start_podman_service(), "start the Podman service")

    async def start_podman_service(self) -> bool:
        """Ask first; then start `podman system service` for this user and refresh."""
        from podlab.ui.service_bridge import MessageDialog, ask

        engine = self.engine()
        hint = self.last_engine_status.hint if self.last_engine_status else ""
        _, _, for_good = hint.partition("enable it for good: ")
        dialog = MessageDialog(
            self,
            "Start the Podman service?",
            "Podman is installed but its API service is not running. Podlab can start "
            "`podman system service` now, as the user running Podlab; it keeps running in the "
            "background until you stop it or log out.",
            f"To have it start by itself from now on, run instead: {for_good}" if for_good else "",
            level="question",
            accept_text="Start service",
            reject_text="Cancel",
        )
        agreed = await ask(self, dialog)
        if not agreed:
            return False
        self.engine_card.set_status("info", "Starting…")
        try:
            status = await engine.start_user_service()
        except PodlabError as exc:
            self._warn("Podman service not started", exc)
            await self.refresh_soon()
            return False
        self._status(f"Podman {status.version} service started on {status.url}")
        await self.refresh_soon()
        return True

    # ------------------------------------------------------------------ local engine card

    async def _load_local(self) -> None:
        import asyncio

        self._local_state = await asyncio.to_thread(self._local().available)
        self._show_local()
        if self._local_state[0] and self.selftest is None:
            self.start_selftest()

    def _show_local(self) -> None:
        usable, line = self._local_state
        card = self.local_card
        card.clear()
        if not usable:
            card.set_status("warning", "Not installed")
            card.add_text(line)
            return
        result = self.selftest
        if result is not None and result.broken:
            card.set_status("error", "Crashed" if result.status == "crashed" else "Failed")
        else:
            card.set_status("ok", "Available")
        card.add_text(line)
        if result is None:
            card.add_text("Self-test: running one tiny inference…", muted=True)
            return
        card.add_text(f"Self-test: local engine: {result.summary}")
        if result.broken and result.log_tail:
            card.add_text(result.log_tail, mono=True)
        if result.fix_command:
            card.add_text(result.fix.removesuffix(result.fix_command).strip(), muted=True)
            card.add_text(result.fix_command, mono=True)
            command = result.fix_command
            card.add_button("copy-fix", "Copy fix command", lambda: self.copy_fix(command))
        elif result.fix:
            card.add_text(result.fix, muted=True)
        if not result.broken:
            card.add_text(
                "Runs llama.cpp in a process on this computer: used when Podman is absent or "
                "when a service asks for the local engine.",
                muted=True,
            )
        card.add_button("selftest", "Test again", self.start_selftest)

    def start_selftest(self) -> asyncio.Task[None]:
        """Run the self-test in the background (never holding the page's first paint); returns
        the task, or the one already running."""
        if self._selftest_task is None or self._selftest_task.done():
            self._selftest_task = background.start(
                self._run_selftest(), "self-test the local engine"
            )
        return self._selftest_task

    async def _run_selftest(self) -> None:
        import asyncio

        from podlab.core.serving.selftest import run_selftest, selftest_model

        self.selftest = None
        if shiboken6.isValid(self.local_card):
            self._show_local()
        store = self._models.store if self._models is not None else None
        model = await asyncio.to_thread(selftest_model, store) if store is not None else None
        result = await run_selftest(model, python=self._local().python)
        self.selftest = result
        if shiboken6.isValid(self.local_card):
            self._show_local()
            self.sig_selftest_done.emit(result)

    # ------------------------------------------------------------------ host and GPUs

    async def _load_hardware(self) -> None:
        import asyncio

        from podlab.core.models.hardware import read_host_facts
        from podlab.core.serving.gpu.detect import detect_gpus

        probe = self.probe
        report = await asyncio.to_thread(detect_gpus, probe)
        facts = await asyncio.to_thread(read_host_facts, probe, report.gpus)
        self.last_report, self.last_facts = report, facts
        self._show_host(facts)
        self._show_gpus(report)

    def _show_host(self, facts: HostFacts) -> None:
        card = self.host_card
        card.clear()
        card.set_status("ok", f"{facts.cpu_cores} CPU{'s' if facts.cpu_cores != 1 else ''}")
        card.add_text(facts.cpu_name)
        card.add_text(f"{facts.cpu_cores} logical CPUs usable by Podlab", muted=True)
        if facts.ram_total:
            card.add_text(
                f"RAM: {human_bytes(facts.ram_total)} total, "
                f"{human_bytes(facts.ram_available)} free now"
            )
        else:
            card.add_text("RAM: size unknown")

    def _show_gpus(self, report: GpuReport) -> None:
        from podlab.core.serving.gpu.passthrough import plan_passthrough

        for card in self.gpu_cards:
            self.gpu_box.removeWidget(card)
            card.hide()
            card.deleteLater()
        self.gpu_cards = []
        plans: dict[str, Diagnosis] = {}
        for gpu in report.gpus:
            if gpu.vendor not in plans:
                want = gpu.vendor if gpu.vendor in ("nvidia", "amd", "intel") else "auto"
                plans[gpu.vendor] = plan_passthrough(report, want).diagnosis
        shown: set[int] = set()
        for gpu in report.gpus:
            card = self._gpu_card(gpu, plans[gpu.vendor])
            shown.add(id(plans[gpu.vendor]))
            self._add_gpu_card(card)
        if not report.gpus:
            card = Card("gpu-none", NO_GPU_TEXT)
            card.set_status("info", "CPU only")
            card.add_text(
                "Podlab looked for NVIDIA (nvidia-smi, /proc/driver/nvidia), AMD (ROCm KFD), "
                "Intel (i915/xe) and Apple GPUs and found none. Models still run, more slowly, "
                "on the CPU.",
                muted=True,
            )
            self._add_gpu_card(card)
        for gpu in [*report.ignored, *report.hidden]:
            card = Card(f"gpu-unused-{gpu.vendor}-{gpu.index}", self._gpu_title(gpu))
            card.set_status("info", "Not used")
            card.add_text(self._gpu_facts(gpu), muted=True)
            self._add_gpu_card(card)
        notes = [d for d in report.diagnoses if id(d) not in shown]
        if notes:
            card = Card("gpu-notes", "Notes on GPUs and CDI specs")
            worst = max(notes, key=lambda d: ("ok", "warning", "error").index(d.level))
            card.set_status(
                worst.level, {"ok": "Info", "warning": "Check", "error": "Problem"}[worst.level]
            )
            for diagnosis in notes:
                card.add_diagnosis(diagnosis)
                self._fix_buttons(card, diagnosis, f"{len(card.buttons)}")
            self._add_gpu_card(card)

    def _add_gpu_card(self, card: Card) -> None:
        self.gpu_cards.append(card)
        self.gpu_box.addWidget(card)

    @staticmethod
    def _gpu_title(gpu: GpuInfo) -> str:
        vendor = VENDOR_NAMES.get(gpu.vendor, gpu.vendor)
        name = gpu.name if gpu.name.lower().startswith(vendor.lower()) else f"{vendor} {gpu.name}"
        return f"GPU {gpu.index}: {name}"

    @staticmethod
    def _gpu_facts(gpu: GpuInfo) -> str:
        from podlab.core.serving.gpu.host import GIB

        parts = [f"Vendor: {VENDOR_NAMES.get(gpu.vendor, gpu.vendor)}"]
        if gpu.memory_bytes:
            parts.append(f"VRAM: {gpu.memory_bytes / GIB:.1f} GiB")
        else:
            parts.append("VRAM: shared with the CPU or unknown")
        parts.append(f"Driver: {gpu.driver or 'unknown'}")
        if gpu.gfx_version:
            parts.append(gpu.gfx_version)
        return " · ".join(parts)

    def _gpu_card(self, gpu: GpuInfo, diagnosis: Diagnosis) -> Card:
        card = Card(f"gpu-{gpu.vendor}-{gpu.index}", self._gpu_title(gpu))
        card.set_status(
            diagnosis.level,
            {"ok": "Ready for Podman", "warning": "Check", "error": "Needs a fix"}[diagnosis.level],
        )
        card.add_text(self._gpu_facts(gpu))
        card.add_diagnosis(diagnosis)
        self._fix_buttons(card, diagnosis, "")
        return card

    def _fix_buttons(self, card: Card, diagnosis: Diagnosis, suffix: str) -> None:
        from podlab.core.serving.gpu.cdi import ACTION_GENERATE_CDI

        command = fix_command_text(diagnosis)
        if command:
            card.add_text(command, mono=True)
            card.add_button(f"copy-fix{suffix}", "Copy fix command", lambda: self.copy_fix(command))
        if diagnosis.action == ACTION_GENERATE_CDI:
            card.add_button(f"write-cdi{suffix}", "Write CDI spec…", self._on_write_cdi)

    def copy_fix(self, command: str) -> None:
        QGuiApplication.clipboard().setText(command)
        self.sig_fix_copied.emit(command)
        self._status(f"Copied: {command}")

    def _on_write_cdi(self) -> None:
        background.start(self.write_cdi_spec(), "write a CDI spec")

    async def write_cdi_spec(self) -> bool:
        """Generate the spec, show it, and write it only after the user chose "Write spec"."""
        import asyncio

        from podlab.core.serving.gpu.cdi import PODLAB_CDI_SPEC_PATH, generate_cdi_spec
        from podlab.core.serving.gpu.cdi import write_cdi_spec as write_spec
        from podlab.ui.service_bridge import ask

        try:
            spec = await asyncio.to_thread(generate_cdi_spec, self.probe)
        except PodlabError as exc:
            self._warn("No CDI spec written", exc)
            return False
        path = self.cdi_spec_path or self.probe.path(PODLAB_CDI_SPEC_PATH)
        dialog = CdiSpecDialog(spec, path, self)
        accepted = await ask(self, dialog)
        dialog.deleteLater()
        if not accepted:
            return False
        try:
            written = await asyncio.to_thread(write_spec, spec, path)
        except PodlabError as exc:
            hint = exc.hint + "; " if exc.hint else ""
            self._warn(
                "No CDI spec written",
                PodlabError(exc.message, hint + "or use “Copy as command” in the same dialog"),
            )
            return False
        self._status(f"CDI spec written to {written}")
        await self.refresh_soon()
        return True

    # ------------------------------------------------------------------ models and services

    async def _load_models(self) -> None:
        from podlab.core.text import plural

        if self._models is None:
            return
        usage = await self._models.disk_usage()
        card = self.models_card
        card.clear()
        card.set_status("ok" if usage.models else "info", plural(usage.models, "model"))
        card.add_text(f"{human_bytes(usage.used)} used by Podlab's own files")
        if usage.partial:
            card.add_text(f"of which {human_bytes(usage.partial)} unfinished downloads", muted=True)
        if usage.external:
            card.add_text(
                f"{human_bytes(usage.external)} in models imported in place or found in other "
                "tools (not counted above)",
                muted=True,
            )
        if usage.free is not None:
            card.add_text(f"{human_bytes(usage.free)} free on that disk", muted=True)
        card.add_text(str(usage.models_dir), muted=True)
        card.add_button("open", "Open Models", lambda: self._open_page("models"))

    async def _load_services(self) -> None:
        if self._services is None:
            return
        await self._services.refresh()
        self._show_services()

    def _on_service_event(self, _event: object) -> None:
        if self._services is not None and self.services_card.chip.text() != "Checking…":
            self._show_services()

    def _show_services(self) -> None:
        if self._services is None:
            return
        services = self._services.services()
        running = [s for s in services if s.state.running]
        card = self.services_card
        card.clear()
        card.set_status("ok" if running else "info", f"{len(running)} running")
        if not services:
            card.add_text("No services yet.")
            card.add_text(
                "Serve a downloaded model or a GGUF file from the Services page.", muted=True
            )
        for service in services[:MAX_SERVICES_LISTED]:
            line = f"{service.model_ref} — {service.state.value}"
            if service.state.running:
                line += f" · {service.device}"
            card.add_text(line)
            if service.state.running:
                card.add_url(service.api_url)
        if len(services) > MAX_SERVICES_LISTED:
            card.add_text(f"and {len(services) - MAX_SERVICES_LISTED} more", muted=True)
        problem = self._services.manager.engine_problem
        if problem:
            card.add_text("Podman services are not counted: Podman is not available.", muted=True)
        card.add_button("open", "Open Services", lambda: self._open_page("services"))

    def _open_page(self, key: str) -> None:
        if self._host is not None:
            self._host.show_page(key)

    # ------------------------------------------------------------------ messages

    def _status(self, text: str) -> None:
        if self._host is not None:
            self._host.show_status(text, 8000)

    def _warn(self, title: str, exc: PodlabError) -> None:
        from podlab.ui.service_bridge import MessageDialog, open_dialog

        box = MessageDialog(self, title, exc.message, exc.hint, level="warning")
        self.active_dialog = box
        box.finished.connect(self._forget_dialog)
        open_dialog(box)

    def _forget_dialog(self) -> None:
        self.active_dialog = None


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return DashboardPage(lab, host)


__all__ = ["NO_GPU_TEXT", "Card", "DashboardPage", "create_page"]
