"""The dashboard shows real facts: the test Podman service, this GPU-less host, the store.

The NVIDIA cases run the real detection and CDI code over a fake /dev, /usr/lib and /etc/cdi
tree (HostProbe's root), with a recorded nvidia-smi answer: nothing in the page is mocked.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from podlab.core.lab import Lab
from podlab.core.models.store import ModelStore
from podlab.core.serving.gpu.cdi import PODLAB_CDI_SPEC_PATH
from podlab.core.serving.gpu.detect import detect_gpus
from podlab.core.serving.gpu.host import CommandResult, HostProbe
from podlab.core.serving.local_server import PYTHON_ENV
from podlab.ui.main_window import MainWindow
from podlab.ui.pages.dashboard import NO_GPU_TEXT, CdiSpecDialog, DashboardPage
from tests import harness
from tests.harness import podman_server_version

pytestmark = pytest.mark.gui

NVIDIA_SMI_ROW = (
    "0, GPU-4b1e3c2a-0000-1111-2222-333344445555, NVIDIA H100 80GB HBM3, 81559, 580.65.06\n"
)


@pytest.fixture
def window(qtbot, qloop) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    lab = Lab.open()
    win = MainWindow(lab)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    yield win
    lab.close()  # as the app does at exit: an SSH tunnel must not outlive it


def open_dashboard(window: MainWindow, qtbot, probe: HostProbe | None = None) -> DashboardPage:  # type: ignore[no-untyped-def]
    page = window.page("dashboard")
    assert isinstance(page, DashboardPage)
    if probe is not None:
        page.probe = probe
    window.show_page("dashboard")
    window.show()
    refresh(page, qtbot)
    return page


def refresh(page: DashboardPage, qtbot) -> None:  # type: ignore[no-untyped-def]
    task = page.refresh_soon()
    qtbot.waitUntil(task.done, timeout=30000)
    task.result()


def fake_nvidia_host(root: Path, *, with_ctk: bool = False) -> HostProbe:
    """A host tree with /dev/nvidia0, the driver's libcuda and (maybe) nvidia-ctk; no CDI spec."""
    for node in ("dev/nvidia0", "dev/nvidiactl", "dev/nvidia-uvm"):
        (root / node).parent.mkdir(parents=True, exist_ok=True)
        (root / node).write_text("")
    lib = root / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libcuda.so.580.65.06").write_text("")
    (lib / "libnvidia-ml.so.580.65.06").write_text("")
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 2025\n"
    )
    if with_ctk:
        ctk = root / "usr/bin/nvidia-ctk"
        ctk.parent.mkdir(parents=True, exist_ok=True)
        ctk.write_text("#!/bin/sh\n")
        ctk.chmod(0o755)

    def run(argv: Sequence[str]) -> CommandResult:
        if Path(argv[0]).name == "nvidia-smi":
            return CommandResult(0, NVIDIA_SMI_ROW)
        return CommandResult(127, "", f"{argv[0]}: command not found")

    return HostProbe(root=root, run=run, env={"PATH": "/usr/bin"}, system="Linux")


def test_engine_card_shows_the_real_podman_version(window, qtbot, podman_env) -> None:  # type: ignore[no-untyped-def]
    page = open_dashboard(window, qtbot)
    text = page.engine_card.text()
    assert f"Podman {podman_server_version(podman_env)}" in text, text
    assert podman_env.url in text
    assert page.engine_card.chip.level == "ok"
    assert "start-service" not in page.engine_card.buttons


def test_engine_card_shows_a_podman_reached_over_ssh(
    window, qtbot, podman_env, ssh_server, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    url = ssh_server.url_for(podman_env.socket_path)
    monkeypatch.setenv("CONTAINER_HOST", url)
    monkeypatch.setenv("CONTAINER_SSHKEY", str(ssh_server.identity))
    page = open_dashboard(window, qtbot)
    text = page.engine_card.text()
    assert "Podman 4." in text and url in text, text
    assert "Reached through an SSH tunnel." in text
    assert page.engine_card.chip.level == "ok"  # 127.0.0.1: this computer, nothing limited


def test_engine_card_says_podman_is_not_found_and_how_to_get_it(
    window, qtbot, monkeypatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{tmp_path}/no-such.sock")
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman binary either
    page = open_dashboard(window, qtbot)
    text = page.engine_card.text()
    assert "not found" in text.lower(), text
    assert page.engine_card.chip.level == "error"
    assert "install" in text.lower(), text  # the hint says how to get Podman
    assert "start-service" not in page.engine_card.buttons  # nothing to start without the CLI


def test_gpu_card_says_plainly_that_there_is_no_gpu(window, qtbot, gpu_less_host) -> None:  # type: ignore[no-untyped-def]
    page = open_dashboard(window, qtbot, gpu_less_host)
    assert page.last_report is not None and page.last_report.gpus == []
    titles = [card.title.text() for card in page.gpu_cards]
    assert NO_GPU_TEXT in titles
    assert NO_GPU_TEXT == "No GPU found — services run on the CPU"


def test_gpu_cards_show_what_this_host_really_has(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    """The real detection on the real host, GPU or not: the page shows what detection finds."""
    page = open_dashboard(window, qtbot)
    report = detect_gpus(HostProbe())
    assert page.last_report is not None
    assert [gpu.name for gpu in page.last_report.gpus] == [gpu.name for gpu in report.gpus]
    titles = [card.title.text() for card in page.gpu_cards]
    if report.gpus:
        assert NO_GPU_TEXT not in titles
        for gpu in report.gpus:
            assert any(gpu.name in card.text() for card in page.gpu_cards), gpu.name
    else:
        assert NO_GPU_TEXT in titles
    host = page.host_card.text()
    assert "RAM:" in host and "GiB total" in host


def test_models_and_services_cards_are_filled(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = open_dashboard(window, qtbot)
    assert "0 models" in page.models_card.text()
    assert "free on that disk" in page.models_card.text()
    assert page.services_card.chip.text() != "Checking…"
    assert page.local_card.chip.text() != "Checking…"
    for card in page.cards():
        assert card.chip.level != "error" or card is page.engine_card, card.text()


def test_nvidia_without_cdi_offers_a_spec_and_writes_it_only_after_consent(
    window, qtbot, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    probe = fake_nvidia_host(tmp_path / "host")
    page = open_dashboard(window, qtbot, probe)
    [card] = [c for c in page.gpu_cards if c.key == "gpu-nvidia-0"]
    text = card.text()
    assert "NVIDIA H100 80GB HBM3" in text
    assert "79.6 GiB" in text and "580.65.06" in text
    assert "no CDI spec" in text
    assert card.chip.level == "error"
    assert "write-cdi" in card.buttons
    target = probe.path(PODLAB_CDI_SPEC_PATH)

    # Cancel: the spec is shown, nothing is written.
    card.buttons["write-cdi"].click()
    qtbot.waitUntil(lambda: isinstance(page.active_dialog, CdiSpecDialog), timeout=10000)
    dialog = page.active_dialog
    assert isinstance(dialog, CdiSpecDialog)
    shown = yaml.safe_load(dialog.spec_text.toPlainText())
    assert shown["kind"] == "nvidia.com/gpu"
    assert {d["name"] for d in shown["devices"]} >= {"0", "all"}
    dialog.reject()
    qtbot.waitUntil(lambda: page.active_dialog is None, timeout=10000)
    assert not target.exists()

    # Write: the file appears and the card turns ready.
    card.buttons["write-cdi"].click()
    qtbot.waitUntil(lambda: isinstance(page.active_dialog, CdiSpecDialog), timeout=10000)
    page.active_dialog.copy_button.click()
    command = QGuiApplication.clipboard().text()
    assert command.startswith("sudo mkdir -p ") and f"sudo tee {target}" in command
    assert "kind: nvidia.com/gpu" in command and command.rstrip().endswith("PODLAB_CDI")
    assert not target.exists()
    page.active_dialog.write_button.click()
    qtbot.waitUntil(target.exists, timeout=10000)
    assert yaml.safe_load(target.read_text())["kind"] == "nvidia.com/gpu"
    qtbot.waitUntil(
        lambda: any(c.key == "gpu-nvidia-0" and c.chip.level == "ok" for c in page.gpu_cards),
        timeout=30000,
    )


def test_copy_fix_command_puts_the_nvidia_ctk_line_on_the_clipboard(
    window, qtbot, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    probe = fake_nvidia_host(tmp_path / "host", with_ctk=True)
    page = open_dashboard(window, qtbot, probe)
    [card] = [c for c in page.gpu_cards if c.key == "gpu-nvidia-0"]
    assert "write-cdi" not in card.buttons  # nvidia-ctk does it better
    with qtbot.waitSignal(page.sig_fix_copied, timeout=5000) as copied:
        qtbot.mouseClick(card.buttons["copy-fix"], Qt.MouseButton.LeftButton)
    expected = "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
    assert copied.args == [expected]
    assert QGuiApplication.clipboard().text() == expected


def dark_palette() -> QPalette:
    palette = QPalette()
    roles = QPalette.ColorRole
    for role, colour in (
        (roles.Window, "#2b2b2b"),
        (roles.WindowText, "#e8e8e8"),
        (roles.Base, "#1f1f1f"),
        (roles.Text, "#e8e8e8"),
        (roles.Button, "#353535"),
        (roles.ButtonText, "#e8e8e8"),
        (roles.Mid, "#505050"),
        (roles.PlaceholderText, "#9a9a9a"),
    ):
        palette.setColor(role, QColor(colour))
    return palette


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_cards_follow_the_palette_in_light_and_dark(window, qtbot, dark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The offscreen platform ignores the colour-scheme hint, so the dark palette is set
    # directly: what matters is that the cards draw with palette roles, not fixed colours.
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    before = QPalette(app.palette())
    if dark:
        app.setPalette(dark_palette())
    try:
        page = open_dashboard(window, qtbot, fake_nvidia_host(tmp_path / "host"))
        image = window.grab().toImage()
        card = page.engine_card
        inside = image.pixelColor(
            card.mapTo(window, card.rect().center()).x(),
            card.mapTo(window, card.rect().topLeft()).y() + 4,
        )
        base = app.palette().color(QPalette.ColorRole.Base)
        assert abs(inside.lightness() - base.lightness()) < 40, (inside.name(), base.name())
        text = app.palette().color(QPalette.ColorRole.WindowText)
        assert abs(base.lightness() - text.lightness()) > 100  # text stays readable on cards
    finally:
        app.setPalette(before)


def test_start_podman_service_asks_first_then_starts_the_real_service(
    window, qtbot, monkeypatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from podlab.core.serving.engine import Engine
    from tests import harness

    harness.require_podman()
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("CONTAINERS_CONF", str(harness.write_test_containers_conf(tmp_path)))
    page = window.page("dashboard")
    assert isinstance(page, DashboardPage)
    engine = Engine(window.lab.settings, system_socket=str(tmp_path / "no-rootful.sock"))
    # The page's engine is the Lab's: this one sees no rootful socket of this machine, and the
    # test stops the service it starts.
    window.lab.engine = engine
    try:
        open_dashboard(window, qtbot)
        assert page.engine_card.chip.text() == "Not running"
        assert "start-service" in page.engine_card.buttons

        page.engine_card.buttons["start-service"].click()
        qtbot.waitUntil(lambda: page.active_dialog is not None, timeout=10000)
        page.active_dialog.reject()
        qtbot.waitUntil(lambda: page.active_dialog is None, timeout=10000)
        assert engine.started_service is None  # nothing runs without consent

        page.engine_card.buttons["start-service"].click()
        qtbot.waitUntil(lambda: page.active_dialog is not None, timeout=10000)
        page.active_dialog.accept_button.click()
        qtbot.waitUntil(lambda: page.engine_card.chip.level == "ok", timeout=40000)
        assert "Podman 4." in page.engine_card.text()
        assert str(tmp_path / "run" / "podman" / "podman.sock") in page.engine_card.text()
    finally:
        engine.stop_started_service()


# -- the local engine's self-test ---------------------------------------------------------------


def dashboard_with_engine(
    qtbot, monkeypatch, python: Path | None, model: Path | None
) -> DashboardPage:  # type: ignore[no-untyped-def]
    """A window whose local engine runs `python` (Podlab's own when None), with `model`
    imported into the store; the Dashboard shown and its first refresh done."""
    if python is not None:
        monkeypatch.setenv(PYTHON_ENV, str(python))
    lab = Lab.open()
    if model is not None:
        ModelStore.from_settings(lab.settings).import_gguf(model)
    win = MainWindow(lab)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    return open_dashboard(win, qtbot)


def test_selftest_runs_in_the_background_and_reports_tokens_per_second(
    qtbot, qloop, monkeypatch, tmp_path: Path, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    gate = tmp_path / "go"
    slow = harness.gated_python(tmp_path / "bin", gate)
    page = dashboard_with_engine(qtbot, monkeypatch, slow, smollm2_model)
    # The page painted and refreshed while the engine has not even started.
    assert page.selftest is None
    assert "Self-test: running" in page.local_card.text()
    with qtbot.waitSignal(page.sig_selftest_done, timeout=120000) as done:
        gate.write_text("")
    result = done.args[0]
    assert result.ok and result.tokens_per_s > 0, result
    text = page.local_card.text()
    assert re.search(r"local engine: ok \(\d+ tok/s\)", text), text
    assert page.local_card.chip.level == "ok"
    assert "copy-fix" not in page.local_card.buttons


def test_a_crashing_engine_is_named_by_its_signal_with_a_fix_to_copy(
    qtbot, qloop, monkeypatch, tmp_path: Path, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    broken = harness.crashing_python(tmp_path / "bin", signal.SIGILL)
    page = dashboard_with_engine(qtbot, monkeypatch, broken, smollm2_model)
    if page.selftest is None:
        with qtbot.waitSignal(page.sig_selftest_done, timeout=60000):
            pass
    text = page.local_card.text()
    assert "crashed (signal 4, SIGILL)" in text, text
    assert "test engine that crashes" in text  # the log tail
    assert page.local_card.chip.level == "error"
    with qtbot.waitSignal(page.sig_fix_copied, timeout=5000) as copied:
        qtbot.mouseClick(page.local_card.buttons["copy-fix"], Qt.MouseButton.LeftButton)
    command = copied.args[0]
    assert "GGML_NATIVE=OFF" in command and str(broken) in command
    assert QGuiApplication.clipboard().text() == command


def test_without_a_model_the_selftest_says_so(qtbot, qloop, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    page = dashboard_with_engine(qtbot, monkeypatch, None, None)
    if page.selftest is None:
        with qtbot.waitSignal(page.sig_selftest_done, timeout=30000):
            pass
    assert "no model to test with" in page.local_card.text()
    assert page.local_card.chip.level == "ok"


def test_a_service_endpoint_is_never_wrapped_inside_the_address(
    window, qtbot, smollm2_model: Path
) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from PySide6.QtWidgets import QLabel, QLineEdit

    from podlab.core.serving.planning import ServeRequest
    from podlab.ui.service_bridge import service_bridge_for

    manager = service_bridge_for(window.lab).manager
    serving = asyncio.ensure_future(manager.serve(ServeRequest(smollm2_model, engine="local")))
    qtbot.waitUntil(serving.done, timeout=120000)
    service = serving.result()
    try:
        window.resize(900, 600)  # narrow: a wrapping label would break the URL
        page = open_dashboard(window, qtbot)
        card = page.services_card
        qtbot.waitUntil(lambda: card.findChild(QLineEdit, "card-url") is not None, timeout=10000)
        field = card.findChild(QLineEdit, "card-url")
        assert field.text() == service.api_url and field.isReadOnly()
        assert field.toolTip() == service.api_url
        assert not any("http://" in label.text() for label in card.findChildren(QLabel))
        assert service.api_url in card.text()
    finally:
        removal = asyncio.ensure_future(manager.delete(service.id))
        qtbot.waitUntil(removal.done, timeout=30000)
