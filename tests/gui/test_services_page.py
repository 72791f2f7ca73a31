"""The Services page over real services: a real llama-cpp-python server with SmolLM2 started
through the New service dialog, real Podman for the "foreign containers never appear" rule."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
from pathlib import Path

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.core.serving.backends.podman import build_model_server_image
from podlab.core.serving.container_spec import PODLAB_SERVER_IMAGE
from podlab.core.serving.engine import Engine
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.local_server import LocalEngine
from podlab.core.serving.planning import ServeRequest
from podlab.core.serving.services import ServiceEvent, ServiceManager, auth_headers
from podlab.core.tasks import TaskState
from podlab.ui.dialogs.new_service import NewServiceDialog
from podlab.ui.main_window import MainWindow
from podlab.ui.models.services_model import (
    COL_DEVICE,
    COL_ENGINE,
    COL_STATE,
    device_badge,
)
from podlab.ui.pages.services import ServicesPage
from podlab.ui.service_bridge import MessageDialog, service_bridge_for
from tests import harness
from tests.integration.conftest import (
    wheelhouse,  # noqa: F401 (a fixture: pip wheels of the host's llama-cpp-python)
)

pytestmark = pytest.mark.gui

START_TIMEOUT_MS = 180_000


@pytest.fixture(scope="session")
def server_image(request, podman_service, base_image: str) -> str:  # type: ignore[no-untyped-def]
    """Podlab's model-server image, built through the core's own build (layers are cached).

    Built in a thread of its own: the Qt tests leave their qasync loop marked as running on
    the main thread, where asyncio.run() refuses to start.
    """
    wheels = request.getfixturevalue("wheelhouse")

    async def build() -> None:
        engine = Engine(url=podman_service.url)
        await engine.connect()
        try:
            async for _line in build_model_server_image(
                engine, wheelhouse=wheels, use_host_ca=True, pull="never"
            ):
                pass
        finally:
            await engine.aclose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, build()).result()
    return PODLAB_SERVER_IMAGE


@pytest.fixture
def window(qtbot, qloop, gpu_less_host):  # type: ignore[no-untyped-def]
    lab = Lab.open()
    win = MainWindow(lab)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    bridge = service_bridge_for(lab)
    # The page plans GPU passthrough for a host without a GPU, whatever this machine has.
    bridge.manager.gpu_probe = gpu_less_host
    created: list[InferenceService] = []

    def remember(event: ServiceEvent) -> None:
        if event.kind == "added" and event.detail == "creating":
            created.append(event.service)

    bridge.sig_service_event.connect(remember)
    yield win
    bridge.sig_service_event.disconnect(remember)

    # Remove what this test created, and only that: the Podman storage is shared with other
    # test runs, whose Podlab containers must not be touched. Local servers are detached
    # processes: never leave one running.
    async def remove_all() -> None:
        for service in created:
            with contextlib.suppress(Exception):  # the test may have removed it already
                await bridge.manager.delete(service)

    task = asyncio.ensure_future(remove_all())
    qtbot.waitUntil(task.done, timeout=60000)


def open_services(window: MainWindow, qtbot) -> ServicesPage:  # type: ignore[no-untyped-def]
    page = window.show_page("services")
    assert isinstance(page, ServicesPage)
    window.show()
    settled = asyncio.ensure_future(page.settle())
    qtbot.waitUntil(settled.done, timeout=30000)
    return page


def cell(page: ServicesPage, service_id: str, column: int) -> str:
    """A cell of the service's row (other Podlab services may share the Podman storage)."""
    row = page.model.row_of(service_id)
    assert row >= 0, f"no row for {service_id}"
    return str(page.model.index(row, column).data())


def test_a_local_service_starts_from_the_dialog_answers_stops_and_is_deleted(
    window: MainWindow, qtbot, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    page = open_services(window, qtbot)
    assert [s for s in page.model.services() if s.engine == "local"] == []
    if page.model.rowCount() == 0:
        assert page.empty.isVisibleTo(page) and not page.details.isVisibleTo(page)

    # The New service dialog, filled as a user would.
    qtbot.mouseClick(page.new_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: isinstance(page.active_dialog, NewServiceDialog), timeout=20000)
    dialog = page.active_dialog
    assert isinstance(dialog, NewServiceDialog)
    assert "No GPU found" in dialog.gpu_note.text()
    dialog.set_model_path(smollm2_model)
    dialog.set_choice(dialog.engine_combo, "local")
    dialog.ctx_spin.setValue(2048)
    dialog.threads_spin.setValue(2)
    dialog.start_button.click()

    qtbot.waitUntil(lambda: page.last_task is not None, timeout=20000)
    task = page.last_task
    assert task is not None and task.kind == "service"
    qtbot.waitUntil(lambda: task.state.finished, timeout=START_TIMEOUT_MS)
    assert task.state is TaskState.DONE, f"{task.error}\n" + "\n".join(task.log)

    # The Tasks page lists the start.
    tasks_page = window.page("tasks")
    names = [tasks_page.model.index(r, 0).data() for r in range(tasks_page.model.rowCount())]
    assert any(name.startswith("Start service") for name in names), names

    # The row: ready, local, on the CPU (read from the server's own log).
    service = page.selected()
    assert service is not None and service.state is ServiceState.READY
    assert cell(page, service.id, COL_STATE) == "ready"
    assert cell(page, service.id, COL_ENGINE) == "Local"
    assert cell(page, service.id, COL_DEVICE) == "CPU"
    assert service.options.ctx_size == 2048 and service.options.threads == 2

    # The endpoint answers, with a real completion.
    key = auth_headers(service.api_key)
    assert key  # Podlab made one
    assert httpx.get(f"{service.api_url}/models", timeout=10).status_code == 401
    assert httpx.get(f"{service.api_url}/models", headers=key, timeout=10).status_code == 200
    answer = httpx.post(
        f"{service.api_url}/chat/completions",
        headers=key,
        json={
            "model": service.model_ref,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16,
        },
        timeout=60,
    )
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"].strip()

    # Details: overview, snippets with the endpoint, the live log.
    assert service.api_url in page.details.overview.text()
    for name, pane in page.details.snippet_panes.items():
        assert service.api_url in pane.code.toPlainText(), name
        assert str(service.api_key) in pane.code.toPlainText(), name
    with qtbot.waitSignal(page.details.sig_snippet_copied, timeout=5000):
        page.details.snippet_panes["curl"].copy_button.click()
    assert service.api_url in QGuiApplication.clipboard().text()
    qtbot.waitUntil(lambda: "podlab_guarded_server.py" in page.log_text(), timeout=20000)
    assert page.details.playground_button.isEnabled()

    # Stop: the state says so and the endpoint is gone.
    qtbot.mouseClick(page.details.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: cell(page, service.id, COL_STATE) == "stopped", timeout=30000)
    assert service.state is ServiceState.STOPPED
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{service.api_url}/models", timeout=2)
    assert page.details.start_button.isEnabled() and not page.details.stop_button.isEnabled()

    # Delete asks first; then the row is gone.
    qtbot.mouseClick(page.details.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: isinstance(page.active_dialog, MessageDialog), timeout=10000)
    page.active_dialog.accept_button.click()
    qtbot.waitUntil(lambda: page.model.row_of(service.id) < 0, timeout=30000)
    if page.model.rowCount() == 0:
        assert page.empty.isVisibleTo(page)


def test_a_local_service_that_crashed_shows_its_signal_and_log_tail(
    window: MainWindow, qtbot, smollm2_model: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A local server killed by SIGSEGV while starting (started by another manager, as by the
    CLI) reads as "crashed (signal 11, SIGSEGV)" with its log, never as only "exited"."""
    broken = harness.crashing_python(tmp_path / "bin", signal.SIGSEGV)
    other = ServiceManager(
        Engine(url="unix:///nonexistent/podman.sock"),
        local=LocalEngine(python=str(broken)),
        ready_timeout=60,
    )
    attempt = asyncio.ensure_future(
        other.serve(ServeRequest(model=str(smollm2_model), engine="local"))
    )
    qtbot.waitUntil(attempt.done, timeout=60000)
    assert isinstance(attempt.exception(), PodlabError)
    (service,) = other.known()
    page = open_services(window, qtbot)
    page.select_service(service.id)
    assert cell(page, service.id, COL_STATE) == "exited"
    assert "crashed (signal 11, SIGSEGV)" in page.details.overview.text()
    qtbot.waitUntil(
        lambda: "Fatal Python error: Segmentation fault" in page.log_text(), timeout=20000
    )
    assert "test engine that crashes" in page.log_text()

    async def remove() -> None:
        await service_bridge_for(window.lab).manager.delete(service.id)

    removal = asyncio.ensure_future(remove())
    qtbot.waitUntil(removal.done, timeout=30000)
    removal.result()


def test_cancelling_the_dialog_starts_nothing(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = open_services(window, qtbot)
    qtbot.mouseClick(page.new_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: isinstance(page.active_dialog, NewServiceDialog), timeout=20000)
    dialog = page.active_dialog
    dialog.start_button.click()  # no model chosen: the dialog says so and stays open
    assert dialog.isVisible() and "Choose a model" in dialog.problem.text()
    dialog.reject()
    qtbot.waitUntil(lambda: page.active_dialog is None, timeout=10000)
    assert page.last_task is None
    assert window.lab.tasks.tasks == []


def test_foreign_containers_never_appear(
    window: MainWindow, qtbot, podman_env, podman_client, base_image: str
) -> None:  # type: ignore[no-untyped-def]
    foreign = [
        podman_client.containers.create(base_image, ["sleep", "600"], name="someone-elses"),
        podman_client.containers.create(
            base_image,
            ["sleep", "600"],
            name="half-labelled",
            labels={"podlab.managed": "true"},  # no service id: still not Podlab's
        ),
    ]
    try:
        page = open_services(window, qtbot)
        assert page.bridge is not None
        assert page.bridge.manager.engine_problem == ""
        assert not page.engine_note.isVisibleTo(page)
        listed = {s.container_id for s in page.model.services()}
        assert not listed & {c.id for c in foreign}
        assert all(s.name not in ("someone-elses", "half-labelled") for s in page.model.services())
    finally:
        for container in foreign:
            container.remove(force=True)


@pytest.mark.usefixtures("server_image")
def test_a_podman_service_from_the_dialog_runs_in_a_labelled_loopback_container(
    window: MainWindow, qtbot, podman_env, podman_client, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    page = open_services(window, qtbot)
    qtbot.mouseClick(page.new_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: isinstance(page.active_dialog, NewServiceDialog), timeout=20000)
    dialog = page.active_dialog
    dialog.set_model_path(smollm2_model)
    dialog.set_choice(dialog.engine_combo, "podman")
    assert dialog.image_combo.isEnabled()
    dialog.image_combo.setEditText(PODLAB_SERVER_IMAGE)
    dialog.ctx_spin.setValue(2048)
    dialog.start_button.click()
    qtbot.waitUntil(lambda: page.last_task is not None, timeout=20000)
    task = page.last_task
    qtbot.waitUntil(lambda: task.state.finished, timeout=START_TIMEOUT_MS)
    assert task.state is TaskState.DONE, f"{task.error}\n" + "\n".join(task.log)

    service = page.selected()
    assert service is not None and service.engine == "podman"
    assert cell(page, service.id, COL_ENGINE) == "Podman"
    assert cell(page, service.id, COL_STATE) == "ready"
    assert cell(page, service.id, COL_DEVICE) == "CPU"
    models = httpx.get(f"{service.api_url}/models", headers=auth_headers(service.api_key))
    assert models.status_code == 200
    container = podman_client.containers.get(service.container_id)
    assert container.labels["podlab.managed"] == "true"
    bindings = container.attrs["HostConfig"]["PortBindings"]
    assert all(b["HostIp"] == "127.0.0.1" for ports in bindings.values() for b in ports)
    qtbot.waitUntil(lambda: "llama" in page.log_text(), timeout=20000)

    qtbot.mouseClick(page.details.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: cell(page, service.id, COL_STATE) == "stopped", timeout=60000)
    qtbot.mouseClick(page.details.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: isinstance(page.active_dialog, MessageDialog), timeout=10000)
    page.active_dialog.accept_button.click()
    qtbot.waitUntil(lambda: page.model.row_of(service.id) < 0, timeout=30000)
    assert not podman_client.containers.exists(service.container_id)


def test_a_gpu_that_cannot_be_passed_is_never_a_silent_cpu_fallback(
    window: MainWindow, qtbot, smollm2_model: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from tests.gui.test_dashboard import fake_nvidia_host

    page = open_services(window, qtbot)
    assert page.bridge is not None
    page.bridge.manager.gpu_probe = fake_nvidia_host(tmp_path / "host")  # NVIDIA, no CDI spec
    page.bridge.manager._gpu_report = None

    def open_dialog_with(engine: str) -> NewServiceDialog:
        qtbot.mouseClick(page.new_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: isinstance(page.active_dialog, NewServiceDialog), timeout=20000)
        dialog = page.active_dialog
        dialog.set_model_path(smollm2_model)
        dialog.set_choice(dialog.engine_combo, engine)
        return dialog

    # In a container the GPU cannot be passed: the dialog says so, and starting asks first.
    dialog = open_dialog_with("podman")
    assert "no CDI spec" in dialog.gpu_note.text()
    dialog.start_button.click()
    qtbot.waitUntil(lambda: isinstance(page.active_dialog, MessageDialog), timeout=10000)
    question = page.active_dialog
    assert "no CDI spec" in question.text_label.text()
    assert "nvidia-ctk" in question.informative_label.text()
    assert question.accept_button.text() == "Run on the CPU"
    question.reject()  # no: nothing starts
    qtbot.waitUntil(lambda: page.active_dialog is None, timeout=10000)
    assert page.last_task is None

    # The local engine needs no CDI; this llama-cpp-python is a CPU build (asked of it), so
    # the GPU choice is disabled with the reason before anything starts, and it runs on the CPU.
    import llama_cpp

    assert not llama_cpp.llama_supports_gpu_offload()
    dialog = open_dialog_with("local")
    assert "no CDI spec" not in dialog.gpu_note.text()
    assert "CPU-only build" in dialog.gpu_note.text()
    assert not dialog.gpu_combo.isEnabled() and "CPU only" in dialog.gpu_combo.toolTip()
    assert dialog.values().gpu == "none"
    dialog.set_choice(dialog.engine_combo, "podman")  # a container can still be given the GPU
    assert dialog.gpu_combo.isEnabled() and dialog.gpu_combo.toolTip() == ""
    dialog.set_choice(dialog.engine_combo, "local")
    dialog.start_button.click()
    qtbot.waitUntil(lambda: page.last_task is not None, timeout=10000)
    task = page.last_task
    qtbot.waitUntil(lambda: task.state.finished, timeout=START_TIMEOUT_MS)
    assert task.state is TaskState.DONE, f"{task.error}\n" + "\n".join(task.log)
    service = page.selected()
    assert service is not None and service.state is ServiceState.READY
    assert cell(page, service.id, COL_DEVICE) == "CPU"


def test_the_device_badge_says_what_the_server_log_said() -> None:
    from podlab.core.serving.offload import OffloadInfo

    service = InferenceService(
        id="x", name="x", engine="podman", model_ref="m", model_file="/m.gguf",
        server_kind="llama-cpp", host="127.0.0.1", port=1, state=ServiceState.READY,
        gpu_vendor="nvidia", device="GPU",
        offload=OffloadInfo(31, 31, "NVIDIA H100 80GB HBM3", "CUDA", 1),
    )  # fmt: skip
    assert device_badge(service)[:2] == ("GPU: 31/31 layers", "ok")
    assert "CUDA NVIDIA H100" in device_badge(service)[2]
    service.device, service.offload = "GPU+CPU", OffloadInfo(20, 31, None, "CUDA", 1)
    assert device_badge(service)[:2] == ("GPU+CPU: 20/31 layers", "warning")
    service.device, service.offload = "CPU", OffloadInfo(0, 31)
    assert device_badge(service)[:2] == ("CPU (GPU unused)", "error")
    service.gpu_vendor = "none"
    assert device_badge(service)[:2] == ("CPU", "off")
    service.device, service.state = "unknown", ServiceState.STARTING
    assert device_badge(service)[0] == "—"
