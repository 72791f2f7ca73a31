"""The selected service's details: overview, live log and client code to copy."""

from __future__ import annotations

from PySide6.QtCore import (
    Qt,
    Signal,
)
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.snippets import Snippet, snippets
from podlab.core.text import plural
from podlab.ui.models.services_model import BADGE_COLOURS, ENGINE_TITLES, device_badge

LOG_LINES_KEPT = 5000


class SnippetPane(QWidget):
    """One client snippet, read-only, with a Copy button."""

    def __init__(self, owner: ServiceDetails, snippet_key: str) -> None:
        super().__init__()
        self.key = snippet_key
        self._owner = owner
        self.code = QPlainTextEdit()
        self.code.setObjectName(f"snippet-{snippet_key}")
        self.code.setAccessibleName(f"Client code: {snippet_key}")
        self.code.setReadOnly(True)
        self.code.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.code.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setObjectName(f"copy-{snippet_key}")
        self.copy_button.clicked.connect(self.copy)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.code, 1)
        layout.addLayout(row)

    def set_snippet(self, snippet: Snippet | None) -> None:
        code = snippet.code if snippet else ""
        if self.code.toPlainText() != code:  # keep the user's selection across refreshes
            self.code.setPlainText(code)
        self.copy_button.setEnabled(snippet is not None)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.code.toPlainText())
        self._owner.sig_snippet_copied.emit(self.key)


class ServiceDetails(QWidget):
    """The selected service: actions, overview, live logs and client snippets."""

    sig_snippet_copied = Signal(str)
    """Emitted with the snippet key ("curl", "python-openai", ...) after Copy."""

    SNIPPET_TABS = (
        ("curl", "curl"),
        ("python-openai", "Python (openai)"),
        ("python-httpx", "Python (httpx)"),
        ("javascript", "JavaScript (fetch)"),
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service: InferenceService | None = None
        self.title = QLabel()
        self.title.setObjectName("service-title")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.restart_button = QPushButton("Restart")
        self.delete_button = QPushButton("Delete…")
        self.playground_button = QPushButton("Open in Playground")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip(
            "Preview and write this service as a model image, Kubernetes YAML, KServe, Quadlet "
            "or Compose"
        )
        actions = QHBoxLayout()
        actions.addWidget(self.title, 1)
        for button in (
            self.start_button,
            self.stop_button,
            self.restart_button,
            self.delete_button,
            self.playground_button,
            self.export_button,
        ):
            actions.addWidget(button)

        self.overview = QLabel()
        self.overview.setObjectName("service-overview")
        self.overview.setWordWrap(True)
        self.overview.setTextFormat(Qt.TextFormat.RichText)
        self.overview.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.overview.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        overview_page = QWidget()
        overview_layout = QVBoxLayout(overview_page)
        overview_layout.addWidget(self.overview)
        overview_layout.addStretch(1)

        self.follow_check = QCheckBox("Follow")
        self.follow_check.setChecked(True)
        self.log_view = QPlainTextEdit()
        self.log_view.setAccessibleName("Service log")
        self.log_view.setObjectName("service-log")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES_KEPT)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_view.setPlaceholderText("The server's log appears here.")
        log_page = QWidget()
        log_layout = QVBoxLayout(log_page)
        log_layout.setContentsMargins(4, 4, 4, 4)
        log_top = QHBoxLayout()
        log_top.addWidget(QLabel("Server log (stdout and stderr)"), 1)
        log_top.addWidget(self.follow_check)
        log_layout.addLayout(log_top)
        log_layout.addWidget(self.log_view, 1)

        self.snippet_tabs = QTabWidget()
        self.snippet_tabs.setObjectName("snippet-tabs")
        self.snippet_panes: dict[str, SnippetPane] = {}
        for key, title in self.SNIPPET_TABS:
            pane = SnippetPane(self, key)
            self.snippet_panes[key] = pane
            self.snippet_tabs.addTab(pane, title)

        self.tabs = QTabWidget()
        self.tabs.addTab(overview_page, "Overview")
        self.tabs.addTab(log_page, "Logs")
        self.tabs.addTab(self.snippet_tabs, "Client code")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(actions)
        layout.addWidget(self.tabs, 1)
        self.show_service(None)

    def show_service(self, service: InferenceService | None) -> None:
        """Fill the overview and snippets (the log is the page's job: it follows it)."""
        self.service = service
        for button in (
            self.start_button,
            self.stop_button,
            self.restart_button,
            self.delete_button,
            self.playground_button,
            self.export_button,
        ):
            button.setEnabled(False)
        if service is None:
            self.title.setText("<b>No service selected</b>")
            self.overview.setText("")
            for pane in self.snippet_panes.values():
                pane.set_snippet(None)
            return
        state = service.state
        busy = state in (ServiceState.CREATING,)
        self.start_button.setEnabled(not state.running and not busy)
        self.stop_button.setEnabled(state.running)
        self.restart_button.setEnabled(not busy)
        self.delete_button.setEnabled(not busy)
        self.playground_button.setEnabled(state == ServiceState.READY)
        self.export_button.setEnabled(not busy)
        self._set_text(self.title, f"<b>{_escape(service.name)}</b> — {state.value}")
        self._set_text(self.overview, self._overview_html(service))
        by_key = {
            s.key: s for s in snippets(service.api_url, service.model_ref, api_key=service.api_key)
        }
        for key, pane in self.snippet_panes.items():
            pane.set_snippet(by_key.get(key))

    @staticmethod
    def _set_text(label: QLabel, text: str) -> None:
        if label.text() != text:  # a periodic refresh must not drop the user's selection
            label.setText(text)

    @staticmethod
    def _overview_html(service: InferenceService) -> str:
        text, level, tip = device_badge(service)
        colour = BADGE_COLOURS.get(level, "")
        badge = (
            f'<span style="background:{colour}; color:white">&nbsp;{_escape(text)}&nbsp;</span>'
            if colour
            else _escape(text)
        )
        options = service.options
        model = f"{_escape(service.model_ref)}<br><small>{_escape(service.model_file)}</small>"
        engine = f"{ENGINE_TITLES.get(service.engine, service.engine)} · {service.server_kind}"
        asked = service.gpu_vendor if service.gpu_vendor != "none" else "none (CPU)"
        context = f"{options.ctx_size} tokens"
        if options.gpu_layers is not None:
            context += f" · {options.gpu_layers} GPU layers"
        if options.threads:
            context += f" · {plural(options.threads, 'thread')}"
        if options.parallel:
            context += f" · {plural(options.parallel, 'slot')}"
        rows = [
            ("Endpoint", f"<code>{_escape(service.api_url)}</code> (OpenAI-compatible)"),
            (
                "Access",
                "a key is required (Playground and Compare use it; it is in Client code)"
                if service.api_key
                else "open: no key, any program or web page on this computer can use it",
            ),
            ("Model", model),
            ("Engine", _escape(engine)),
            ("Device", f"{badge} <small>{_escape(tip)}</small>"),
            ("GPU asked for", _escape(asked)),
            ("Context", context),
        ]
        if service.engine == "podman":
            rows.append(("Image", f"<small>{_escape(service.image or 'unknown')}</small>"))
            if service.container_id:
                rows.append(("Container", f"<code>{_escape(service.container_id[:12])}</code>"))
        elif service.pid:
            rows.append(("Process", f"pid {service.pid}"))
        if service.diagnosis is not None and service.diagnosis.level != "ok":
            fix = f"<br>Fix: {_escape(service.diagnosis.fix)}" if service.diagnosis.fix else ""
            colour = BADGE_COLOURS["error" if service.diagnosis.level == "error" else "warning"]
            rows.append(
                (
                    "GPU",
                    f'<span style="color:{colour}">{_escape(service.diagnosis.message)}</span>'
                    + fix,
                )
            )
        if service.error:
            error = _escape(service.error)
            rows.append(("Error", f'<span style="color:{BADGE_COLOURS["error"]}">{error}</span>'))
        body = "".join(
            f"<tr><td style='padding-right:12px'><b>{name}</b></td><td>{value}</td></tr>"
            for name, value in rows
        )
        return f"<table cellspacing='4'>{body}</table>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
