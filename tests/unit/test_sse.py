"""The event-stream parser: every line ending, field form, and every way a stream can tear."""

from __future__ import annotations

import json
import random

import pytest

from podlab.core.chat.sse import SSEEvent, SSEParser

pytestmark = pytest.mark.unit


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.flush())
    return events


def datas(events: list[SSEEvent]) -> list[str]:
    return [e.data for e in events]


# A stream that uses every feature at once: multibyte text, all three line endings, comments,
# "data:" with and without a space, multi-line data, named events, ids, retry, [DONE].
COMPOSITE = (
    "\ufeff: keep-alive comment\r\n"
    'data: {"text": "héllo wörld 日本語 🙂"}\r\n'
    "\r\n"
    'data:{"text": "no space"}\n'
    "\n"
    "event: update\r"
    "id: 42\r"
    "retry: 1500\r"
    "data: first line\r"
    "data:  second line keeps one space\r"
    "data\r"
    "\r"
    ":another comment\n"
    "unknown: field is ignored\n"
    'data: {"emoji": "👩\u200d💻", "cjk": "漢字"}\r\n'
    "\r\n"
    "data: [DONE]\n"
    "\n"
).encode("utf-8")

EXPECTED = [
    SSEEvent('{"text": "héllo wörld 日本語 🙂"}'),
    SSEEvent('{"text": "no space"}'),
    SSEEvent("first line\n second line keeps one space\n", event="update", id="42", retry=1500),
    SSEEvent('{"emoji": "👩\u200d💻", "cjk": "漢字"}', id="42", retry=1500),
    SSEEvent("[DONE]", id="42", retry=1500),
]


def test_composite_stream_in_one_chunk() -> None:
    assert parse(COMPOSITE) == EXPECTED


def test_split_at_every_byte_position_gives_the_same_events() -> None:
    for cut in range(len(COMPOSITE) + 1):
        assert parse(COMPOSITE[:cut], COMPOSITE[cut:]) == EXPECTED, f"cut at byte {cut}"


def test_split_at_every_pair_of_positions_gives_the_same_events() -> None:
    # Three pieces: tears inside a multi-byte character and between CR and LF at once.
    data = COMPOSITE[:140]
    reference = parse(data)
    for first in range(0, len(data) + 1, 3):
        for second in range(first, len(data) + 1, 2):
            assert parse(data[:first], data[first:second], data[second:]) == reference


def test_one_byte_at_a_time() -> None:
    assert parse(*[COMPOSITE[i : i + 1] for i in range(len(COMPOSITE))]) == EXPECTED


def test_random_chunkings() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(COMPOSITE)), rng.randint(1, 40)))
        pieces = [COMPOSITE[a:b] for a, b in zip([0, *cuts], [*cuts, len(COMPOSITE)], strict=True)]
        assert parse(*pieces) == EXPECTED


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_each_line_ending(eol: str) -> None:
    text = f"data: a{eol}{eol}data: b{eol}data: c{eol}{eol}"
    assert datas(parse(text.encode())) == ["a", "b\nc"]


def test_crlf_torn_between_cr_and_lf_is_one_line_end() -> None:
    # "data: a\r" | "\ndata: b\r\n\r\n": the LF must not become an empty line (an extra dispatch
    # would still give the same data, so check a case where it would split an event).
    events = parse(b"data: a\r", b"\ndata: b\r\n\r\n")
    assert datas(events) == ["a\nb"]


def test_cr_at_chunk_end_followed_by_a_real_blank_line() -> None:
    events = parse(b"data: a\r", b"\r", b"data: b\r\r")
    assert datas(events) == ["a", "b"]


def test_utf8_character_torn_across_chunks() -> None:
    raw = 'data: {"t": "🙂é"}\n\n'.encode()
    smile = raw.index("🙂".encode())
    for cut in range(smile, smile + 6):
        assert datas(parse(raw[:cut], raw[cut:])) == ['{"t": "🙂é"}']


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert datas(parse(b"data: a\xffb\n\n")) == ["a\ufffdb"]


def test_comments_only_produce_no_events() -> None:
    assert parse(b": ping\n\n: ping\r\n\r\n") == []


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert parse(b"\n\n\n\r\n") == []
    assert parse(b"event: x\n\ndata: y\n\n") == [SSEEvent("y")]  # event type resets


def test_empty_data_line_dispatches_empty_string() -> None:
    assert datas(parse(b"data:\n\n")) == [""]
    assert datas(parse(b"data\n\n")) == [""]


def test_only_one_space_after_colon_is_removed() -> None:
    assert datas(parse(b"data:   x\n\n")) == ["  x"]


def test_field_without_value_and_unknown_fields() -> None:
    assert parse(b"foo: bar\nid\ndata: x\n\n") == [SSEEvent("x", id="")]


def test_id_with_nul_is_ignored() -> None:
    assert parse(b"id: a\x00b\ndata: x\n\n") == [SSEEvent("x")]


def test_retry_must_be_digits() -> None:
    assert parse(b"retry: soon\ndata: x\n\n") == [SSEEvent("x")]


def test_flush_dispatches_a_final_event_without_blank_line() -> None:
    assert datas(parse(b"data: [DONE]")) == ["[DONE]"]
    assert datas(parse(b"data: [DONE]\n")) == ["[DONE]"]
    assert datas(parse(b"data: [DONE]\r")) == ["[DONE]"]


def test_flush_finishes_a_torn_character_as_replacement() -> None:
    assert datas(parse("data: 🙂".encode()[:-1])) == ["\ufffd"]


def test_bom_only_at_the_start() -> None:
    assert datas(parse(b"\xef\xbb\xbfdata: a\n\n")) == ["a"]
    assert datas(parse(b"\xef\xbb", b"\xbfdata: a\n\n")) == ["a"]
    assert datas(parse("data: a\n\ndata: \ufeffb\n\n".encode())) == ["a", "\ufeffb"]


def test_unicode_line_separators_inside_json_are_not_line_ends() -> None:
    text = 'data: {"t": "a\u2028b\u0085c\x0bd\x0ce"}\n\n'
    assert datas(parse(text.encode())) == ['{"t": "a\u2028b\u0085c\x0bd\x0ce"}']


def test_a_100_kb_line_in_small_chunks() -> None:
    payload = json.dumps({"t": "x" * 100_000})
    raw = f"data: {payload}\n\n".encode()
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    assert datas(parse(*pieces)) == [payload]


def test_feed_returns_events_as_soon_as_they_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\n") == [SSEEvent("a")]
    assert parser.feed(b"data: b\n\ndata: c\n\nda") == [SSEEvent("b"), SSEEvent("c")]
    assert parser.feed(b"ta: d\n") == []
    assert parser.flush() == [SSEEvent("d")]


def test_many_events_per_chunk_stay_fast() -> None:
    event = 'data: {"choices":[{"delta":{"content":" tok"}}]}\n\n'
    raw = (event * 20_000).encode()
    parser = SSEParser()
    events = []
    for i in range(0, len(raw), 65536):
        events.extend(parser.feed(raw[i : i + 65536]))
    assert len(events) == 20_000


def test_idle_only_between_whole_events() -> None:
    """The chat client reads token events without the parser only while nothing is pending:
    no torn line, event, CR or character."""
    parser = SSEParser()
    assert not parser.idle()  # a byte-order mark may still come
    parser.feed_raw(b'data: {"a": 1}\n\n')
    assert parser.idle()
    for torn in (
        b'data: {"a"',
        b"data: x\n",
        b"event: note\n",
        b"data: x\n\r",
        "data: é".encode()[:-1],
    ):
        parser = SSEParser()
        parser.feed_raw(b"data: 1\n\n")
        parser.feed_raw(torn)
        assert not parser.idle(), torn
    parser = SSEParser()
    parser.feed_raw(b"data: 1\n\n")
    assert parser.feed_text_raw("data: 2\n\n") == [("2", "message", None, None)]
    assert parser.idle()
