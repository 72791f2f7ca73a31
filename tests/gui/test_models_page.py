"""The Models page on a real store: a real GGUF import, real discovery folders, real removal."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QLineEdit, QMessageBox

from podlab.core.lab import Lab
from podlab.ui.main_window import MainWindow
from podlab.ui.models.store_model import COL_SOURCE
from podlab.ui.pages.models import ModelsPage

pytestmark = pytest.mark.gui

# The offscreen platform plugin says this whenever a dialog window is shown; on a real screen
# it is silent. Only tests that open a confirmation dialog ignore it.
OFFSCREEN_DIALOG = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


@pytest.fixture
def no_foreign_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point Ollama, Hugging Face and RamaLama discovery at empty folders of this test."""
    roots = {
        "ollama": tmp_path / "ollama-models",
        "hf": tmp_path / "hf-hub",
        "ramalama": tmp_path / "ramalama",
    }
    monkeypatch.setenv("OLLAMA_MODELS", str(roots["ollama"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(roots["hf"]))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("RAMALAMA_STORE", str(roots["ramalama"]))
    return roots


@pytest.fixture
def window(qtbot, qloop, no_foreign_stores) -> MainWindow:  # type: ignore[no-untyped-def]
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    return win


def open_models(window: MainWindow, qtbot) -> ModelsPage:  # type: ignore[no-untyped-def]
    page = window.show_page("models")
    assert isinstance(page, ModelsPage)
    qtbot.waitUntil(page._loading.done, timeout=30000)
    assert page._loading.exception() is None
    return page


def run(qtbot, coro, timeout: int = 60000):  # type: ignore[no-untyped-def]
    future = asyncio.ensure_future(coro)
    qtbot.waitUntil(future.done, timeout=timeout)
    return future.result()


def test_empty_store_says_how_to_get_a_model(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = open_models(window, qtbot)
    assert page.source.rowCount() == 0
    assert page.empty.isVisible()
    assert "Catalog" in page.empty.text()
    assert page.disk_label.text().startswith("Podlab's models: 0 B")
    for button in (page.remove_button, page.resume_button, page.serve_button):
        assert not button.isEnabled()
    assert page.import_button.isEnabled()
    # Closing the window disconnects the page from the shared bridge (it outlives the page).
    window.close()
    assert not page._attached
    page.bridge.sig_store_changed.emit()  # reaches no page


@OFFSCREEN_DIALOG
def test_import_real_gguf_shows_metadata_and_remove_keeps_the_file(
    window: MainWindow, qtbot, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    page = open_models(window, qtbot)
    size_before = smollm2_model.stat().st_size
    # Through the real file dialog: the button opens it, the user picks the file.
    qtbot.mouseClick(page.import_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.active_dialog is not None and page.active_dialog.isVisible())
    dialog = page.active_dialog
    assert isinstance(dialog, QFileDialog)
    # The user types the path into the dialog's file name box.
    name_box = dialog.findChild(QLineEdit)
    assert name_box is not None
    name_box.setText(str(smollm2_model))
    qtbot.waitUntil(lambda: dialog.selectedFiles() == [str(smollm2_model)], timeout=10000)
    with qtbot.waitSignal(page.sig_model_imported, timeout=60000) as imported:
        dialog.accept()
    entry = page.current_entry()
    assert entry is not None and imported.args == [entry.id]
    assert page.entry_ids() == [entry.id]
    assert page.current_entry() is not None and page.current_entry().id == entry.id
    assert page.proxy.index(0, COL_SOURCE).data() == "Imported (your file)"
    gguf = page.facts["gguf"].text()
    assert "llama" in gguf and "Q4_1" in gguf and "135M parameters" in gguf
    assert "8,192 tokens" in gguf
    assert page.facts["path"].text() == str(smollm2_model.resolve())
    assert page.facts["template"].text().startswith("included")
    assert page.serve_button.isEnabled()
    assert not page.resume_button.isEnabled()
    assert "imported and other tools' models: 93.8 MiB" in page.disk_label.text()

    with qtbot.waitSignal(page.sig_serve_requested, timeout=2000) as served:
        qtbot.mouseClick(page.serve_button, Qt.MouseButton.LeftButton)
    assert served.args == [entry.id]

    # Remove: the confirmation says the user's file is not deleted, and it is not.
    qtbot.mouseClick(page.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.active_dialog is not None and page.active_dialog.isVisible())
    box = page.active_dialog
    assert isinstance(box, QMessageBox)
    assert "NOT deleted" in box.text()
    assert str(smollm2_model.resolve()) in box.text()
    confirm = next(b for b in box.buttons() if b.text() == "Remove from Podlab")
    qtbot.mouseClick(confirm, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.source.rowCount() == 0, timeout=10000)
    assert smollm2_model.is_file()
    assert smollm2_model.stat().st_size == size_before


@OFFSCREEN_DIALOG
def test_cancelling_remove_keeps_the_model(window: MainWindow, qtbot, smollm2_model: Path) -> None:  # type: ignore[no-untyped-def]
    page = open_models(window, qtbot)
    run(qtbot, page.import_path(smollm2_model))
    qtbot.mouseClick(page.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.active_dialog is not None and page.active_dialog.isVisible())
    box = page.active_dialog
    assert isinstance(box, QMessageBox)
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.active_dialog is None)
    assert page.source.rowCount() == 1


def test_importing_a_file_that_is_not_gguf_explains_why(
    window: MainWindow, qtbot, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    page = open_models(window, qtbot)
    notes = tmp_path / "notes.gguf"
    notes.write_text("just some text, not a model\n")
    assert run(qtbot, page.import_path(notes)) is None
    assert page.notice.isVisible()
    assert "is not a GGUF file" in page.notice.text()
    assert page.source.rowCount() == 0


def test_models_of_other_tools_are_listed_read_only(
    window: MainWindow, qtbot, no_foreign_stores: dict[str, Path]
) -> None:  # type: ignore[no-untyped-def]
    payload = b"GGUF" + os.urandom(4096)
    digest = hashlib.sha256(payload).hexdigest()
    # Ollama's layout: a manifest naming a model layer, the layer as a blob.
    ollama = no_foreign_stores["ollama"]
    (ollama / "blobs").mkdir(parents=True)
    (ollama / "blobs" / f"sha256-{digest}").write_bytes(payload)
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "tinyllama" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps(
            {
                "layers": [
                    {
                        "mediaType": "application/vnd.ollama.image.model",
                        "digest": f"sha256:{digest}",
                    }
                ]
            }
        )
    )
    # The Hugging Face cache's layout: a snapshot file linking to a blob.
    repo = no_foreign_stores["hf"] / "models--someone--tiny-GGUF"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / digest).write_bytes(payload)
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "tiny-Q8_0.gguf").symlink_to(Path("../../blobs") / digest)

    page = open_models(window, qtbot)
    sources = sorted(page.proxy.index(r, COL_SOURCE).data() for r in range(page.proxy.rowCount()))
    assert sources == ["Hugging Face cache (read-only)", "Ollama (read-only)"]
    for model_id in page.entry_ids():
        assert page.select(model_id)
        assert not page.remove_button.isEnabled()
        assert "remove it with" in page.remove_button.toolTip()
        assert page.serve_button.isEnabled()

    page.search.setText("tinyllama")
    assert page.proxy.rowCount() == 1
    page.search.setText("")
    assert page.proxy.rowCount() == 2
