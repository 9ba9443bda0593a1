"""The incremental SSE parser: any split of the bytes gives the same events."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from proxycast.formats import sse

EVENTS = st.lists(
    st.tuples(
        st.sampled_from([None, "message_start", "content_block_delta", "ping"]),
        st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=40),
    ),
    max_size=8,
)


def encode(events: list[tuple[str | None, str]], newline: bytes) -> bytes:
    out = b""
    for name, data in events:
        if name is not None:
            out += b"event: " + name.encode() + newline
        out += b"data: " + data.encode() + newline + newline
    return out


def parse_in_pieces(data: bytes, cuts: list[int]) -> list[sse.Event | sse.Comment]:
    parser = sse.SSEParser()
    out: list[sse.Event | sse.Comment] = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += parser.feed(data[previous:cut])
        previous = cut
    assert not parser.has_partial_event
    return out


@given(EVENTS, st.sampled_from([b"\n", b"\r\n", b"\r"]), st.data())
def test_any_split_gives_the_same_events(
    events: list[tuple[str | None, str]], newline: bytes, data: st.DataObject
) -> None:
    raw = encode(events, newline)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    parsed = parse_in_pieces(raw, cuts)
    assert [(e.event, e.data) for e in parsed if isinstance(e, sse.Event)] == [
        (name or "message", text) for name, text in events
    ]


def test_every_byte_boundary_of_a_real_stream() -> None:
    raw = (
        b'event: message_start\r\ndata: {"type": "message_start"}\r\n\r\n'
        b": keep-alive\n\n"
        b'data: {"text": "caf\xc3\xa9 \xe2\x9c\x93"}\n\n'
        b"data: line one\ndata: line two\n\n"
        b"data: [DONE]\n\n"
    )
    for cut in range(len(raw) + 1):
        for second in range(cut, len(raw) + 1, 7):
            parsed = parse_in_pieces(raw, [cut, second])
            events = [e for e in parsed if isinstance(e, sse.Event)]
            assert [e.event for e in events] == ["message_start", "message", "message", "message"]
            assert json.loads(events[1].data) == {"text": "café ✓"}
            assert events[2].data == "line one\nline two"
            assert events[3].data == "[DONE]"
            assert [c.text for c in parsed if isinstance(c, sse.Comment)] == ["keep-alive"]


def test_partial_event_is_reported() -> None:
    parser = sse.SSEParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.has_partial_event
    assert parser.feed(b": 1}\n\n") == [sse.Event('{"a": 1}')]
    assert not parser.has_partial_event


def test_encode() -> None:
    assert sse.encode('{"a":1}') == b'data: {"a":1}\n\n'
    assert sse.encode("{}", "ping") == b"event: ping\ndata: {}\n\n"


PIECES = [
    b'data: {"a": 1}\n\n',
    b"data: x\n\n",
    b"data: \n\n",
    b": keep-alive\n\n",
    b"data: a\ndata: b\n\n",
    b"event: e\ndata: y\n\n",
    b"event: \xffe\ndata: y\n\n",
    b"event: e\n",
    b"\n",
    b"event: e\ndata:y\n\n",
    b"data:z\n\n",
    b"data: \xff\xfe\n\n",
    b"data: q\r\n\r\n",
    b"data: r\r\r",
    b"id: 3\n\n",
    b"data: [DONE]\n\n",
    b"\n\n",
    b"data: cut",
]


@given(st.lists(st.sampled_from(PIECES), max_size=8), st.data())
@example([b"id: 3\n\n", b"data: x\n\n", b"data: y\n\n"], None)  # the last event id carries over
@example([b"data: cut", b"\n\n"], None)
def test_the_block_split_gives_what_the_line_parser_gives(
    pieces: list[bytes], data: st.DataObject | None
) -> None:
    # feed splits complete events on blank lines and hands the rest to the line parser: the same
    # events as the line parser alone, wherever the chunks are cut
    raw = b"".join(pieces)
    cuts = [] if data is None else data.draw(st.lists(st.integers(0, len(raw)), max_size=6))
    fast, raw_parser, slow = sse.SSEParser(), sse.SSEParser(), sse.SSEParser()
    got: list[sse.Event | sse.Comment] = []
    got_raw: list[sse.Event | sse.Comment | bytes] = []
    expected: list[sse.Event | sse.Comment] = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        got += fast.feed(raw[previous:cut])
        got_raw += raw_parser.feed_raw(raw[previous:cut])
        expected += slow.lines(raw[previous:cut])
        previous = cut
    assert got == expected
    assert fast.has_partial_event == slow.has_partial_event

    # the relay's form: one-line data events as their undecoded bytes (their id is not used)
    def plain(item: sse.Event | sse.Comment | bytes) -> object:
        if isinstance(item, bytes):
            return (item.decode("utf-8", "replace"), "message")
        return (item.data, item.event) if isinstance(item, sse.Event) else item

    assert [plain(x) for x in got_raw] == [plain(x) for x in expected]
