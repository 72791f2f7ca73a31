"""The streaming Markdown view: incremental == full render, linear work, inert hostile output,
links only on click, code copy, following the text only at the bottom, light and dark."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from PySide6.QtCore import QPoint, Qt, QTimer, QUrl
from PySide6.QtGui import QColor, QGuiApplication, QPalette, QTextCursor, QTextDocument
from PySide6.QtWidgets import QApplication

import podlab.ui.markdown_render as markdown_render
import podlab.ui.widgets.markdown_view as markdown_view
from podlab.ui.markdown_render import IncrementalRenderer, RenderTheme, render_once
from podlab.ui.throttle import Throttle
from podlab.ui.widgets.chat_view import ChatView
from podlab.ui.widgets.markdown_view import MarkdownView

pytestmark = pytest.mark.gui


SAMPLE = """# A title

Some *emphasis*, **strong**, `code`, ~~strike~~ and a [link](https://example.org "t").
A soft break here.\
And a hard break.

- item one
- item two
  - nested a
  - nested b
- item three

1. first
2. second

   with a second paragraph

3. third

> a quote
> continued **bold**

| Name | Value | Note |
|:-----|------:|:----:|
| a | 1 | x |
| b | 22 | `y` |

```python
def hello(name: str) -> str:
    return f"hi {name}"  # comment
```
---

Text after a rule with ![an image](http://203.0.113.7/x.png) and <b>tags</b>.

    indented code

Setext heading
--------------

```
two fences
```
```js
in a row
```
| t |
|---|
| 1 |
***
Final paragraph.
"""


def theme(palette: QPalette | None = None) -> RenderTheme:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    return RenderTheme.from_palette(palette or app.palette(), app.font())


def stream(renderer: IncrementalRenderer, text: str, rng: random.Random) -> None:
    """Feed `text` in random pieces, rendering at random moments with random budgets."""
    i = 0
    while i < len(text):
        n = rng.choice((1, 2, 3, 7, 20, 200))
        renderer.append(text[i : i + n])
        i += n
        if rng.random() < 0.4:
            renderer.render(budget_s=rng.choice((None, 0.0, 0.002)))
    renderer.finish()


def mixed(rng: random.Random, blocks: int) -> str:
    words = ("alpha", "beta", "gamma", "delta", "token", "stream", "render", "block", "code")
    parts = []
    for _ in range(blocks):
        kind = rng.choice(("p", "list", "table", "code", "quote", "h"))
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        if kind == "p":
            parts.append(f"{sentence.capitalize()} with `code` and **bold**.")
        elif kind == "list":
            parts.append("\n".join(f"- {sentence} {i}" for i in range(rng.randint(1, 4))))
        elif kind == "table":
            parts.append("| a | b |\n|---|--:|\n" + f"| {sentence} | {rng.randint(1, 99)} |")
        elif kind == "code":
            parts.append(f"```python\nx = {rng.randint(1, 9)}  # {sentence}\n```")
        elif kind == "quote":
            parts.append(f"> {sentence}")
        else:
            parts.append(f"## {sentence}")
    return "\n\n".join(parts) + "\n"


@pytest.mark.parametrize("window", [40, 300, markdown_render.WINDOW_CHARS])
def test_incremental_render_equals_full_render(
    qapp: Any, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    text = SAMPLE + mixed(random.Random(window), 60)
    full = QTextDocument()
    render_once(full, text, theme())
    monkeypatch.setattr(markdown_render, "WINDOW_CHARS", window)
    for seed in range(4):
        document = QTextDocument()
        renderer = IncrementalRenderer(document, theme())
        stream(renderer, text, random.Random(seed))
        assert renderer.source() == text
        assert document.toHtml() == full.toHtml(), f"seed {seed}, window {window}"


def stream_tokens(text: str, snapshots: list[tuple[int, str]] | None = None) -> IncrementalRenderer:
    """Five characters per token and a render after each: the worst case for the renderer."""
    document = QTextDocument()
    renderer = IncrementalRenderer(document, theme())
    for i in range(0, len(text), 5):
        renderer.append(text[i : i + 5])
        renderer.render()
        end = renderer.finished_position
        if snapshots is not None and i % 500 == 0 and end > 1:
            # Up to the end of the last finished block (`end` is the live block's start).
            end -= 1
            cursor = QTextCursor(document)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            snapshots.append((end, cursor.selection().toHtml()))
    renderer.finish()
    return renderer


PROSE = (
    "Streaming answers are mostly prose, so a growing paragraph gets a fast path: plain text "
    "is appended, nothing is parsed again.  Spaces at the end wait for the next word, "
    "and then *emphasis*, a `code span`, a [link](https://example.org) or a; colon: fall "
    "back to a full render of the paragraph.\nA second line - with a dash - and 42 numbers "
    "stays plain too, as do non-breaking\u00a0spaces and unicode: ünïcödé 日本語.\n"
    "- but a list after it is a new block\n\nNew paragraph " + "word " * 200 + "\n"
)


def test_growing_paragraphs_take_the_fast_path_and_render_the_same(qapp: Any) -> None:
    full = QTextDocument()
    render_once(full, PROSE, theme())
    for size in (1, 3, 5, 9):
        document = QTextDocument()
        renderer = IncrementalRenderer(document, theme())
        for i in range(0, len(PROSE), size):
            renderer.append(PROSE[i : i + size])
            renderer.render()
        renderer.finish()
        assert document.toHtml() == full.toHtml(), f"pieces of {size}"
        assert renderer.stats.plain_appends > renderer.stats.renders // 2


HAIKU = "An old silent pond\nA frog jumps into the pond\nSplash! Silence again.\n"


def test_a_single_newline_is_a_line_break_as_in_chat_apps(qapp: Any) -> None:
    full = QTextDocument()
    render_once(full, HAIKU, theme())
    lines = ["An old silent pond", "A frog jumps into the pond", "Splash! Silence again."]
    # One paragraph (one block) whose lines are kept, not joined by spaces.
    assert full.blockCount() == 1
    assert full.toPlainText().split("\n") == lines
    for size in (1, 4):
        document = QTextDocument()
        renderer = IncrementalRenderer(document, theme())
        for i in range(0, len(HAIKU), size):
            renderer.append(HAIKU[i : i + size])
            renderer.render()
        renderer.finish()
        assert document.toHtml() == full.toHtml(), f"pieces of {size}"


def test_work_is_linear_and_finished_blocks_are_written_once(qapp: Any) -> None:
    short = mixed(random.Random(7), 100)
    long = mixed(random.Random(7), 400)
    snapshots: list[tuple[int, str]] = []
    short_renderer = stream_tokens(short)
    long_renderer = stream_tokens(long, snapshots)
    # Each render parses only the tail (the live block and what just arrived), so the work
    # per character does not grow with the length of the answer.
    per_char_short = short_renderer.stats.parsed_chars / len(short)
    per_char_long = long_renderer.stats.parsed_chars / len(long)
    assert per_char_long < 1.3 * per_char_short
    # What was finished is still there, unchanged, at the start of the final document.
    document = long_renderer._doc
    assert snapshots
    for end, html in snapshots:
        cursor = QTextCursor(document)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        assert cursor.selection().toHtml() == html


def test_an_open_code_fence_is_never_finished(qapp: Any) -> None:
    document = QTextDocument()
    renderer = IncrementalRenderer(document, theme())
    head = "Intro paragraph.\n\n"
    renderer.append(head + "```python\nx = 1\n\nnot a paragraph\n\n# not a heading\n")
    renderer.render()
    assert renderer.committed_chars == len(head)
    assert renderer.code_count == 1  # shown live, with its Copy link
    assert "not a heading" in document.toPlainText()
    assert document.begin().next().isValid()
    renderer.append("```\n\nAfter.\n")
    renderer.render()
    assert renderer.committed_chars > len(head)  # closed: now it is finished
    renderer.finish()
    assert renderer.code_text(0) == "x = 1\n\nnot a paragraph\n\n# not a heading\n"


def test_a_finished_message_is_never_touched_again(qtbot: Any) -> None:
    view = MarkdownView()
    qtbot.addWidget(view)
    view.append("Hello **world**\n\nmore")
    view.finish_now()
    revision = view.document().revision()
    view.append(" ignored")
    view.render_now()
    assert view.markdown() == "Hello **world**\n\nmore"
    assert view.document().revision() == revision


HOSTILE = (
    "<script>alert(1)</script>\n\n"
    "<img src=http://evil.invalid/x.png>\n\n"
    "Inline <img src=http://evil.invalid/y.png onerror=alert(2)> html.\n\n"
    "![remote](http://evil.invalid/z.png)\n\n"
    "[js](javascript:alert(3)) [file](file:///etc/passwd)\n\n"
    "<a href=http://evil.invalid/a>raw anchor</a>\n\n"
)


def test_hostile_output_renders_inert(qtbot: Any, qapp: Any) -> None:
    view = MarkdownView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    qtbot.waitExposed(view)
    long_line = "A" * 100_000
    requested: list[str] = []
    original = view.loadResource

    def spy(kind: int, name: Any) -> Any:
        requested.append(str(name))
        return original(kind, name)

    view.loadResource = spy  # type: ignore[method-assign]

    # Streamed in pieces through the throttle, with a heartbeat watching the event loop.
    gaps: list[float] = []
    last = [time.perf_counter()]

    def beat() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(beat)
    heartbeat.start()
    text = HOSTILE + long_line + "\n\nend"
    started = time.perf_counter()
    for i in range(0, len(text), 997):
        view.append(text[i : i + 997])
        qapp.processEvents()
    view.finish()
    qtbot.waitUntil(lambda: view.finished, timeout=10000)
    elapsed = time.perf_counter() - started
    qtbot.wait(30)  # a last beat, after the last slice
    heartbeat.stop()

    document = view.document()
    plain = document.toPlainText()
    html = document.toHtml()
    # Raw HTML is text: shown literally, never interpreted.
    assert "<script>alert(1)</script>" in plain
    assert "<img src=http://evil.invalid/x.png>" in plain
    assert "<a href=http://evil.invalid/a>raw anchor</a>" in plain
    assert "<script" not in html.replace("&lt;script", "")
    assert "<img" not in html
    # Images are link texts, never image resources; nothing was ever requested.
    assert "[image: remote]" in plain
    block = document.begin()
    while block.isValid():
        iterator = block.begin()
        while not iterator.atEnd():
            assert not iterator.fragment().charFormat().isImageFormat()
            iterator += 1
        block = block.next()
    assert requested == []
    assert view.blocked_resources == []
    # Links with dangerous schemes are not links at all.
    assert 'href="javascript:' not in html and 'href="file:' not in html
    # The refusal itself works, and is recorded.
    assert view.loadResource(2, QUrl("http://evil.invalid/q.png")) is None
    assert view.blocked_resources == ["http://evil.invalid/q.png"]
    # The 100 kB line is there, and the window stayed responsive while it streamed.
    assert long_line in plain.replace("\u200b", "")  # zero-width breaks keep layout fast
    assert elapsed < 10.0
    assert gaps
    assert max(gaps) < 0.25, f"event loop stalled {max(gaps) * 1000:.0f} ms"


def anchor_point(view: MarkdownView, text: str) -> QPoint:
    found = view.document().find(text)
    assert not found.isNull(), text
    cursor = QTextCursor(found)
    cursor.setPosition(found.selectionStart() + 1)
    return view.cursorRect(cursor).center()


def test_links_are_opened_only_by_a_click(qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def fake_open(url: QUrl) -> bool:
        opened.append(url.toString())
        return True

    monkeypatch.setattr(markdown_view, "open_external", fake_open)
    view = MarkdownView()
    qtbot.addWidget(view)
    view.resize(600, 300)
    view.set_markdown("See [the site](https://example.org/page) and [mail](mailto:a@b.c).")
    view.show()
    qtbot.waitExposed(view)
    qtbot.wait(50)
    assert opened == []  # shown, not opened
    with qtbot.waitSignal(view.sig_link_opened, timeout=2000):
        qtbot.mouseClick(
            view.viewport(), Qt.MouseButton.LeftButton, pos=anchor_point(view, "the site")
        )
    assert opened == ["https://example.org/page"]
    # Other schemes are never handed to the desktop, even when clicked.
    view.anchorClicked.emit(QUrl("file:///etc/passwd"))
    view.anchorClicked.emit(QUrl("javascript:alert(1)"))
    assert opened == ["https://example.org/page"]


def test_copy_link_copies_the_code_block(qtbot: Any) -> None:
    view = MarkdownView()
    qtbot.addWidget(view)
    view.resize(600, 300)
    view.set_markdown("One\n\n```sh\necho one\n```\n\n```python\nprint('two')\n```\n")
    view.show()
    qtbot.waitExposed(view)
    clipboard = QGuiApplication.clipboard()
    clipboard.setText("")
    document = view.document()
    second_copy = document.find("Copy", document.find("Copy"))
    cursor = QTextCursor(second_copy)
    cursor.setPosition(second_copy.selectionStart() + 1)
    with qtbot.waitSignal(view.sig_code_copied, timeout=2000) as signal:
        qtbot.mouseClick(
            view.viewport(), Qt.MouseButton.LeftButton, pos=view.cursorRect(cursor).center()
        )
    assert signal.args == [1]
    assert clipboard.text() == "print('two')"


def test_throttle_runs_the_first_call_at_once_and_collapses_the_rest(qtbot: Any) -> None:
    calls: list[float] = []
    throttle = Throttle(lambda: calls.append(time.perf_counter()), 60)
    for _ in range(50):
        throttle()
    assert len(calls) == 1  # the first one, at once
    assert throttle.pending
    qtbot.waitUntil(lambda: len(calls) == 2, timeout=1000)
    qtbot.wait(150)
    assert len(calls) == 2  # everything else collapsed into one trailing call
    assert calls[1] - calls[0] >= 0.055
    throttle()  # long after: at once again
    assert len(calls) == 3


def test_chat_follows_new_text_only_while_at_the_bottom(qtbot: Any) -> None:
    chat = ChatView()
    qtbot.addWidget(chat)
    chat.resize(600, 300)
    chat.show()
    qtbot.waitExposed(chat)
    message = chat.add_message("assistant", streaming=True)
    bar = chat.verticalScrollBar()
    for i in range(40):
        message.append(f"Paragraph {i} of a long answer.\n\n")
        message.view.render_now()
        qtbot.wait(1)
    qtbot.waitUntil(lambda: bar.maximum() > 0)
    qtbot.waitUntil(lambda: bar.value() == bar.maximum())
    bar.setValue(0)  # the reader scrolls up to read
    assert not chat.following
    for i in range(20):
        message.append(f"More {i}.\n\n")
        message.view.render_now()
    qtbot.wait(20)
    assert bar.value() == 0
    chat.scroll_to_bottom()
    message.append("Last.\n\n")
    message.finish()
    qtbot.waitUntil(lambda: message.view.finished)
    qtbot.waitUntil(lambda: bar.value() == bar.maximum())


def test_colours_follow_a_dark_palette(qtbot: Any, qapp: Any) -> None:
    view = MarkdownView()
    qtbot.addWidget(view)
    view.set_markdown("Text with `code` and a [link](https://example.org).\n\n```\nx\n```\n")
    light = view.renderer.theme
    dark = QPalette(qapp.palette())
    for role, color in (
        (QPalette.ColorRole.Base, "#1e1e1e"),
        (QPalette.ColorRole.Window, "#2b2b2b"),
        (QPalette.ColorRole.Text, "#e6e6e6"),
        (QPalette.ColorRole.WindowText, "#e6e6e6"),
        (QPalette.ColorRole.Link, "#6cb6ff"),
    ):
        dark.setColor(role, QColor(color))
    view.setPalette(dark)
    theme_now = view.renderer.theme
    assert not light.dark and theme_now.dark
    assert theme_now.code_bg.lightnessF() < 0.3
    # The message was written again with the new colours (and stays the same text).
    fragment_colors = set()
    block = view.document().begin()
    while block.isValid():
        iterator = block.begin()
        while not iterator.atEnd():
            fragment_colors.add(iterator.fragment().charFormat().foreground().color().name())
            iterator += 1
        block = block.next()
    assert "#e6e6e6" in fragment_colors and "#6cb6ff" in fragment_colors
    assert "Text with code" in view.document().toPlainText()


def test_one_newline_breaks_the_line_in_answers_but_not_in_model_cards(qtbot: Any) -> None:
    """Chat apps keep a poem's lines; a catalog description is prose wrapped at any column."""
    from podlab.ui.widgets.model_card import ModelCardView

    text = "An old silent pond\nA frog jumps into the pond"
    answer = MarkdownView()
    card = ModelCardView()
    for view in (answer, card):
        qtbot.addWidget(view)
    answer.set_markdown(text)
    card.show_card(text)
    qtbot.waitUntil(lambda: "frog" in answer.toPlainText() and "frog" in card.toPlainText())
    lines = answer.toPlainText().replace("\u2028", "\n").splitlines()
    assert lines == ["An old silent pond", "A frog jumps into the pond"]
    assert (
        card.toPlainText().replace("\u2028", "\n")
        == "An old silent pond A frog jumps into the pond"
    )
