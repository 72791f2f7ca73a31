"""Render the PNG icon sizes from resources/icons/podlab.svg, in the hicolor theme layout.

Desktops and AppStream want bitmaps at fixed sizes next to the SVG; they are committed, and
made again with this script when the SVG changes:

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/render_icons.py [ICONS_FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

APP_ID = "io.github.podlab.Podlab"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"


def icon_path(size: int, icons: Path = ICONS) -> Path:
    """Where the PNG of `size` pixels lives (the hicolor theme's folder names)."""
    return icons / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"


def render(svg: Path, size: int) -> QImage:
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def main(icons: Path = ICONS) -> int:
    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    svg = icons / "podlab.svg"
    for size in SIZES:
        target = icon_path(size, icons)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not render(svg, size).save(str(target), "PNG"):
            print(f"render_icons: could not write {target}", file=sys.stderr)
            return 1
        print(target.relative_to(icons.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ICONS))
