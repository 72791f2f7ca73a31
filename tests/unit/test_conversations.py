"""The conversation store: CRUD, incremental answers, crash recovery, search, export, votes;
and API keys in the keyring (secrets.py) with a fake keyring backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from podlab.core.chat.conversations import ConversationStore
from podlab.core.errors import PodlabError
from tests.keyrings import MemoryKeyring, install_memory_keyring

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ConversationStore]:
    with ConversationStore(tmp_path / "podlab.sqlite3") as opened:
        yield opened


def test_database_uses_wal_and_foreign_keys(store: ConversationStore) -> None:
    assert store._query("PRAGMA journal_mode")[0][0] == "wal"
    assert store._query("PRAGMA foreign_keys")[0][0] == 1


def test_create_list_rename_delete(store: ConversationStore) -> None:
    first = store.create_conversation(
        "First",
        endpoint="http://127.0.0.1:8080",
        model="m",
        params={"temperature": 0.2},
        system_prompt="Be brief.",
    )
    second = store.create_conversation("Second")
    assert first.params == {"temperature": 0.2}
    assert first.system_prompt == "Be brief."
    store.add_message(first.id, "user", "hello")  # newest activity moves first up
    assert [c.id for c in store.list_conversations()] == [first.id, second.id]
    assert store.rename(second.id, "Renamed").title == "Renamed"
    store.delete(first.id)
    assert [c.title for c in store.list_conversations()] == ["Renamed"]
    with pytest.raises(PodlabError):
        store.get_conversation(first.id)
    with pytest.raises(PodlabError):
        store.rename(first.id, "gone")


def test_deleting_a_conversation_deletes_its_messages(store: ConversationStore) -> None:
    conversation = store.create_conversation()
    message = store.add_message(conversation.id, "user", "hi")
    store.delete(conversation.id)
    with pytest.raises(PodlabError):
        store.get_message(message.id)
    assert store._query("SELECT COUNT(*) FROM messages")[0][0] == 0


def test_message_needs_an_existing_conversation(store: ConversationStore) -> None:
    with pytest.raises(PodlabError):
        store.add_message(999, "user", "orphan")


def test_history_includes_system_prompt_and_partial_answers(store: ConversationStore) -> None:
    conversation = store.create_conversation(system_prompt="sys")
    store.add_message(conversation.id, "user", "q1")
    store.add_message(conversation.id, "assistant", "partial", state="interrupted")
    store.add_message(conversation.id, "user", "q2")
    store.add_message(conversation.id, "assistant", "", state="error", error="boom")
    assert store.history(conversation.id) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "partial"},
        {"role": "user", "content": "q2"},
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_answer_writer_writes_at_most_every_interval(store: ConversationStore) -> None:
    conversation = store.create_conversation()
    clock = FakeClock()
    writer = store.begin_answer(conversation.id, model="m", flush_interval=0.5, clock=clock)
    message_id = writer.message_id
    assert store.get_message(message_id).state == "streaming"
    for i in range(10):  # ten tokens within 0.1 s: nothing written yet
        clock.now += 0.01
        writer.append(f"t{i} ")
    assert writer.writes == 0
    assert store.get_message(message_id).content == ""
    clock.now += 0.5
    writer.append("late")
    assert writer.writes == 1
    assert store.get_message(message_id).content.endswith("late")
    writer.finish({"tokens": 11, "tokens_per_s": 50.0})
    stored = store.get_message(message_id)
    assert stored.state == "complete"
    assert stored.metrics == {"tokens": 11, "tokens_per_s": 50.0}
    assert stored.content == "".join(f"t{i} " for i in range(10)) + "late"
    assert stored.model == "m"


def test_answer_writer_flushes_on_many_characters(store: ConversationStore) -> None:
    conversation = store.create_conversation()
    writer = store.begin_answer(
        conversation.id, flush_interval=60, flush_chars=100, clock=FakeClock()
    )
    writer.update("x" * 99)
    assert writer.writes == 0
    writer.update("x" * 100)
    assert writer.writes == 1


def test_answer_writer_fail_and_interrupt(store: ConversationStore) -> None:
    conversation = store.create_conversation()
    failing = store.begin_answer(conversation.id)
    failing.update("half")
    failing.fail("server said no")
    stopped = store.begin_answer(conversation.id)
    stopped.update("partial")
    stopped.cancel()
    failed_message = store.get_message(failing.message_id)
    assert (failed_message.state, failed_message.content, failed_message.error) == (
        "error",
        "half",
        "server said no",
    )
    assert store.get_message(stopped.message_id).state == "interrupted"
    with pytest.raises(PodlabError):
        stopped.append("more")


def test_answer_writer_close_from_done_state(store: ConversationStore) -> None:
    conversation = store.create_conversation()
    writer = store.begin_answer(conversation.id)
    writer.close_from("interrupted", "text so far", {"tokens": 3}, "connection dropped")
    message = store.get_message(writer.message_id)
    assert (message.state, message.content, message.error) == (
        "interrupted",
        "text so far",
        "connection dropped",
    )


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from podlab.core.chat.conversations import ConversationStore
    store = ConversationStore(sys.argv[1])
    conversation = store.create_conversation("crash test")
    store.add_message(conversation.id, "user", "tell me a story")
    writer = store.begin_answer(conversation.id, flush_interval=0.0)
    writer.append("Once upon a time")
    writer.append(", there was a partial answer")
    print(writer.message_id, flush=True)
    time.sleep(60)
    """
)


def test_crash_mid_answer_keeps_the_partial_answer_marked_interrupted(tmp_path: Path) -> None:
    database = tmp_path / "crash.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(database)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        message_id = int(child.stdout.readline())
        # While the writer is alive, another process opening the store leaves it alone.
        with ConversationStore(database) as live:
            assert live.get_message(message_id).state == "streaming"
            assert live.recovered == 0
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with ConversationStore(database) as reopened:
        assert reopened.recovered == 1
        message = reopened.get_message(message_id)
        assert message.state == "interrupted"
        assert message.content == "Once upon a time, there was a partial answer"
        assert message.error is not None and "interrupted" in message.error
        conversation = reopened.list_conversations()[0]
        assert [m.role for m in reopened.messages(conversation.id)] == ["user", "assistant"]


@pytest.mark.parametrize("use_fts", [None, False])
def test_search_titles_and_messages(tmp_path: Path, use_fts: bool | None) -> None:
    with ConversationStore(tmp_path / "s.sqlite3", use_fts=use_fts) as store:
        if use_fts is None:
            assert store.fts  # this SQLite has FTS5
        pasta = store.create_conversation("Dinner ideas")
        store.add_message(pasta.id, "user", "How do I cook carbonara with guanciale?")
        store.add_message(pasta.id, "assistant", "Use eggs, pecorino and guanciale.")
        rust = store.create_conversation("Rust lifetimes")
        store.add_message(rust.id, "user", "Explain borrow checking")
        hits = store.search("guanciale")
        assert {h.conversation_id for h in hits} == {pasta.id}
        assert len(hits) == 2 and all("guanciale" in h.snippet for h in hits)
        assert [h.conversation_id for h in store.search("rust")] == [rust.id]  # title match
        assert store.search("carbonara guanciale")[0].conversation_id == pasta.id
        assert store.search("carbonara borrow") == []
        assert store.search('odd "quote 100%_') == []  # no syntax error
        assert store.search("   ") == []
        # Edits (streamed answers) are searchable too.
        writer = store.begin_answer(rust.id, flush_interval=0)
        writer.update("The borrow checker tracks lifetimes of references")
        writer.finish()
        assert {h.message_id for h in store.search("references")} == {writer.message_id}


def test_export_markdown_and_json(store: ConversationStore) -> None:
    conversation = store.create_conversation(
        "Export me",
        endpoint="http://h:8080",
        model="tiny",
        params={"temperature": 0.5},
        system_prompt="You are terse.",
    )
    store.add_message(conversation.id, "user", "Hi <script>")
    store.add_message(
        conversation.id,
        "assistant",
        "Hello!",
        model="tiny",
        metrics={"tokens": 2, "tokens_per_s": 10.0, "ttft_ms": 50.0, "total_ms": 250.0},
    )
    store.add_message(conversation.id, "assistant", "cut", state="interrupted", error="dropped")
    markdown = store.export_markdown(conversation.id)
    assert markdown.startswith("# Export me\n")
    assert "## System\n\nYou are terse." in markdown
    assert "## User\n\nHi <script>" in markdown
    assert "## Assistant (tiny)\n\nHello!" in markdown
    assert "10.0 tokens/s" in markdown
    assert "state: interrupted; error: dropped" in markdown
    data = store.export_json(conversation.id)
    json.dumps(data)  # serializable
    assert data["params"] == {"temperature": 0.5}
    assert [m["state"] for m in data["messages"]] == ["complete", "complete", "interrupted"]
    assert data["messages"][1]["metrics"]["tokens"] == 2


def test_comparisons_and_votes_are_stored(store: ConversationStore) -> None:
    comparison_id = store.save_comparison("prompt", "parallel", {"panes": []}, blind=True)
    record = store.comparisons()[0]
    assert (record.id, record.prompt, record.blind) == (comparison_id, "prompt", True)
    vote = store.add_vote(["a", "b"], 1, comparison_id=comparison_id)
    store.add_vote(["a", "b", "c"], None)
    assert [v.winner for v in store.votes()] == [1, None]
    assert store.votes()[0].players == ["a", "b"]
    store.delete_comparison(comparison_id)  # the vote stays, unlinked
    assert store.votes()[0].comparison_id is None
    store.delete_vote(vote.id)
    assert len(store.votes()) == 1
    store.add_vote(["b", "c"], 0)
    store.add_vote(["c", "d"], 0)
    assert store.delete_votes_of("a") == 1  # the leaderboard row "a" deleted
    assert [v.players for v in store.votes()] == [["b", "c"], ["c", "d"]]
    assert store.clear_votes() == 2 and store.votes() == []
    with pytest.raises(PodlabError):
        store.add_vote(["a"], 0)
    with pytest.raises(PodlabError):
        store.add_vote(["a", "b"], 2)


def test_a_broken_file_is_a_readable_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PodlabError, match="not a usable Podlab database"):
        ConversationStore(path)


def test_store_works_from_another_thread(store: ConversationStore) -> None:
    import threading

    conversation = store.create_conversation()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            store.add_message(conversation.id, "user", "from a thread")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors
    assert store.messages(conversation.id)[0].content == "from a thread"


# -- secrets.py ---------------------------------------------------------------------------------


@pytest.fixture
def fake_keyring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    return install_memory_keyring(monkeypatch)


def test_api_key_goes_to_the_keyring_per_endpoint(fake_keyring: MemoryKeyring) -> None:
    from podlab.core.chat import secrets

    assert secrets.keyring_available()
    assert secrets.set_api_key("https://api.example.com/v1/", "sk-123") is True
    assert fake_keyring.items == {("podlab", "https://api.example.com/v1"): "sk-123"}
    key = secrets.get_api_key("https://API.example.com/v1")
    assert key is not None and key.reveal() == "sk-123"
    assert "sk-123" not in repr(key) and "sk-123" not in str(key) and "sk-123" not in f"{key}"
    secrets.delete_api_key("https://api.example.com/v1")
    assert secrets.get_api_key("https://api.example.com/v1") is None
    secrets.delete_api_key("https://api.example.com/v1")  # deleting twice is fine


def test_api_key_without_keyring_stays_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    from keyring.backends import fail

    from podlab.core.chat import secrets

    monkeypatch.setattr(keyring, "get_keyring", lambda: fail.Keyring())
    assert not secrets.keyring_available()
    assert secrets.set_api_key("http://h:1", "k") is False
    assert secrets.get_api_key("http://h:1") == "k"
    secrets.delete_api_key("http://h:1")
    assert secrets.get_api_key("http://h:1") is None


def test_chat_client_repr_hides_the_key() -> None:
    from podlab.core.chat.client import ChatClient
    from podlab.core.chat.secrets import Secret

    client = ChatClient("http://127.0.0.1:9", Secret("sk-secret"))
    assert "sk-secret" not in repr(client)
    assert client._http.headers["authorization"] == "Bearer sk-secret"
