"""The Playground page against real servers: the fault-injecting streaming server of
tests/faultserver.py on 127.0.0.1, and a real llama.cpp server with SmolLM2."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QLayout, QVBoxLayout, QWidget

from podlab.core.chat.conversations import ConversationStore
from podlab.core.lab import Lab
from podlab.ui.pages.playground import PlaygroundPage
from podlab.ui.widgets.chat_view import MessageWidget
from tests.faultserver import ANSWER_TEXT, FaultServer, serve_in_thread

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultServer]:
    with serve_in_thread() as server:
        yield server


@pytest.fixture
def page(qtbot: Any, qloop: Any) -> Iterator[PlaygroundPage]:
    # Inside a window whose size the page's layout does not drive (as in the main window).
    host = QWidget()
    layout = QVBoxLayout(host)
    layout.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)
    lab = Lab.open()
    widget = PlaygroundPage(lab)
    layout.addWidget(widget)
    qtbot.addWidget(host)
    host.resize(1200, 800)
    host.show()
    qtbot.waitExposed(host)
    yield widget
    widget.shutdown()
    task = widget._stream_task
    if task is not None:
        qtbot.waitUntil(task.done, timeout=5000)
    lab.close()


def use(page: PlaygroundPage, url: str, model: str) -> None:
    page.picker.url_edit.setText(url)
    page.picker.set_model(model)


def send(qtbot: Any, page: PlaygroundPage, prompt: str) -> MessageWidget:
    """Type the prompt, press Ctrl+Enter, return the new answer's bubble once it exists."""
    before = page.chat.messages()
    page.prompt.setPlainText(prompt)
    page.prompt.setFocus()
    QTest.keyClick(page.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    return new_answer(qtbot, page, before)


def new_answer(qtbot: Any, page: PlaygroundPage, before: list[MessageWidget]) -> MessageWidget:
    def added() -> bool:
        last = page.chat.last()
        return last is not None and last.role == "assistant" and last not in before

    qtbot.waitUntil(added, timeout=3000)
    answer = page.chat.last()
    assert answer is not None
    return answer


def wait_answer(qtbot: Any, page: PlaygroundPage, timeout: int = 10000) -> None:
    qtbot.waitUntil(lambda: not page.streaming, timeout=timeout)
    last = page.chat.last()
    assert last is not None
    qtbot.waitUntil(lambda: last.view.finished, timeout=timeout)


def stored(page: PlaygroundPage) -> list[Any]:
    assert page.conversation is not None
    return page.store.messages(page.conversation.id)


def test_an_answer_streams_in_with_its_figures(
    qtbot: Any, page: PlaygroundPage, fault_server: FaultServer
) -> None:
    use(page, fault_server.url, "normal")
    page.system_prompt.setPlainText("Be brief.")
    page.params_form.temperature.setValue(0.2)
    page.params_form.max_tokens.setValue(64)
    answer = send(qtbot, page, "Say hello")
    wait_answer(qtbot, page)
    assert answer.text() == ANSWER_TEXT
    assert ANSWER_TEXT in answer.view.document().toPlainText()
    figures = answer.figures.text()
    assert "TTFT" in figures and "tok/s" in figures and "7 tokens" in figures
    assert "stop" in figures
    assert not answer.badge.isVisible()
    request = fault_server.requests[-1].body
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}
    assert request["temperature"] == 0.2 and request["max_tokens"] == 64
    assert "top_p" not in request  # "default" is not sent
    messages = stored(page)
    assert [(m.role, m.state) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[1].content == ANSWER_TEXT and messages[1].metrics["tokens"] == 7
    assert page.conversations.rowCount() == 1
    assert page.store.get_conversation(page.conversation.id).params["temperature"] == 0.2


def test_stop_cancels_the_stream_within_200_ms(
    qtbot: Any, page: PlaygroundPage, fault_server: FaultServer
) -> None:
    use(page, fault_server.url, "synthetic?tokens=100000&tps=100")
    answer = send(qtbot, page, "Count forever")
    qtbot.waitUntil(lambda: answer.text().count("tok") >= 10, timeout=5000)
    request = fault_server.requests[-1]
    pressed = time.perf_counter()
    QTest.keyClick(page.prompt, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not page.streaming, timeout=2000)
    stopped_ms = (time.perf_counter() - pressed) * 1000.0
    assert stopped_ms < 200, f"Stop took {stopped_ms:.0f} ms"
    assert page.last_stop_ms is not None and page.last_stop_ms < 200
    # The connection is closed, so the server stops generating.
    qtbot.waitUntil(lambda: request.disconnected is not None, timeout=2000)
    sent_at_stop = request.tokens_sent
    qtbot.wait(300)
    assert request.tokens_sent - sent_at_stop <= 1
    assert answer.badge.text() == "interrupted" and answer.badge.isVisible()
    assert "stopped by the user" in answer.figures.text()
    last = stored(page)[-1]
    assert last.state == "interrupted" and last.content.startswith(" tok tok")
    assert last.metrics is not None and last.metrics["tokens"] >= 10


def test_the_answer_is_in_the_store_while_it_streams(
    qtbot: Any, page: PlaygroundPage, fault_server: FaultServer, tmp_path: Path
) -> None:
    use(page, fault_server.url, "synthetic?tokens=200&tps=40")
    answer = send(qtbot, page, "Slowly")
    # A second connection, as another process (or Podlab after a crash) would read the file.
    reader = ConversationStore(page.lab.locations.database_file)
    try:
        assert page.conversation is not None

        def partial_written() -> bool:
            last = reader.messages(page.conversation.id)[-1]
            return last.state == "streaming" and last.content.count("tok") >= 5

        qtbot.waitUntil(partial_written, timeout=5000)
        page.stop()
        qtbot.waitUntil(lambda: not page.streaming, timeout=2000)
        last = reader.messages(page.conversation.id)[-1]
        assert last.state == "interrupted"
        assert last.content == answer.text()
    finally:
        reader.close()


def test_errors_show_in_the_answer_and_other_answers_still_work(
    qtbot: Any, page: PlaygroundPage, fault_server: FaultServer
) -> None:
    use(page, fault_server.url, "error_mid?after=3")
    answer = send(qtbot, page, "Break")
    wait_answer(qtbot, page)
    assert answer.badge.text() == "error"
    assert "out of memory" in answer.figures.text()
    assert stored(page)[-1].state == "error"
    # No answer at all: the send leaves the history (the prompt goes back in the box), and
    # the notice above the prompt says why, with Retry.
    use(page, "http://127.0.0.1:9", "x")  # nothing listens there
    before = stored(page)
    page.prompt.setPlainText("Anyone?")
    page.send()
    qtbot.waitUntil(lambda: page.notice.isVisible() and not page.streaming, timeout=10000)
    text = page.notice.label.text()
    assert text.startswith("No answer from http://127.0.0.1:9") and "cannot reach" in text
    assert not page.notice.start_button.isVisibleTo(page)
    assert stored(page) == before and page.chat.last().role == "assistant"
    assert page.prompt.toPlainText() == "Anyone?"
    use(page, fault_server.url, "normal")
    page.notice.retry_button.click()
    fine = new_answer(qtbot, page, page.chat.messages())
    wait_answer(qtbot, page)
    assert fine.text() == ANSWER_TEXT and not fine.badge.isVisible()
    assert not page.notice.isVisible()
    assert [m.content for m in stored(page)[-2:]] == ["Anyone?", ANSWER_TEXT]


def test_a_stopped_service_is_said_with_start_and_retry_and_nothing_is_stored(
    qtbot: Any, page: PlaygroundPage, smollm2_model: Path
) -> None:
    """A real local SmolLM2 service, chosen in the Playground, then stopped: the choice stays
    on it (marked stopped, not "Custom endpoint"), a send says it is stopped and stores
    nothing, Start starts it, Retry sends."""
    from podlab.core.serving.planning import ServeRequest
    from podlab.ui.service_bridge import service_bridge_for
    from podlab.ui.widgets.generation_form import CUSTOM

    bridge = service_bridge_for(page.lab)
    manager = bridge.manager

    def run(coro: Any, timeout: int = 120000) -> Any:
        future = asyncio.ensure_future(coro)
        qtbot.waitUntil(future.done, timeout=timeout)
        return future.result()

    service = run(manager.serve(ServeRequest(smollm2_model, engine="local")))
    try:
        run(bridge.refresh())
        page.select_service(service.id)
        assert page.picker.current_service() is service
        page.prompt.setPlainText("Say hi")
        run(manager.stop(service))
        combo = page.picker.service_combo
        assert combo.currentText() == f"{service.name} (stopped)" and combo.currentText() != CUSTOM

        conversations = len(page.store.list_conversations())
        assert page.send() is None  # nothing sent
        assert page.notice.isVisible() and page.notice.start_button.isVisibleTo(page)
        assert page.notice.label.text().startswith(f"{service.name} is stopped")
        assert page.chat.messages() == [] and page.prompt.toPlainText() == "Say hi"
        assert len(page.store.list_conversations()) == conversations

        page.notice.start_button.click()
        qtbot.waitUntil(lambda: "running again" in page.notice.label.text(), timeout=120000)
        assert service.state.running
        page.notice.retry_button.click()
        answer = new_answer(qtbot, page, [])
        wait_answer(qtbot, page, timeout=60000)
        assert answer.text() and not answer.badge.isVisible()
        assert [m.role for m in stored(page)] == ["user", "assistant"]
    finally:
        run(manager.delete(service.id), timeout=30000)


def test_regenerate_and_edit_and_resend(
    qtbot: Any, page: PlaygroundPage, fault_server: FaultServer
) -> None:
    use(page, fault_server.url, "echo")
    send(qtbot, page, "one")
    wait_answer(qtbot, page)
    send(qtbot, page, "two")
    wait_answer(qtbot, page)
    assert page.chat.last().text() == "echo: two | messages=3"
    # Regenerate the last answer: it is replaced, the history sent is the same.
    before = page.chat.messages()
    page.regenerate_button.click()
    new_answer(qtbot, page, before)
    wait_answer(qtbot, page)
    assert [m.role for m in stored(page)] == ["user", "assistant", "user", "assistant"]
    assert page.chat.last().text() == "echo: two | messages=3"
    # Edit the first prompt: it and everything after it are replaced.
    first = page.chat.messages()[0]
    assert first.edit_button is not None
    first.edit_button.click()
    assert page.prompt.toPlainText() == "one" and page.edit_banner.isVisible()
    page.prompt.setPlainText("uno")
    before = page.chat.messages()
    page.send_button.click()
    new_answer(qtbot, page, before)
    wait_answer(qtbot, page)
    texts = [(m.role, m.content) for m in stored(page)]
    assert texts == [("user", "uno"), ("assistant", "echo: uno | messages=1")]
    assert [m.text() for m in page.chat.messages()] == ["uno", "echo: uno | messages=1"]
    assert not page.edit_banner.isVisible()


def test_conversations_new_open_rename_search_export_delete(
    qtbot: Any, page: PlaygroundPage, fault_server: FaultServer, tmp_path: Path
) -> None:
    use(page, fault_server.url, "echo")
    send(qtbot, page, "apples are red")
    wait_answer(qtbot, page)
    first_id = page.conversation.id
    page.new_button.click()
    assert page.conversation is None and page.chat.messages() == []
    send(qtbot, page, "bananas are yellow")
    wait_answer(qtbot, page)
    second_id = page.conversation.id
    assert page.conversations.rowCount() == 2
    # Open the first again from the list: its messages and settings come back.
    row = page.conversations.row_of(first_id)
    page.list_view.clicked.emit(page.conversations.index(row))
    assert [m.text() for m in page.chat.messages()] == [
        "apples are red",
        "echo: apples are red | messages=1",
    ]
    assert page.picker.model() == "echo"
    # Rename through the list's editor role.
    page.conversations.setData(
        page.conversations.index(row), "Fruit talk", Qt.ItemDataRole.EditRole
    )
    assert page.store.get_conversation(first_id).title == "Fruit talk"
    # Search finds words inside messages.
    page.search_edit.setText("bananas")
    qtbot.waitUntil(lambda: page.conversations.rowCount() == 1, timeout=2000)
    assert page.conversations.conversation(0).id == second_id
    page.search_edit.clear()
    qtbot.waitUntil(lambda: page.conversations.rowCount() == 2, timeout=2000)
    # Export both ways.
    markdown = page.export_conversation(first_id, tmp_path / "fruit.md", "markdown")
    assert "# Fruit talk" in markdown.read_text() and "apples are red" in markdown.read_text()
    exported = json.loads(
        page.export_conversation(first_id, tmp_path / "f.json", "json").read_text()
    )
    assert exported["title"] == "Fruit talk" and len(exported["messages"]) == 2
    # Delete the open one: the page starts a new chat.
    page.delete_conversation(first_id)
    assert page.conversation is None
    assert [c.id for c in page.store.list_conversations()] == [second_id]


def test_hostile_answer_is_inert(
    qtbot: Any, page: PlaygroundPage, fault_server: FaultServer
) -> None:
    use(page, fault_server.url, "hostile")
    answer = send(qtbot, page, "Be evil")
    wait_answer(qtbot, page, timeout=20000)
    document = answer.view.document()
    assert "<script>alert('x')</script>" in document.toPlainText()
    assert "<img" not in document.toHtml()
    assert answer.view.blocked_resources == []
    assert answer.text().endswith(" end")


@pytest.mark.integration
def test_playground_with_a_real_llama_server(
    qtbot: Any, page: PlaygroundPage, smollm2_server: Any
) -> None:
    page.picker.url_edit.setText(smollm2_server.base_url)
    task = page.picker.refresh_models_soon()
    assert task is not None
    qtbot.waitUntil(task.done, timeout=10000)
    assert page.picker.model_combo.count() >= 1
    assert page.picker.model()
    page.params_form.temperature.setValue(0.0)
    page.params_form.max_tokens.setValue(24)
    page.params_form.seed.setValue(1)
    answer = send(qtbot, page, "What is the capital of France?")
    wait_answer(qtbot, page, timeout=60000)
    assert answer.text().strip()  # a 135M model: the words vary, an answer there must be
    assert "TTFT" in answer.figures.text() and "tok/s" in answer.figures.text()
    assert "length" in answer.figures.text() or "stop" in answer.figures.text()
    last = stored(page)[-1]
    assert last.state == "complete" and 0 < last.metrics["tokens"] <= 24


def test_the_streaming_badge_is_a_note_not_a_button(
    qtbot: Any, page: PlaygroundPage, fault_server: FaultServer
) -> None:
    use(page, fault_server.url, "synthetic?tokens=200&tps=100")
    answer = send(qtbot, page, "Slowly")
    assert answer.badge.text() == "streaming…" and answer.badge.isVisible()
    assert "border" not in answer.badge.styleSheet()
    page.stop()
    wait_answer(qtbot, page)
    assert answer.badge.text() == "interrupted" and "border" in answer.badge.styleSheet()


def test_the_conversation_list_shows_readable_local_dates(
    qtbot: Any, page: PlaygroundPage, fault_server: FaultServer
) -> None:
    use(page, fault_server.url, "normal")
    send(qtbot, page, "When was this?")
    wait_answer(qtbot, page)
    tip = page.conversations.data(page.conversations.index(0), Qt.ItemDataRole.ToolTipRole)
    assert "Last message today " in tip
    assert time.strftime("%Y-%m-%d") not in tip  # no ISO date


def test_the_last_conversation_and_endpoint_come_back_after_a_restart(
    qtbot: Any, qloop: Any, fault_server: FaultServer
) -> None:
    lab = Lab.open()
    page = PlaygroundPage(lab)
    qtbot.addWidget(page)

    def chat(prompt: str) -> None:
        page.prompt.setPlainText(prompt)
        task = page.send()
        assert task is not None
        qtbot.waitUntil(task.done, timeout=10000)

    use(page, fault_server.url, "normal")
    chat("Remember me")
    remembered = page.conversation
    assert remembered is not None
    page.new_conversation()
    chat("A second chat")
    page.open_conversation(remembered.id)
    use(page, fault_server.url, "echo")  # switched the model after the last answer
    page.shutdown()
    page.deleteLater()
    lab.close()
    assert lab.locations.session_file.stat().st_mode & 0o777 == 0o600

    again = Lab.open(lab.locations)
    restored = PlaygroundPage(again)
    qtbot.addWidget(restored)
    try:
        assert restored.conversation is not None and restored.conversation.id == remembered.id
        assert restored.list_view.currentIndex().row() == restored.conversations.row_of(
            remembered.id
        )
        texts = [m.text() for m in restored.chat.messages()]
        assert texts[0] == "Remember me" and len(texts) == 2
        assert restored.picker.endpoint() == fault_server.url
        assert restored.picker.model() == "echo"
    finally:
        restored.shutdown()
        again.close()
