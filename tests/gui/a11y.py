"""Walks a widget tree for interactive controls that a screen reader would announce unnamed."""

from __future__ import annotations

from PySide6.QtGui import QAccessible
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QHeaderView,
    QLineEdit,
    QPlainTextEdit,
    QScrollBar,
    QTabBar,
    QTextEdit,
    QWidget,
)

INTERACTIVE = (
    QAbstractButton,
    QLineEdit,
    QComboBox,
    QAbstractSpinBox,
    QAbstractSlider,
    QAbstractItemView,
    QTextEdit,
    QPlainTextEdit,
    QTabBar,
)


def accessible_name(widget: QWidget) -> str:
    """The name Qt gives assistive technology: accessibleName(), else what Qt derives (a
    button's text, a buddy label's text)."""
    interface = QAccessible.queryAccessibleInterface(widget)
    if interface is None:
        return widget.accessibleName()
    return interface.text(QAccessible.Text.Name).replace("&", "").strip()


def unnamed_controls(root: QWidget) -> list[str]:
    """Each interactive control under `root` without an accessible name, as a readable path."""
    missing = []
    for widget in root.findChildren(QWidget):
        if not isinstance(widget, INTERACTIVE) or _is_internal(widget):
            continue
        if not accessible_name(widget):
            missing.append(_describe(widget))
    return missing


def _is_internal(widget: QWidget) -> bool:
    """Parts Qt builds inside other controls (a combo box's editor and popup list, a spin
    box's line edit, a line edit's clear button, a view's headers and scroll bars): the outer
    control carries the name."""
    if isinstance(widget, (QHeaderView, QScrollBar)) or widget.objectName().startswith("qt_"):
        return True
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, (QComboBox, QAbstractSpinBox, QLineEdit)):
            return True
        parent = parent.parentWidget()
    return False


def _describe(widget: QWidget) -> str:
    chain = []
    node: QWidget | None = widget
    while node is not None:
        chain.append(node.objectName() or type(node).__name__)
        node = node.parentWidget()
    return f"{type(widget).__name__} ({' < '.join(chain[:4])})"
