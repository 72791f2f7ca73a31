"""The Models page on a real store: a real GGUF import, real discovery folders, real removal."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QLineEdit, QMessageBox

from podlab.core.lab import Lab
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.services import ServiceEvent
from podlab.core.tasks import TaskState
from podlab.ui.dialogs.new_service import NewServiceDialog
from podlab.ui.main_window import MainWindow
from podlab.ui.models.store_model import COL_SOURCE
from podlab.ui.pages.models import ModelsPage
from podlab.ui.pages.playground import PlaygroundPage
from podlab.ui.pages.services import ServicesPage
from podlab.ui.service_bridge import MessageDialog, service_bridge_for

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
def window(qtbot, qloop, no_foreign_stores):  # type: ignore[no-untyped-def]
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    bridge = service_bridge_for(win.lab)
    created: list[InferenceService] = []

    def remember(event: ServiceEvent) -> None:
        if event.kind == "added" and event.detail == "creating":
            created.append(event.service)

    bridge.sig_service_event.connect(remember)
    yield win
    bridge.sig_service_event.disconnect(remember)

    # Stop and delete the services this test started (local servers are detached processes).
    async def remove_created() -> None:
        for service in created:
            with contextlib.suppress(Exception):
                await bridge.manager.stop(service)
            with contextlib.suppress(Exception):
                await bridge.manager.delete(service)

    task = asyncio.ensure_future(remove_created())
    qtbot.waitUntil(task.done, timeout=60000)


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

    # Serve opens the Services page's New service dialog with this model chosen.
    with qtbot.waitSignal(page.sig_serve_requested, timeout=2000) as served:
        qtbot.mouseClick(page.serve_button, Qt.MouseButton.LeftButton)
    assert served.args == [entry.id]
    services = window.page("services")
    assert isinstance(services, ServicesPage)
    qtbot.waitUntil(lambda: isinstance(services.active_dialog, NewServiceDialog), timeout=20000)
    new_dialog = services.active_dialog
    assert isinstance(new_dialog, NewServiceDialog)
    assert new_dialog.model_combo.currentData() == str(entry.path)
    assert new_dialog.path_edit.text() == str(entry.path)
    new_dialog.reject()  # cancelled: nothing starts, the window stays here
    qtbot.waitUntil(lambda: services.active_dialog is None)
    assert window.current_page_key() == "models"
    assert [t for t in window.lab.tasks.tasks if t.kind == "service"] == []

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


# -- serving from the Models page: a real local llama-cpp-python service of SmolLM2 ---------------

START_TIMEOUT_MS = 180_000


def fill_local(dialog: NewServiceDialog) -> None:
    """The New service dialog as a user fills it here: the local engine, a small context."""
    dialog.set_choice(dialog.engine_combo, "local")
    dialog.ctx_spin.setValue(2048)
    dialog.threads_spin.setValue(2)


def playground_service(window: MainWindow) -> str | None:
    playground = window.page("playground")
    assert isinstance(playground, PlaygroundPage)
    return playground.picker.service_combo.currentData() or None


@OFFSCREEN_DIALOG
def test_serve_starts_a_real_service_shown_selected_and_open_in_playground_uses_it(
    window: MainWindow, qtbot, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    page = open_models(window, qtbot)
    entry = run(qtbot, page.import_path(smollm2_model))
    assert entry is not None and page.serve_button.isEnabled()
    assert page.playground_button.isEnabled()

    qtbot.mouseClick(page.serve_button, Qt.MouseButton.LeftButton)
    services = window.page("services")
    assert isinstance(services, ServicesPage)
    qtbot.waitUntil(lambda: isinstance(services.active_dialog, NewServiceDialog), timeout=20000)
    dialog = services.active_dialog
    assert isinstance(dialog, NewServiceDialog)
    assert dialog.model_combo.currentData() == str(entry.path)  # the same dialog, pre-filled
    fill_local(dialog)
    dialog.start_button.click()

    # The window shows the Services page; the start is a task of the Tasks page.
    qtbot.waitUntil(lambda: window.current_page_key() == "services", timeout=20000)
    task = services.last_task
    assert task is not None and task.kind == "service"
    assert task in window.lab.tasks.tasks
    qtbot.waitUntil(lambda: task.state.finished, timeout=START_TIMEOUT_MS)
    assert task.state is TaskState.DONE, f"{task.error}\n" + "\n".join(task.log)
    service = services.selected()
    assert service is not None and service.state is ServiceState.READY
    assert service.engine == "local" and service.model_file == str(entry.path)
    assert services.details.service is service

    # Open in Playground from the Models page: the Playground with that service selected.
    window.show_page("models")
    qtbot.mouseClick(page.playground_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.current_page_key() == "playground", timeout=20000)
    qtbot.waitUntil(lambda: playground_service(window) == service.id, timeout=20000)
    playground = window.page("playground")
    assert isinstance(playground, PlaygroundPage)
    assert playground.picker.endpoint().startswith(service.endpoint)
    assert services.active_dialog is None  # nothing was asked: it was ready


@OFFSCREEN_DIALOG
def test_open_in_playground_without_a_service_offers_to_serve_and_selects_it_when_ready(
    window: MainWindow, qtbot, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    page = open_models(window, qtbot)
    entry = run(qtbot, page.import_path(smollm2_model))
    assert entry is not None
    services = window.page("services")
    assert isinstance(services, ServicesPage)

    # Declining the offer changes nothing.
    qtbot.mouseClick(page.playground_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: isinstance(services.active_dialog, MessageDialog), timeout=20000)
    services.active_dialog.reject_button.click()
    qtbot.waitUntil(lambda: services.active_dialog is None)
    assert window.current_page_key() == "models"

    # Accepting it: the New service dialog with the model, then the Playground.
    qtbot.mouseClick(page.playground_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: isinstance(services.active_dialog, MessageDialog), timeout=20000)
    question = services.active_dialog
    assert entry.name in question.text_label.text()
    question.accept_button.click()
    qtbot.waitUntil(lambda: isinstance(services.active_dialog, NewServiceDialog), timeout=20000)
    dialog = services.active_dialog
    assert dialog.model_combo.currentData() == str(entry.path)
    fill_local(dialog)
    dialog.start_button.click()
    qtbot.waitUntil(lambda: window.current_page_key() == "playground", timeout=20000)
    task = services.last_task
    assert task is not None and task.kind == "service"
    qtbot.waitUntil(lambda: task.state.finished, timeout=START_TIMEOUT_MS)
    assert task.state is TaskState.DONE, f"{task.error}\n" + "\n".join(task.log)
    service = services.selected()
    assert service is not None and service.state is ServiceState.READY
    qtbot.waitUntil(lambda: playground_service(window) == service.id, timeout=20000)


@OFFSCREEN_DIALOG
def test_an_imported_catalog_file_is_recognised_in_the_catalog_and_served_from_its_row(
    window: MainWindow, qtbot, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    """The real SmolLM2 file is byte for byte the bundled catalog's SmolLM2 (its sha256 is the
    catalog's): once hashed in the background it is that entry, on this machine, named so."""
    from podlab.ui.pages.catalog import CatalogPage

    page = open_models(window, qtbot)
    entry = run(qtbot, page.import_path(smollm2_model))
    assert entry is not None
    assert entry.name == "SmolLM2-135M-Instruct.Q4_1"  # the file's name, not the GGUF's own
    (task,) = [t for t in window.lab.tasks.tasks if t.kind == "import"]
    qtbot.waitUntil(lambda: task.state.finished, timeout=60000)
    assert task.state is TaskState.DONE, task.error
    assert "smollm2-135m-instruct:Q4_1" in task.detail

    qtbot.waitUntil(lambda: page.current_entry() is not None, timeout=10000)
    qtbot.waitUntil(lambda: page.current_entry().name == "SmolLM2 135M Instruct", timeout=10000)
    catalog = window.show_page("catalog")
    assert isinstance(catalog, CatalogPage)
    qtbot.waitUntil(catalog._loading.done, timeout=30000)
    qtbot.waitUntil(lambda: catalog.source.is_ready("smollm2-135m-instruct:Q4_1"), timeout=10000)
    assert catalog.select_model("smollm2-135m-instruct")
    details = catalog.details
    assert details.state_label.text() == f"Downloaded: {smollm2_model.resolve()}"
    assert details.serve_button.isEnabled()
    qtbot.mouseClick(details.serve_button, Qt.MouseButton.LeftButton)
    services = window.page("services")
    assert isinstance(services, ServicesPage)
    qtbot.waitUntil(lambda: isinstance(services.active_dialog, NewServiceDialog), timeout=20000)
    assert services.active_dialog.model_combo.currentData() == str(smollm2_model.resolve())
    services.active_dialog.reject()
    qtbot.waitUntil(lambda: services.active_dialog is None)
