"""Light and dark: follow the system by default (Qt's colour-scheme hint), or force one."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

SCHEMES = {
    "system": Qt.ColorScheme.Unknown,
    "light": Qt.ColorScheme.Light,
    "dark": Qt.ColorScheme.Dark,
}


def apply_theme(app: QApplication, theme: str) -> None:
    """Fusion draws the same everywhere and switches palettes with the colour scheme."""
    app.setStyle("Fusion")
    app.styleHints().setColorScheme(SCHEMES.get(theme, Qt.ColorScheme.Unknown))


def is_dark(app: QApplication) -> bool:
    return app.styleHints().colorScheme() == Qt.ColorScheme.Dark
