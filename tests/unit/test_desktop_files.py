"""The desktop entry, MIME type, AppStream metainfo and icons, as a distribution accepts them."""

from __future__ import annotations

import configparser
import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

ROOT = Path(__file__).resolve().parents[2]
# packaging/ is a folder of scripts, not a package (PyPI's `packaging` owns that name).
_spec = importlib.util.spec_from_file_location("render_icons", ROOT / "packaging/render_icons.py")
assert _spec is not None and _spec.loader is not None
render_icons = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_icons)
RESOURCES = ROOT / "resources"
APP_ID = "io.github.podlab.Podlab"
DESKTOP = RESOURCES / f"{APP_ID}.desktop"
METAINFO = RESOURCES / f"{APP_ID}.metainfo.xml"
MIME_XML = RESOURCES / "mime" / f"{APP_ID}.xml"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DESKTOP, encoding="utf-8")
    return parser["Desktop Entry"]


def test_desktop_entry_passes_desktop_file_validate() -> None:
    result = _run("desktop-file-validate", str(DESKTOP))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout  # not even a hint


def test_metainfo_passes_appstreamcli_validate() -> None:
    result = _run("appstreamcli", "validate", "--no-net", "--explain", str(METAINFO))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "W:" not in result.stdout and "E:" not in result.stdout, result.stdout


def test_metainfo_has_screenshots_releases_and_content_rating() -> None:
    root = ET.parse(METAINFO).getroot()
    assert root.findtext("id") == APP_ID
    assert root.find("launchable").text == DESKTOP.name  # type: ignore[union-attr]
    assert root.find("content_rating") is not None
    from podlab import __version__

    releases = [release.get("version") for release in root.iter("release")]
    assert __version__ in releases
    shots = [image.text or "" for image in root.iter("image")]
    assert shots, "no screenshots"
    for url in shots:  # each one a README picture that exists in docs/
        name = url.rsplit("/", 1)[-1]
        assert (ROOT / "docs" / name).is_file(), url
        assert f"docs/{name}" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_app_id_is_the_same_everywhere() -> None:
    entry = _desktop_entry()
    assert entry["Icon"] == APP_ID
    assert ET.parse(METAINFO).getroot().findtext("icon") == APP_ID
    assert f'setDesktopFileName("{APP_ID}")' in (ROOT / "app/podlab/ui/app.py").read_text()
    assert render_icons.APP_ID == APP_ID


def test_gguf_files_open_in_podlab_through_the_mime_type(tmp_path: Path) -> None:
    """The entry claims the type the MIME XML defines, and the shared MIME database built from
    that XML recognises a .gguf file by name and a renamed one by its GGUF magic."""
    entry = _desktop_entry()
    mime_types = {item for item in entry["MimeType"].split(";") if item}
    defined = {
        node.get("type") for node in ET.parse(MIME_XML).getroot() if node.tag.endswith("mime-type")
    }
    assert mime_types == defined == {"application/x-gguf"}
    assert "%f" in entry["Exec"] or "%F" in entry["Exec"]

    packages = tmp_path / "mime" / "packages"
    packages.mkdir(parents=True)
    (packages / MIME_XML.name).write_bytes(MIME_XML.read_bytes())
    built = _run("update-mime-database", "-V", str(tmp_path / "mime"))
    assert built.returncode == 0, built.stderr
    globs = (tmp_path / "mime" / "globs2").read_text()
    assert "application/x-gguf:*.gguf" in globs
    magic = (tmp_path / "mime" / "magic").read_bytes()
    assert b"application/x-gguf" in magic and b"GGUF" in magic


@pytest.mark.parametrize("size", render_icons.SIZES)
def test_png_icons_are_rendered_from_the_svg_at_each_size(size: int, qapp) -> None:  # type: ignore[no-untyped-def]
    committed = QImage(str(render_icons.icon_path(size)))
    assert (committed.width(), committed.height()) == (size, size)
    fresh = render_icons.render(RESOURCES / "icons" / "podlab.svg", size)
    assert committed.convertToFormat(fresh.format()) == fresh, (
        "the PNGs are older than the SVG: run packaging/render_icons.py"
    )


def test_render_script_writes_every_size(tmp_path: Path) -> None:
    icons = tmp_path / "icons"
    icons.mkdir()
    (icons / "podlab.svg").write_bytes((RESOURCES / "icons" / "podlab.svg").read_bytes())
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "packaging/render_icons.py"), str(icons)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for size in render_icons.SIZES:
        assert QImage(str(render_icons.icon_path(size, icons))).width() == size
