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
from PySide6.QtWidgets import QLayout, QMessageBox, QVBoxLayout, QWidget

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


def test_two_settings_of_one_model_are_told_apart_and_rated_under_two_names(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer]
) -> None:
    first, _second = servers
    set_panes(page, (first.url, "normal"), (first.url, "normal"))
    cold, warm = page.panes
    cold.params_form.temperature.setValue(0.2)
    warm.params_form.temperature.setValue(0.9)
    # The headers say what differs before anything is sent.
    assert [p.title.text() for p in page.panes] == ["normal · T=0.2", "normal · T=0.9"]
    page.blind_check.setChecked(True)
    run_round(qtbot, page, "Which is better?")
    assert page.vote_bar.isVisible() and page.vote_buttons[0].isEnabled()
    page.vote_buttons[0].click()
    assert "leaderboard is updated" in page.status_label.text()
    votes = page.store.votes()
    assert len(votes) == 1 and votes[0].players == ["normal · T=0.2", "normal · T=0.9"]
    page.tabs.setCurrentIndex(2)
    table = page.leaderboard_table
    names = {table.item(row, 1).text(): table.item(row, 3).text() for row in range(2)}
    assert names == {"normal · T=0.2": "1", "normal · T=0.9": "1"}  # one game each


def test_a_vote_that_cannot_count_is_refused_before_it_is_taken(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer]
) -> None:
    first, _second = servers
    set_panes(page, (first.url, "normal"), (first.url, "http_error?status=503"))
    page.blind_check.setChecked(True)
    run_round(qtbot, page, "Who answers?")
    assert page.vote_bar.isVisible()
    assert "No vote:" in page.vote_label.text() and "did not answer" in page.vote_label.text()
    assert not any(button.isEnabled() for button in page.vote_buttons)
    assert not page.tie_button.isEnabled()
    page.vote_slot(0)  # even when asked directly
    assert "not taken" in page.status_label.text()
    assert page.store.votes() == []


def test_ticking_blind_hides_names_and_history_at_once_and_rounds_start_empty(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer]
) -> None:
    first, second = servers
    set_panes(page, (first.url, "echo"), (second.url, "normal"))
    page.panes[0].label_edit.setText("alpha")
    page.panes[1].label_edit.setText("beta")
    run_round(qtbot, page, "A named round")
    assert all(len(p.chat.messages()) == 2 for p in page.panes)
    page.blind_check.setChecked(True)
    for pane in page.panes:  # at once, before any send
        assert pane.title.text() == "Hidden model"
        assert pane.chat.messages() == [] and pane.pane.history == []
        assert not pane.picker.isVisible()
    run_round(qtbot, page, "Blind one")
    for pane in page.panes:
        texts = [m.text() for m in pane.chat.messages()]
        assert texts[0] == "Blind one" and len(texts) == 2  # no earlier, named round
        assert "alpha" not in pane.title.text() and "beta" not in pane.title.text()
    echo = next(p for p in page.panes if p.pane.label == "alpha")
    assert echo.answer.text() == "echo: Blind one | messages=1"  # no history was sent
    page.vote_buttons[0].click()
    run_round(qtbot, page, "Blind two")  # the revealed round is gone from the panes again
    for pane in page.panes:
        assert pane.chat.messages()[0].text() == "Blind two"


def test_fastest_is_the_complete_answer_and_waits_on_one_server_are_said(
    qtbot: Any, page: ComparePage
) -> None:
    with serve_in_thread(one_at_a_time=True) as server:
        # Pane 1 needs about 0.5 s; pane 2 0.3 s once the server takes it, after pane 1.
        set_panes(
            page,
            (server.url, "synthetic?tokens=20&tps=40"),
            (server.url, "synthetic?tokens=12&tps=40"),
        )
        result = run_round(qtbot, page, "Go")
    first, second = page.panes
    assert result.fastest == 1 and second.badge.isVisible() and not first.badge.isVisible()
    assert second.badge.text().startswith("★ fastest (complete answer in 0.")
    assert "waiting for another pane" in second.badge.toolTip()
    status = page.status_label.text()
    assert "waited" in status and "on the same server" in status


@pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")
def test_leaderboard_rows_can_be_deleted_and_the_board_reset(qtbot: Any, page: ComparePage) -> None:
    page.store.add_vote(["a", "b"], 0)
    page.store.add_vote(["b", "c"], 0)
    page.tabs.setCurrentIndex(2)
    table = page.leaderboard_table
    assert table.rowCount() == 3 and not page.delete_row_button.isEnabled()
    row = next(r for r in range(3) if table.item(r, 1).text() == "a")
    table.selectRow(row)
    assert page.delete_row_button.isEnabled()
    page.delete_row_button.click()
    qtbot.waitUntil(lambda: page.active_dialog is not None and page.active_dialog.isVisible())
    box = page.active_dialog
    confirm = next(b for b in box.buttons() if b.text() == "Delete")
    qtbot.mouseClick(confirm, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: table.rowCount() == 2)
    assert {table.item(r, 1).text() for r in range(2)} == {"b", "c"}
    assert "1 vote)" in page.status_label.text()
    page.reset_board_button.click()
    qtbot.waitUntil(lambda: page.active_dialog is not None and page.active_dialog.isVisible())
    box = page.active_dialog
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.active_dialog is None)
    assert table.rowCount() == 2  # cancelled
    page.reset_board_button.click()
    qtbot.waitUntil(lambda: page.active_dialog is not None and page.active_dialog.isVisible())
    confirm = next(b for b in page.active_dialog.buttons() if b.text() == "Reset")
    qtbot.mouseClick(confirm, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: table.rowCount() == 0)
    assert page.store.votes() == []


def test_the_pane_hint_goes_once_an_endpoint_is_picked(
    qtbot: Any, page: ComparePage, servers: tuple[FaultServer, FaultServer]
) -> None:
    pane = page.panes[0]
    hint = pane.chat._placeholder
    assert hint.isVisible()
    pane.picker.set_endpoint(servers[0].url, "normal")
    assert not hint.isVisible()
    assert page.panes[1].chat._placeholder.isVisible()


def test_the_panes_come_back_after_a_restart(
    qtbot: Any, qloop: Any, servers: tuple[FaultServer, FaultServer]
) -> None:
    first, second = servers
    lab = Lab.open()
    page = ComparePage(lab)
    qtbot.addWidget(page)
    page.add_pane()
    set_panes(page, (first.url, "normal"), (second.url, "echo"), (first.url, "normal"))
    page.panes[0].params_form.temperature.setValue(0.3)
    page.panes[2].params_form.temperature.setValue(1.1)
    page.panes[1].label_edit.setText("the echo")
    page.panes[1].system_prompt.setPlainText("Be brief.")
    page.mode_combo.setCurrentIndex(page.mode_combo.findData("per-server"))
    page.shutdown()
    page.deleteLater()
    lab.close()
    session = lab.locations.session_file
    assert session.stat().st_mode & 0o777 == 0o600

    again = Lab.open(lab.locations)
    restored = ComparePage(again)
    qtbot.addWidget(restored)
    try:
        assert len(restored.panes) == 3
        assert [p.picker.endpoint() for p in restored.panes] == [first.url, second.url, first.url]
        assert [p.picker.model() for p in restored.panes] == ["normal", "echo", "normal"]
        assert restored.panes[0].params_form.params().temperature == pytest.approx(0.3)
        assert restored.panes[2].params_form.params().temperature == pytest.approx(1.1)
        assert restored.panes[1].label_edit.text() == "the echo"
        assert restored.panes[1].system_prompt.toPlainText() == "Be brief."
        assert restored.mode_combo.currentData() == "per-server"
        assert [p.title.text() for p in restored.panes] == [
            "normal · T=0.3",
            "the echo",
            "normal · T=1.1",
        ]
    finally:
        restored.shutdown()
        again.close()
