"""Settings: a form over `core.settings.Settings`, showing problems of the file it came from."""

from __future__ import annotations

import dataclasses

import yaml
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.core.logs import log_file
from podlab.core.settings import ENGINES, SERVICES_ON_CLOSE, THEMES, Settings, save_settings
from podlab.ui.page_host import PageHost
from podlab.ui.theme import apply_theme

CHOICES = {"theme": THEMES, "engine": ENGINES, "services_on_close": SERVICES_ON_CLOSE}
LABELS = {
    "theme": "Theme",
    "engine": "Service engine",
    "services_on_close": "Services when closing",
    "podman_url": "Podman API URL",
    "models_dir": "Models folder",
    "bind_address": "Publish ports on",
    "use_host_ca_certificates": "Host CA certificates in builds",
    "max_parallel_downloads": "Parallel downloads",
    "download_stall_seconds": "Stall timeout (s)",
    "default_context_size": "Default context size",
    "server_images": "Model-server images (YAML)",
}


class SettingsPage(QWidget):
    def __init__(self, lab: Lab, host: PageHost | None = None) -> None:
        super().__init__()
        self._host = host
        self.title = "Settings"
        self._lab = lab
        self.editors: dict[str, QWidget] = {}
        form = QFormLayout()
        for item in dataclasses.fields(Settings):
            editor = self._make_editor(item.name, getattr(lab.settings, item.name))
            editor.setToolTip(Settings.help_text(item.name))
            self.editors[item.name] = editor
            form.addRow(LABELS.get(item.name, item.name), editor)
            hint = QLabel(Settings.help_text(item.name))
            hint.setWordWrap(True)
            hint.setEnabled(False)
            form.addRow("", hint)

        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setObjectName("settings-problems")
        self.location = QLabel(f"File: {lab.loaded_settings.path}")
        self.location.setEnabled(False)
        self.log_location = QLabel(f"Log file: {log_file() or lab.locations.log_file}")
        self.log_location.setObjectName("log-file")
        self.log_location.setToolTip(
            "Podlab's own log (errors with their details); attach it to a bug report. "
            "Start with --log-level debug for more."
        )
        self.log_location.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        save = QPushButton("Save")
        save.clicked.connect(self.save)
        buttons = QHBoxLayout()
        buttons.addWidget(self.location, 1)
        buttons.addWidget(save)

        inner = QWidget()
        inner.setLayout(form)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>Settings</h2>"))
        layout.addWidget(self.problems)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.log_location)
        self._show_problems()

    def _make_editor(self, name: str, value: object) -> QWidget:
        if name in CHOICES:
            combo = QComboBox()
            combo.addItems(CHOICES[name])
            combo.setCurrentText(str(value))
            return combo
        if isinstance(value, bool):
            check = QCheckBox()
            check.setChecked(value)
            return check
        if isinstance(value, int):
            spin = QSpinBox()
            spin.setRange(1, 1_048_576)
            spin.setValue(value)
            return spin
        if isinstance(value, float):
            dspin = QDoubleSpinBox()
            dspin.setRange(0.5, 3600)
            dspin.setValue(value)
            return dspin
        if isinstance(value, dict):
            text = QPlainTextEdit(yaml.safe_dump(value) if value else "")
            text.setPlaceholderText("cuda: quay.io/…@sha256:…")
            text.setFixedHeight(80)
            return text
        return QLineEdit(str(value))

    def _read_editor(self, name: str) -> object:
        editor = self.editors[name]
        if isinstance(editor, QComboBox):
            return editor.currentText()
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QSpinBox | QDoubleSpinBox):
            return editor.value()
        if isinstance(editor, QPlainTextEdit):
            parsed = yaml.safe_load(editor.toPlainText() or "{}")
            if not isinstance(parsed, dict):
                raise PodlabError("Model-server images must be lines of 'variant: image'")
            return {str(k): str(v) for k, v in parsed.items()}
        assert isinstance(editor, QLineEdit)
        return editor.text().strip()

    def _show_problems(self) -> None:
        errors = self._lab.loaded_settings.errors
        self.problems.setVisible(bool(errors))
        self.problems.setText(
            "<b>The settings file has problems; defaults are used for these values and the "
            "file was left as it is:</b><br>" + "<br>".join(str(error) for error in errors)
        )

    def save(self) -> None:
        loaded = self._lab.loaded_settings
        try:
            values = {name: self._read_editor(name) for name in self.editors}
        except (PodlabError, yaml.YAMLError) as exc:
            QMessageBox.warning(self, "Settings not saved", str(exc))
            return
        for name, value in values.items():
            setattr(loaded.settings, name, value)
        overwrite = False
        if loaded.file_is_broken:
            answer = QMessageBox.question(
                self,
                "Replace the broken settings file?",
                f"{loaded.path} has errors. Replace it with the values shown here?",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        try:
            save_settings(loaded, overwrite_broken=overwrite)
        except (PodlabError, OSError) as exc:
            QMessageBox.warning(self, "Settings not saved", str(exc))
            return
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, loaded.settings.theme)
        self._show_problems()
        if self._host is not None:
            self._host.show_status(f"Settings saved to {loaded.path}", 5000)


def create_page(lab: Lab, host: PageHost) -> QWidget:
    return SettingsPage(lab, host)
