"""The Export dialog from each place it opens: a recipe card and a running application (Recipes),
a service (Services) and a comparison pane (Compare). What it previews is what the export core
generates for that source, and Write writes exactly those files; real model store, real
llama-cpp-python service, real Podman for the running application."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podlab.core.export import ExportedFile, export_recipe, export_service
from podlab.core.lab import Lab
from podlab.core.serving.container_spec import ServiceOptions
from podlab.core.serving.gpu.host import HostProbe
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.planning import ServeRequest, resolve_model
from podlab.core.tasks import TaskState
from podlab.ui.dialogs.export import ExportDialog, ServiceExport
from podlab.ui.download_bridge import bridge_for
from podlab.ui.main_window import MainWindow
from podlab.ui.pages.compare import ComparePage
from podlab.ui.pages.recipes import RecipesPage
from podlab.ui.service_bridge import MessageDialog, open_dialog, service_bridge_for
from tests import harness
from tests.gui.a11y import unnamed_controls
from tests.gui.test_services_page import START_TIMEOUT_MS, open_services
from tests.gui.test_services_page import window as services_window  # noqa: F401 (a fixture)
from tests.recipe_harness import labelled_recipe_pod

pytestmark = pytest.mark.gui


def wait(qtbot: Any, coro: Any, timeout: int = 60000) -> Any:
    future = asyncio.ensure_future(coro)
    qtbot.waitUntil(future.done, timeout=timeout)
    return future.result()


def settled(qtbot: Any, dialog: ExportDialog) -> ExportDialog:
    wait(qtbot, dialog.settle())
    return dialog


def assert_previews(dialog: ExportDialog, expected: list[ExportedFile]) -> None:
    """The dialog lists exactly these files, and each one's preview is its text."""
    assert [f.path for f in dialog.files] == [f.path for f in expected]
    for exported in expected:
        assert dialog.show_file(exported.path), exported.path
        assert dialog.preview.toPlainText() == exported.text, exported.path
        assert dialog.current_file_path() == exported.path


def written(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
        for path in folder.rglob("*")
        if path.is_file()
    }


def open_recipes(lab: Lab, qtbot: Any) -> RecipesPage:
    window = MainWindow(lab)
    qtbot.addWidget(window)
    window.resize(1280, 800)
    page = window.show_page("recipes")
    window.show()
    assert isinstance(page, RecipesPage)
    wait(qtbot, page.settle())
    return page


@pytest.fixture
def lab_with_smollm2(smollm2_model: Path) -> Lab:
    lab = Lab.open()
    bridge_for(lab).store.import_gguf(smollm2_model)
    return lab


def test_a_recipe_card_previews_what_the_core_exports_and_writes_exactly_that(
    qtbot: Any, qloop: Any, lab_with_smollm2: Lab, gpu_less_host: HostProbe, tmp_path: Path
) -> None:
    lab = lab_with_smollm2
    page = open_recipes(lab, qtbot)
    page.gpu_probe = gpu_less_host  # Run would use the CPU here: so does the export
    assert page.select_recipe("chatbot")
    entry = page.current_recipe()
    assert entry is not None and page.export_button.isEnabled()
    page.export_button.click()
    qtbot.waitUntil(lambda: page.export_dialog is not None, timeout=20000)
    dialog = settled(qtbot, page.export_dialog)
    assert unnamed_controls(dialog) == []

    # The first recommended downloaded model, every format, no GPU.
    model_id = str(page.model_combo.currentData())
    assert dialog.model_combo.currentData() == model_id
    assert dialog.gpu_combo.currentData() == "none"
    digests = dialog.source.digests
    assert digests is not None
    model = resolve_model(model_id, lab.settings)
    expected = export_recipe(entry, model, settings=lab.settings, image_digests=digests)
    assert_previews(dialog, expected)
    assert "Nothing is written yet" in dialog.status_text()

    # Fewer formats and another GPU: the files follow the choices.
    dialog.format_checks["kserve"].setChecked(False)
    dialog.format_checks["compose"].setChecked(False)
    dialog.gpu_combo.setCurrentIndex(dialog.gpu_combo.findData("nvidia"))
    settled(qtbot, dialog)
    expected = export_recipe(
        entry,
        model,
        settings=lab.settings,
        gpu="nvidia",
        formats=("containerfile", "kube", "quadlet"),
        image_digests=digests,
    )
    assert_previews(dialog, expected)
    assert "nvidia.com/gpu" in next(f.text for f in expected if f.path == "kube/pod.yaml")

    # Write into a new folder: exactly the previewed files, and a done message.
    out = tmp_path / "exports" / "chatbot"
    dialog.folder_edit.setText(str(out))
    assert wait(qtbot, dialog.write()) is True
    assert written(out) == {f.path: f.text for f in expected}
    assert str(out) in dialog.status_text() and dialog.open_folder_button.isEnabled()

    # No formats: nothing to write, and it says why.
    for check in dialog.format_checks.values():
        check.setChecked(False)
    settled(qtbot, dialog)
    assert dialog.files == [] and not dialog.write_button.isEnabled()
    assert "Choose at least one format" in dialog.status_text()
    dialog.reject()


def test_a_folder_with_files_is_replaced_only_when_the_user_agrees(
    qtbot: Any, qloop: Any, lab_with_smollm2: Lab, gpu_less_host: HostProbe, tmp_path: Path
) -> None:
    page = open_recipes(lab_with_smollm2, qtbot)
    page.gpu_probe = gpu_less_host
    assert page.select_recipe("summarizer")
    page.export_button.click()
    qtbot.waitUntil(lambda: page.export_dialog is not None, timeout=20000)
    dialog = settled(qtbot, page.export_dialog)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    dialog.folder_edit.setText(str(out))

    # Cancel: nothing changes.
    writing = asyncio.ensure_future(dialog.write())
    qtbot.waitUntil(lambda: isinstance(dialog.active_dialog, MessageDialog), timeout=10000)
    question = dialog.active_dialog
    assert isinstance(question, MessageDialog)
    assert str(out) in question.text_label.text()
    assert question.reject_button is not None
    question.reject_button.click()
    qtbot.waitUntil(writing.done, timeout=10000)
    assert writing.result() is False
    assert written(out) == {"mine.txt": "keep me"}
    assert "Nothing was written" in dialog.status_text()

    # Replace: the folder holds the export and nothing else.
    writing = asyncio.ensure_future(dialog.write())
    qtbot.waitUntil(lambda: isinstance(dialog.active_dialog, MessageDialog), timeout=10000)
    dialog.active_dialog.accept_button.click()
    qtbot.waitUntil(writing.done, timeout=30000)
    assert writing.result() is True
    assert written(out) == {f.path: f.text for f in dialog.files}
    dialog.reject()


@pytest.fixture
def labelled_run(
    podman_env: harness.PodmanService, base_image: str, podman_client: Any, smollm2_model: Path
) -> Iterator[str]:
    """A pod labelled as the runner labels a chatbot run on an NVIDIA GPU with SmolLM2 (its
    model named as the page's runs name it: the file name without .gguf)."""
    with labelled_recipe_pod(
        podman_client, base_image, smollm2_model.name.removesuffix(".gguf"), 36998, gpu="nvidia"
    ) as run_id:
        yield run_id


def test_a_running_application_exports_with_its_model_and_gpu(
    qtbot: Any, qloop: Any, lab_with_smollm2: Lab, labelled_run: str
) -> None:
    lab = lab_with_smollm2
    page = open_recipes(lab, qtbot)
    assert page.select_run(labelled_run)
    assert page.export_run_button.isEnabled()
    page.export_run_button.click()
    qtbot.waitUntil(lambda: page.export_dialog is not None, timeout=20000)
    dialog = settled(qtbot, page.export_dialog)
    assert dialog.gpu_combo.currentData() == "nvidia"
    [stored] = [m for m in page.models]
    assert dialog.model_combo.currentData() == stored.id
    entry = lab_catalog_entry(page, "chatbot")
    expected = export_recipe(
        entry,
        resolve_model(stored.id, lab.settings),
        settings=lab.settings,
        gpu="nvidia",
        image_digests=dialog.source.digests,
    )
    assert_previews(dialog, expected)
    dialog.reject()


def lab_catalog_entry(page: RecipesPage, recipe_id: str) -> Any:
    entry = page.catalog.get(recipe_id)
    assert entry is not None
    return entry


def test_a_service_and_the_pane_that_won_export_as_they_were_tried(
    services_window: MainWindow,  # noqa: F811 (the fixture imported above)
    qtbot: Any,
    smollm2_model: Path,
    tmp_path: Path,
) -> None:
    window = services_window
    page = open_services(window, qtbot)
    request = ServeRequest(
        model=str(smollm2_model),
        engine="local",
        gpu="none",
        options=ServiceOptions(ctx_size=2048, threads=2),
    )
    task = wait(qtbot, page.start_new_service(request))
    assert task is not None
    qtbot.waitUntil(lambda: task.state.finished, timeout=START_TIMEOUT_MS)
    assert task.state is TaskState.DONE, f"{task.error}\n" + "\n".join(task.log)
    service = page.selected()
    assert service is not None and service.state is ServiceState.READY
    settings = window.lab.settings

    # Services page: Export… shows the service as it runs.
    assert page.details.export_button.isEnabled()
    page.details.export_button.click()
    dialog = page.export_dialog
    assert isinstance(dialog, ExportDialog)
    settled(qtbot, dialog)
    assert dialog.gpu_combo.currentData() == "none"
    assert not dialog.model_combo.isVisibleTo(dialog)  # one model: nothing to choose
    expected = export_service(service, settings=settings, image_digests=dialog.source.digests)
    assert_previews(dialog, expected)
    assert "ctx_size" in next(f.text for f in expected if f.path == "kube/pod.yaml")
    out = tmp_path / "service"
    dialog.folder_edit.setText(str(out))
    assert wait(qtbot, dialog.write()) is True
    assert written(out) == {f.path: f.text for f in expected}
    dialog.reject()

    # Compare: the pane on this service, with its temperature, deploys what won.
    compare = window.show_page("compare")
    assert isinstance(compare, ComparePage)
    wait(qtbot, service_bridge_for(window.lab).refresh())
    pane = compare.panes[0]
    assert not pane.deploy_button.isEnabled()  # no Podlab service chosen yet
    assert pane.picker.select_service(service.id)
    assert pane.deploy_button.isEnabled()
    pane.params_form.temperature.setValue(0.3)
    pane.deploy_button.click()
    dialog = compare.export_dialog
    assert isinstance(dialog, ExportDialog)
    settled(qtbot, dialog)
    expected = export_service(
        service,
        settings=settings,
        image_digests=dialog.source.digests,
        sampling={"temperature": 0.3},
    )
    assert_previews(dialog, expected)
    deployment = next(f.text for f in expected if f.path == "kube/deployment.yaml")
    assert "podlab.sampling" in deployment and "temperature" in deployment
    assert "context size 2048 tokens" in dialog.explain.text()
    assert "temperature 0.3" in dialog.explain.text()
    dialog.reject()
    # Blind: nothing tells which model a pane is, so it cannot be deployed before the vote.
    compare.blind_check.setChecked(True)
    assert not pane.deploy_button.isVisibleTo(pane)


def test_an_error_from_the_core_is_shown_in_the_dialog(
    qtbot: Any, qloop: Any, smollm2_model: Path, tmp_path: Path
) -> None:
    """A service whose model file is gone cannot be exported: the dialog says why, offers
    nothing to write, and the app goes on."""
    gone = tmp_path / "gone.gguf"
    lab = Lab.open()
    service = InferenceService(
        id="0123abcd",
        name="gone",
        engine="local",
        model_ref="gone",
        model_file=str(gone),
        server_kind="llama-cpp-python",
        host="127.0.0.1",
        port=35999,
        state=ServiceState.STOPPED,
        options=ServiceOptions(ctx_size=2048),
    )
    dialog = ExportDialog(ServiceExport(lab, service))
    qtbot.addWidget(dialog)
    open_dialog(dialog)
    settled(qtbot, dialog)
    assert dialog.status_text().startswith("Cannot export: ")
    assert str(gone) in dialog.status_text()
    assert dialog.files == [] and not dialog.write_button.isEnabled()
    assert dialog.preview.toPlainText() == ""
    # The file comes back: the next choice generates again.
    gone.symlink_to(smollm2_model)
    dialog.format_checks["kube"].setChecked(False)
    settled(qtbot, dialog)
    assert dialog.files and dialog.write_button.isEnabled()
    dialog.close()
