"""The Evaluate page over a real evaluation store: runs made by the core runner against real
llama.cpp servers (SmolLM2 and Gemma 3 270M) are listed and shown as the store holds them (cell
table, one chart point per cell, two cells' answers side by side), exports in three formats,
a drop below an earlier run's interval is flagged, Open in Compare hands the best cell over,
a refused prompt set shows its file:line, and a run started from the page on the real local
engine pauses, resumes and finishes (another is cancelled)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import stat
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QLineEdit

from podlab.core.chat.client import GenerationParams
from podlab.core.evaluate.promptset import PromptSet, load_prompt_set
from podlab.core.evaluate.report import compare_runs, export_run
from podlab.core.evaluate.results import CellSpec, ItemRecord, RunRecord
from podlab.core.evaluate.runner import EvalRunner, RunProgress, new_run_config
from podlab.core.evaluate.store import EvalStore
from podlab.core.lab import Lab
from podlab.core.tasks import TaskState
from podlab.ui.download_bridge import bridge_for
from podlab.ui.main_window import MainWindow
from podlab.ui.models.eval_model import COLUMNS
from podlab.ui.pages.compare import ComparePage
from podlab.ui.pages.evaluate import EvaluatePage
from tests import harness
from tests.gui.a11y import unnamed_controls

pytestmark = pytest.mark.gui

TEN_ITEMS = Path(__file__).resolve().parents[1] / "data" / "eval" / "ten-items.yaml"
RUN_TIMEOUT_MS = 240_000
T = TypeVar("T")


def wait_for(qtbot: Any, coro: Coroutine[Any, Any, T], timeout_ms: int = 60_000) -> T:
    """Run `coro` on the Qt-driven asyncio loop and return its result."""
    future = asyncio.ensure_future(coro)
    qtbot.waitUntil(future.done, timeout=timeout_ms)
    return future.result()


def real_run(
    qtbot: Any,
    store: EvalStore,
    servers: list[harness.LlamaServer],
    prompt_set: PromptSet,
    max_tokens: int = 5,
) -> RunRecord:
    """A run of `prompt_set` by the core runner, one endpoint cell per real server."""
    cells = [CellSpec(server.base_url, backend="endpoint") for server in servers]
    params = GenerationParams(max_tokens=max_tokens)
    config = new_run_config(prompt_set, cells, params=params)
    run = store.create_run(config)
    finished = wait_for(qtbot, EvalRunner(store).run(run.id), RUN_TIMEOUT_MS)
    assert finished.status == "finished"
    assert [cell.status for cell in store.cells(run.id)] == ["done"] * len(servers)
    return finished


def open_page(qtbot: Any, lab: Lab) -> tuple[MainWindow, EvaluatePage]:
    window = MainWindow(lab)
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    page = window.show_page("evaluate")
    assert isinstance(page, EvaluatePage)
    wait_for(qtbot, page.settle())
    return window, page


@pytest.fixture
def few_items() -> PromptSet:
    """The first three of the ten items: enough for an interval, quick on a loaded machine
    (a real llama.cpp server on two shared cores takes seconds per answer)."""
    prompt_set = load_prompt_set(TEN_ITEMS)
    return replace(prompt_set, items=prompt_set.items[:3])


@pytest.fixture
def store() -> Any:
    with EvalStore.open_default() as opened:
        yield opened


@pytest.fixture
def two_servers(
    smollm2_server: harness.LlamaServer, gemma3_server: harness.LlamaServer
) -> list[harness.LlamaServer]:
    return [smollm2_server, gemma3_server]


def table_texts(page: EvaluatePage) -> list[list[str]]:
    model = page.cell_model
    return [
        [str(model.index(row, column).data()) for column in range(model.columnCount())]
        for row in range(model.rowCount())
    ]


def test_a_stored_run_is_listed_and_shown_as_the_store_holds_it_and_opens_in_compare(
    qtbot: Any, qloop: Any, store: EvalStore, two_servers: Any, few_items: PromptSet
) -> None:
    run = real_run(qtbot, store, two_servers, few_items)
    window, page = open_page(qtbot, Lab.open())

    assert [listed.id for listed in page.runs] == [run.id]
    assert page.runs_list.count() == 1 and page.runs_list.item(0).text().startswith(
        f"{run.id} · ten-items · 2 cells · finished"
    )
    assert page.current_run is not None and page.current_run.id == run.id
    summaries = store.summary(run.id)
    assert page.summaries == summaries
    rows = table_texts(page)
    assert [row[0] for row in rows] == [s.label for s in summaries]
    for row, summary in zip(rows, summaries, strict=True):
        assert summary.quality.mean is not None and summary.tg_tokens_per_s is not None
        assert row[COLUMNS.index("Quality")] == f"{summary.quality.mean:.2f}"
        assert row[COLUMNS.index("95% CI")] == (
            f"{summary.quality.ci_low:.2f} – {summary.quality.ci_high:.2f}"
        )
        assert row[COLUMNS.index("tg tok/s")] == f"{summary.tg_tokens_per_s:.1f}"
        assert row[COLUMNS.index("TTFT p50")] == f"{summary.ttft_p50_ms:.0f} ms"
        assert row[COLUMNS.index("Failed")] == f"{summary.failed}/{summary.items}"

    # one point per cell, at (generation tok/s, mean score) with the CI as its error bar
    assert [(p.tokens_per_s, p.quality, p.ci_low, p.ci_high) for p in page.chart.points] == [
        (s.tg_tokens_per_s, s.quality.mean, s.quality.ci_low, s.quality.ci_high) for s in summaries
    ]
    assert len(page.chart.points) == len(store.cells(run.id))
    assert not page.chart.note.isVisible()

    # the two cells side by side, item by item
    first, second = store.cells(run.id)
    page.left_cell.setCurrentIndex(page.left_cell.findData(first.id))
    page.right_cell.setCurrentIndex(page.right_cell.findData(second.id))
    for row, item in enumerate(few_items.items):
        page.answers_table.selectRow(row)
        answers = store.answers(run.id, item.id)
        assert page.answers_shown() == (answers[first.id].answer, answers[second.id].answer)
        assert page.prompt_view.toPlainText().startswith(item.prompt)
    assert unnamed_controls(page) == []

    # Open in Compare: the best cell (highest mean, then fastest) goes to a Compare pane
    best = max(summaries, key=lambda s: (s.quality.mean or 0.0, s.tg_tokens_per_s or 0.0))
    assert page.compare_button.isEnabled()
    page.compare_button.click()
    qtbot.waitUntil(lambda: window.current_page_key() == "compare", timeout=5000)
    compare = window.compare_page()
    assert isinstance(compare, ComparePage)
    assert compare.panes[0].picker.endpoint() == store.cell(best.cell_id).spec.model


def test_answers_are_plain_text_whatever_a_model_writes(
    qtbot: Any, qloop: Any, store: EvalStore, few_items: PromptSet
) -> None:
    """An answer full of markup, written through the store, shows as the characters it is."""
    hostile = '<b>bold</b><img src="http://127.0.0.1:9/x.png"><script>alert(1)</script>'
    config = new_run_config(few_items, [CellSpec("http://127.0.0.1:9", backend="endpoint")])
    run = store.create_run(config)
    (cell,) = store.cells(run.id)
    item = few_items.items[0]
    store.save_item(ItemRecord(cell.id, item.id, 0, "done", answer=hostile, score=0.0))
    store.update_cell(cell.id, status="done")
    store.set_run_status(run.id, "finished")
    _window, page = open_page(qtbot, Lab.open())
    page.answers_table.selectRow(0)
    assert page.answers_shown()[0] == hostile
    assert page.answers_table.item(0, 3).text() == hostile  # item views never render HTML
    assert page.left_answer.toPlainText() == hostile  # a plain text view: nothing rendered
    assert page.left_answer.document().toPlainText() == hostile


@pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")  # offscreen
def test_export_writes_csv_json_and_markdown_privately(
    qtbot: Any,
    qloop: Any,
    store: EvalStore,
    smollm2_server: Any,
    few_items: PromptSet,
    tmp_path: Path,
) -> None:
    run = real_run(qtbot, store, [smollm2_server], few_items)
    _window, page = open_page(qtbot, Lab.open())
    for fmt in ("csv", "json", "md"):
        path = page.export(tmp_path / f"run.{fmt}", fmt)
        assert path.read_text(encoding="utf-8") == export_run(store, run.id, fmt)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO((tmp_path / "run.csv").read_text())))
    assert [row["item_id"] for row in rows] == [item.id for item in few_items.items]
    assert json.loads((tmp_path / "run.json").read_text())["id"] == run.id
    assert (tmp_path / "run.md").read_text().startswith(f"# Evaluation {run.id}: ten-items")

    # and through the Export menu's file dialog
    target = tmp_path / "from-dialog.md"
    page.export_button.menu().actions()[2].trigger()
    qtbot.waitUntil(lambda: bool(page.findChildren(QFileDialog)), timeout=5000)
    (dialog,) = page.findChildren(QFileDialog)
    name_box = dialog.findChild(QLineEdit)  # the user types the file name
    assert name_box is not None
    name_box.setText(str(target))
    qtbot.waitUntil(lambda: dialog.selectedFiles() == [str(target)], timeout=5000)
    dialog.accept()
    qtbot.waitUntil(target.exists, timeout=5000)
    assert target.read_text(encoding="utf-8") == export_run(store, run.id, "md")
    assert page.run_status.text() == f"Exported run {run.id} to {target}"


def test_a_drop_below_the_earlier_runs_interval_is_flagged(
    qtbot: Any, qloop: Any, store: EvalStore, smollm2_server: Any
) -> None:
    """The later run's answers are the earlier one's with every right answer made wrong
    (written through the store): its quality falls below the earlier interval. The earlier
    run asks two items SmolLM2 answers right at temperature 0 in eight tokens."""
    known = load_prompt_set(TEN_ITEMS)
    easy = replace(known, items=(known.item("capital-japan"), known.item("two-plus-three")))
    earlier = real_run(qtbot, store, [smollm2_server], easy, max_tokens=8)
    (before_cell,) = store.cells(earlier.id)
    assert store.summary(earlier.id)[0].quality.mean, "SmolLM2 got nothing right"
    later = store.create_run(earlier.config)
    (after_cell,) = store.cells(later.id)
    for record in store.items(before_cell.id):
        store.save_item(replace(record, cell_id=after_cell.id, score=0.0, answer="wrong"))
    store.update_cell(after_cell.id, status="done")
    store.set_run_status(later.id, "finished")

    _window, page = open_page(qtbot, Lab.open())
    assert page.current_run is not None and page.current_run.id == later.id  # newest first
    assert page.earlier_combo.currentData() == earlier.id
    expected = [c.label for c in compare_runs(store, earlier.id, later.id) if c.dropped]
    assert expected and page.dropped_labels() == expected
    assert "scored below the earlier run's" in page.earlier_note.text()

    # shown the other way round (the earlier run against nothing older): nothing to flag
    assert page.select_run(earlier.id)
    qtbot.waitUntil(lambda: page.current_run is not None and page.current_run.id == earlier.id)
    assert page.dropped_labels() == []
    assert page.earlier_note.text() == "There is no earlier run to compare with."


def test_a_refused_prompt_set_says_file_and_line_and_keeps_the_last_good_one(
    qtbot: Any, qloop: Any, tmp_path: Path
) -> None:
    _window, page = open_page(qtbot, Lab.open())
    good = page.prompt_set
    assert good is not None
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nitems:\n  - id: a\n    prompt: hi\n    scorer: nonesuch\n")
    assert wait_for(qtbot, page.choose_set(broken)) is None
    assert page.set_error.isVisible()
    assert page.set_error.text().startswith(f"{broken}:")
    assert page.set_error.text().split(":")[1].isdigit()  # the line of the problem
    assert page.prompt_set is good
    assert wait_for(qtbot, page.choose_set(TEN_ITEMS)) is not None
    assert not page.set_error.isVisible()
    assert page.set_combo.currentData() == str(TEN_ITEMS)
    assert page.set_info.text().endswith(
        "10 items · scored by contains, exact, json_schema, numeric, regex"
    )


@pytest.fixture
def lab_with_smollm2(smollm2_model: Path) -> Lab:
    lab = Lab.open()
    bridge_for(lab).store.import_gguf(smollm2_model)
    return lab


SMALL_SET = """\
name: small
system: Answer briefly.
items:
  - {id: capital-france, prompt: "Capital of France?", reference: Paris, scorer: contains}
  - {id: red-planet, prompt: "Which planet is the Red Planet?", reference: Mars, scorer: contains}
  - {id: two-plus-three, prompt: "What is 2 + 3? Reply with the number.", reference: 5,
     scorer: numeric}
  - {id: opposite, prompt: "What is the opposite of up?", reference: down, scorer: contains}
"""
SMALL_IDS = ["capital-france", "red-planet", "two-plus-three", "opposite"]


def start_from_page(qtbot: Any, page: EvaluatePage, folder: Path) -> Any:
    """Tick SmolLM2, one context size, a small set of four items at a few tokens each, and
    click Run."""
    small = folder / "small.yaml"
    small.write_text(SMALL_SET, encoding="utf-8")
    assert wait_for(qtbot, page.choose_set(small)) is not None
    (key,) = [choice.key for choice in page.choices if choice.model is not None]
    page.check_models([key])
    page.ctx_edit.setText("1024")
    page.max_tokens.setValue(6)
    assert page.run_button.isEnabled()
    page.run_button.click()
    task = page.run_task
    assert task is not None and page.pause_button.isEnabled()
    return task


def test_a_run_from_the_page_on_the_local_engine_pauses_resumes_and_finishes(
    qtbot: Any, qloop: Any, lab_with_smollm2: Lab, tmp_path: Path
) -> None:
    _window, page = open_page(qtbot, lab_with_smollm2)
    original = page._on_progress

    def pause_after_two(event: RunProgress) -> None:
        original(event)
        if event.state == "running" and event.items_done == 2:
            page.pause_button.click()

    page._on_progress = pause_after_two  # type: ignore[method-assign]
    task = start_from_page(qtbot, page, tmp_path)
    run_id = page.running_run_id
    assert run_id is not None
    runner = page._runner
    with qtbot.waitSignal(page.sig_run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        pass
    paused: RunRecord = ended.args[0]
    qtbot.waitUntil(lambda: task.state.finished, timeout=10000)
    assert paused.status == "paused", paused.error
    assert task.state is TaskState.DONE
    store = page.store
    assert store is not None
    (cell,) = store.cells(run_id)
    done_before = len(store.items(cell.id))
    assert 2 <= done_before < len(SMALL_IDS)
    qtbot.waitUntil(lambda: page.resume_button.isEnabled(), timeout=10000)
    page._on_progress = original  # type: ignore[method-assign]

    page.resume_button.click()
    resumed = page.run_task
    assert resumed is not None and resumed is not task
    with qtbot.waitSignal(page.sig_run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        pass
    finished: RunRecord = ended.args[0]
    assert finished.status == "finished", finished.error
    qtbot.waitUntil(lambda: resumed.state is TaskState.DONE, timeout=10000)
    records = store.items(cell.id)
    assert [r.item_id for r in records] == SMALL_IDS
    assert all(record.status == "done" for record in records), [r.error for r in records]
    qtbot.waitUntil(
        lambda: page.current_run is not None and page.current_run.status == "finished",
        timeout=10000,
    )
    assert page.cell_model.rowCount() == 1
    assert table_texts(page)[0][COLUMNS.index("Failed")] == "0/4"
    assert len(page.chart.points) == (1 if store.summary(run_id)[0].quality.mean is not None else 0)
    assert store.cells(run_id)[0].spec.ctx == 1024
    assert runner is not page._runner


def test_a_run_cancelled_from_the_page_is_stored_as_cancelled_and_can_resume(
    qtbot: Any, qloop: Any, lab_with_smollm2: Lab, tmp_path: Path
) -> None:
    _window, page = open_page(qtbot, lab_with_smollm2)
    original = page._on_progress

    def cancel_on_first_answer(event: RunProgress) -> None:
        original(event)
        if event.state == "running" and event.items_done == 1:
            page.cancel_button.click()

    page._on_progress = cancel_on_first_answer  # type: ignore[method-assign]
    task = start_from_page(qtbot, page, tmp_path)
    with qtbot.waitSignal(page.sig_run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        pass
    cancelled: RunRecord = ended.args[0]
    assert cancelled.status == "cancelled"
    qtbot.waitUntil(lambda: task.state is TaskState.CANCELLED, timeout=10000)
    qtbot.waitUntil(lambda: page.resume_button.isEnabled(), timeout=10000)
    assert not page.pause_button.isEnabled() and not page.cancel_button.isEnabled()
    assert page.runs_list.item(0).text().startswith(f"{cancelled.id} · small · 1 cell ·")
    assert Qt.CheckState.Checked in [
        page.model_list.item(row).checkState() for row in range(page.model_list.count())
    ]
