"""The Compare page against real servers: two fault-injecting streaming servers on 127.0.0.1
(two endpoints), and a real llama.cpp server with SmolLM2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QLayout, QVBoxLayout, QWidget

from podlab.core.chat.compare import RoundResult
from podlab.core.lab import Lab
from podlab.ui.pages.compare import ComparePage
from tests.faultserver import ANSWER_TEXT, FaultServer, serve_in_thread

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FaultServer, FaultServer]]:
    with serve_in_thread() as first, serve_in_thread() as second:
        yield first, second


@pytest.fixture
def page(qtbot: Any, qloop: Any) -> Iterator[ComparePage]:
    host = QWidget()
    layout = QVBoxLayout(host)
    layout.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)
    lab = Lab.open()
    widget = ComparePage(lab)
    layout.addWidget(widget)
    qtbot.addWidget(host)
    host.resize(1400, 800)
    host.show()
    qtbot.waitExposed(host)
    yield widget
    widget.shutdown()
    task = widget._task
    if task is not None:
        qtbot.waitUntil(task.done, timeout=5000)
    lab.close()


def set_panes(page: ComparePage, *targets: tuple[str, str]) -> None:
    while len(page.panes) < len(targets):
        page.add_pane()
    for pane, (url, model) in zip(page.panes, targets, strict=True):
        pane.picker.set_endpoint(url, model)


def run_round(qtbot: Any, page: ComparePage, prompt: str, timeout: int = 15000) -> RoundResult:
    page.prompt.setPlainText(prompt)
    page.prompt.setFocus()
    with qtbot.waitSignal(page.sig_round_finished, timeout=timeout) as signal:
        QTest.keyClick(page.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    result = signal.args[0]
    assert isinstance(result, RoundResult)
    for pane in page.panes:
        assert pane.answer is not None
        qtbot.waitUntil(lambda pane=pane: pane.answer.view.finished, timeout=timeout)
    qtbot.waitUntil(lambda: not page.busy, timeout=timeout)
    return result


def test_two_panes_on_two_endpoints_fill_with_figures(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer]
) -> None:
    first, second = servers
    set_panes(page, (first.url, "normal"), (second.url, "synthetic?tokens=30&tps=300"))
    result = run_round(qtbot, page, "Hello both")
    one, two = page.panes
    assert one.answer.text() == ANSWER_TEXT
    assert two.answer.text() == " tok" * 30
    for pane in page.panes:
        figures = pane.answer.figures.text()
        assert "TTFT" in figures and "tok/s" in figures and "total" in figures
        assert "energy" in figures  # a figure or "not available"
    assert sum(pane.badge.isVisible() for pane in page.panes) == 1
    fastest = result.fastest
    assert fastest is not None and page.panes[fastest].badge.isVisible()
    assert "fastest" in page.status_label.text()
    assert page.store.comparisons()[0].prompt == "Hello both"
    # Each pane keeps its own history: the next round sends it.
    set_panes(page, (first.url, "echo"), (second.url, "echo"))
    run_round(qtbot, page, "again")
    assert one.answer.text() == "echo: again | messages=3"
    assert len(one.pane.history) == 4


def test_a_failing_pane_does_not_stop_the_other(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer]
) -> None:
    first, _second = servers
    set_panes(page, ("http://127.0.0.1:9", "nobody"), (first.url, "synthetic?tokens=60&tps=60"))
    page.prompt.setPlainText("Who answers?")
    with qtbot.waitSignal(page.sig_round_finished, timeout=15000) as signal:
        page.send_button.click()
        broken, working = page.panes
        qtbot.waitUntil(lambda: broken.error.isVisible(), timeout=5000)
        assert "cannot reach" in broken.error.text()
        assert working.answer is not None and working.answer.streaming  # still going
    result = signal.args[0]
    assert result.panes[0].state == "error" and result.panes[1].state == "complete"
    qtbot.waitUntil(lambda: working.answer.view.finished, timeout=5000)
    assert working.answer.text() == " tok" * 60
    assert broken.answer.badge.text() == "error"
    assert result.fastest == 1 and working.badge.isVisible() and not broken.badge.isVisible()


def test_sequential_mode_runs_one_pane_after_the_other(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer]
) -> None:
    first, second = servers
    set_panes(
        page,
        (first.url, "synthetic?tokens=20&tps=200"),
        (second.url, "synthetic?tokens=20&tps=200"),
        (first.url, "normal"),
    )
    page.mode_combo.setCurrentIndex(page.mode_combo.findData("sequential"))
    result = run_round(qtbot, page, "In turn")
    starts = [pane.started_s for pane in result.panes]
    ends = [pane.finished_s for pane in result.panes]
    assert starts[1] >= ends[0] and starts[2] >= ends[1]
    assert result.mode == "sequential"
    page.mode_combo.setCurrentIndex(page.mode_combo.findData("per-server"))
    result = run_round(qtbot, page, "Per server")
    # Panes 1 and 3 share a server: they take turns; pane 2 runs beside them.
    one, two, three = result.panes
    assert three.started_s >= one.finished_s
    assert two.started_s < one.finished_s


def test_blind_mode_hides_names_until_the_vote_then_rates(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer]
) -> None:
    first, second = servers
    set_panes(page, (first.url, "normal"), (second.url, "synthetic?tokens=10&tps=0"))
    page.panes[0].label_edit.setText("alpha")
    page.panes[1].label_edit.setText("beta")
    page.blind_check.setChecked(True)
    run_round(qtbot, page, "Which is better?")
    comparison = page.comparison
    assert comparison is not None and comparison.blind
    titles = sorted(pane.title.text() for pane in page.panes)
    assert titles == ["Model A", "Model B"]
    for pane in page.panes:
        assert not pane.picker.isVisible()
        assert pane.answer.title_label.text() in ("Model A", "Model B")
    assert page.vote_bar.isVisible()
    # The display order follows the shuffled slots.
    slot_a = comparison.order[0]
    assert page.splitter.widget(0) is page.panes[slot_a]
    page.vote_buttons[0].click()  # "A is better"
    assert not page.vote_bar.isVisible()
    winner = page.panes[slot_a].pane.name
    assert {pane.title.text() for pane in page.panes} == {"alpha", "beta"}
    assert all(pane.picker.isVisible() for pane in page.panes)
    assert page.panes[slot_a].answer.title_label.text() == winner
    page.tabs.setCurrentIndex(2)
    table = page.leaderboard_table
    assert table.rowCount() == 2
    assert table.item(0, 1).text() == winner and int(table.item(0, 2).text()) > 1000
    votes = page.store.votes()
    assert len(votes) == 1 and votes[0].players == ["alpha", "beta"]


def test_prompt_set_fills_the_results_table_and_exports(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    first, second = servers
    set_panes(page, (first.url, "echo"), (second.url, "error_mid?after=2"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond prompt\nthird prompt\n")
    assert page.load_prompt_file(prompts) == ["first prompt", "second prompt", "third prompt"]
    task = page.run_prompt_set()
    assert task is not None
    qtbot.waitUntil(task.done, timeout=20000)
    assert page.results_table.rowCount() == 6
    assert page.summary_table.rowCount() == 2
    assert page.summary_table.item(0, 1).text() == "3"  # echo: three complete
    assert page.summary_table.item(1, 2).text() == "3"  # error_mid: three failed
    states = {page.results_table.item(row, 3).text().split(":")[0] for row in range(6)}
    assert states == {"complete", "error"}
    run_round(qtbot, page, "and one round")
    markdown = page.export(tmp_path / "cmp.md", "markdown").read_text()
    assert "# Round 1" in markdown and "# Prompt set" in markdown and "second prompt" in markdown
    data = json.loads(page.export(tmp_path / "cmp.json", "json").read_text())
    assert len(data["rounds"]) == 1 and len(data["prompt_set"]["rounds"]) == 3
    assert data["rounds"][0]["panes"][0]["text"].startswith("echo: and one round")


def test_stop_ends_every_pane(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer]
) -> None:
    first, second = servers
    slow = "synthetic?tokens=100000&tps=100"
    set_panes(page, (first.url, slow), (second.url, slow))
    page.prompt.setPlainText("Forever")
    page.send()
    qtbot.waitUntil(
        lambda: all(p.answer is not None and p.answer.text().count("tok") > 5 for p in page.panes),
        timeout=5000,
    )
    with qtbot.waitSignal(page.sig_round_finished, timeout=2000) as signal:
        QTest.keyClick(page.prompt, Qt.Key.Key_Escape)
    assert signal.args[0] is None
    qtbot.waitUntil(lambda: not page.busy, timeout=2000)
    for pane in page.panes:
        assert pane.answer.badge.text() == "interrupted"
    for server in servers:
        record = server.requests[-1]
        qtbot.waitUntil(lambda record=record: record.disconnected is not None, timeout=2000)


@pytest.mark.integration
def test_compare_two_settings_on_a_real_llama_server(
    qtbot: Any, page: ComparePage, smollm2_server: Any
) -> None:
    url = smollm2_server.base_url
    set_panes(page, (url, ""), (url, ""))
    cold, warm = page.panes
    cold.label_edit.setText("smollm2 t=0")
    cold.params_form.temperature.setValue(0.0)
    cold.params_form.max_tokens.setValue(16)
    warm.label_edit.setText("smollm2 t=1")
    warm.params_form.temperature.setValue(1.0)
    warm.params_form.max_tokens.setValue(24)
    warm.params_form.seed.setValue(7)
    page.mode_combo.setCurrentIndex(page.mode_combo.findData("per-server"))
    result = run_round(qtbot, page, "Name three colours.", timeout=90000)
    for pane in (cold, warm):
        assert pane.answer.text().strip()
        assert "TTFT" in pane.answer.figures.text()
    for pane_result, limit in zip(result.panes, (16, 24), strict=True):
        assert pane_result.state == "complete"
        assert pane_result.metrics is not None and 0 < pane_result.metrics.tokens <= limit
    # One server: the panes took turns.
    assert result.panes[1].started_s >= result.panes[0].finished_s
    assert result.fastest in (0, 1)
