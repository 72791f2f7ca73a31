"""Light and dark: follow the system by default (Qt's colour-scheme hint), or force one.

Forcing a scheme also sets an explicit Fusion palette, because some platforms (and the
offscreen one used for screenshots) ignore the colour-scheme hint.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication


def dark_palette() -> QPalette:
    palette = QPalette()
    role = QPalette.ColorRole
    colors = {
        role.Window: "#202124",
        role.WindowText: "#e8eaed",
        role.Base: "#17181a",
        role.AlternateBase: "#26282b",
        role.ToolTipBase: "#303134",
        role.ToolTipText: "#e8eaed",
        role.Text: "#e8eaed",
        role.Button: "#2b2d30",
        role.ButtonText: "#e8eaed",
        role.BrightText: "#ff6b6b",
        role.Link: "#8ab4f8",
        role.Highlight: "#3b5bdb",
        role.HighlightedText: "#ffffff",
        role.PlaceholderText: "#9aa0a6",
    }
    for color_role, value in colors.items():
        palette.setColor(color_role, QColor(value))
    disabled = QPalette.ColorGroup.Disabled
    for color_role in (role.Text, role.WindowText, role.ButtonText):
        palette.setColor(disabled, color_role, QColor("#7f8388"))
    return palette


def apply_theme(app: QApplication, theme: str) -> None:
    """Fusion draws the same everywhere and switches palettes with the colour scheme."""
    app.setStyle("Fusion")
    if theme == "system" and not app.property("podlab-theme-forced"):
        # Qt follows the system by default. Nothing to undo, so the Qt namespace (whose enums
        # cost 14 ms to build on first use) is not touched before the window is shown.
        return
    from PySide6.QtCore import Qt

    schemes = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}
    app.styleHints().setColorScheme(schemes.get(theme, Qt.ColorScheme.Unknown))
    app.setProperty("podlab-theme-forced", theme != "system")
    if theme == "dark":
        app.setPalette(dark_palette())
    elif theme == "light":
        app.setPalette(app.style().standardPalette())
    else:
        app.setPalette(QPalette())  # back to the platform's palette
