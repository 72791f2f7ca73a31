"""The Catalog page on the real bundled catalog, real user catalog files and a real HTTPS server.

Downloads go through the page's buttons to a threaded HTTPS server on 127.0.0.1 with a
self-signed certificate trusted through SSL_CERT_FILE (the catalog accepts only https:// URLs,
and the downloader always verifies TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from podlab.core.lab import Lab
from podlab.core.models.hardware import HostFacts
from podlab.core.models.modelinfo import ModelInfo, ModelVariant
from podlab.core.serving.gpu.host import GIB
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.services import ServiceEvent
from podlab.core.tasks import TaskState
from podlab.ui.dialogs.new_service import NewServiceDialog
from podlab.ui.download_bridge import bridge_for
from podlab.ui.main_window import MainWindow
from podlab.ui.models.catalog_model import (
    COL_FIT,
    COL_NAME,
    COL_PARAMS,
    FIT_LEVEL_ROLE,
    MODEL_ROLE,
    CatalogFilterProxy,
    CatalogTableModel,
)
from podlab.ui.pages.catalog import CatalogPage
from podlab.ui.pages.models import ModelsPage
from podlab.ui.pages.playground import PlaygroundPage
from podlab.ui.pages.services import ServicesPage
from podlab.ui.service_bridge import MessageDialog, service_bridge_for
from tests.httpfaults import (
    FaultServer,
    make_self_signed_cert,
    ok,
    server_ssl_context,
    sha256_of,
    stall,
    status,
)

pytestmark = pytest.mark.gui

# The offscreen platform plugin says this whenever a dialog window is shown; on a real screen
# it is silent. Only tests that open a confirmation dialog ignore it.
OFFSCREEN_DIALOG = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")

HOSTILE_CARD = """A model card with *markdown* and hostile HTML:

<script>alert('pwned')</script>

<img src="http://127.0.0.1:9/tracker.png">

![remote picture](http://127.0.0.1:9/picture.png)

Say zanzibar to find me.
"""


def write_user_catalog(config: Path, text: str, name: str = "mine.yaml") -> Path:
    folder = config / "podlab" / "catalogs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def user_model_yaml(
    model_id: str,
    *,
    description: str = "A test model.",
    url: str = "https://127.0.0.1:1/none.gguf",
    sha256: str | None = None,
    size: int | None = None,
    capabilities: str = "[chat]",
) -> str:
    indented = "\n".join("      " + line for line in description.splitlines())
    lines = [
        f"  - id: {model_id}",
        f"    name: Test {model_id}",
        "    publisher: Podlab Tests",
        "    license: MIT",
        "    parameters: 1000000",
        "    context_length: 2048",
        f"    capabilities: {capabilities}",
        "    description: |",
        indented,
        "    variants:",
        f"      - id: {model_id}:Q8_0",
        "        quantization: Q8_0",
        f"        file_name: {model_id}-Q8_0.gguf",
        f"        url: {url}",
    ]
    if sha256:
        lines.append(f"        sha256: {sha256}")
    if size:
        lines.append(f"        size: {size}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def window(qtbot, qloop) -> MainWindow:  # type: ignore[no-untyped-def]
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    return win


def open_catalog(window: MainWindow, qtbot) -> CatalogPage:  # type: ignore[no-untyped-def]
    page = window.show_page("catalog")
    assert isinstance(page, CatalogPage)
    qtbot.waitUntil(page._loading.done, timeout=30000)
    assert page._loading.exception() is None
    return page


def shown_models(page: CatalogPage) -> list[ModelInfo]:
    proxy = page.proxy
    return [proxy.data(proxy.index(row, 0), MODEL_ROLE) for row in range(proxy.rowCount())]


def run(qtbot, coro, timeout: int = 30000):  # type: ignore[no-untyped-def]
    """Run a coroutine on the test's qasync loop from a sync test."""
    future = asyncio.ensure_future(coro)
    qtbot.waitUntil(future.done, timeout=timeout)
    return future.result()


# -- listing, search, filters ------------------------------------------------------------------


def test_lists_the_bundled_catalog(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = open_catalog(window, qtbot)
    total = page.source.rowCount()
    assert total >= 25
    assert page.proxy.rowCount() == total
    assert page.count_label.text() == f"{total} models"
    assert not page.banner.isVisible()
    # The first row is selected and its details pane shows the model.
    assert page.details.model is not None
    assert page.details.title.text() == page.details.model.name
    # Every row has a fit badge once the host is known.
    qtbot.waitUntil(lambda: page.source.facts is not None, timeout=20000)
    levels = {page.proxy.index(r, COL_FIT).data(FIT_LEVEL_ROLE) for r in range(total)}
    assert levels <= {"green", "yellow", "red"}


def test_search_filters_as_you_type(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = open_catalog(window, qtbot)
    total = page.proxy.rowCount()

    qtbot.keyClicks(page.search, "qwen3")
    names = [m.name for m in shown_models(page)]
    assert 0 < len(names) < total
    for model in shown_models(page):
        haystack = f"{model.id} {model.name} {model.publisher} {model.description}".casefold()
        assert "qwen3" in haystack
    assert page.count_label.text() == f"{len(names)} of {total} models"

    page.search.clear()
    assert page.proxy.rowCount() == total

    # Publisher text matches too.
    page.search.setText("microsoft")
    assert shown_models(page)
    assert all(
        m.publisher == "Microsoft" or "microsoft" in m.description.casefold()
        for m in shown_models(page)
    )
    page.search.setText("no model is called like this 4711")
    assert page.proxy.rowCount() == 0


def test_search_finds_text_in_a_user_models_description(
    qtbot, qloop, isolated_user_dirs: dict[str, Path]
) -> None:  # type: ignore[no-untyped-def]
    write_user_catalog(
        isolated_user_dirs["config"],
        "version: 1\nmodels:\n" + user_model_yaml("card-test", description=HOSTILE_CARD),
    )
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    page = open_catalog(win, qtbot)
    page.search.setText("ZANZIBAR")
    assert [m.id for m in shown_models(page)] == ["card-test"]


def test_ten_thousand_rows_filter_through_the_proxy(qtbot, qloop) -> None:  # type: ignore[no-untyped-def]
    models = [
        ModelInfo(
            id=f"synthetic-{i:05d}",
            name=f"Synthetic {i:05d}",
            publisher="Even Labs" if i % 2 == 0 else "Odd Labs",
            description="A generated row." if i % 10 else "A generated row that mentions tools.",
            license="MIT",
            parameters=(i % 70 + 1) * 1_000_000_000,
            capabilities=("chat", "embedding") if i % 3 == 0 else ("chat",),
            variants=(
                ModelVariant(
                    id=f"synthetic-{i:05d}:Q4_K_M",
                    url="https://example.invalid/x.gguf",
                    file_name="x.gguf",
                    quantization="Q4_K_M" if i % 4 else "Q8_0",
                    size=(i % 70 + 1) * GIB // 2,
                ),
            ),
        )
        for i in range(10_000)
    ]
    source = CatalogTableModel()
    source.set_models(models)
    proxy = CatalogFilterProxy(source)
    assert proxy.rowCount() == 10_000

    start = time.perf_counter()
    proxy.update(text="synthetic 0123")
    elapsed = time.perf_counter() - start
    print(f"filtering 10,000 rows by text took {elapsed * 1000:.1f} ms")
    assert proxy.rowCount() == 10  # 01230 .. 01239

    proxy.update(text="")
    proxy.update(publisher="Odd Labs")
    assert proxy.rowCount() == 5_000
    proxy.update(capability="embedding")
    assert proxy.rowCount() == len([i for i in range(10_000) if i % 2 and i % 3 == 0])
    proxy.update(publisher="", capability="", quantization="Q8_0")
    assert proxy.rowCount() == 2_500
    proxy.update(quantization="", text="mentions tools")
    assert proxy.rowCount() == 1_000
    proxy.update(text="", min_size=GIB, max_size=4 * GIB)
    expected = [i for i in range(10_000) if GIB <= (i % 70 + 1) * GIB // 2 <= 4 * GIB]
    assert proxy.rowCount() == len(expected)

    # Sorting happens in the source, in Python; the filter still applies afterwards.
    start = time.perf_counter()
    proxy.sort(4, Qt.SortOrder.DescendingOrder)  # size
    print(
        f"sorting {proxy.rowCount()} of 10,000 rows by size took "
        f"{(time.perf_counter() - start) * 1000:.1f} ms"
    )
    sizes = [
        proxy.data(proxy.index(r, 0), MODEL_ROLE).variants[0].size for r in range(proxy.rowCount())
    ]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == len(expected)


def test_sorting_by_a_column_keeps_the_selection(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = open_catalog(window, qtbot)
    catalog_order = [m.id for m in shown_models(page)]
    assert page.select_model("smollm2-135m-instruct") or page.select_model(catalog_order[5])
    selected = page.current_model()
    assert selected is not None

    page.table.sortByColumn(COL_PARAMS, Qt.SortOrder.AscendingOrder)
    params = [m.parameters or -1 for m in shown_models(page)]
    assert params == sorted(params)
    assert page.current_model() == selected  # the selection followed its row
    assert page.details.model == selected

    page.table.sortByColumn(COL_NAME, Qt.SortOrder.DescendingOrder)
    names = [m.name.casefold() for m in shown_models(page)]
    assert names == sorted(names, reverse=True)
    page.search.setText("qwen")  # filtering keeps the sort
    names = [m.name.casefold() for m in shown_models(page)]
    assert names and names == sorted(names, reverse=True)
    page.search.clear()

    page.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
    assert [m.id for m in shown_models(page)] == catalog_order


def test_a_filter_keeps_the_selection_or_selects_the_first_row(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = open_catalog(window, qtbot)
    assert page.select_model("smollm2-135m-instruct")
    selected = page.current_model()
    page.search.setText("smol")  # still shown: still selected
    assert page.current_model() == selected and page.details.model == selected
    page.search.setText("granite")  # hidden: the first row, never the last
    shown = shown_models(page)
    assert len(shown) > 1
    assert page.current_model() == shown[0] and page.details.model == shown[0]
    page.search.clear()
    assert page.current_model() == shown[0]


def test_urls_and_digests_wrap_copy_whole_and_maintainer_notes_stay_out(
    window: MainWindow, qtbot
) -> None:  # type: ignore[no-untyped-def]
    page = open_catalog(window, qtbot)
    assert page.select_model("smollm2-135m-instruct")
    details = page.details
    variant = details.variant
    assert variant is not None and variant.sha256
    for key, value in (("url", variant.url), ("sha256", variant.sha256)):
        label = details.facts[key]
        assert label.wordWrap() and label.text().replace("\u200b", "") == value
        # Wrapped within the pane: no line is wider than the label.
        assert label.sizeHint().width() <= max(label.width(), label.minimumWidth()) + 1
        details.copy_buttons[key].click()
        assert QApplication.clipboard().text() == value
    # The catalog's provenance notes (the wheel's RECORD, commits) are not user text.
    model = details.model
    assert model is not None and "RECORD" in model.provenance
    shown = " ".join(label.text() + label.toolTip() for label in details.facts.values())
    assert "RECORD" not in shown


def test_capability_filter(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = open_catalog(window, qtbot)
    total = page.proxy.rowCount()
    combo = page.capability_combo
    combo.setCurrentIndex(combo.findData("embedding"))
    shown = shown_models(page)
    assert 0 < len(shown) < total
    assert all("embedding" in m.capabilities for m in shown)
    combo.setCurrentIndex(0)
    assert page.proxy.rowCount() == total


def test_fits_filter_and_context_follow_the_host(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = open_catalog(window, qtbot)
    total = page.proxy.rowCount()
    # A real HostFacts for a small machine without a GPU: 8 GiB of RAM.
    small = HostFacts(cpu_name="test CPU", cpu_cores=4, ram_total=8 * GIB, ram_available=8 * GIB)
    page.source.set_facts(small)
    levels = [page.proxy.index(r, COL_FIT).data(FIT_LEVEL_ROLE) for r in range(total)]
    assert "red" in levels and "green" in levels

    page.fits_check.setChecked(True)
    kept = page.proxy.rowCount()
    assert 0 < kept < total
    assert "red" not in {page.proxy.index(r, COL_FIT).data(FIT_LEVEL_ROLE) for r in range(kept)}
    # The tooltip of the badge is the reason the estimate gives.
    tooltip = page.proxy.index(0, COL_FIT).data(Qt.ItemDataRole.ToolTipRole)
    assert "GiB" in tooltip

    # A longer context needs more memory: fewer models fit.
    page.context_spin.setValue(131072)
    assert page.proxy.rowCount() < kept
    shown = page.details.model
    assert shown is not None
    expected_ctx = min(131072, shown.context_length or 131072)
    assert f"at {expected_ctx} tokens" in page.details.facts["memory"].text()
    page.fits_check.setChecked(False)
    assert page.proxy.rowCount() == total


# -- details pane and catalog problems -----------------------------------------------------------


def test_model_card_shows_raw_html_as_text(
    qtbot, qloop, isolated_user_dirs: dict[str, Path]
) -> None:  # type: ignore[no-untyped-def]
    write_user_catalog(
        isolated_user_dirs["config"],
        "version: 1\nmodels:\n" + user_model_yaml("card-test", description=HOSTILE_CARD),
    )
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.show()
    page = open_catalog(win, qtbot)
    assert page.select_model("card-test")
    details = page.details
    assert details.title.text() == "Test card-test"
    card = details.card
    text = card.toPlainText()
    assert "<script>alert('pwned')</script>" in text
    assert '<img src="http://127.0.0.1:9/tracker.png">' in text
    assert "[image: remote picture]" in text
    html = card.toHtml()
    assert "<img" not in html
    assert "<script" not in html
    # No published sha256: the pane says the server's digest is checked at download.
    assert details.facts["sha256"].text() == "published digest checked at download"
    assert not details.copy_buttons["sha256"].isVisibleTo(details)
    assert not details.serve_button.isEnabled()
    assert not details.playground_button.isEnabled()
    assert details.download_button.isEnabled()


def test_broken_user_catalog_shows_a_banner_and_keeps_the_bundled_models(
    qtbot, qloop, isolated_user_dirs: dict[str, Path]
) -> None:  # type: ignore[no-untyped-def]
    broken = write_user_catalog(
        isolated_user_dirs["config"],
        "version: 1\nmodels:\n  - id: fine\n    name: [unclosed\n  - id: other\n",
        name="broken.yaml",
    )
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.show()
    page = open_catalog(win, qtbot)
    assert page.source.rowCount() >= 25
    assert page.banner.isVisible()
    text = page.banner.label.text()
    assert f"{broken}:" in text
    line = text.split(f"{broken}:", 1)[1].split(":", 1)[0]
    assert line.isdigit() and 3 <= int(line) <= 5
    qtbot.mouseClick(page.banner.dismiss, Qt.MouseButton.LeftButton)
    assert not page.banner.isVisible()
    bundled = page.source.rowCount()
    assert bundled >= 25

    # Fixed by the user, then Reload: no banner, and the new model is listed.
    broken.write_text("version: 1\nmodels:\n" + user_model_yaml("fixed"), encoding="utf-8")
    with qtbot.waitSignal(page.sig_catalog_loaded, timeout=30000) as loaded:
        qtbot.mouseClick(page.reload_button, Qt.MouseButton.LeftButton)
    assert loaded.args == [bundled + 1]
    assert not page.banner.isVisible()
    assert page.source.row_of("fixed") >= 0


# -- downloads through the page against a real HTTPS server --------------------------------------


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    cert, key = make_self_signed_cert(tmp_path / "tls")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FaultServer(ssl_context=server_ssl_context(cert, key)) as server:
        yield server


def model_body(size: int) -> bytes:
    return b"GGUF" + os.urandom(size - 4)


def close_bridge(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    run(qtbot, bridge_for(window.lab).aclose())


@OFFSCREEN_DIALOG
def test_download_from_the_page_runs_as_a_task_and_lands_on_the_models_page(
    qtbot, qloop, isolated_user_dirs: dict[str, Path], https_server: FaultServer
) -> None:  # type: ignore[no-untyped-def]
    body = model_body(3 * 1024 * 1024 + 123)
    https_server.serve("/files/tiny-Q8_0.gguf", body)
    write_user_catalog(
        isolated_user_dirs["config"],
        "version: 1\nmodels:\n"
        + user_model_yaml(
            "tiny",
            url=https_server.url("/files/tiny-Q8_0.gguf"),
            sha256=sha256_of(body),
            size=len(body),
        ),
    )
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.show()
    page = open_catalog(win, qtbot)
    assert page.select_model("tiny")
    details = page.details
    assert details.download_button.text() == "Download"
    assert not details.serve_button.isEnabled()

    qtbot.mouseClick(details.download_button, Qt.MouseButton.LeftButton)
    tasks = [t for t in win.lab.tasks.tasks if t.kind == "download"]
    assert len(tasks) == 1
    task = tasks[0]
    assert task.name == "Download Test tiny Q8_0"
    qtbot.waitUntil(lambda: task.state.finished, timeout=30000)
    assert task.state is TaskState.DONE, task.error
    assert task.progress == 1.0
    assert "3.0 MiB" in task.detail
    assert any("verified against the catalog" in line for line in task.log)

    # The Tasks page lists it with its progress.
    tasks_page = win.show_page("tasks")
    assert tasks_page.model.rowCount() == 1
    assert tasks_page.model.index(0, 2).data() == "100 %"

    # The catalog now offers Serve, Playground and Delete; the Downloaded filter shows it.
    qtbot.waitUntil(lambda: page.source.is_ready("tiny:Q8_0"), timeout=10000)
    win.show_page("catalog")
    assert page.details.download_button.text() == "Downloaded"
    assert details.serve_button.isEnabled() and details.playground_button.isEnabled()
    page.downloaded_check.setChecked(True)
    assert [m.id for m in shown_models(page)] == ["tiny"]

    # Serve: the Services page's New service dialog with the downloaded file chosen.
    tiny_path = page.source.stored("tiny:Q8_0").path
    with qtbot.waitSignal(page.sig_serve_requested, timeout=2000) as served:
        qtbot.mouseClick(details.serve_button, Qt.MouseButton.LeftButton)
    assert served.args == ["tiny", "tiny:Q8_0"]
    services = win.page("services")
    assert isinstance(services, ServicesPage)
    qtbot.waitUntil(lambda: isinstance(services.active_dialog, NewServiceDialog), timeout=20000)
    assert services.active_dialog.model_combo.currentData() == str(tiny_path)
    services.active_dialog.reject()
    qtbot.waitUntil(lambda: services.active_dialog is None)
    assert win.current_page_key() == "catalog"
    # Open in Playground: no service runs it, so it offers to serve it first; declined.
    with qtbot.assertNotEmitted(page.sig_open_in_playground):
        qtbot.mouseClick(details.playground_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: isinstance(services.active_dialog, MessageDialog), timeout=20000)
        services.active_dialog.reject_button.click()
        qtbot.waitUntil(lambda: services.active_dialog is None)
    assert win.current_page_key() == "catalog"
    assert [t for t in win.lab.tasks.tasks if t.kind == "service"] == []

    # The Models page lists the file, ready.
    models = win.show_page("models")
    assert isinstance(models, ModelsPage)
    qtbot.waitUntil(lambda: "tiny:Q8_0" in models.entry_ids(), timeout=10000)
    entry = next(e for e in models.source.entries() if e.id == "tiny:Q8_0")
    assert entry.state == "ready" and entry.size == len(body)
    assert entry.path.read_bytes() == body

    # Delete from the catalog page, confirming the dialog.
    win.show_page("catalog")
    qtbot.mouseClick(details.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.active_dialog is not None and page.active_dialog.isVisible())
    box = page.active_dialog
    assert isinstance(box, QMessageBox)
    confirm = next(b for b in box.buttons() if b.text() == "Delete")
    qtbot.mouseClick(confirm, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not entry.path.exists(), timeout=10000)
    qtbot.waitUntil(lambda: not page.source.is_ready("tiny:Q8_0"), timeout=10000)
    qtbot.waitUntil(lambda: "tiny:Q8_0" not in models.entry_ids(), timeout=10000)
    assert page.proxy.rowCount() == 0  # the Downloaded filter is still on
    close_bridge(win, qtbot)


def test_a_failed_download_is_shown_on_its_row_and_details_with_retry(
    qtbot, qloop, isolated_user_dirs: dict[str, Path]
) -> None:  # type: ignore[no-untyped-def]
    # `.invalid` never resolves: what a machine without network sees for huggingface.co.
    write_user_catalog(
        isolated_user_dirs["config"],
        "version: 1\nmodels:\n"
        + user_model_yaml("offline", url="https://models.example.invalid/offline-Q8_0.gguf"),
    )
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.resize(1000, 700)
    win.show()
    page = open_catalog(win, qtbot)
    assert page.select_model("offline")
    details = page.details
    qtbot.mouseClick(details.download_button, Qt.MouseButton.LeftButton)
    task = win.lab.tasks.tasks[-1]
    qtbot.waitUntil(lambda: task.state.finished, timeout=10000)
    assert task.state is TaskState.FAILED

    # Where the user looks: the details pane and the row, in plain words, with Retry.
    qtbot.waitUntil(lambda: details.download_button.text() == "Retry download", timeout=5000)
    text = details.state_label.text()
    assert text.startswith("Download failed: No connection to models.example.invalid"), text
    assert "Errno" not in text and "pull again" not in text
    variant = details.variant
    assert variant is not None and page.source.state_text(variant) == "download failed"
    row = page.proxy.mapToSource(page.table.currentIndex()).row()
    tooltip = page.source.index(row, 0).data(Qt.ItemDataRole.ToolTipRole)
    assert "No connection to models.example.invalid" in tooltip
    # The status bar cuts a long message at the window's edge: its tooltip has it whole.
    assert win.statusBar().currentMessage().startswith("Download failed: No connection")
    assert win.statusBar().toolTip() == win.statusBar().currentMessage()

    # Retry starts a new download task from the same button.
    qtbot.mouseClick(details.download_button, Qt.MouseButton.LeftButton)
    retry = win.lab.tasks.tasks[-1]
    assert retry is not task and retry.kind == "download"
    qtbot.waitUntil(lambda: retry.state.finished, timeout=10000)
    qtbot.waitUntil(lambda: details.download_button.text() == "Retry download", timeout=5000)
    close_bridge(win, qtbot)


def test_a_failed_resume_is_shown_on_the_models_page_with_retry(
    qtbot, qloop, isolated_user_dirs: dict[str, Path], https_server: FaultServer
) -> None:  # type: ignore[no-untyped-def]
    body = model_body(2 * 1024 * 1024)
    # Stalls after 600 KiB (cancelled there), the resume is refused (410), the retry works.
    https_server.serve(
        "/files/gone-Q8_0.gguf", body, [stall(600 * 1024, seconds=30), status(410), ok()]
    )
    write_user_catalog(
        isolated_user_dirs["config"],
        "version: 1\nmodels:\n"
        + user_model_yaml(
            "gone",
            url=https_server.url("/files/gone-Q8_0.gguf"),
            sha256=sha256_of(body),
            size=len(body),
        ),
    )
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.show()
    page = open_catalog(win, qtbot)
    assert page.select_model("gone")
    qtbot.mouseClick(page.details.download_button, Qt.MouseButton.LeftButton)
    task = win.lab.tasks.tasks[-1]
    qtbot.waitUntil(lambda: (task.progress or 0) > 0.2, timeout=20000)
    task.cancel()
    qtbot.waitUntil(lambda: task.state.finished, timeout=10000)

    models = win.show_page("models")
    assert isinstance(models, ModelsPage)
    qtbot.waitUntil(lambda: "gone:Q8_0" in models.entry_ids(), timeout=10000)
    assert models.select("gone:Q8_0")
    assert models.resume_button.text() == "Resume"
    models.resume_button.click()
    resume = win.lab.tasks.tasks[-1]
    qtbot.waitUntil(lambda: resume.state.finished, timeout=10000)
    assert resume.state is TaskState.FAILED
    qtbot.waitUntil(lambda: models.resume_button.text() == "Retry download", timeout=5000)
    state = models.facts["state"].text()
    assert state.startswith("Download failed (") and "kept)" in state and "410" in state, state
    assert models.resume_button.isEnabled()

    models.resume_button.click()  # Retry: this time the server sends the rest
    retry = win.lab.tasks.tasks[-1]
    qtbot.waitUntil(lambda: retry.state.finished, timeout=20000)
    assert retry.state is TaskState.DONE, retry.error
    qtbot.waitUntil(lambda: models.facts["state"].text() == "Ready", timeout=10000)
    assert models.resume_button.text() == "Resume"
    close_bridge(win, qtbot)


@OFFSCREEN_DIALOG
def test_a_cancelled_download_is_partial_never_servable_and_resumes(
    qtbot, qloop, isolated_user_dirs: dict[str, Path], https_server: FaultServer
) -> None:  # type: ignore[no-untyped-def]
    body = model_body(2 * 1024 * 1024)
    # The first request stalls after 600 KiB; the resume gets the rest with a Range request.
    https_server.serve("/files/half-Q8_0.gguf", body, [stall(600 * 1024, seconds=30), ok()])
    write_user_catalog(
        isolated_user_dirs["config"],
        "version: 1\nmodels:\n"
        + user_model_yaml(
            "half",
            url=https_server.url("/files/half-Q8_0.gguf"),
            sha256=sha256_of(body),
            size=len(body),
        ),
    )
    win = MainWindow(Lab.open())
    qtbot.addWidget(win)
    win.show()
    page = open_catalog(win, qtbot)
    assert page.select_model("half")
    details = page.details
    qtbot.mouseClick(details.download_button, Qt.MouseButton.LeftButton)
    task = win.lab.tasks.tasks[-1]
    qtbot.waitUntil(lambda: (task.progress or 0) > 0.2, timeout=20000)
    assert details.download_button.text() == "Cancel download"
    assert not details.serve_button.isEnabled()
    qtbot.mouseClick(details.download_button, Qt.MouseButton.LeftButton)  # cancels
    qtbot.waitUntil(lambda: task.state.finished, timeout=10000)
    assert task.state is TaskState.CANCELLED

    qtbot.waitUntil(lambda: page.source.stored("half:Q8_0") is not None, timeout=10000)
    assert page.source.stored("half:Q8_0").state == "partial"
    assert details.download_button.text() == "Resume download"
    assert not details.serve_button.isEnabled()
    assert not details.playground_button.isEnabled()

    models = win.show_page("models")
    assert isinstance(models, ModelsPage)
    qtbot.waitUntil(lambda: "half:Q8_0" in models.entry_ids(), timeout=10000)
    assert models.select("half:Q8_0")
    assert models.facts["state"].text().startswith("Partial")
    assert "%" in models.facts["state"].text()
    assert not models.serve_button.isEnabled()
    assert not models.playground_button.isEnabled()
    assert models.resume_button.isEnabled()

    # Nor through the New service dialog: the unfinished file is refused there.
    partial_file = models.current_entry().path.with_name("half-Q8_0.gguf.partial")
    assert partial_file.is_file()
    services = win.page("services")
    assert isinstance(services, ServicesPage)
    asked = asyncio.ensure_future(services.new_service(partial_file))
    qtbot.waitUntil(lambda: isinstance(services.active_dialog, NewServiceDialog), timeout=20000)
    dialog = services.active_dialog
    assert dialog.path_edit.text() == str(partial_file)
    dialog.start_button.click()
    assert "unfinished download" in dialog.problem.text()
    assert dialog.isVisible()
    dialog.reject()
    qtbot.waitUntil(asked.done, timeout=10000)
    assert asked.result() is None
    assert [t for t in win.lab.tasks.tasks if t.kind == "service"] == []

    qtbot.mouseClick(models.resume_button, Qt.MouseButton.LeftButton)
    resumed = win.lab.tasks.tasks[-1]
    assert resumed is not task
    qtbot.waitUntil(lambda: resumed.state.finished, timeout=30000)
    assert resumed.state is TaskState.DONE, resumed.error
    ranges = [r.range for r in https_server.requests_for("/files/half-Q8_0.gguf")]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")
    qtbot.waitUntil(lambda: models.facts["state"].text() == "Ready", timeout=10000)
    assert models.serve_button.isEnabled()
    qtbot.waitUntil(lambda: page.source.is_ready("half:Q8_0"), timeout=10000)
    close_bridge(win, qtbot)


@OFFSCREEN_DIALOG
def test_a_downloaded_smollm2_is_served_from_the_catalog_and_opened_in_the_playground(
    qtbot,
    qloop,
    isolated_user_dirs: dict[str, Path],
    https_server: FaultServer,
    smollm2_model: Path,
) -> None:  # type: ignore[no-untyped-def]
    """The real SmolLM2 file, downloaded through the page; Serve starts a real local service
    (the Services page shows it selected); Open in Playground then selects it there."""
    https_server.serve("/files/smol-Q4_1.gguf", smollm2_model)
    size = smollm2_model.stat().st_size
    write_user_catalog(
        isolated_user_dirs["config"],
        "version: 1\nmodels:\n"
        + user_model_yaml(
            "smol",
            url=https_server.url("/files/smol-Q4_1.gguf"),
            sha256=sha256_of(smollm2_model),
            size=size,
        )
        .replace("smol:Q8_0", "smol:Q4_1")
        .replace("Q8_0", "Q4_1"),
    )
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
    try:
        page = open_catalog(win, qtbot)
        assert page.select_model("smol")
        details = page.details
        qtbot.mouseClick(details.download_button, Qt.MouseButton.LeftButton)
        download = win.lab.tasks.tasks[-1]
        qtbot.waitUntil(lambda: download.state.finished, timeout=60000)
        assert download.state is TaskState.DONE, download.error
        qtbot.waitUntil(lambda: page.source.is_ready("smol:Q4_1"), timeout=10000)
        entry = page.source.stored("smol:Q4_1")
        assert entry is not None and entry.path.stat().st_size == size

        # Serve: the New service dialog with the file chosen, the local engine; then the
        # Services page with the new service selected, ready.
        qtbot.mouseClick(details.serve_button, Qt.MouseButton.LeftButton)
        services = win.page("services")
        assert isinstance(services, ServicesPage)
        qtbot.waitUntil(lambda: isinstance(services.active_dialog, NewServiceDialog), timeout=20000)
        dialog = services.active_dialog
        assert dialog.model_combo.currentData() == str(entry.path)
        dialog.set_choice(dialog.engine_combo, "local")
        dialog.ctx_spin.setValue(2048)
        dialog.threads_spin.setValue(2)
        dialog.start_button.click()
        qtbot.waitUntil(lambda: win.current_page_key() == "services", timeout=20000)
        task = services.last_task
        assert task is not None and task.kind == "service"
        qtbot.waitUntil(lambda: task.state.finished, timeout=180_000)
        assert task.state is TaskState.DONE, f"{task.error}\n" + "\n".join(task.log)
        service = services.selected()
        assert service is not None and service.state is ServiceState.READY
        assert service.model_file == str(entry.path)

        # Open in Playground from the catalog: that service, selected, nothing asked.
        win.show_page("catalog")
        with qtbot.waitSignal(page.sig_open_in_playground, timeout=20000) as opened:
            qtbot.mouseClick(details.playground_button, Qt.MouseButton.LeftButton)
        assert opened.args == ["smol", "smol:Q4_1"]
        assert win.current_page_key() == "playground"
        playground = win.page("playground")
        assert isinstance(playground, PlaygroundPage)
        qtbot.waitUntil(
            lambda: playground.picker.service_combo.currentData() == service.id, timeout=20000
        )
        assert services.active_dialog is None
    finally:
        bridge.sig_service_event.disconnect(remember)

        async def remove_created() -> None:
            for service in created:
                with contextlib.suppress(Exception):
                    await bridge.manager.stop(service)
                with contextlib.suppress(Exception):
                    await bridge.manager.delete(service)

        cleanup = asyncio.ensure_future(remove_created())
        qtbot.waitUntil(cleanup.done, timeout=60000)
        close_bridge(win, qtbot)
